"""The LightningModule: one frozen LMM, one method attached to it, the task's metrics.

Only the method's parameters reach the optimizer and the checkpoint; the frozen model stays in eval mode
whatever the trainer does. Trained methods are evaluated on the student prompt (no demonstrations); k-shot
ICL is the only evaluation with demonstrations, set in the DataModule.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from hificl.data.prompts import DECODINGS, MAX_NEW_TOKENS, cut_at_stop_words
from hificl.data.tasks import TaskSpec
from hificl.errors import ConfigError, TrainingError
from hificl.lightning.batch import TrainBatch
from hificl.methods.base import Method
from hificl.metrics.chair import CHAIR
from hificl.metrics.cider import CIDEr
from hificl.metrics.okvqa import OKVQAAccuracy
from hificl.metrics.vqa import VQAAccuracy
from hificl.models.families import position_ids

# The frozen LMM is in eval mode on purpose (no dropout in the teacher or the student); Lightning warns about it.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


@dataclass
class TrainConfig:
    """Optimisation and generation settings; defaults are the papers' (AdamW, cosine, 10% warm-up)."""

    lr: float = 5e-3
    weight_decay: float = 1e-3
    warmup_ratio: float = 0.1
    epochs: int | None = None  # None: `epochs_at_1000` epochs at >= 1000 samples, 10 below (the papers' rule)
    epochs_at_1000: int = 5  # LIVE's preset: 10 (MimIC supplementary Sec. 7.2)
    accumulate: int = 1
    precision: str = "32-true"
    strategy: str = "auto"
    devices: int | str = 1
    accelerator: str = "auto"
    decoding: str = "beam3"  # "beam3": 3 beams, length_penalty 0 (the papers' code) | "greedy"; docs/protocol.md
    max_new_tokens: int | None = None  # None: 10 for VQA, 20 for captions (the papers' code)
    gradient_clip: float | None = None

    def __post_init__(self) -> None:
        if self.decoding not in DECODINGS:
            raise ConfigError(f"train.decoding must be one of {sorted(DECODINGS)}; got {self.decoding!r}.")

    def epochs_for(self, train_size: int) -> int:
        return self.epochs if self.epochs is not None else (self.epochs_at_1000 if train_size >= 1000 else 10)


def with_positions(model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Left-padded rows get the positions generate() would give them (a bare forward counts the padding)."""
    return {**inputs, "position_ids": position_ids(model, inputs)}


class ICLApproxModule(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        method: Method | None,
        spec: TaskSpec,
        train_config: TrainConfig,
        chair_vocabulary: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__()
        self.model, self.tokenizer, self.method, self.spec, self.cfg = model, tokenizer, method, spec, train_config
        self.model.requires_grad_(False)
        if method is not None:
            for p in method.parameters():
                p.requires_grad_(True)
        self.strict_loading = False
        if spec.metric == "caption":
            self.cider, self.chair = CIDEr(), CHAIR(vocabulary=chair_vocabulary)
        else:
            self.accuracy = OKVQAAccuracy() if spec.metric == "okvqa" else VQAAccuracy()
        self.predictions: list[dict[str, Any]] = []
        self.test_metrics: dict[str, float] = {}
        self.hallucinated_objects: dict[str, int] = {}
        self.step_times: list[float] = []
        self.eval_time = 0.0

    def train(self, mode: bool = True) -> ICLApproxModule:
        super().train(mode)
        self.model.eval()  # the frozen LMM never runs in training mode (no dropout, frozen norms)
        return self

    # --- training -------------------------------------------------------------------------------------
    def training_step(self, batch: TrainBatch, batch_idx: int) -> torch.Tensor:
        start = time.perf_counter()
        method = self.method
        student = self.model(**with_positions(self.model, batch.student.inputs), labels=batch.student.labels)
        teacher = None
        if method is not None and method.teacher_shots:
            if batch.teacher is None:
                raise TrainingError(f"{method.name} trains against a teacher, but the batch has no teacher rows.")
            with torch.no_grad(), method.disabled():
                teacher = self.model(**with_positions(self.model, batch.teacher.inputs))
        losses = method.training_loss(student.loss, student, teacher, batch) if method else {"loss": student.loss}
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise TrainingError(f"The training loss became {loss.item()} at step {self.global_step}; training stopped.")
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, prog_bar=True, batch_size=len(batch.meta))
        self.step_times.append(time.perf_counter() - start)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        if self.method is None:
            raise TrainingError("Nothing to train: this method has no parameters.")
        optimizer = torch.optim.AdamW(self.method.param_groups(self.cfg.lr, self.cfg.weight_decay))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(self.cfg.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("method.")}

    # --- evaluation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: TrainBatch) -> list[str]:
        inputs = batch.student.inputs
        out = self.model.generate(
            **inputs,
            max_new_tokens=self.cfg.max_new_tokens or MAX_NEW_TOKENS[self.spec.kind],
            **DECODINGS[self.cfg.decoding],
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        texts = self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [cut_at_stop_words(t, self.spec.kind) for t in texts]

    def _evaluate(self, batch: TrainBatch) -> None:
        start = time.perf_counter()
        predictions = self.generate(batch)
        self.eval_time += time.perf_counter() - start
        if self.spec.metric == "caption":
            self.cider.update(predictions, [m["captions"] for m in batch.meta])
            self.chair.update(predictions, [m["objects"] for m in batch.meta], [m["captions"] for m in batch.meta])
        else:
            self.accuracy.update(predictions, [m["answers"] for m in batch.meta])
        for m, p in zip(batch.meta, predictions, strict=True):
            self.predictions.append({**{k: m[k] for k in ("question_id", "image_id") if k in m}, "prediction": p})

    def validation_step(self, batch: TrainBatch, batch_idx: int) -> None:
        self._evaluate(batch)

    def test_step(self, batch: TrainBatch, batch_idx: int) -> None:
        self._evaluate(batch)

    def compute_metrics(self) -> dict[str, float]:
        if self.spec.metric == "caption":
            chair = self.chair.compute()
            counts: Counter[str] = Counter()
            for record in self.chair.caption_records():
                counts.update(record["hallucinated"])
            self.hallucinated_objects = dict(counts.most_common())
            result = {"cider": float(self.cider.compute()), **{k: float(v) for k, v in chair.items()}}
            self.cider.reset()
            self.chair.reset()
        else:
            result = {"accuracy": float(self.accuracy.compute())}
            self.accuracy.reset()
        return result

    def on_validation_epoch_end(self) -> None:
        metrics = self.compute_metrics()
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, prog_bar=True, sync_dist=True)
        self.predictions.clear()

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self.compute_metrics()
        self.log_dict({f"test/{k}": v for k, v in self.test_metrics.items()}, sync_dist=True)
