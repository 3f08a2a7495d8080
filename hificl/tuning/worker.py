"""One tuning worker: claim a trial slot, sample n/r (/lr), run the objective, record the outcome.

Why slots instead of `study.optimize(n_trials=...)`: with several workers on one storage, each worker's own
count or a MaxTrialsCallback overshoots (workers check the count, then start a trial, in between the others
start theirs). Here the study's budget is created up front as WAITING trials ("slots", numbers 0..N-1) and a
worker only ever starts a trial by moving one slot WAITING -> RUNNING, a transition every Optuna storage makes
atomic (the same one `enqueue_trial` relies on). So N workers run exactly N trials together, each once, and
re-running a finished study finds no slot and adds nothing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from hificl.config import deep_merge
from hificl.errors import HificlError, TrainingError
from hificl.tuning.settings import SearchSpace, build_pruner, build_sampler, experiment_values, suggest
from hificl.tuning.storage import claim_lock, open_storage

#: objective(trial, experiment values with the trial's n/r/lr, metric name) -> the metric; may raise TrialPruned.
Objective = Callable[[optuna.Trial, dict[str, Any], str], float]

_LOG = logging.getLogger(__name__)


@dataclass
class WorkerJob:
    """Everything a (spawned) worker needs; plain data so it pickles."""

    storage: str
    study_name: str
    n_trials: int
    search: SearchSpace
    experiment: dict[str, Any]
    metric: str
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    objective: Objective | None = None  # None: train and evaluate the experiment (hificl.tuning.objective)
    worker: int = 0


def top_up(study: optuna.Study, n_trials: int) -> int:
    """Add WAITING slots until the study holds `n_trials` trials in any state; returns how many were added."""
    missing = n_trials - len(study.get_trials(deepcopy=False))
    for _ in range(max(0, missing)):
        study.enqueue_trial({})
    return max(0, missing)


def claim(study: optuna.Study, storage: optuna.storages.BaseStorage, n_trials: int) -> optuna.Trial | None:
    """Move the lowest free slot below `n_trials` to RUNNING; None when no slot is left.

    Slots numbered >= n_trials (two launchers topping up one new study at once) stay WAITING, unused.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    for slot in sorted(storage.get_all_trials(study_id, states=(TrialState.WAITING,)), key=lambda t: t.number):
        if slot.number >= n_trials:
            break
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, slot.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, trial_id)
        except UpdateFinishedTrialError:
            continue
    return None


def run_worker(job: WorkerJob) -> int:
    """Run trials until no slot is left; returns how many this worker ran."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(job.storage)
    study = optuna.load_study(
        study_name=job.study_name,
        storage=storage,
        sampler=build_sampler(job.sampler, job.worker),
        pruner=build_pruner(job.pruner),
    )
    objective = job.objective or _experiment_objective()
    ran = 0
    while True:
        with claim_lock(job.storage):
            trial = claim(study, storage, job.n_trials)
        if trial is None:
            return ran
        run_trial(study, trial, job, objective)
        ran += 1


def _experiment_objective() -> Objective:
    from hificl.tuning.objective import experiment_objective  # imports torch/Lightning: only when training

    return experiment_objective


def run_trial(study: optuna.Study, trial: optuna.Trial, job: WorkerJob, objective: Objective) -> None:
    """A failing trial (bad n/r for the model, NaN, a bug) is recorded as FAIL with its message; the study goes on."""
    start = time.perf_counter()
    try:
        params = suggest(trial, job.search)
        value = float(objective(trial, deep_merge(job.experiment, experiment_values(params)), job.metric))
        if not math.isfinite(value):
            raise TrainingError(f"The objective returned {value} for {job.metric}.")
    except optuna.TrialPruned:
        frozen = study.tell(trial, state=TrialState.PRUNED)
    except Exception as err:
        trial.set_user_attr("error", f"{type(err).__name__}: {err}")
        _LOG.warning("trial %d failed: %s", trial.number, err, exc_info=not isinstance(err, HificlError))
        frozen = study.tell(trial, state=TrialState.FAIL)
    except BaseException:
        trial.set_user_attr("error", "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        frozen = study.tell(trial, value)
    print(progress_line(frozen, job.worker, time.perf_counter() - start), flush=True)


def progress_line(trial: optuna.trial.FrozenTrial, worker: int, seconds: float) -> str:
    params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    if trial.state == TrialState.FAIL:
        outcome = f"FAIL ({trial.user_attrs.get('error', 'no message')})"
    elif trial.value is None:
        outcome = trial.state.name
    else:
        outcome = f"{trial.state.name} {trial.value:.4f}"
    return f"trial {trial.number:3d} [worker {worker}] {params}: {outcome} in {seconds:.1f} s"
