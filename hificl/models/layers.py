"""Finding a multimodal model's LANGUAGE-model decoder layers and attention modules from its structure.

No model-name strings: the text config (`config.get_text_config()`) identifies the decoder backbone (the module
that holds that config and a ModuleList of layers); within each layer the attention module is the child that
carries the registry attention signature (`head_dim`, `scaling`, `layer_idx`). Vision towers, projectors and
resamplers hold other configs and are never touched.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Any

from torch import nn

from hificl.errors import ModelError


@dataclass(frozen=True)
class AttentionShape:
    """The head layout every per-head method is sized by."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int

    @property
    def groups(self) -> int:
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class LanguageModel:
    """The decoder backbone of an LMM, its layers and their self-attention modules, in layer order."""

    backbone: nn.Module
    layers: tuple[nn.Module, ...]
    attentions: tuple[nn.Module, ...]
    shape: AttentionShape


def _uses_attention_registry(attention: nn.Module) -> bool:
    source = inspect.getsource(type(attention).forward)
    return "ALL_ATTENTION_FUNCTIONS" in source or "attention_interface" in source


def find_language_model(model: nn.Module) -> LanguageModel:
    """Locate the language model of `model` (an LMM or a plain decoder) from its structure and config."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "get_text_config"):
        raise ModelError(f"{type(model).__name__} is not a Hugging Face model with a config: cannot find its layers.")
    text_config = config.get_text_config(decoder=True)
    if getattr(text_config, "cross_attention_layers", None) or getattr(config, "cross_layer_interval", None):
        raise ModelError(
            f"{type(model).__name__} attends to images through cross-attention layers; HiFICL's virtual tokens "
            "approximate demonstrations in decoder self-attention, so it does not apply to this model."
        )
    backbones = [
        m
        for m in model.modules()
        if getattr(m, "config", None) is text_config and isinstance(getattr(m, "layers", None), nn.ModuleList)
    ]
    if not backbones:
        raise ModelError(f"No decoder backbone with a `layers` list holds the text config of {type(model).__name__}.")
    backbone = backbones[0]
    layers = tuple(typing.cast(nn.ModuleList, backbone.layers))
    attentions = []
    for index, layer in enumerate(layers):
        found = [
            m
            for m in layer.modules()
            if m is not layer and hasattr(m, "head_dim") and hasattr(m, "scaling") and hasattr(m, "layer_idx")
        ]
        if len(found) != 1:
            raise ModelError(
                f"Layer {index} of {type(backbone).__name__} has {len(found)} registry self-attention modules, "
                "expected exactly one."
            )
        if not _uses_attention_registry(found[0]):
            raise ModelError(
                f"{type(found[0]).__name__} computes attention without transformers' attention registry, so "
                "virtual tokens cannot be injected into it."
            )
        attentions.append(found[0])
    first = attentions[0]
    num_heads = text_config.num_attention_heads
    shape = AttentionShape(
        num_layers=len(layers),
        num_heads=num_heads,
        num_kv_heads=getattr(text_config, "num_key_value_heads", None) or num_heads,
        head_dim=typing.cast(int, first.head_dim),
        hidden_size=text_config.hidden_size,
    )
    return LanguageModel(backbone, layers, tuple(attentions), shape)


def attention_shape_from_config(config: Any) -> AttentionShape:
    """The head layout from a (text or multimodal) config alone: sizes methods without loading weights."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    return AttentionShape(
        num_layers=text.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        hidden_size=text.hidden_size,
    )
