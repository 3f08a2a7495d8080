"""LIVE: one learned in-context vector per decoder layer, added to that layer's FFN output, norm-preserving.

A forward hook on each layer's MLP turns its output h (per token) into s * ||h|| / ||s|| with s = h + alpha_l v_l:
the shifted output rescaled to the norm h had, as LIVE's intervention hook does. Vectors start at N(0, 0.01^2)
as LIVE's GlobalICVEncoder; the per-layer scale alpha starts at 0.1 and has its own learning rate (1e-2).
Objective: KL(teacher || student) on the answer tokens against the frozen model run with demonstrations,
plus 0.5 x CE.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from hificl.batch import TrainBatch
from hificl.errors import ConfigError
from hificl.methods.alignment import find_ffn
from hificl.methods.base import Method
from hificl.methods.losses import answer_kl, require_teacher
from hificl.models.layers import AttentionShape, find_language_model


@dataclass(frozen=True)
class LIVEConfig:
    alpha_init: float = 0.1
    #: learning rate of the per-layer scales alpha (the vectors use the run's lr).
    alpha_lr: float = 1e-2
    ce_weight: float = 0.5
    kl_weight: float = 1.0
    #: demonstrations in the teacher's prompt (LIVE's KL target is the ICL run's output distribution).
    teacher_shots: int = 8

    def validate(self) -> None:
        if self.teacher_shots < 1:
            raise ConfigError(f"LIVE distils a teacher run with demonstrations: teacher_shots={self.teacher_shots}.")
        if self.alpha_lr <= 0:
            raise ConfigError(f"LIVE alpha_lr must be > 0; got alpha_lr={self.alpha_lr}.")
        for field in ("ce_weight", "kl_weight"):
            if getattr(self, field) < 0:
                raise ConfigError(f"LIVE {field} must be >= 0; got {field}={getattr(self, field)}.")


class LIVE(Method):
    name = "live"
    config_class = LIVEConfig

    def __init__(self, config: LIVEConfig, shape: AttentionShape, generator: torch.Generator | None = None) -> None:
        config.validate()
        super().__init__(config, shape)
        self.vectors = nn.Parameter(torch.randn(shape.num_layers, shape.hidden_size, generator=generator) * 0.01)
        self.alpha = nn.Parameter(torch.full((shape.num_layers,), float(config.alpha_init)))
        self._handles: list[RemovableHandle] = []
        self._active = False

    def shifted(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        """The FFN output moved by alpha_l v_l and rescaled to its own per-token norm."""
        shift = (self.alpha[layer] * self.vectors[layer]).to(output.dtype)
        moved = output + shift
        return moved * (output.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True))

    def _hook(self, layer: int, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        return self.shifted(layer, output) if self._active else None

    def attach(self, model: nn.Module) -> None:
        if self._handles:
            raise RuntimeError("LIVE is already attached: detach it first.")
        lm = find_language_model(model)
        if lm.shape != self.shape:
            raise ValueError(f"{self.name} was sized for {self.shape}, the model has {lm.shape}.")
        for index, layer in enumerate(lm.layers):
            self._handles.append(find_ffn(layer, index).register_forward_hook(partial(self._hook, index)))
        self._active = True

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._active = [], False

    @contextmanager
    def disabled(self) -> Iterator[None]:
        if not self._handles:
            raise RuntimeError(f"{self.name} is not attached to a model.")
        was, self._active = self._active, False
        try:
            yield
        finally:
            self._active = was

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return [
            {"params": [self.vectors], "lr": lr, "weight_decay": weight_decay},
            {"params": [self.alpha], "lr": self.config.alpha_lr, "weight_decay": weight_decay},
        ]

    def training_loss(self, ce: torch.Tensor, student: Any, teacher: Any, batch: TrainBatch) -> dict[str, torch.Tensor]:
        require_teacher(batch, teacher, "LIVE")
        kl = answer_kl(student.logits, teacher.logits, batch)
        return {"loss": self.config.kl_weight * kl + self.config.ce_weight * ce, "ce": ce, "kl": kl}
