"""What joins a run's Trainer for tracking and resuming: loggers, the learning-rate monitor, the method's
diagnostics, per-epoch checkpoints and the checkpoint to continue from (hificl.lightning.loggers / .diagnostics /
.checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger

from hificl.config import to_dict
from hificl.lightning.checkpoints import checkpoint_callbacks, resume_path
from hificl.lightning.diagnostics import MethodDiagnostics
from hificl.lightning.loggers import build_loggers
from hificl.results import stable_id

#: Settings that say where or how visibly a run happens, not what it computes.
PLACE = ("output_dir", "run_dir", "progress")


@dataclass
class Tracking:
    loggers: list[Logger]
    callbacks: list[L.Callback]
    resume_from: str | None  # a previous attempt's last checkpoint


def experiment_id(config: Any) -> str:
    return stable_id({k: v for k, v in to_dict(config).items() if k not in PLACE})


def tracking_for(config: Any, task: str, trains: bool) -> Tracking:
    """Loggers always (train.logger); when the run trains: LR monitor, diagnostics, and, with a run_dir,
    checkpoints every epoch plus the checkpoint a killed attempt left."""
    loggers = build_loggers(config.train.logger, config.run_dir, f"{config.preset}-{task}")
    callbacks: list[L.Callback] = []
    resume = None
    if trains:
        callbacks.append(MethodDiagnostics())
        if loggers:
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        if config.run_dir:
            run_dir = Path(config.run_dir)
            callbacks += checkpoint_callbacks(run_dir, experiment_id(config))
            resume = resume_path(run_dir)
    return Tracking(loggers, callbacks, resume)
