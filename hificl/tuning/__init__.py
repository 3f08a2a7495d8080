"""`hificl tune`: an Optuna search over HiFICL's n (virtual tokens) and r (rank), optionally lr, for one task.

The study is persistent (re-running continues it) and its `n_trials` is a total over every run and worker, so
several processes, or several machines on one database, share one budget. See docs/tuning.md.
"""

from __future__ import annotations

import multiprocessing
import typing
from collections import Counter
from dataclasses import replace
from typing import Any, Literal

import optuna

from hificl.errors import ConfigError, TrainingError
from hificl.tuning.report import write_outputs
from hificl.tuning.settings import load_tune_config
from hificl.tuning.storage import open_storage
from hificl.tuning.worker import Objective, WorkerJob, run_worker, top_up
from hificl.validation import check_models

__all__ = ["tune"]


def tune(
    config_path: str,
    overrides: list[str],
    workers: int = 1,
    storage: str | None = None,
    n_trials: int | None = None,
    objective_fn: Objective | None = None,
) -> dict[str, Any]:
    """Run (or continue) the study with `workers` processes, then write best.yaml, trials.csv and figures.

    `objective_fn` replaces training (tests, custom objectives); with workers > 1 it must be a module-level
    function, since spawned processes import it by name.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}.")
    config = load_tune_config(config_path, overrides, storage=storage, n_trials=n_trials)
    if objective_fn is None:  # the trials train: the model must be there before the study starts
        check_models({str(config.experiment.get("model", "base-model"))})
    settings = config.study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=settings.name,
        storage=open_storage(settings.storage),
        direction=typing.cast(Literal["minimize", "maximize"], settings.direction),
        load_if_exists=True,
    )
    if study.direction.name.lower() != settings.direction:
        raise ConfigError(
            f"Study {settings.name!r} in {settings.storage} was created to {study.direction.name.lower()}, "
            f"not {settings.direction}; pick another study name."
        )
    added = top_up(study, settings.n_trials)
    job = WorkerJob(
        storage=settings.storage,
        study_name=settings.name,
        n_trials=settings.n_trials,
        search=config.search,
        experiment=config.experiment,
        metric=typing.cast(str, settings.metric),  # load_tune_config always sets it
        sampler=settings.sampler,
        pruner=settings.pruner,
        objective=objective_fn,
    )
    print(f"study {settings.name!r} in {settings.storage}: {added} new slot(s), {workers} worker(s)", flush=True)
    if workers == 1:
        run_worker(job)
    else:
        _run_processes([replace(job, worker=i) for i in range(workers)])
    study = optuna.load_study(study_name=settings.name, storage=open_storage(settings.storage))
    return _summary(study, settings.storage, write_outputs(study, config))


def _run_processes(jobs: list[WorkerJob]) -> None:
    """'spawn': a fresh interpreter per worker, safe with CUDA and SQLite connections (fork copies both)."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=run_worker, args=(job,), name=f"tune-worker-{job.worker}") for job in jobs]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [f"{p.name} (exit code {p.exitcode})" for p in processes if p.exitcode != 0]
    if failed:
        raise TrainingError(f"Tuning worker(s) {', '.join(failed)} stopped with an error; see the traceback above.")


def _summary(study: optuna.Study, storage: str, written: dict[str, Any]) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials if t.state != optuna.trial.TrialState.WAITING)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = study.best_trial if complete else None
    return {
        "study": study.study_name,
        "storage": storage,
        "trials": dict(states),
        "best_trial": best.number if best else None,
        "best_params": best.params if best else None,
        "best_value": best.value if best else None,
        **written,
    }
