"""`hificl tune`: an Optuna search over HiFICL's n (virtual tokens) and r (rank), optionally lr, for one task.

The study is persistent (re-running continues it) and its `n_trials` is a total over every run and worker, so
several processes, or several machines on one database, share one budget. See docs/tuning.md.
"""

from __future__ import annotations

import typing
from collections import Counter
from dataclasses import replace
from typing import Any, Literal

import optuna

from hificl.errors import ConfigError
from hificl.launch import Job, LocalRunner, Runner, resources_for
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
    runner: Runner | None = None,
    cpus_per_run: float = 1.0,
) -> dict[str, Any]:
    """Run (or continue) the study with `workers` workers, then write best.yaml, trials.csv and figures.

    Each worker claims trial slots from the one Optuna storage until none is left; `runner` places the workers
    (default: local processes, or this process when workers=1; hificl.launch.RayRunner: one Ray task per
    worker with the resources a trial asks for, docs/scaling.md). `objective_fn` replaces training (tests,
    custom objectives); outside this process it must be a module-level function, imported there by name.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}.")
    config = load_tune_config(config_path, overrides, storage=storage, n_trials=n_trials)
    if objective_fn is None:  # the trials train: the model must be there before the study starts
        from hificl.experiment import check_data_roots  # imports torch/Lightning: only when the trials train

        check_models({str(config.experiment.get("model", "base-model"))})
        check_data_roots([config.experiment])
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
    resources = resources_for(_train_config(config.experiment), cpus_per_run)
    jobs = [Job(f"tune-worker-{i}", replace(job, worker=i), resources) for i in range(workers)]
    for _ in (runner or LocalRunner(workers)).run(run_worker, jobs):
        pass
    study = optuna.load_study(study_name=settings.name, storage=open_storage(settings.storage))
    return _summary(study, settings.storage, write_outputs(study, config))


def _train_config(experiment: dict[str, Any]) -> Any:
    """The trials' `train` section, typed: what each worker's resources are sized from."""
    from hificl.config import from_dict
    from hificl.lightning.module import TrainConfig  # imports torch/Lightning: only when tuning runs

    return from_dict(TrainConfig, experiment.get("train") or {}, "tune.experiment.train")


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
