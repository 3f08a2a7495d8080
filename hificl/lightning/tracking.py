"""What joins a run's Trainer for tracking and resuming: loggers, the learning-rate monitor, the method's
diagnostics and per-epoch checkpoints (hificl.lightning.loggers / .diagnostics / .checkpoints); the checkpoint to
continue from is `checkpoints.resume_path`, which `hificl.experiment` hands to `fit`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger

from hificl.config import to_dict
from hificl.lightning.checkpoints import checkpoint_callbacks
from hificl.lightning.diagnostics import MethodDiagnostics
from hificl.lightning.loggers import build_loggers
from hificl.results import stable_id

#: Settings that say where or how visibly a run happens, not what it computes.
PLACE = ("output_dir", "overwrite", "run_dir", "progress")


@dataclass
class Tracking:
    loggers: list[Logger]
    callbacks: list[L.Callback]


def experiment_id(config: Any) -> str:
    return stable_id({k: v for k, v in to_dict(config).items() if k not in PLACE})


def tracking_for(config: Any, task: str, trains: bool) -> Tracking:
    """Loggers always (train.logger); when the run trains: LR monitor, diagnostics, and, with a run_dir,
    a checkpoint every epoch (the run_dir is claimed for this experiment first)."""
    loggers = build_loggers(config.train.logger, config.run_dir, f"{config.preset}-{task}")
    callbacks: list[L.Callback] = []
    if trains:
        callbacks.append(MethodDiagnostics())
        if loggers:
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        if config.run_dir:
            run_dir = Path(config.run_dir)
            callbacks += checkpoint_callbacks(run_dir, experiment_id(config))
    return Tracking(loggers, callbacks)
