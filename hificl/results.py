"""The results store: one JSON file per finished cell, written atomically, and a CSV rebuilt beside them.

    results/runs/<run_id>.json    one experiment (a unique resolved config), shared by the cells that need it
    results/cells/<cell_id>.json  one cell of the matrix: its group/variant labels + its run's row
    results/results.csv           flat table of every cell (pandas-friendly), rebuilt from cells/

A file either exists whole or not at all (write to a temp file in the same directory, fsync, os.replace), so a
run killed at any moment loses at most the cell in progress and never duplicates one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def stable_id(payload: Any) -> str:
    """12 hex digits of sha256 over canonical JSON: the same config always gets the same id."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultsStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.runs, self.cells = self.root / "runs", self.root / "cells"

    def has_cell(self, cell_id: str) -> bool:
        return (self.cells / f"{cell_id}.json").is_file()

    def run(self, run_id: str) -> dict[str, Any] | None:
        path = self.runs / f"{run_id}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def put_run(self, run_id: str, row: dict[str, Any]) -> None:
        atomic_write_text(self.runs / f"{run_id}.json", json.dumps(row, indent=1, sort_keys=True, default=str))

    def put_cell(self, cell_id: str, row: dict[str, Any]) -> None:
        atomic_write_text(self.cells / f"{cell_id}.json", json.dumps(row, indent=1, sort_keys=True, default=str))

    def retire_cells(self, keep: set[str]) -> int:
        """Move cells that are not in `keep` (the current matrix) to stale/cells/, so tables describe the matrix
        as it is now; their runs stay and are reused if the matrix asks for them again. Returns how many moved."""
        moved = 0
        for path in sorted(self.cells.glob("*.json")):
            if path.stem not in keep:
                target = self.root / "stale" / "cells" / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
                moved += 1
        return moved

    def cell_rows(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.cells.glob("*.json"))]

    def write_csv(self) -> Path:
        """Rebuild results.csv from the cells, in cell-id order (identical whatever order cells finished in)."""
        from analysis.tables import results_frame

        path = self.root / "results.csv"
        atomic_write_text(path, results_frame(self.cell_rows()).to_csv(index=False))
        return path
