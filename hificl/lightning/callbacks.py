"""Callbacks the experiment's Trainer always carries; `hificl.experiment.build_trainer` is where others join."""

from __future__ import annotations

import statistics
import time
from typing import Any

import lightning as L

from hificl.results import Timings


class RunTimer(L.Callback):
    """Wall-clock of the fit, of every training step (forward, backward, optimizer) and of the test batches.

    Kept out of the LightningModule so the module holds only what the numbers depend on; timings go into the
    result row, never into a table."""

    def __init__(self) -> None:
        self.fit_s = 0.0
        self.step_s: list[float] = []
        self.test_s = 0.0
        self._start: dict[str, float] = {}

    def _tick(self, key: str) -> None:
        self._start[key] = time.perf_counter()

    def _tock(self, key: str) -> float:
        return time.perf_counter() - self._start.pop(key)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tick("fit")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_s = self._tock("fit")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self._tick("step")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.step_s.append(self._tock("step"))

    def on_test_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int, dataloader_idx: int = 0
    ) -> None:
        self._tick("test")

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int, dl_idx: int = 0
    ) -> None:
        self.test_s += self._tock("test")

    def timings(self, eval_size: int) -> Timings:
        step = statistics.median(self.step_s) if self.step_s else 0.0
        return Timings(self.fit_s, step, self.test_s, 1000 * self.test_s / max(1, eval_size))
