"""Read the results store (`results/cells/*.json`, optional `results/bench.json`) into typed cells and one frame.

Analysis never re-runs anything: every table and figure is a function of these files, so a paper's numbers can
be rebuilt from an archived `results/` directory alone.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from hificl.errors import DataError
from hificl.results import CellRow, ResultsStore, results_frame

__all__ = ["load_bench", "load_results", "results_frame"]

log = logging.getLogger(__name__)


def load_results(results_dir: str | Path) -> list[CellRow]:
    """Every readable cell in cell-id order, read by the store that wrote it (an unreadable one is moved aside
    with a warning, see `hificl.results`)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise DataError(f"Results directory {root} does not exist; run `make ablations` first.")
    return ResultsStore(root).cell_rows()


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
