"""The LightningModule: one frozen LMM, one method attached to it, the task's metrics.

Only the method's parameters reach the optimizer and the checkpoint; the frozen model stays in eval mode
whatever the trainer does. Trained methods are evaluated on the student prompt (no demonstrations); k-shot
ICL is the only evaluation with demonstrations, set in the DataModule.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn
from transformers import get_scheduler

from hificl.batch import TrainBatch
from hificl.data.prompts import DECODINGS, MAX_NEW_TOKENS, cut_at_stop_words
from hificl.data.tasks import TaskSpec
from hificl.errors import ConfigError, TrainingError
from hificl.methods.base import Method
from hificl.methods.presets import TRAINING_DEFAULTS
from hificl.metrics.chair import CHAIR
from hificl.metrics.cider import CIDEr
from hificl.metrics.okvqa import OKVQAAccuracy
from hificl.metrics.vqa import VQAAccuracy
from hificl.models.families import position_ids

# The frozen LMM is in eval mode on purpose (no dropout in the teacher or the student); Lightning warns about it.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}
#: transformers' schedules that need nothing beyond warm-up and total steps.
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")


@dataclass
class TrainConfig:
    """Optimisation and generation settings; defaults are the papers' (`TRAINING_DEFAULTS`: AdamW, weight decay
    1e-3, cosine schedule, 10% warm-up)."""

    lr: float = 5e-3
    weight_decay: float = TRAINING_DEFAULTS["weight_decay"]
    optimizer: str = TRAINING_DEFAULTS["optimizer"]  # a key of OPTIMIZERS
    scheduler: str = TRAINING_DEFAULTS["scheduler"]  # one of SCHEDULERS, stepped every optimizer step
    warmup_ratio: float = TRAINING_DEFAULTS["warmup_ratio"]
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
    logger: str = "csv"  # csv, tensorboard, mlflow, wandb or none (hificl.lightning.loggers)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Unknown train.optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}.")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"Unknown train.scheduler {self.scheduler!r}; known: {', '.join(SCHEDULERS)}.")
        if self.decoding not in DECODINGS:
            raise ConfigError(f"train.decoding must be one of {sorted(DECODINGS)}; got {self.decoding!r}.")

    def epochs_for(self, train_size: int) -> int:
        """Epochs for a configured training-set size (the rule counts the samples asked for)."""
        return self.epochs if self.epochs is not None else (self.epochs_at_1000 if train_size >= 1000 else 10)


def with_positions(model: nn.Module, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Left-padded rows get the positions generate() would give them (a bare forward counts the padding)."""
    return {**inputs, "position_ids": position_ids(model, inputs)}


def training_losses(model: nn.Module, method: Method | None, batch: TrainBatch) -> dict[str, torch.Tensor]:
    """One batch's objective: the student's forward (query alone) and, for methods trained against a teacher,
    the frozen teacher's forward with demonstrations and the method disabled. {"loss": ..., other logged terms}.

    The one training step of the package: the LightningModule and `make bench` both call it."""
    student = model(**with_positions(model, batch.student.inputs), labels=batch.student.labels)
    if method is None:
        return {"loss": student.loss}
    teacher = None
    if method.teacher_shots:
        if batch.teacher is None:
            raise TrainingError(f"{method.name} trains against a teacher, but the batch has no teacher rows.")
        with torch.no_grad(), method.disabled():
            teacher = model(**with_positions(model, batch.teacher.inputs))
    return method.training_loss(student.loss, student, teacher, batch)


class ICLApproxModule(L.LightningModule):
    """The frozen LMM with one method attached (or none, for zero-shot and k-shot ICL) and the task's metrics.

    Test metrics are logged as "test/<name>" and kept in `test_metrics` (full precision) for the result row;
    `predictions` holds the generations of the last evaluation."""

    def __init__(self, model: nn.Module, tokenizer: Any, method: Method | None, spec: TaskSpec, train: TrainConfig):
        super().__init__()
        self.model, self.tokenizer, self.method, self.spec, self.train_config = model, tokenizer, method, spec, train
        self.save_hyperparameters(
            {
                "task": spec.name,
                "method": method.name if method is not None else None,
                "method_config": method.config_dict() if method is not None else {},
                "train": dataclasses.asdict(train),
            }
        )
        self.model.requires_grad_(False)
        if method is not None:
            for p in method.parameters():
                p.requires_grad_(True)
        self.strict_loading = False
        if spec.metric == "caption":
            self.cider = CIDEr()
        else:
            self.accuracy = OKVQAAccuracy() if spec.metric == "okvqa" else VQAAccuracy()
        self.predictions: list[dict[str, Any]] = []
        self.test_metrics: dict[str, float] = {}
        self.hallucinated_objects: dict[str, int] = {}

    def setup(self, stage: str) -> None:
        """CHAIR counts the objects of the DataModule's vocabulary (COCO's 80 categories when it has none)."""
        if self.spec.metric == "caption" and not hasattr(self, "chair"):
            datamodule = getattr(self.trainer, "datamodule", None)
            self.chair = CHAIR(vocabulary=getattr(datamodule, "chair_vocabulary", None))

    def train(self, mode: bool = True) -> ICLApproxModule:
        super().train(mode)
        self.model.eval()  # the frozen LMM never runs in training mode (no dropout, frozen norms)
        if self.method is not None:  # ... but a method's own modules inside it (LoRA's dropout) follow the trainer
            self.method.train(mode)
        return self

    # --- training -------------------------------------------------------------------------------------
    def training_step(self, batch: TrainBatch, batch_idx: int) -> torch.Tensor:
        losses = training_losses(self.model, self.method, batch)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise TrainingError(f"The training loss became {loss.item()} at step {self.global_step}; training stopped.")
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, prog_bar=True, batch_size=len(batch.meta))
        return loss

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """The config's optimizer over the method's parameter groups and its schedule, stepped every step."""
        if self.method is None:
            raise TrainingError("Nothing to train: this method has no parameters.")
        cfg = self.train_config
        optimizer = OPTIMIZERS[cfg.optimizer](self.method.param_groups(cfg.lr, cfg.weight_decay))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = math.ceil(cfg.warmup_ratio * total)
        scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("method.")}

    # --- evaluation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: TrainBatch) -> list[str]:
        inputs = batch.student.inputs
        model: Any = self.model  # a transformers PreTrainedModel
        out = model.generate(
            **inputs,
            max_new_tokens=self.train_config.max_new_tokens or MAX_NEW_TOKENS[self.spec.kind],
            **DECODINGS[self.train_config.decoding],
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        texts = self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [cut_at_stop_words(t, self.spec.kind) for t in texts]

    def _evaluate(self, batch: TrainBatch) -> None:
        predictions = self.generate(batch)
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

    def on_test_epoch_start(self) -> None:
        self.predictions.clear()

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self.compute_metrics()
        self.log_dict({f"test/{k}": v for k, v in self.test_metrics.items()}, sync_dist=True)
