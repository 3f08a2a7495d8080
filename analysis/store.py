"""Read the results store (`results/cells/*.json`, optional `results/bench.json`) into rows and one flat frame.

Analysis never re-runs anything: every table and figure is a function of these files, so a paper's numbers can
be rebuilt from an archived `results/` directory alone.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from hificl.errors import DataError

log = logging.getLogger(__name__)

#: Timing and size fields copied as they are (absent ones become NaN).
SCALAR_FIELDS = (
    "num_trainable",
    "train_size",
    "eval_size",
    "train_steps",
    "train_time_s",
    "step_time_s",
    "eval_time_s",
    "eval_ms_per_sample",
)
REQUIRED_FIELDS = ("task", "preset", "metrics")


def load_results(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished cell, sorted by file name; hidden and temporary files (a runner mid-write) are ignored."""
    root = Path(results_dir)
    if not root.is_dir():
        raise DataError(f"Results directory {root} does not exist; run `make ablations` first.")
    rows = []
    for path in sorted((root / "cells").glob("*.json")):
        if path.name.startswith((".", "~", "tmp")):
            continue
        rows.append(_read_cell(path))
    return rows


def _read_cell(path: Path) -> dict[str, Any]:
    try:
        row = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"Result cell {path} is not valid JSON: {err}") from err
    if not isinstance(row, dict):
        raise DataError(f"Result cell {path} holds a {type(row).__name__}, not a JSON object.")
    missing = [k for k in REQUIRED_FIELDS if k not in row]
    if missing:
        raise DataError(f"Result cell {path} lacks the field(s) {missing}.")
    if not isinstance(row["metrics"], dict):
        raise DataError(f"Result cell {path}: field 'metrics' must be an object, got {row['metrics']!r}.")
    return row


def load_bench(results_dir: str | Path) -> dict[str, dict[str, float]] | None:
    """`bench.json` as {section: {key: number}}, keeping only numeric entries; None when absent or unreadable
    (the figures that need it fall back to the cells or are skipped)."""
    path = Path(results_dir) / "bench.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        log.warning("ignoring %s: %s", path, err)
        return None
    if not isinstance(raw, dict):
        log.warning("ignoring %s: not a JSON object", path)
        return None
    bench = {}
    for section, values in raw.items():
        if isinstance(values, dict):
            numbers = {k: float(v) for k, v in values.items() if _is_number(v)}
            if numbers:
                bench[section] = numbers
    return bench


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _from_variant(variant: str, key: str) -> float:
    """Sweep cells name their setting in the variant ("r=4", "n=16", "size=300")."""
    match = re.fullmatch(rf"{key}\s*=\s*(\d+(?:\.\d+)?)", variant)
    return float(match.group(1)) if match else math.nan


def _number(*candidates: Any) -> float:
    """The first candidate that is a finite number, else NaN."""
    for value in candidates:
        if _is_number(value) and not math.isnan(value):
            return float(value)
    return math.nan


def flatten_row(row: dict[str, Any]) -> dict[str, Any]:
    """One flat record: identity, sweep settings, sizes, timings, then every metric under its own name.

    Rows straight from `run_experiment` (no store around them) have no group/variant: they count as "main"
    runs named by their preset."""
    config = row.get("config") or {}
    method_cfg = config.get("method") or {}
    data_cfg = config.get("data") or {}
    variant = str(row.get("variant") or row["preset"])
    flat: dict[str, Any] = {
        "cell_id": row.get("cell_id"),
        "group": row.get("group") or "main",
        "variant": variant,
        "task": row["task"],
        "preset": row["preset"],
        "method": row.get("method") or row["preset"],
        "seed": row.get("seed", config.get("seed")),
        "rank": _number(method_cfg.get("rank"), _from_variant(variant, "r")),
        "n_tokens": _number(method_cfg.get("n_tokens"), _from_variant(variant, "n")),
    }
    flat.update({k: _number(row.get(k)) for k in SCALAR_FIELDS})
    flat["train_size"] = _number(row.get("train_size"), data_cfg.get("train_size"), _from_variant(variant, "size"))
    flat.update({k: _number(v) for k, v in row["metrics"].items()})
    return flat


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One flat row per cell (see `flatten_row`); an empty frame still has every non-metric column."""
    if not rows:
        identity = ["cell_id", "group", "variant", "task", "preset", "method", "seed", "rank", "n_tokens"]
        return pd.DataFrame(columns=[*identity, *SCALAR_FIELDS])
    return pd.DataFrame([flatten_row(r) for r in rows])
