"""What every method is: trainable parameters plus the way they attach to a frozen LMM (peft's tuner shape)."""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, ClassVar

from torch import nn

from hificl.attention import VirtualKVPatch, VirtualTokens
from hificl.models.layers import AttentionShape, find_language_model


class Method(nn.Module):
    """Base of every trainable method. Subclasses set `name`, `config_class`, and implement attach/detach.

    The frozen model is never a submodule of the method, so `method.state_dict()` holds exactly the trainable
    parameters that are saved, and `method.parameters()` is exactly what the optimizer gets.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    #: True when training needs a frozen teacher pass WITH demonstrations (MimIC, LIVE, HiFICL+teacher).
    needs_teacher: ClassVar[bool] = False

    def __init__(self, config: Any, shape: AttentionShape) -> None:
        super().__init__()
        self.config = config
        self.shape = shape

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def attach(self, model: nn.Module) -> None:
        raise NotImplementedError

    def detach(self) -> None:
        raise NotImplementedError

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class VirtualTokenMethod(Method):
    """A method that acts only through virtual key/value tokens in each language-model attention layer."""

    _patch: VirtualKVPatch | None = None

    def layer_tokens(self, layer: int, module: nn.Module) -> VirtualTokens:
        raise NotImplementedError

    def attach(self, model: nn.Module) -> None:
        lm = find_language_model(model)
        if lm.shape != self.shape:
            raise ValueError(f"{self.name} was sized for {self.shape}, the model has {lm.shape}.")
        sources = [partial(self.layer_tokens, i) for i in range(len(lm.attentions))]
        self._patch = VirtualKVPatch(list(lm.attentions), sources)

    def detach(self) -> None:
        if self._patch is not None:
            self._patch.remove()
            self._patch = None

    @property
    def patch(self) -> VirtualKVPatch:
        if self._patch is None:
            raise RuntimeError(f"{self.name} is not attached to a model.")
        return self._patch
