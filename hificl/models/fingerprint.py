"""A base model's fingerprint: what an adapter or a result row must record to be matched to its model again."""

from __future__ import annotations

import hashlib
import typing
from typing import Any

import torch
from torch import nn

from hificl.errors import AdapterError
from hificl.models.layers import find_language_model

#: Version of the digest below; adapters saved with another version are refused with both values named.
DIGEST_VERSION = 2
# Fields that must agree for a method's parameters to mean the same thing on another model instance.
MATCHING = (
    "architecture",
    "text_model_type",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "head_dim",
    "digest_version",
    "weights_digest",
)
SAMPLES_PER_TENSOR = 64


def weights_digest(model: nn.Module, samples: int = SAMPLES_PER_TENSOR) -> str:
    """sha256 over every weight of the model: its name, shape and dtype (what a safetensors header says) and
    `samples` values spread evenly over it. Every weight a method sits on counts (attention and MLP of the
    language model, the vision tower LoRA adapts, norms, embeddings), so a fine-tuned checkpoint of the same
    architecture is told apart, while the cost stays one small gather per tensor."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        flat = param.detach().reshape(-1)
        count = min(samples, flat.numel())  # evenly spaced, in integers (float linspace overshoots past 2**24)
        index = torch.arange(count, device=flat.device) * (flat.numel() - 1) // max(count - 1, 1)
        values = flat[index].to("cpu", torch.float32).contiguous()
        digest.update(f"{name}|{tuple(param.shape)}|{param.dtype};".encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """Architecture, language-model head shapes, name or path and a weights digest.

    Computed once per model instance, when it is first asked for (load_model, before any method attaches):
    a method that adds or wraps weights (LoRA) must not change the fingerprint of the base it was saved on."""
    cached = model.__dict__.get("_hificl_fingerprint")
    if cached is not None:
        return dict(cached)
    fingerprint = _compute(model)
    model.__dict__["_hificl_fingerprint"] = fingerprint
    return dict(fingerprint)


def _compute(model: nn.Module) -> dict[str, Any]:
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
        "digest_version": DIGEST_VERSION,
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
