"""The result row and the results store: one typed record, written and read by this module alone.

A `ResultRow` is what one experiment produced and everything needed to repeat it (config, seed, versions,
model fingerprint, metrics, timings, threads and device). A `CellRow` is one cell of the ablation matrix: its
group/variant labels around the row of the run it shares. Both carry a schema version; reading checks every
field, so analysis can use attributes instead of guessing at dict keys.

    results/runs/<run_id>.json    one experiment (a unique resolved config), shared by the cells that need it
    results/cells/<cell_id>.json  one cell of the matrix
    results/results.csv           flat table of every cell (`CellRow.flat`), rebuilt from cells/
    results/invalid/...           records that could not be read (truncated, `{}`, another schema), moved aside

A file either exists whole or not at all (`hificl.files.atomic_write_text`), so a run killed at any moment loses
at most the cell in progress; a record that is unreadable anyway is moved aside with a warning and re-run,
never trusted and never crashed on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from hificl.errors import DataError
from hificl.files import atomic_write_text

#: Bumped whenever a field of ResultRow / CellRow changes meaning or shape; records of another version are re-run.
SCHEMA_VERSION = 1

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Timings:
    """Seconds of wall-clock time; never part of a table's numbers (machine load changes them)."""

    train_s: float = 0.0  # trainer.fit, end to end
    step_s: float = 0.0  # median optimizer step
    eval_s: float = 0.0  # generation over the evaluation set
    eval_ms_per_sample: float = 0.0


@dataclass(frozen=True)
class Environment:
    """What affects the numbers and is not in the config: versions, intra-op threads, device, processes."""

    versions: dict[str, str]
    threads: int  # torch.get_num_threads(): the order of float reductions on CPU depends on it
    device: str  # "cpu" or "cuda (<name>)"
    world_size: int = 1
    global_rank: int = 0


@dataclass(frozen=True)
class ResultRow:
    task: str
    preset: str
    method: str  # the registry name, or the preset for baselines without parameters (zero-shot, icl)
    seed: int
    metrics: dict[str, float]
    num_trainable: int
    train_size: int  # samples trained on (0 when nothing was trained)
    eval_size: int
    train_steps: int
    timings: Timings
    train_ids_digest: str
    eval_ids_digest: str
    config: dict[str, Any]  # the resolved experiment config
    model_fingerprint: dict[str, Any]
    environment: Environment
    hallucinated_objects: dict[str, int] = field(default_factory=dict)  # caption tasks: object -> times invented
    schema: int = SCHEMA_VERSION

    def setting(self, name: str) -> float:
        """A numeric method setting from the resolved config (e.g. "rank", "n_tokens"); NaN if the method has none."""
        value = self.config.get("method", {}).get(name)
        return float(value) if _is_number(value) else math.nan

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "result row") -> ResultRow:
        return _decode(cls, data, where)


