"""HiFICL: n learnable low-rank virtual key/value tokens in every attention head of the frozen language model.

Per layer and per query head: K_D = K_A K_B and V_D = V_A V_B with K_A, V_A in R^{n x r} and K_B, V_B in
R^{r x d}. Initialisation as the reference code: K_A ~ N(0, 1), K_B ~ N(0, 0.01^2), V_A ~ N(0, 1), V_B = 0, so
at the start the output is alpha(q) SA(q, K, V): NOT the identity, the softmax mass on the virtual keys already
scales the real attention down. Ablations as the reference code does them:
- full_rank_k: K_D is a free n x d matrix per head, ~ N(0, 0.01^2);
- full_rank_v: V_D is a free n x d matrix per head, = 0;
- scale_sa=False ("w/o SA scaling", alpha = 1): SA(q, K, V) + beta(q) V_D, beta still normalised by Z1 + Z2.
Trained with the task cross-entropy alone; "+teacher" (`teacher_shots` > 0) adds MimIC's layer-wise alignment of
each decoder layer's FFN output to a frozen teacher run with that many demonstrations (loss = CE + alignment).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hificl.attention import VirtualTokens
from hificl.batch import TrainBatch
from hificl.errors import ConfigError
from hificl.methods.alignment import LayerCapture
from hificl.methods.base import VirtualTokenMethod
from hificl.methods.losses import layerwise_alignment, require_teacher
from hificl.models.layers import AttentionShape


@dataclass(frozen=True)
class HiFICLConfig:
    n_tokens: int = 8
    rank: int = 8
    full_rank_k: bool = False
    full_rank_v: bool = False
    scale_sa: bool = True
    per_kv_head: bool = False
    #: > 0: add MimIC's layer-wise FFN-output alignment to a teacher run with this many demonstrations ("+teacher").
    teacher_shots: int = 0

    def validate(self, shape: AttentionShape) -> None:
        if self.n_tokens < 1:
            raise ConfigError(f"HiFICL needs at least one virtual token per head; got n_tokens={self.n_tokens}.")
        low_rank = not (self.full_rank_k and self.full_rank_v)
        if low_rank and not 1 <= self.rank <= shape.head_dim:
            raise ConfigError(f"HiFICL rank must be in 1..head_dim={shape.head_dim}; got rank={self.rank}.")
        if self.teacher_shots < 0:
            raise ConfigError(f"HiFICL teacher_shots must be >= 0; got teacher_shots={self.teacher_shots}.")


class HiFICL(VirtualTokenMethod):
    name = "hificl"
    config_class = HiFICLConfig

    def __init__(self, config: HiFICLConfig, shape: AttentionShape, generator: torch.Generator | None = None) -> None:
        config.validate(shape)
        super().__init__(config, shape)
        heads = shape.num_kv_heads if config.per_kv_head else shape.num_heads
        size = (shape.num_layers, heads, config.n_tokens)
        n, r, d = config.n_tokens, config.rank, shape.head_dim

        def normal(*dims: int, std: float) -> nn.Parameter:
            return nn.Parameter(torch.randn(*size[:2], *dims, generator=generator) * std)

        if config.full_rank_k:
            self.k = normal(n, d, std=0.01)
        else:
            self.k_a, self.k_b = normal(n, r, std=1.0), normal(r, d, std=0.01)
        if config.full_rank_v:
            self.v = nn.Parameter(torch.zeros(*size, d))
        else:
            self.v_a, self.v_b = normal(n, r, std=1.0), nn.Parameter(torch.zeros(*size[:2], r, d))
        self.capture = LayerCapture("ffn", self) if config.teacher_shots else None

    def keys(self, layer: int) -> torch.Tensor:
        return self.k[layer] if self.config.full_rank_k else self.k_a[layer] @ self.k_b[layer]

    def values(self, layer: int) -> torch.Tensor:
        return self.v[layer] if self.config.full_rank_v else self.v_a[layer] @ self.v_b[layer]

    def layer_tokens(self, layer: int, module: nn.Module) -> VirtualTokens:
        return VirtualTokens(
            keys=self.keys(layer),
            values=self.values(layer),
            form="joint" if self.config.scale_sa else "unscaled",
            per_kv_head=self.config.per_kv_head,
        )

    def attach(self, model: nn.Module) -> None:
        super().attach(model)
        if self.capture is not None:
            self.capture.attach(model)

    def detach(self) -> None:
        super().detach()
        if self.capture is not None:
            self.capture.detach()

    @contextmanager
    def disabled(self) -> Iterator[None]:
        with super().disabled():
            if self.capture is None:
                yield
                return
            with self.capture.teacher_pass():
                yield

    def training_loss(self, ce: torch.Tensor, student: Any, teacher: Any, batch: TrainBatch) -> dict[str, torch.Tensor]:
        if self.capture is None:
            return {"loss": ce, "ce": ce}
        require_teacher(batch, teacher, "HiFICL+teacher")
        align = layerwise_alignment(*self.capture.take(), batch)
        return {"loss": ce + align, "ce": ce, "align": align}
