"""Finding a multimodal model's LANGUAGE-model decoder layers and attention modules from its structure.

No model-name strings: the text config (`config.get_text_config()`) identifies the decoder backbone (the module
that holds that config and a ModuleList of layers); within each layer the attention module is the child that
carries the registry attention signature (`head_dim`, `scaling`, `layer_idx`) and is not a cross-attention.
Vision towers, projectors and resamplers hold other configs and are never touched; neither are Idefics v1's gated
cross-attention layers, which live in a list of their own beside the decoder layers (and are built from the same
attention class, flagged `is_cross_attention`).

`attention_projections` says where each attention module's q/k/v/o Linear layers are, fused or not (Phi-3's
`qkv_proj` holds q, k and v as consecutive row blocks), for methods that adapt the projections (LoRA).
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
class Projection:
    """One Linear of an attention module: its attribute name, its shape, and which of its output rows serve which
    role ("q", "k", "v", "o"); a fused q/k/v projection has three row blocks, a plain one a single block."""

    name: str
    in_features: int
    out_features: int
    rows: tuple[tuple[str, int, int], ...]

    @property
    def fused(self) -> bool:
        return len(self.rows) > 1


SEPARATE = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
FUSED_QKV, OUTPUT = "qkv_proj", "o_proj"


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
    if getattr(text_config, "cross_attention_layers", None):
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
            if m is not layer
            and hasattr(m, "head_dim")
            and hasattr(m, "scaling")
            and hasattr(m, "layer_idx")
            and not getattr(m, "is_cross_attention", False)
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


def attention_projections(attention: nn.Module, shape: AttentionShape) -> dict[str, Projection]:
    """Role ("q", "k", "v", "o") -> the Linear that computes it; under a fused `qkv_proj` q, k and v name the same
    Projection. Shapes are checked against the head layout, so a layout this function does not know is refused
    rather than adapted wrongly."""
    q, kv = shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    expected = {"q": (shape.hidden_size, q), "k": (shape.hidden_size, kv), "v": (shape.hidden_size, kv)}
    expected["o"] = (q, shape.hidden_size)
    kind = type(attention).__name__
    if isinstance(getattr(attention, FUSED_QKV, None), nn.Linear):
        layout = {
            FUSED_QKV: (("q", 0, q), ("k", q, q + kv), ("v", q + kv, q + 2 * kv)),
            OUTPUT: (("o", 0, shape.hidden_size),),
        }
        sizes = {FUSED_QKV: (shape.hidden_size, q + 2 * kv), OUTPUT: expected["o"]}
    else:
        layout = {name: ((role, 0, expected[role][1]),) for role, name in SEPARATE.items()}
        sizes = {name: expected[role] for role, name in SEPARATE.items()}
    found: dict[str, Projection] = {}
    for name, rows in layout.items():
        linear = getattr(attention, name, None)
        if not isinstance(linear, nn.Linear):
            children = sorted(n for n, m in attention.named_children() if isinstance(m, nn.Linear))
            raise ModelError(f"{kind} has no Linear {name} (its Linear layers: {', '.join(children) or 'none'}).")
        if (linear.in_features, linear.out_features) != sizes[name]:
            raise ModelError(
                f"{kind}.{name} is {linear.in_features} -> {linear.out_features}, expected "
                f"{sizes[name][0]} -> {sizes[name][1]} for {shape.num_heads} heads ({shape.num_kv_heads} key/value) "
                f"of dim {shape.head_dim}."
            )
        projection = Projection(name, linear.in_features, linear.out_features, rows)
        found |= {role: projection for role, _, _ in rows}
    return found


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
