"""LoRA on the language model's attention projections, through peft, as a baseline method.

Targets are the q/k/v/o projection Linear modules of the attention modules `find_language_model` returns, by
their full module names, so a vision tower's projections (same short names) are never wrapped. The method owns
the A/B matrices (sized from the attention shape, so a saved method loads before it is attached) and hands them
to peft's injected layers; peft's adapter switch serves the disabled() pass. Detaching puts the original
Linear modules back, so the frozen model is bit-identical afterwards. Initialisation as peft's default:
A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming-uniform, a = sqrt(5)), B = 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn

from hificl.errors import ConfigError, ModelError
from hificl.methods.base import Method
from hificl.models.layers import AttentionShape, find_language_model

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
ADAPTER = "default"


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = PROJECTIONS

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))  # JSON round-trips give lists

    def validate(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1; got rank={self.rank}.")
        if self.alpha <= 0:
            raise ConfigError(f"LoRA alpha must be > 0; got alpha={self.alpha}.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRA dropout must be in [0, 1); got dropout={self.dropout}.")
        if not self.targets or not set(self.targets) <= set(PROJECTIONS):
            raise ConfigError(f"LoRA targets must be a non-empty subset of {PROJECTIONS}; got {self.targets}.")


def projection_sizes(shape: AttentionShape) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each attention projection."""
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    h = shape.hidden_size
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h)}


def _key(layer: int, projection: str, matrix: str) -> str:
    return f"layers_{layer}_{projection}_lora_{matrix}"


class LoRA(Method):
    name = "lora"
    config_class = LoRAConfig

    def __init__(self, config: LoRAConfig, shape: AttentionShape, generator: torch.Generator | None = None) -> None:
        config.validate()
        super().__init__(config, shape)
        sizes, r = projection_sizes(shape), config.rank
        self.lora = nn.ParameterDict()
        for layer in range(shape.num_layers):
            for projection in config.targets:
                fan_in, fan_out = sizes[projection]
                bound = 1 / math.sqrt(fan_in)
                a = (torch.rand(r, fan_in, generator=generator) * 2 - 1) * bound
                self.lora[_key(layer, projection, "A")] = nn.Parameter(a)
                self.lora[_key(layer, projection, "B")] = nn.Parameter(torch.zeros(fan_out, r))
        self._models: list[nn.Module] = []  # a list, so the frozen model never becomes a submodule
        self._wrapped: dict[str, LoraLayer] = {}
        self._requires_grad: dict[str, bool] = {}

    def target_names(self, model: nn.Module) -> dict[str, tuple[int, str]]:
        """Full module name -> (layer, projection) of every targeted language-model projection."""
        lm = find_language_model(model)
        if lm.shape != self.shape:
            raise ValueError(f"{self.name} was sized for {self.shape}, the model has {lm.shape}.")
        names = {id(m): n for n, m in model.named_modules()}
        sizes, targets = projection_sizes(self.shape), {}
        for layer, attention in enumerate(lm.attentions):
            for projection in self.config.targets:
                module = getattr(attention, projection, None)
                if not isinstance(module, nn.Linear):
                    raise ModelError(f"{type(attention).__name__} in layer {layer} has no Linear {projection}.")
                if (module.in_features, module.out_features) != sizes[projection]:
                    raise ModelError(f"Layer {layer} {projection} is not shaped {sizes[projection]}.")
                targets[names[id(module)]] = (layer, projection)
        return targets

    def attach(self, model: nn.Module) -> None:
        if self._models:
            raise RuntimeError("LoRA is already attached: detach it first.")
        targets = self.target_names(model)
        self._requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        peft_config = PeftLoraConfig(
            r=self.config.rank,
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            target_modules=sorted(targets),
        )
        inject_adapter_in_model(peft_config, model, adapter_name=ADAPTER)
        for name, (layer, projection) in targets.items():
            wrapped: Any = model.get_submodule(name)  # a peft LoraLayer
            base = wrapped.get_base_layer()
            for matrix, holder in (("A", wrapped.lora_A), ("B", wrapped.lora_B)):
                param = self.lora[_key(layer, projection, matrix)]
                param.data = param.data.to(base.weight.device)
                holder[ADAPTER].weight = param
            wrapped.train(base.training)  # new dropout modules start in training mode
            self._wrapped[name] = wrapped
        self._models.append(model)

    def detach(self) -> None:
        if not self._models:
            return
        model = self._models.pop()
        for name, wrapped in self._wrapped.items():
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, wrapped.get_base_layer())
        for name, param in model.named_parameters():
            param.requires_grad_(self._requires_grad.get(name, param.requires_grad))
        self._wrapped, self._requires_grad = {}, {}

    @contextmanager
    def disabled(self) -> Iterator[None]:
        if not self._models:
            raise RuntimeError(f"{self.name} is not attached to a model.")
        for wrapped in self._wrapped.values():
            wrapped.enable_adapters(False)
        try:
            yield
        finally:
            for wrapped in self._wrapped.values():
                wrapped.enable_adapters(True)
