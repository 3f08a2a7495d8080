"""MimIC: a query-dependent shift vector in every attention head, as ONE virtual token of the shared primitive.

Per layer and query head: a shift v in R^d and a linear map f(q) = w . q + b standing in for log Z1, so
mu(q) = exp(f(q)) / (exp(f(q)) + Z2) with Z2 over the real keys q may see (causal + padding mask; the public
code sums Z2 over ALL keys, unmasked, which this package does not copy). A virtual token with key w / scaling
(= w sqrt d: the kernel multiplies logits by the module's `scaling` = 1/sqrt(d)), logit bias b and value v has
exactly this softmax mass, so
- form "unscaled": SA + mu v            MimIC (paper Sec. 3 and its public code's `do_shift`); the default;
- form "joint":    (1 - mu) SA + mu v   the supplementary's Tab. 8 "learnable vector" variant (58.84 vs 59.64).
- shift "linear" (with form "joint"): (1 - mu) SA + mu h(q), h: R^d -> R^d a linear layer per head, h(q) = q W + v
  (v is h's bias), standing in for SA(q, K_D, V_D) (supplementary Sec. 8.2, Tab. 8 "linear layer", 47.68): the
  virtual token's value becomes query-dependent (`VirtualTokens.value_map` = W). The supplementary gives no
  initialisation; W starts at N(0, 1e-3^2 / d), so h(q) starts as small as the vector variant's v.
MimIC's own ablations (paper Tab. "head-sharing / query-sharing mu"):
- mu "shared-head":  one f per layer shared by all its heads (tied w and b; each head keeps its own v and Z2).
  The public code's head-sharing run instead feeds the concatenated heads to one f and averages log Z2 over
  heads, which per-head virtual tokens cannot express; the tied-f form is the closest exact one and is named so.
- mu "shared-query": mu no longer depends on the query: SA + mu_h v_h with a learned constant mu_h = sigmoid(m_h)
  per head, added to each head's output in front of W_o (a forward pre-hook on o_proj; no virtual token).
Initialisation as the public code: v ~ N(0, 1e-3^2), w ~ N(0, 0.02^2), b = 0 (shared-query: m = 0).
Objective: layer-wise L2 alignment of each decoder layer's FFN output (or self-attention output, "after SA") to the
frozen model run WITH `teacher_shots` demonstrations, + 0.5 x CE (paper Sec. 3.3, lambda = 0.5).
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from hificl.attention import VirtualTokens
from hificl.batch import TrainBatch
from hificl.errors import ConfigError, ModelError
from hificl.methods.alignment import ALIGN_TARGETS, LayerCapture
from hificl.methods.base import VirtualTokenMethod
from hificl.methods.losses import layerwise_alignment, require_teacher
from hificl.models.layers import AttentionShape, find_language_model

FORMS = ("unscaled", "joint")
SHIFTS = ("vector", "linear")
MU = ("per-head", "shared-head", "shared-query")


@dataclass(frozen=True)
class MimICConfig:
    #: "unscaled" SA + mu v (MimIC) or "joint" (1 - mu) SA + mu v (Tab. 8 "learnable vector").
    form: str = "unscaled"
    #: "per-head" (MimIC), "shared-head" or "shared-query" (MimIC's ablations).
    mu: str = "per-head"
    #: the shifted value: "vector" v (MimIC) or "linear" h(q) = q W + v (Tab. 8 "linear layer").
    shift: str = "vector"
    #: which output of each decoder layer is aligned: "ffn" (MimIC) or "attention" ("after SA", Fig. 7).
    align_to: str = "ffn"
    #: demonstrations in the teacher's prompt (MimIC: 32 on Idefics1, 8 on Idefics2).
    teacher_shots: int = 8
    ce_weight: float = 0.5
    align_weight: float = 1.0
    #: how per-layer MSEs combine: "mean" (public code) or "sum".
    layer_reduction: str = "mean"

    def validate(self) -> None:
        for field, allowed in (("form", FORMS), ("mu", MU), ("shift", SHIFTS), ("align_to", ALIGN_TARGETS)):
            value = getattr(self, field)
            if value not in allowed:
                raise ConfigError(f"MimIC {field} must be one of {list(allowed)}; got {field}={value!r}.")
        if self.mu == "shared-query" and self.form != "unscaled":
            raise ConfigError("MimIC mu='shared-query' adds a constant mu v to SA; it takes form='unscaled' only.")
        if self.mu == "shared-query" and self.shift != "vector":
            raise ConfigError("MimIC mu='shared-query' adds a constant mu v to SA; it takes shift='vector' only.")
        if self.layer_reduction not in ("mean", "sum"):
            raise ConfigError(f"MimIC layer_reduction must be 'mean' or 'sum'; got {self.layer_reduction!r}.")
        if self.teacher_shots < 1:
            raise ConfigError(f"MimIC aligns to a teacher run with demonstrations: teacher_shots={self.teacher_shots}.")
        for field in ("ce_weight", "align_weight"):
            if getattr(self, field) < 0:
                raise ConfigError(f"MimIC {field} must be >= 0; got {field}={getattr(self, field)}.")


class MimIC(VirtualTokenMethod):
    name = "mimic"
    config_class = MimICConfig

    def __init__(self, config: MimICConfig, shape: AttentionShape, generator: torch.Generator | None = None) -> None:
        config.validate()
        super().__init__(config, shape)
        layers, heads, d = shape.num_layers, shape.num_heads, shape.head_dim
        self.shift = nn.Parameter(torch.randn(layers, heads, d, generator=generator) * 1e-3)
        if config.shift == "linear":
            self.shift_map = nn.Parameter(torch.randn(layers, heads, d, d, generator=generator) * (1e-3 / d**0.5))
        if config.mu == "shared-query":
            self.mu_logit = nn.Parameter(torch.zeros(layers, heads))
        else:
            f_heads = 1 if config.mu == "shared-head" else heads
            self.f_weight = nn.Parameter(torch.randn(layers, f_heads, d, generator=generator) * 0.02)
            self.f_bias = nn.Parameter(torch.zeros(layers, f_heads))
        self.capture = LayerCapture(config.align_to, self)
        self._hooks: list[RemovableHandle] = []
        self._shift_on = True

    def layer_tokens(self, layer: int, module: nn.Module) -> VirtualTokens:
        heads = self.shape.num_heads
        return VirtualTokens(
            keys=(self.f_weight[layer] / typing.cast(float, module.scaling)).expand(heads, -1).unsqueeze(1),
            values=self.shift[layer].unsqueeze(1),
            logit_bias=self.f_bias[layer].expand(heads).unsqueeze(1),
            value_map=self.shift_map[layer] if self.config.shift == "linear" else None,
            form=self.config.form,
        )

    def _constant_shift(self, layer: int, _module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Shared-query mu: each head's output (the o_proj input, heads side by side) + sigmoid(m_h) v_h."""
        if not self._shift_on:
            return None
        heads = args[0]
        shift = (torch.sigmoid(self.mu_logit[layer])[:, None] * self.shift[layer]).flatten().to(heads.dtype)
        return (heads + shift, *args[1:])

    def attach(self, model: nn.Module) -> None:
        if self.config.mu == "shared-query":
            lm = find_language_model(model)
            if lm.shape != self.shape:
                raise ValueError(f"{self.name} was sized for {self.shape}, the model has {lm.shape}.")
            for layer, attention in enumerate(lm.attentions):
                out = getattr(attention, "o_proj", None)
                if not isinstance(out, nn.Linear) or out.in_features != self.shape.num_heads * self.shape.head_dim:
                    raise ModelError(f"{type(attention).__name__} in layer {layer} has no o_proj over the heads.")
                self._hooks.append(out.register_forward_pre_hook(partial(self._constant_shift, layer)))
        else:
            super().attach(model)
        self.capture.attach(model)

    def detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        super().detach()
        self.capture.detach()

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """The frozen model (the teacher pass): shift off, and the capture records into the teacher's slots."""
        with self.capture.teacher_pass():
            if self.config.mu != "shared-query":
                with super().disabled():
                    yield
                return
            was, self._shift_on = self._shift_on, False
            try:
                yield
            finally:
                self._shift_on = was

    def training_loss(self, ce: torch.Tensor, student: Any, teacher: Any, batch: TrainBatch) -> dict[str, torch.Tensor]:
        require_teacher(batch, teacher, "MimIC")
        s, t = self.capture.take()
        align = layerwise_alignment(s, t, batch, self.config.layer_reduction)
        loss = self.config.align_weight * align + self.config.ce_weight * ce
        return {"loss": loss, "ce": ce, "align": align}
