"""MimIC: a query-dependent shift vector in every attention head, as ONE virtual token of the shared primitive.

Per layer and query head: a shift v in R^d and a linear map f(q) = w . q + b standing in for log Z1, so
mu(q) = exp(f(q)) / (exp(f(q)) + Z2) with Z2 over the real keys q may see (causal + padding mask; the public
code sums Z2 over ALL keys, unmasked). A virtual token with key w / scaling (the kernel multiplies logits by the
module's `scaling` = 1/sqrt(d)), logit bias b and value v has exactly this softmax mass, so
- form "paper":       (1 - mu) SA + mu v  (the paper's equation; the primitive's "joint" form);
- form "public-code": SA + mu v            (what the public code's `do_shift` computes; the "unscaled" form).
Initialisation as the public code: v ~ N(0, 1e-3^2), w ~ N(0, 0.02^2), b = 0.
Objective: layer-wise hidden-state alignment to the frozen model run with demonstrations + 0.5 x CE.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hificl.attention import OutputForm, VirtualTokens
from hificl.batch import TrainBatch
from hificl.errors import ConfigError
from hificl.methods.base import VirtualTokenMethod
from hificl.methods.losses import layerwise_alignment, require_teacher
from hificl.models.layers import AttentionShape

FORMS: dict[str, OutputForm] = {"paper": "joint", "public-code": "unscaled"}


@dataclass(frozen=True)
class MimICConfig:
    form: str = "paper"
    ce_weight: float = 0.5
    align_weight: float = 1.0
    #: how per-layer MSEs combine: "mean" (public code) or "sum".
    layer_reduction: str = "mean"

    def validate(self) -> None:
        if self.form not in FORMS:
            raise ConfigError(f"MimIC form must be one of {sorted(FORMS)}; got form={self.form!r}.")
        if self.layer_reduction not in ("mean", "sum"):
            raise ConfigError(f"MimIC layer_reduction must be 'mean' or 'sum'; got {self.layer_reduction!r}.")
        for field in ("ce_weight", "align_weight"):
            if getattr(self, field) < 0:
                raise ConfigError(f"MimIC {field} must be >= 0; got {field}={getattr(self, field)}.")


class MimIC(VirtualTokenMethod):
    name = "mimic"
    config_class = MimICConfig
    needs_teacher = True

    def __init__(self, config: MimICConfig, shape: AttentionShape, generator: torch.Generator | None = None) -> None:
        config.validate()
        super().__init__(config, shape)
        size = (shape.num_layers, shape.num_heads, shape.head_dim)
        self.shift = nn.Parameter(torch.randn(*size, generator=generator) * 1e-3)
        self.f_weight = nn.Parameter(torch.randn(*size, generator=generator) * 0.02)
        self.f_bias = nn.Parameter(torch.zeros(shape.num_layers, shape.num_heads))

    def layer_tokens(self, layer: int, module: nn.Module) -> VirtualTokens:
        return VirtualTokens(
            keys=(self.f_weight[layer] / typing.cast(float, module.scaling)).unsqueeze(1),
            values=self.shift[layer].unsqueeze(1),
            logit_bias=self.f_bias[layer].unsqueeze(1),
            form=FORMS[self.config.form],
        )

    def training_loss(self, ce: torch.Tensor, student: Any, teacher: Any, batch: TrainBatch) -> dict[str, torch.Tensor]:
        require_teacher(batch, teacher, "MimIC")
        align = layerwise_alignment(
            student.hidden_states[1:], teacher.hidden_states[1:], batch, self.config.layer_reduction
        )
        loss = self.config.align_weight * align + self.config.ce_weight * ce
        return {"loss": loss, "ce": ce, "align": align}