@dataclass(frozen=True)
class CellRow:
    """One cell of the matrix: (group, variant) labels and the row of its run (shared by equal configs)."""

    cell_id: str
    run_id: str
    group: str
    variant: str
    result: ResultRow
    schema: int = SCHEMA_VERSION

    @classmethod
    def standalone(cls, row: ResultRow) -> CellRow:
        """A run outside any matrix (`hificl compare`): a "main" cell named by its preset."""
        run_id = stable_id(row.config)
        return cls(cell_id=run_id, run_id=run_id, group="main", variant=row.preset, result=row)

    def flat(self) -> dict[str, Any]:
        """One flat record for tables and results.csv: identity, settings, sizes, timings, then every metric.

        Numbers are floats (NaN where a cell has no such value), so a frame of them has one dtype per column."""
        r = self.result
        return {
            "cell_id": self.cell_id,
            "group": self.group,
            "variant": self.variant,
            "task": r.task,
            "preset": r.preset,
            "method": r.method,
            "seed": r.seed,
            "rank": r.setting("rank"),
            "n_tokens": r.setting("n_tokens"),
            "num_trainable": float(r.num_trainable),
            "train_size": float(r.train_size),
            "eval_size": float(r.eval_size),
            "train_steps": float(r.train_steps),
            "train_time_s": r.timings.train_s,
            "step_time_s": r.timings.step_s,
            "eval_time_s": r.timings.eval_s,
            "eval_ms_per_sample": r.timings.eval_ms_per_sample,
            **{k: float(v) for k, v in r.metrics.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "cell") -> CellRow:
        return _decode(cls, data, where)


#: The columns of `CellRow.flat` before the metrics (an empty frame still has them).
FLAT_COLUMNS = (
    "cell_id",
    "group",
    "variant",
    "task",
    "preset",
    "method",
    "seed",
    "rank",
    "n_tokens",
    "num_trainable",
    "train_size",
    "eval_size",
    "train_steps",
    "train_time_s",
    "step_time_s",
    "eval_time_s",
    "eval_ms_per_sample",
)


def results_frame(cells: list[CellRow]) -> pd.DataFrame:
    """One flat row per cell (see `CellRow.flat`), in the order given."""
    if not cells:
        return pd.DataFrame(columns=list(FLAT_COLUMNS))
    return pd.DataFrame([c.flat() for c in cells])


def stable_id(payload: Any) -> str:
    """12 hex digits of sha256 over canonical JSON: the same config always gets the same id."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class ResultsStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.runs, self.cells = self.root / "runs", self.root / "cells"

    def run(self, run_id: str) -> ResultRow | None:
        """The stored row of a run; None when there is none or it is unreadable (then it is moved aside)."""
        return self._read(self.runs / f"{run_id}.json", ResultRow)

    def cell(self, cell_id: str) -> CellRow | None:
        return self._read(self.cells / f"{cell_id}.json", CellRow)

    def has_cell(self, cell_id: str) -> bool:
        return self.cell(cell_id) is not None

    def put_run(self, run_id: str, row: ResultRow) -> None:
        atomic_write_text(self.runs / f"{run_id}.json", _dumps(row.to_dict()))

    def put_cell(self, cell: CellRow) -> None:
        atomic_write_text(self.cells / f"{cell.cell_id}.json", _dumps(cell.to_dict()))

    def retire_cells(self, keep: set[str]) -> int:
        """Move cells that are not in `keep` (the current matrix) to stale/cells/, so tables describe the matrix
        as it is now; their runs stay and are reused if the matrix asks for them again. Returns how many moved."""
        moved = 0
        for path in self._files(self.cells):
            if path.stem not in keep:
                _move(path, self.root / "stale" / "cells" / path.name)
                moved += 1
        return moved

    def cell_rows(self) -> list[CellRow]:
        """Every readable cell, in cell-id order (the same whatever order they finished in)."""
        rows = (self._read(path, CellRow) for path in self._files(self.cells))
        return [row for row in rows if row is not None]

    def write_csv(self) -> Path:
        """Rebuild results.csv from the cells."""
        return atomic_write_text(self.root / "results.csv", results_frame(self.cell_rows()).to_csv(index=False))

    @staticmethod
    def _files(folder: Path) -> list[Path]:
        """Record files, without the hidden temporary files of a write in progress."""
        return [p for p in sorted(folder.glob("*.json")) if not p.name.startswith(".")]

    def _read(self, path: Path, cls: type[T]) -> T | None:
        if not path.is_file():
            return None
        try:
            return _decode(cls, json.loads(path.read_text(encoding="utf-8")), str(path))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, DataError) as err:
            target = self.root / "invalid" / path.parent.name / path.name
            _move(path, target)
            log.warning("unreadable record moved aside to %s; it will be re-run (%s)", target, err)
            return None


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True, allow_nan=True)


def _move(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _decode(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from parsed JSON, checking the schema version and every field's type."""
    if not isinstance(data, dict):
        raise DataError(f"{where} holds {type(data).__name__}, not a JSON object.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if "schema" in fields and data.get("schema") != SCHEMA_VERSION:
        raise DataError(f"{where} has schema {data.get('schema')!r}; this version reads schema {SCHEMA_VERSION}.")
    unknown = sorted(set(data) - set(fields))
    missing = [n for n, f in fields.items() if n not in data and _required(f)]
    if unknown or missing:
        raise DataError(f"{where}: missing field(s) {missing}, unknown field(s) {unknown}.")
    values = {name: _field(data[name], hints[name], f"{where}: field {name!r}") for name in fields if name in data}
    return cls(**values)


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _field(value: Any, hint: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _decode(typing.cast(type, hint), value, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise DataError(f"{where} must be an object, got {value!r}.")
        return {str(k): _field(v, args[1], f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(hint, types.UnionType):
        raise TypeError(f"{where}: union fields are not supported")  # none today; keeps the reader simple
    if hint is float and _is_number(value):
        return float(value)
    if isinstance(value, hint) and not (isinstance(value, bool) and hint is not bool):
        return value
    raise DataError(f"{where} must be {hint.__name__}, got {value!r}.")
