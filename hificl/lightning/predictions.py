"""A callback that keeps every test generation with its references, so metrics can be recomputed without a run.

Each item is the evaluation row's meta (ids, answers or captions + objects) plus the generation and the index
of the batch it was scored in: the metrics accumulate batch by batch (VQA accuracy sums a batch's scores, then
adds the sum), so replaying the same batches in the same order gives the stored numbers back bit for bit
(`hificl.rescore`). Single-process evaluation: under DDP each rank keeps its own share.
"""

from __future__ import annotations

from typing import Any

import lightning as L

#: Version of the predictions file's layout, written into it.
FORMAT = 1


class KeepPredictions(L.Callback):
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.task: str | None = None
        self.metric: str | None = None
        self.vocabulary: dict[str, list[str]] | None = None

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.items = []

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """The module appends this batch's generations to `pl_module.predictions` in test_step."""
        rows = batch.meta
        made_so_far: list[dict[str, Any]] = getattr(pl_module, "predictions")  # noqa: B009 (a Module attribute)
        generated = made_so_far[len(made_so_far) - len(rows) :]
        for meta, made in zip(rows, generated, strict=True):
            self.items.append({**meta, "prediction": made["prediction"], "batch": batch_idx})

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        spec: Any = getattr(pl_module, "spec")  # noqa: B009 (a Module attribute)
        self.task, self.metric = spec.name, spec.metric
        chair = getattr(pl_module, "chair", None)
        self.vocabulary = getattr(chair, "vocabulary", None)

    def payload(self) -> dict[str, Any]:
        """The predictions file: {"format", "task", "metric", "chair_vocabulary", "items"}."""
        return {
            "format": FORMAT,
            "task": self.task,
            "metric": self.metric,
            "chair_vocabulary": self.vocabulary,
            "items": self.items,
        }
