"""hificl.tuning: exact trial budget across worker processes, persistence, failures, pruning, outputs."""

from __future__ import annotations

import importlib.util
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from hificl.config import read_yaml
from hificl.errors import ConfigError
from hificl.experiment import experiment_config
from hificl.tuning import tune
from hificl.tuning.objective import PruneOnValidation
from hificl.tuning.settings import SearchSpace, suggest
from hificl.tuning.storage import open_storage
from hificl.tuning.worker import OWNER, RETRY_OF, claim
from tests.tune_objectives import FAILING_RANK, nan_objective, score, synthetic_objective

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "experiments" / "tune.yaml")
DIED = "its worker died (killed or lost) while running it"
N_TRIALS = 12


def run(tmp_path: Path, storage: str, workers: int, **kwargs) -> dict:
    overrides = [f"study.output_dir={tmp_path}/out", "search.n_tokens=[1,4,16]", "search.rank=[2,8,32]"]
    return tune(CONFIG, overrides, workers=workers, storage=storage, objective_fn=synthetic_objective, **kwargs)


def trials(storage: str, name: str = "hificl-syn-vqa") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(storage)).trials


def check_budget(storage: str, n: int) -> None:
    done = trials(storage)
    assert len(done) == n
    assert sorted(t.number for t in done) == list(range(n))
    assert all(t.state.is_finished() for t in done)
    for t in done:
        if t.params["rank"] == FAILING_RANK:
            assert t.state == TrialState.FAIL
            assert t.user_attrs["error"] == f"ConfigError: rank {FAILING_RANK} exceeds head_dim 16."
        else:
            assert t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        if t.state == TrialState.COMPLETE:
            assert t.value == pytest.approx(score(t.params["n_tokens"], t.params["rank"]))


def test_two_worker_processes_share_one_sqlite_budget_and_rerun_adds_nothing(tmp_path):
    storage = f"sqlite:///{tmp_path}/study.db"
    result = run(tmp_path, storage, workers=2, n_trials=N_TRIALS)
    check_budget(storage, N_TRIALS)
    states = {t.state for t in trials(storage)}
    assert {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL} <= states
    assert sum(result["trials"].values()) == N_TRIALS

    again = run(tmp_path, storage, workers=2, n_trials=N_TRIALS)
    assert again["trials"] == result["trials"]
    check_budget(storage, N_TRIALS)

    more = run(tmp_path, storage, workers=1, n_trials=N_TRIALS + 3)  # raising the total continues the study
    check_budget(storage, N_TRIALS + 3)
    assert sum(more["trials"].values()) == N_TRIALS + 3


def test_best_yaml_is_a_runnable_experiment_config_with_the_best_n_and_r(tmp_path):
    storage = f"sqlite:///{tmp_path}/study.db"
    result = run(tmp_path, storage, workers=1, n_trials=8)
    complete = [t for t in trials(storage) if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value)
    assert result["best_value"] == pytest.approx(best.value)
    assert result["best_params"] == best.params

    config = experiment_config(read_yaml(result["best_yaml"]))
    assert (config.method["n_tokens"], config.method["rank"]) == (best.params["n_tokens"], best.params["rank"])
    assert config.preset == "hificl"
    assert config.data.task == "syn-vqa"
    assert config.data.val_size == 32  # trials were scored on the validation set; the final run reads the eval set
    assert config.validate is False
    assert config.train.lr == pytest.approx(5e-3)  # lr not searched: the preset's

    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {"best.yaml", "trials.csv", "history.png", "importances.png"}
    if importlib.util.find_spec("scipy"):
        assert (out / "contour_n_tokens_rank.png").is_file()
    else:
        note = "contour_n_tokens_rank.png skipped: Optuna's plot_contour needs scipy (pip install scipy)."
        assert result["notes"] == [note]
    assert len((out / "trials.csv").read_text().strip().splitlines()) == 1 + 8


def test_journal_storage_with_two_workers(tmp_path):
    storage = f"journal:{tmp_path}/study.log"
    run(tmp_path, storage, workers=2, n_trials=N_TRIALS)
    check_budget(storage, N_TRIALS)


def test_lr_search_is_log_uniform_and_reaches_best_yaml(tmp_path):
    storage = f"sqlite:///{tmp_path}/study.db"
    lr = ["search.lr={low: 1.0e-4, high: 1.0e-2}"]
    overrides = [f"study.output_dir={tmp_path}/out", *lr]
    result = tune(CONFIG, overrides, storage=storage, n_trials=4, objective_fn=synthetic_objective)
    lrs = [t.params["lr"] for t in trials(storage)]
    assert all(1e-4 <= v <= 1e-2 for v in lrs)
    assert trials(storage)[0].distributions["lr"].log is True
    if result["best_params"] is not None:
        assert experiment_config(read_yaml(result["best_yaml"])).train.lr == pytest.approx(result["best_params"]["lr"])


