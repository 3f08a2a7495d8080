"""The real objective: train HiFICL with the trial's n/r (/lr) and return its validation metric.

Validation runs after every epoch so a Lightning callback can hand each epoch's metric to Optuna's pruner and
stop an unpromising trial early (optuna-integration's callback, which needs a package we do not install).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import optuna

from hificl.config import deep_merge
from hificl.errors import ConfigError


class PruneOnValidation(L.Callback):
    """Report `monitor` (e.g. "val/accuracy") to the trial after each validation; raise TrialPruned if told to."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor
        self.last: float | None = None  # the last epoch's validation metric: what the trial is scored on

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if self.monitor not in trainer.callback_metrics:
            logged = sorted(trainer.callback_metrics)
            raise ConfigError(f"Validation logged no {self.monitor!r} to prune on; it logged {logged}.")
        value = self.last = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.monitor} = {value:.4f}")


def experiment_objective(trial: optuna.Trial, values: dict[str, Any], metric: str) -> float:
    from hificl.experiment import experiment_config, run_experiment

    config = experiment_config(deep_merge(values, {"validate": True, "progress": False}))
    pruner = PruneOnValidation(trial, f"val/{metric}")
    row = run_experiment(config, callbacks=[pruner])
    if metric not in row.metrics:
        raise ConfigError(f"tune.study.metric {metric!r} is not among the task's metrics {sorted(row.metrics)}.")
    if pruner.last is None:
        raise ConfigError("The trial ran no validation epoch, so it has no validation metric to be scored on.")
    trial.set_user_attr("train_time_s", round(row.timings.train_s, 2))
    return pruner.last  # the validation set's, never the evaluation set's: model selection must not see it
