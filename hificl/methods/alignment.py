"""Where MimIC's layer-wise alignment reads the hidden states: forward hooks on every decoder layer.

MimIC aligns the output of each decoder layer's FFN (the MLP module's output, before it is added to the residual
stream; supplementary Sec. 8.1, and what the public code's `ffn_record_hook` records). "After SA" (the
supplementary's Fig. 7 alternative) aligns the self-attention module's output instead. Hooks record the student
pass and the teacher pass apart: the teacher pass runs inside `teacher_pass()` (the method's `disabled()`), the
student pass is any other forward while the owning method is in training mode; in eval mode (validation, test,
generation) the student records nothing, so no activations are held at inference.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from hificl.errors import ModelError, TrainingError
from hificl.models.layers import find_language_model

#: "ffn": the MLP module's output (MimIC's default); "attention": the self-attention module's output ("after SA").
ALIGN_TARGETS = ("ffn", "attention")
FFN_NAMES = ("mlp", "feed_forward")


def find_ffn(layer: nn.Module, index: int) -> nn.Module:
    """The decoder layer's feed-forward block, whose output the layer adds to the residual stream."""
    for name in FFN_NAMES:
        module = getattr(layer, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ModelError(
        f"Decoder layer {index} ({type(layer).__name__}) has no feed-forward child named {' or '.join(FFN_NAMES)}."
    )


class LayerCapture:
    """Records one tensor per decoder layer (FFN or self-attention output) for the student and the teacher."""

    def __init__(self, target: str, owner: nn.Module) -> None:
        """`owner`: the method; the student pass records only while it is in training mode."""
        if target not in ALIGN_TARGETS:
            raise ValueError(f"alignment target must be one of {ALIGN_TARGETS}; got {target!r}.")
        self.target, self._owner = target, owner
        self._handles: list[RemovableHandle] = []
        self._teacher = False
        self._states: dict[str, list[torch.Tensor | None]] = {"student": [], "teacher": []}

    def attach(self, model: nn.Module) -> None:
        lm = find_language_model(model)
        modules = lm.attentions if self.target == "attention" else [find_ffn(x, i) for i, x in enumerate(lm.layers)]
        self._states = {role: [None] * len(modules) for role in self._states}
        self._handles = [m.register_forward_hook(partial(self._record, i)) for i, m in enumerate(modules)]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.clear()

    def clear(self) -> None:
        self._states = {role: [None] * len(states) for role, states in self._states.items()}

    @contextmanager
    def teacher_pass(self) -> Iterator[None]:
        was, self._teacher = self._teacher, True
        try:
            yield
        finally:
            self._teacher = was

    def _record(self, layer: int, _module: nn.Module, _inputs: Any, output: Any) -> None:
        role = "teacher" if self._teacher else "student"
        if role == "student" and not self._owner.training:
            return  # inference: nothing to align
        self._states[role][layer] = output[0] if isinstance(output, tuple) else output

    def take(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """(student, teacher) per-layer outputs of the last passes; cleared, so a stale pass is never reused."""
        student, teacher = self._states["student"], self._states["teacher"]
        self.clear()
        for role, states in (("student", student), ("teacher", teacher)):
            if not states or any(s is None for s in states):
                raise TrainingError(f"No {self.target} outputs were recorded for the {role} pass of every layer.")
        return tuple(student), tuple(teacher)  # type: ignore[arg-type]
