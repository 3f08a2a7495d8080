"""The ablation matrix: declared in YAML, expanded into cells with stable ids, run resumably, summarised.

A cell is (group, variant, task, seed). Its experiment config is the matrix defaults, then the variant's
settings, then task/seed/model; the run id is the hash of that resolved config, so cells that mean the same
experiment (the rank sweep's r=8 and the main table's HiFICL) share one run. Finished runs and cells are
files in the results store; re-running skips them, and a run killed at any moment resumes where it was.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hificl.config import deep_merge, read_yaml, to_dict
from hificl.errors import ConfigError
from hificl.launch import Job, LocalRunner, Resources, Runner, quiet_worker, resources_for
from hificl.lightning.loggers import METRICS_FILE
from hificl.rescore import PREDICTIONS, predictions_text, write_run_files
from hificl.results import CellRow, ResultRow, ResultsStore, stable_id
from hificl.validation import check_matrix, check_models

VOLATILE = ("progress", "output_dir", "overwrite", "run_dir")  # settings that do not change a result


@dataclass(frozen=True)
class Cell:
    group: str
    variant: str
    task: str
    seed: int
    values: dict[str, Any]
    run_id: str
    cell_id: str


def _resolved(values: dict[str, Any]) -> dict[str, Any]:
    from hificl.experiment import experiment_config

    resolved = to_dict(experiment_config(values))
    return {k: v for k, v in resolved.items() if k not in VOLATILE}


def expand_matrix(spec: dict[str, Any], *, quick: bool = False, model: str | None = None) -> list[Cell]:
    """Every cell of the matrix, in declaration order."""
    check_matrix(spec, "The ablation matrix")
    defaults = deep_merge(spec.get("defaults", {}), spec.get("quick", {}).get("defaults", {}) if quick else {})
    seeds = spec.get("quick", {}).get("seeds", spec.get("seeds", [0])) if quick else spec.get("seeds", [0])
    cells = []
    for group, body in spec["groups"].items():
        tasks = body.get("tasks", spec["tasks"])
        for variant, settings in body["variants"].items():
            for task in tasks:
                for seed in seeds:
                    values = deep_merge(defaults, settings or {})
                    values = deep_merge(values, {"data": {"task": task}, "seed": seed, "progress": False})
                    if model:
                        values["model"] = model
                    try:
                        resolved = _resolved(values)
                    except ConfigError as err:
                        raise ConfigError(f"Cell {group}/{variant}/{task}/seed {seed}: {err}") from None
                    run_id = stable_id(resolved)
                    cell_id = stable_id({"group": group, "variant": variant, "run": run_id})
                    cells.append(Cell(group, variant, task, seed, values, run_id, cell_id))
    return cells


@dataclass
class RunOutcome:
    """What a worker sends back to the driver, which alone writes the store: the row and the run's files."""

    row: ResultRow
    files: dict[str, str]


def _run(values: dict[str, Any]) -> RunOutcome:
    """Worker entry (module level, so spawned processes and Ray tasks can import it)."""
    import torch

    from hificl.experiment import experiment_config, run_experiment
    from hificl.lightning.predictions import KeepPredictions

    torch.set_num_threads(int(os.environ.get("HIFICL_THREADS", "1")))
    quiet_worker()
    kept = KeepPredictions()
    config = experiment_config(values)
    row = run_experiment(config, callbacks=[kept])
    files = {PREDICTIONS: predictions_text(kept.payload())}
    work = Path(config.run_dir) if config.run_dir else None
    if work is not None:
        metrics = work / METRICS_FILE
        if metrics.is_file():
            files[METRICS_FILE] = metrics.read_text()
        shutil.rmtree(work)  # the run is done: its checkpoint and copies go; the driver stores what counts
    return RunOutcome(row, files)


def run_matrix(
    matrix: str | Path,
    results: str | Path = "results",
    *,
    quick: bool = False,
    model: str | None = None,
    workers: int = 1,
    runner: Runner | None = None,
    cpus_per_run: float = 1.0,
) -> list[CellRow]:
    """Run every missing cell; return all cell rows. Progress: cells done / left and a time estimate.

    `runner` places the runs (default: `workers` local processes; hificl.launch.RayRunner for a cluster); this
    process alone writes the store, each run's files (generations) before its record."""
    from hificl.experiment import check_data_roots

    spec = read_yaml(matrix)
    cells = expand_matrix(spec, quick=quick, model=model)
    check_models({str(c.values.get("model", "base-model")) for c in cells})
    check_data_roots([c.values for c in cells])
    store = ResultsStore(Path(results) / ("quick" if quick else ""))
    for partial in [*store.root.glob(".*.tmp"), *store.runs.rglob(".*.tmp"), *store.cells.glob(".*.tmp")]:
        partial.unlink()  # a driver killed mid-write left it; the file it was writing is written again
    retired = store.retire_cells({c.cell_id for c in cells})
    if retired:
        print(f"ablations: {retired} cell(s) of an earlier matrix moved to {store.root / 'stale'}")
    todo_cells = [c for c in cells if not store.has_cell(c.cell_id)]
    runs: dict[str, dict[str, Any]] = {}  # runs to do
    stored: dict[str, ResultRow] = {}  # runs finished before a kill, whose cells were not all written yet
    for cell in todo_cells:
        if cell.run_id not in runs and cell.run_id not in stored:
            row = store.run(cell.run_id)  # None also for an unreadable run file (moved aside): run it again
            if row is None:
                runs[cell.run_id] = cell.values
            else:
                stored[cell.run_id] = row
    by_run: dict[str, list[Cell]] = {}
    for cell in todo_cells:
        by_run.setdefault(cell.run_id, []).append(cell)

    def finish(run_id: str, row: ResultRow) -> None:
        for cell in by_run.get(run_id, []):
            store.put_cell(CellRow(cell.cell_id, run_id, cell.group, cell.variant, row))

    for run_id, row in stored.items():
        finish(run_id, row)
    work = (store.root / "work").resolve()  # a run's own directory while it runs: its logs and checkpoints
    jobs = [
        Job(run_id, {**values, "run_dir": str(work / run_id)}, _resources(values, cpus_per_run))
        for run_id, values in runs.items()
    ]
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo_cells), unit="cell", desc="ablations")
    started = time.perf_counter()
    try:
        for run_id, outcome in (runner or LocalRunner(workers)).run(_run, jobs):
            write_run_files(store, run_id, outcome.files)
            store.put_run(run_id, outcome.row)
            finish(run_id, outcome.row)
            bar.update(len(by_run[run_id]))
    finally:
        bar.close()
        store.write_csv()
    print(f"ablations: {len(cells)} cells ({len(jobs)} runs this time) in {time.perf_counter() - started:.0f} s")
    return store.cell_rows()


def _resources(values: dict[str, Any], cpus: float) -> Resources:
    from hificl.experiment import experiment_config

    return resources_for(experiment_config(values).train, cpus)
