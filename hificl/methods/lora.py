"""LoRA through peft, as a baseline method: the papers' form and the language-model-only forms.

Targets are chosen as peft chooses them from a `target_modules` suffix list: every nn.Linear whose last name
component is in `targets`. Scope "model" (the papers' LoRA: MimIC supplementary Sec. 7.2 "W_q, W_k, W_v and W_o in
all attention layers of both the vision and language models", run by both public codes as peft's
["q_proj", "k_proj", "v_proj", "o_proj"] over the whole model) reaches the vision tower, the resampler and the
language model alike; scope "language-model" keeps to the language model's self-attention modules (`lora-lm`,
LoRA-dagger). Fused projections (Phi-3's `qkv_proj`) get LoRA on the fused Linear. Note what the suffix list
does on the papers' models: SigLIP/CLIP vision towers name W_o `out_proj`, so their W_o is NOT adapted; that is
what reproduces the papers' counts (HiFICL: 19.7M on LLaVA-Interleave-7B; MimIC: 25M on Idefics-9B); add
"out_proj" to `targets` for the literal reading of the text.

The method owns the A/B matrices (sized from the model's target modules when it is built, so a saved method loads
before it is attached) and hands them to peft's injected layers; peft's adapter switch serves the disabled() pass.
Detaching puts the original Linear modules back, so the frozen model is bit-identical afterwards. Initialisation as
peft's default: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming-uniform, a = sqrt(5)), B = 0.
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

#: peft-style suffixes: the papers' q/k/v/o, plus the fused q/k/v projection of Phi-3-style attention.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj")
SCOPES = ("model", "language-model")
ADAPTER = "default"


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    #: module-name suffixes, as peft's `target_modules` list.
    targets: tuple[str, ...] = PROJECTIONS
    #: "model": every matching Linear of the whole LMM; "language-model": its self-attention modules only.
    scope: str = "model"

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))  # JSON round-trips give lists

    def validate(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1; got rank={self.rank}.")
        if self.alpha <= 0:
            raise ConfigError(f"LoRA alpha must be > 0; got alpha={self.alpha}.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRA dropout must be in [0, 1); got dropout={self.dropout}.")
        if not self.targets or not all(isinstance(t, str) and t and "." not in t for t in self.targets):
            raise ConfigError(f"LoRA targets must be a non-empty list of module-name suffixes; got {self.targets}.")
        if self.scope not in SCOPES:
            raise ConfigError(f"LoRA scope must be one of {list(SCOPES)}; got scope={self.scope!r}.")


def lora_targets(model: nn.Module, config: LoRAConfig) -> dict[str, tuple[int, int]]:
    """Full module name -> (in_features, out_features) of every module LoRA adapts, in module order."""
    names = {id(m): n for n, m in model.named_modules()}
    roots: tuple[str, ...] = ("",)
    if config.scope == "language-model":
        roots = tuple(names[id(a)] + "." for a in find_language_model(model).attentions)
    targets = {}
    for name, module in model.named_modules():
        if name.rpartition(".")[2] not in config.targets or not name.startswith(roots):
            continue
        if not isinstance(module, nn.Linear):
            raise ModelError(f"LoRA target {name} is a {type(module).__name__}, not an nn.Linear.")
        targets[name] = (module.in_features, module.out_features)
    if not targets:
        where = "the language model's attention modules" if config.scope == "language-model" else "the model"
        raise ModelError(f"No Linear module of {where} is named {' / '.join(config.targets)}: LoRA has no target.")
    return targets


def _key(name: str, matrix: str) -> str:
    return f"{name.replace('.', '__')}__lora_{matrix}"


class LoRA(Method):
    name = "lora"
    config_class = LoRAConfig

    def __init__(
        self,
        config: LoRAConfig,
        shape: AttentionShape,
        targets: dict[str, tuple[int, int]],
        generator: torch.Generator | None = None,
    ) -> None:
        config.validate()
        super().__init__(config, shape)
        self.targets, r = dict(targets), config.rank
        self.lora = nn.ParameterDict()
        for name, (fan_in, fan_out) in self.targets.items():
            bound = 1 / math.sqrt(fan_in)
            self.lora[_key(name, "A")] = nn.Parameter((torch.rand(r, fan_in, generator=generator) * 2 - 1) * bound)
            self.lora[_key(name, "B")] = nn.Parameter(torch.zeros(fan_out, r))
        self._models: list[nn.Module] = []  # a list, so the frozen model never becomes a submodule
        self._wrapped: dict[str, LoraLayer] = {}
        self._requires_grad: dict[str, bool] = {}

    @classmethod
    def for_model(cls, config: LoRAConfig, model: nn.Module, generator: torch.Generator | None = None) -> LoRA:
        config.validate()
        return cls(config, find_language_model(model).shape, lora_targets(model, config), generator)

    def attach(self, model: nn.Module) -> None:
        if self._models:
            raise RuntimeError("LoRA is already attached: detach it first.")
        targets = lora_targets(model, self.config)
        if targets != self.targets:
            raise ValueError(f"{self.name} was sized for other target modules than this model has.")
        self._requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
        peft_config = PeftLoraConfig(
            r=self.config.rank,
            lora_alpha=self.config.alpha,
            lora_dropout=self.config.dropout,
            target_modules=sorted(targets),
        )
        inject_adapter_in_model(peft_config, model, adapter_name=ADAPTER)
        for name in targets:
            wrapped: Any = model.get_submodule(name)  # a peft LoraLayer
            base = wrapped.get_base_layer()
            for matrix, holder in (("A", wrapped.lora_A), ("B", wrapped.lora_B)):
                param = self.lora[_key(name, matrix)]
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

    def train(self, mode: bool = True) -> LoRA:
        """The adapters' dropout (the papers' 0.05) sits in the injected layers, inside the frozen model that the
        trainer keeps in eval mode: it follows the method's mode instead, as in the papers' LoRA runs."""
        super().train(mode)
        for wrapped in self._wrapped.values():
            wrapped.lora_dropout.train(mode)
        return self

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