def test_pruning_callback_reports_each_epoch_and_prunes_below_the_median():
    pruner = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=1)  # tune.yaml's warm-up
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for value in (0.6, 0.8):  # two finished trials: median 0.7 at epochs 0 and 1
        earlier = study.ask()
        earlier.report(value, step=0)
        earlier.report(value, step=1)
        study.tell(earlier, value)
    trial = study.ask()
    callback = PruneOnValidation(trial, "val/accuracy")

    def trainer(epoch: int, metrics: dict[str, float]) -> SimpleNamespace:
        return SimpleNamespace(sanity_checking=False, current_epoch=epoch, callback_metrics=metrics)

    callback.on_validation_end(trainer(0, {"val/accuracy": 0.55}), None)  # below the median, but warm-up
    assert study.trials[2].intermediate_values == {0: 0.55}
    with pytest.raises(optuna.TrialPruned, match=r"epoch 1: val/accuracy = 0\.6500"):
        callback.on_validation_end(trainer(1, {"val/accuracy": 0.65}), None)  # best so far 0.65 < 0.7
    assert study.trials[2].intermediate_values == {0: 0.55, 1: 0.65}
    with pytest.raises(ConfigError, match="no 'val/accuracy'"):
        callback.on_validation_end(trainer(2, {"val/cider": 1.0}), None)


def test_bad_settings_fail_with_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match=r"tune\.search\.rank must be a non-empty list"):
        tune(CONFIG, ["search.rank=[]"], storage=f"sqlite:///{tmp_path}/x.db")
    with pytest.raises(ConfigError, match=r"tune\.study\.pruner\.name must be one of"):
        tune(CONFIG, ["study.pruner={name: hyperband}"], storage=f"sqlite:///{tmp_path}/x.db")
    with pytest.raises(ConfigError, match="must be a database URL"):
        tune(CONFIG, [], storage=f"{tmp_path}/x.db")


def test_nan_metric_is_a_failed_trial_and_direction_cannot_change(tmp_path):
    storage = f"sqlite:///{tmp_path}/study.db"
    overrides = [f"study.output_dir={tmp_path}/out", "search.n_tokens=[1,4]", "search.rank=[8]"]
    result = tune(CONFIG, overrides, storage=storage, n_trials=6, objective_fn=nan_objective)
    done = trials(storage)
    assert {t.params["n_tokens"] for t in done} == {1, 4}
    for t in done:
        if t.params["n_tokens"] == 1:
            assert (t.state, t.user_attrs["error"]) == (
                TrialState.FAIL,
                "TrainingError: The objective returned nan for accuracy.",
            )
        else:
            assert (t.state, t.value) == (TrialState.COMPLETE, pytest.approx(1.0))
    assert result["best_params"] == {"n_tokens": 4, "rank": 8}
    with pytest.raises(ConfigError, match="was created to maximize, not minimize"):
        tune(CONFIG, [*overrides, "study.direction=minimize"], storage=storage, objective_fn=nan_objective)


