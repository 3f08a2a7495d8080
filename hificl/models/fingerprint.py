"""A base model's fingerprint: what an adapter or a result row must record to be matched to its model again."""

from __future__ import annotations

import hashlib
import typing
from typing import Any

import torch
from torch import nn

from hificl.errors import AdapterError
from hificl.models.layers import find_language_model

# Fields that must agree for a method's parameters to mean the same thing on another model instance.
MATCHING = ("architecture", "text_model_type", "num_layers", "num_heads", "num_kv_heads", "head_dim", "weights_digest")


def weights_digest(model: nn.Module, rows: int = 256) -> str:
    """sha256 of the first rows of the input embedding: tells two checkpoints of one architecture apart cheaply."""
    hf: Any = model  # a transformers PreTrainedModel
    weight = hf.get_input_embeddings().weight[:rows].detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """Architecture, language-model head shapes, name or path and a weights digest."""
    lm = find_language_model(model)
    text_config = typing.cast(Any, model).config.get_text_config(decoder=True)
    return {
        "architecture": type(model).__name__,
        "text_model_type": text_config.model_type,
        "num_layers": lm.shape.num_layers,
        "num_heads": lm.shape.num_heads,
        "num_kv_heads": lm.shape.num_kv_heads,
        "head_dim": lm.shape.head_dim,
        "hidden_size": lm.shape.hidden_size,
        "vocab_size": text_config.vocab_size,
        "name_or_path": str(getattr(model.config, "_name_or_path", "") or ""),
        "weights_digest": weights_digest(model),
    }


def check_fingerprint(saved: dict[str, Any], model: nn.Module, source: str) -> None:
    """Raise if `model` is not the model the parameters in `source` were trained on."""
    current = model_fingerprint(model)
    diffs = [f"{k}: saved {saved.get(k)!r}, model {current[k]!r}" for k in MATCHING if saved.get(k) != current[k]]
    if diffs:
        raise AdapterError(
            f"{source} was trained on another base model ({saved.get('name_or_path') or '?'}): "
            + "; ".join(diffs)
            + "."
        )
