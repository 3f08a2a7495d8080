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
import os
import socket
import threading
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
#: Trial system attributes: which process runs it, when it last said so; user attribute of a retry slot.
OWNER, HEARTBEAT, RETRY_OF = "hificl_worker", "hificl_heartbeat", "retry_of"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 10 * HEARTBEAT_S  # another host's worker is declared dead after this long without a beat


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
    """Add WAITING slots until the study holds `n_trials` trials in any state, not counting the retries of dead
    workers' trials (they return a slot, they do not use one); returns how many were added."""
    missing = n_trials - len(_budget_numbers(study.get_trials(deepcopy=False)))
    for _ in range(max(0, missing)):
        study.enqueue_trial({})
    return max(0, missing)


def _budget_numbers(trials: list[optuna.trial.FrozenTrial]) -> list[int]:
    """Numbers of the trials that count against the budget (every trial but retry slots), in order."""
    return sorted(t.number for t in trials if RETRY_OF not in t.user_attrs)


def claim(
    study: optuna.Study, storage: optuna.storages.BaseStorage, n_trials: int, sampler: dict[str, Any] | None = None
) -> optuna.Trial | None:
    """Move a free slot to RUNNING (retries of dead workers' trials first, then the lowest number below
    `n_trials`), mark it as this worker's and seed the sampler for it; None when no slot is left.

    Slots numbered >= n_trials (two launchers topping up one new study at once) stay WAITING, unused.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    everything = storage.get_all_trials(study_id, deepcopy=False)
    in_budget = set(_budget_numbers(everything)[:n_trials])
    waiting = [t for t in everything if t.state == TrialState.WAITING]
    for slot in sorted(waiting, key=lambda t: (RETRY_OF not in t.user_attrs, t.number)):
        if slot.number not in in_budget and RETRY_OF not in slot.user_attrs:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, slot.number)
        owner: dict[str, str | int] = {"host": socket.gethostname(), "pid": os.getpid()}
        try:
            # the owner goes on the slot before the claim, so a kill right after the claim leaves it named
            storage.set_trial_system_attr(trial_id, OWNER, owner)
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                storage.set_trial_system_attr(trial_id, OWNER, owner)  # a losing claimant may have written its own
                storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())
                if sampler is not None:  # before Trial(): its constructor already asks the sampler
                    study.sampler = build_sampler(sampler, slot.user_attrs.get(RETRY_OF, slot.number))
                # the study's storage cache learns of a trial claimed behind its back only by reading the list
                # (TPE reads it when sampling; RandomSampler never does, and set_trial_param would fail)
                study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                return optuna.Trial(study, trial_id)
        except UpdateFinishedTrialError:
            continue
    return None


def _is_stale(trial: optuna.trial.FrozenTrial, now: float) -> bool:
    """A RUNNING trial whose worker is gone: a dead pid on this host, or no heartbeat for STALE_AFTER_S."""
    owner = trial.system_attrs.get(OWNER)
    if isinstance(owner, dict) and owner.get("host") == socket.gethostname():
        try:
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, TypeError, ValueError):
            pass
    beat = trial.system_attrs.get(HEARTBEAT)
    if not isinstance(beat, int | float):
        beat = trial.datetime_start.timestamp() if trial.datetime_start else now
    return now - beat > STALE_AFTER_S


def reap_stale(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    """Fail the RUNNING trials of dead workers and give each slot back as a WAITING retry of the same point
    (its params fixed, so the study runs exactly the points an uninterrupted run would). Returns how many."""
    study_id = storage.get_study_id_from_name(study.study_name)
    now, reaped = time.time(), 0
    everything = storage.get_all_trials(study_id, deepcopy=False)
    retried = {t.user_attrs[RETRY_OF] for t in everything if RETRY_OF in t.user_attrs}
    for trial in everything:
        if trial.state != TrialState.RUNNING or not _is_stale(trial, now):
            continue
        # the retry first, then the FAIL: a reaper killed in between leaves a retry (found above next time)
        # and a still-RUNNING trial, never a failed trial whose slot was not given back
        if trial.number not in retried:
            study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
        try:
            storage.set_trial_user_attr(trial._trial_id, "error", "its worker died (killed or lost) while running it")
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker reaped it first
        reaped += 1
    return reaped


class Heartbeat:
    """Writes the trial's heartbeat every HEARTBEAT_S seconds from a daemon thread while the trial runs."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(storage, trial_id), daemon=True)

    def _beat(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                storage.set_trial_system_attr(trial_id, HEARTBEAT, time.time())
            except Exception:  # a finished trial or a storage hiccup: the next beat or the reaper decides
                _LOG.debug("heartbeat of trial %d not written", trial_id, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_worker(job: WorkerJob) -> int:
    """Run trials until no slot is left; returns how many this worker ran."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(job.storage)
    study = optuna.load_study(
        study_name=job.study_name,
        storage=storage,
        sampler=build_sampler(job.sampler, 0),
        pruner=build_pruner(job.pruner),
    )
    objective = job.objective or _experiment_objective()
    ran = 0
    while True:
        with claim_lock(job.storage):
            reap_stale(study, storage)
            trial = claim(study, storage, job.n_trials, job.sampler)
        if trial is None:
            return ran
        with Heartbeat(storage, trial._trial_id):
            run_trial(study, trial, job, objective)
        ran += 1


def _experiment_objective() -> Objective:
    from hificl.launch import quiet_worker
    from hificl.tuning.objective import experiment_objective  # imports torch/Lightning: only when training

    quiet_worker()  # one line per trial, not Lightning's banners and a loading bar per trial
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