class _Accuracies(L.LightningModule):
    """Logs a scripted val/accuracy per epoch, the way ICLApproxModule logs its metric."""

    def __init__(self, per_epoch: list[float]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.per_epoch = per_epoch

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return (self.weight * batch).sum()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        self.log("val/accuracy", self.per_epoch[self.current_epoch])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_pruning_callback_stops_a_real_lightning_fit_after_the_epoch_it_falls_below_the_median():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(0, 1))
    for curve in ([0.6, 0.6, 0.7, 0.7], [0.8, 0.8, 0.9, 0.9]):  # medians per epoch: 0.7, 0.7, 0.8, 0.8
        earlier = study.ask()
        for epoch, value in enumerate(curve):
            earlier.report(value, step=epoch)
        study.tell(earlier, curve[-1])
    trial = study.ask()
    data = torch.utils.data.DataLoader(torch.ones(4, 1), batch_size=2)
    trainer = L.Trainer(
        max_epochs=4,
        callbacks=[PruneOnValidation(trial, "val/accuracy")],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    # epoch 0: warm-up; epoch 1: best 0.72 >= 0.7 goes on; epoch 2: best 0.72 < 0.8 is pruned
    with pytest.raises(optuna.TrialPruned, match=r"epoch 2: val/accuracy = 0\.6500"):
        trainer.fit(_Accuracies([0.5, 0.72, 0.65, 0.9]), data, data)
    assert study.trials[2].intermediate_values == pytest.approx({0: 0.5, 1: 0.72, 2: 0.65})
    assert trainer.current_epoch == 2


# --- resuming, dead workers, kill -9 -------------------------------------------------------------------------
def _points(storage: str) -> list[tuple[int, str, dict, float | None]]:
    """(number, state, params, value) of each trial, in number order, without the dead workers' rows."""
    done = [t for t in trials(storage) if t.user_attrs.get("error") != DIED and t.state != TrialState.WAITING]
    return [(t.number, t.state.name, t.params, t.value) for t in sorted(done, key=lambda t: t.number)]


def test_a_resumed_study_continues_the_search_it_does_not_repeat_it(tmp_path):
    whole, pieces = f"sqlite:///{tmp_path}/whole.db", f"sqlite:///{tmp_path}/pieces.db"
    run(tmp_path / "w", whole, workers=1, n_trials=N_TRIALS)
    for total in (4, 8, N_TRIALS):  # a study resumed twice
        run(tmp_path / "p", pieces, workers=1, n_trials=total)
    assert _points(pieces) == _points(whole)  # each trial number got the point an uninterrupted run gives it
    first, second = ([tuple(p[2].values()) for p in _points(pieces)[i : i + 4]] for i in (0, 4))
    assert first != second  # the resumed run did not propose the first run's points again
    assert len({tuple(p[2].values()) for p in _points(pieces)}) >= 6  # of the 9 points in the space


def test_a_trial_left_running_by_a_dead_worker_is_failed_and_its_point_retried(tmp_path):
    storage = f"sqlite:///{tmp_path}/study.db"
    run(tmp_path, storage, workers=1, n_trials=3)
    study = optuna.load_study(study_name="hificl-syn-vqa", storage=open_storage(storage))
    study.enqueue_trial({})
    orphan = claim(study, study._storage, n_trials=4)  # a worker claims trial 3, samples it, then dies
    params = suggest(orphan, SearchSpace(n_tokens=[1, 4, 16], rank=[2, 8, 32]))
    study._storage.set_trial_system_attr(orphan._trial_id, OWNER, {"host": socket.gethostname(), "pid": 2**22})

    run(tmp_path, storage, workers=1, n_trials=4)
    done = {t.number: t for t in trials(storage)}
    assert len(done) == 5 and all(t.state.is_finished() for t in done.values())
    assert (done[3].state, done[3].user_attrs["error"]) == (TrialState.FAIL, DIED)
    assert done[4].params == params and done[4].user_attrs[RETRY_OF] == 3  # the slot came back, same point
    if params["rank"] == FAILING_RANK:  # the point itself fails, as it did for the first worker
        assert done[4].user_attrs["error"].startswith("ConfigError: rank 32 exceeds")
    else:
        assert done[4].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert run(tmp_path, storage, workers=1, n_trials=4)["trials"] == {
        s: sum(t.state.name == s for t in done.values()) for s in {t.state.name for t in done.values()}
    }  # a finished study adds nothing


_TUNE = """
import sys
from hificl.tuning import tune
from tests.tune_objectives import slow_objective
overrides = [f"study.output_dir={sys.argv[2]}", "search.n_tokens=[1,4,16]", "search.rank=[2,8,32]"]
tune(sys.argv[3], overrides, storage=sys.argv[1], n_trials=int(sys.argv[4]), objective_fn=slow_objective)
"""


def _tune_process(storage: str, out: Path, config: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", _TUNE, storage, str(out), str(config), str(N_TRIALS)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_study(tmp_path):
    whole, killed = f"sqlite:///{tmp_path}/whole.db", f"sqlite:///{tmp_path}/killed.db"
    spec = read_yaml(CONFIG)
    spec["study"]["sampler"] = {"name": "random", "seed": 0}  # history-free: retries may run in another order
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(spec))
    proc = _tune_process(whole, tmp_path / "w", config)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    rng = random.Random(0)
    for _ in range(2):  # killed twice, each time at a random moment after some trial finished
        proc = _tune_process(killed, tmp_path / "k", config)
        finished = len([t for t in _tries(killed) if t.state.is_finished()])
        deadline = time.monotonic() + 300
        while len([t for t in _tries(killed) if t.state.is_finished()]) <= finished and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = _tune_process(killed, tmp_path / "k", config)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]

    # the same points with the same outcomes (a retried point runs under a new trial number)
    assert sorted(map(repr, (p[1:] for p in _points(killed)))) == sorted(map(repr, (p[1:] for p in _points(whole))))
    assert (tmp_path / "k" / "trials.csv").is_file() and not list((tmp_path / "k").glob("*.tmp"))


def _tries(storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return trials(storage)
    except (KeyError, optuna.exceptions.StorageInternalError, ValueError):
        return []  # the study does not exist yet
