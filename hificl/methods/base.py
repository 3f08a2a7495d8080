"""What every method is: trainable parameters plus the way they attach to a frozen LMM (peft's tuner shape)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from hificl.attention import VirtualKVPatch, VirtualTokens
from hificl.models.layers import AttentionShape, find_language_model

if TYPE_CHECKING:
    from hificl.batch import TrainBatch


class Method(nn.Module):
    """Base of every trainable method. Subclasses set `name`, `config_class`, and implement attach/detach.

    The frozen model is never a submodule of the method, so `method.state_dict()` holds exactly the trainable
    parameters that are saved, and `method.parameters()` is exactly what the optimizer gets.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any, shape: AttentionShape, generator: torch.Generator | None = None) -> None:
        """Every method is built as `cls(config, shape, generator=...)`; the generator seeds its initial values."""
        super().__init__()
        self.config = config
        self.shape = shape

    @classmethod
    def for_model(cls, config: Any, model: nn.Module, generator: torch.Generator | None = None) -> Method:
        """A fresh method sized for `model` (most methods need only its language model's attention shape)."""
        return cls(config, find_language_model(model).shape, generator=generator)

    @property
    def teacher_shots(self) -> int:
        """Demonstrations in the frozen teacher's prompt; 0 = no teacher pass.

        The ONE switch for the teacher: the method config's `teacher_shots` field (MimIC and LIVE require >= 1,
        HiFICL's "+teacher" ablation sets it). The DataModule builds teacher rows and the training step runs the
        teacher pass exactly when this is > 0.
        """
        return int(getattr(self.config, "teacher_shots", 0))

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def attach(self, model: nn.Module) -> None:
        raise NotImplementedError

    def detach(self) -> None:
        raise NotImplementedError

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the model as if the method were not attached (the frozen teacher pass)."""
        raise NotImplementedError
        yield

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups; methods with their own learning rates (LIVE's scale) override this."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay}]

    def training_loss(
        self, ce: torch.Tensor, student: Any, teacher: Any | None, batch: TrainBatch
    ) -> dict[str, torch.Tensor]:
        """The method's objective from the student's answer cross-entropy and outputs (and the teacher's).

        `student`/`teacher` are the model outputs (`teacher` is None unless `teacher_shots` > 0); the query
        example occupies the last `batch.student.query_len[i]` positions of both rows (left padding).
        Returns at least {"loss": ...}; other entries are logged.
        """
        return {"loss": ce, "ce": ce}


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
        self._patch = VirtualKVPatch(list(lm.attentions), sources, owner=self)

    def detach(self) -> None:
        if self._patch is not None:
            self._patch.remove()
            self._patch = None

    @contextmanager
    def disabled(self) -> Iterator[None]:
        with self.patch.disabled():
            yield

    @property
    def patch(self) -> VirtualKVPatch:
        if self._patch is None:
            raise RuntimeError(f"{self.name} is not attached to a model.")
        return self._patch
