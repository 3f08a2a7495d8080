"""Loading any supported LMM with its own processor, frozen, with its family and fingerprint.

Configs are read before weights so that unsupported models (cross-attention LMMs, unknown families) fail in one
sentence without allocating a model. Processors of video-capable families (Qwen2-VL, LLaVA-OneVision, SmolVLM)
normally require torchvision for their video processor even when only images are used; without it they are
built image-only (video_processor=None), which is all that image-text ICL needs.
"""

from __future__ import annotations

import json
import os
import re
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    PretrainedConfig,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.processing_utils import ProcessorMixin

from hificl.errors import ModelError
from hificl.models.families import BY_TYPE, Family, check_self_attention, family_for, supported_types
from hificl.models.fingerprint import model_fingerprint
from hificl.models.layers import find_language_model
from hificl.models.weights import check_weights

#: The JSON files through which a checkpoint can point transformers at its own Python code.
CUSTOM_CODE_FILES = (
    "config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
    "video_preprocessor_config.json",
)

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    """A frozen LMM in eval mode, its own processor, its family and its fingerprint."""

    model: nn.Module
    processor: ProcessorMixin
    family: Family
    fingerprint: dict[str, Any]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_kwargs() -> dict[str, Any]:
    """Every from_pretrained call: never run a checkpoint's own code (False raises where None would prompt)."""
    return {"trust_remote_code": False, **({"local_files_only": True} if _offline() else {})}


def resolve(name_or_path: str) -> str:
    """A local directory as a path string, or a hub id; a path-like name that does not exist is an error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelError(f"Model path {name_or_path} does not exist.")
    if "/" not in name_or_path:  # every image-text model on the hub is owner/name: this meant a directory
        hint = " (build the embedded default with `make base-model`)" if name_or_path == "base-model" else ""
        raise ModelError(f"Model directory {name_or_path} does not exist{hint}; a hub id looks like owner/name.")
    return name_or_path


def load_config(source: str) -> PretrainedConfig:
    """The checkpoint's config; an unreadable directory or an uncached hub id is named in a ModelError."""
    _check_no_custom_code(source)
    _check_known_model_type(source)
    try:
        return AutoConfig.from_pretrained(source, **_hub_kwargs())
    except (OSError, ValueError, TypeError, StrictDataclassClassValidationError) as error:
        raise ModelError(f"Cannot read a model config from {source}: {_one_line(error)}.") from error


def _check_no_custom_code(source: str) -> None:
    """A local checkpoint whose JSON files map classes to its own code (`auto_map`) is refused before
    transformers would ask whether to run that code."""
    for name in CUSTOM_CODE_FILES:
        path = Path(source) / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelError(f"{path} is not a readable UTF-8 JSON file ({_one_line(error)}).") from None
        if isinstance(data, dict) and "auto_map" in data:
            raise ModelError(
                f"{path} has an auto_map (custom code shipped with the checkpoint); hificl runs only the "
                "architectures transformers ships and never a checkpoint's own code."
            )


@contextmanager
def _allow_missing_video_processor() -> Iterator[None]:
    """ProcessorMixin type-checks every sub-processor; let an absent video processor through."""
    check = ProcessorMixin.check_argument_for_proper_class

    def lenient(self: ProcessorMixin, name: str, argument: Any) -> Any:
        return None if argument is None and name == "video_processor" else check(self, name, argument)

    ProcessorMixin.check_argument_for_proper_class = lenient  # type: ignore[method-assign]
    try:
        yield
    finally:
        ProcessorMixin.check_argument_for_proper_class = check  # type: ignore[method-assign]


def video_free_processor(processor_class: type[ProcessorMixin], **kwargs: Any) -> ProcessorMixin:
    """An instance of a video-capable processor class with no video processor (images and text only)."""
    with _allow_missing_video_processor():
        return processor_class(video_processor=None, **kwargs)


def _check_known_model_type(source: str) -> None:
    """A local config.json whose model_type transformers does not know gets one sentence, not transformers' three."""
    path = Path(source) / "config.json"
    if not path.is_file():
        return
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"{path} is not a readable JSON model config: {error}") from error
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str):
        raise ModelError(f"{path} is not a model config: it needs a JSON object with a model_type string.")
    if isinstance(model_type, str) and model_type not in CONFIG_MAPPING_NAMES:
        raise ModelError(
            f"{path} has model_type {model_type!r}, which transformers {transformers.__version__} does not know "
            f"(supported families: {supported_types()})."
        )


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _one_line(error: Exception) -> str:
    """The whole message as one clause (transformers' errors span lines and sentences)."""
    text = " ".join(part.strip() for part in str(error).strip().splitlines() if part.strip())
    return re.sub(r"\.\s+(?=[A-Z`])", "; ", text).rstrip(".") or type(error).__name__


def _image_only_processor(path: str, error: Exception) -> ProcessorMixin:
    """Build the checkpoint's processor class from its tokenizer and image processor, without a video processor."""
    processor_dict, _ = ProcessorMixin.get_processor_dict(path, **_hub_kwargs())
    name = processor_dict.get("processor_class") or ""
    processor_class = getattr(transformers, name, None)
    try:
        attributes = processor_class.get_attributes() if processor_class is not None else []
    except ImportError as missing:  # a placeholder class: it needs a library not installed (PixtralProcessor)
        needs = " and ".join(getattr(processor_class, "_backends", None) or ["a library"])
        raise ModelError(
            f"Cannot load the processor of {path}: transformers' {name} needs {needs}, which is not installed."
        ) from missing
    if "video_processor" not in attributes:
        raise ModelError(f"Cannot load the processor of {path}: {_first_line(error)}") from error
    parts = {
        "image_processor": AutoImageProcessor.from_pretrained(path, **_hub_kwargs()),
        "tokenizer": AutoTokenizer.from_pretrained(path, **_hub_kwargs()),
    }
    extra = {k: v for k, v in processor_dict.items() if k not in ("processor_class", "auto_map", *parts)}
    return video_free_processor(typing.cast(type[ProcessorMixin], processor_class), **parts, **extra)


def load_processor(path: str) -> ProcessorMixin:
    """The model's own processor; image-only when its video processor needs torchvision and that is missing."""
    try:
        return AutoProcessor.from_pretrained(path, **_hub_kwargs())
    except ImportError as error:
        return _image_only_processor(path, error)
    except (OSError, ValueError) as error:
        if "torchvision" in str(error):  # AutoVideoProcessor's way of saying it (InternVL)
            return _image_only_processor(path, error)
        raise ModelError(f"Cannot load the processor of {path}: {_first_line(error)}") from error


def load_model(
    name_or_path: str, *, dtype: str = "auto", attn_implementation: str = "sdpa", device: str | None = None
) -> LoadedModel:
    """Load an LMM (local dir or cached hub id) frozen in eval mode, with its processor, family and fingerprint."""
    if dtype not in DTYPES:
        raise ModelError(f"Unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}.")
    source = resolve(name_or_path)
    config = load_config(source)
    check_self_attention(config)
    processor = load_processor(source)
    family = family_for(config, processor)
    if Path(source).is_dir():
        check_weights(Path(source), _meta_model(config))
    model = _load_weights(source, dtype=DTYPES[dtype], attn_implementation=attn_implementation)
    if device is not None:
        model = model.to(device)
    model.eval().requires_grad_(False)
    family.check_model(model)
    return LoadedModel(model=model, processor=processor, family=family, fingerprint=model_fingerprint(model))


def _meta_model(config: PretrainedConfig) -> nn.Module:
    """The architecture config.json describes, without memory: for shapes only."""
    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config, attn_implementation="sdpa")


def _load_weights(source: str, **kwargs: Any) -> nn.Module:
    """from_pretrained from safetensors only; any key it would leave randomly initialised or drop is an error."""
    try:
        loaded: Any = AutoModelForImageTextToText.from_pretrained(
            source, use_safetensors=True, output_loading_info=True, **kwargs, **_hub_kwargs()
        )
        model, info = loaded  # (model, loading info) when output_loading_info is set
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        raise ModelError(f"Cannot load the weights of {source}: {_one_line(error)[:300]}") from None
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(map(str, info.get(kind) or []))
        if keys:
            raise ModelError(
                f"The weights of {source} do not fit its config.json ({kind.replace('_', ' ')}: "
                f"{', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})."
            )
    return model


def describe_model(name_or_path: str, n_tokens: int = 8, rank: int = 8) -> dict[str, Any]:
    """Dry run: what HiFICL would patch in this model, built on the meta device (no weights are read).

    Attaches a real HiFICL(n, r) and reports the modules that received virtual tokens, so the report confirms
    they are exactly the language model's self-attention layers and nothing in the vision tower.
    """
    from hificl.methods.registry import build_method

    source = resolve(name_or_path)
    config = load_config(source)
    check_self_attention(config)
    try:
        processor = load_processor(source)
    except ModelError as error:  # a registered family is still described; the report carries the sentence
        if config.model_type not in BY_TYPE:
            raise
        processor, processor_report = None, str(error)
    else:
        processor_report = type(processor).__name__
    family = family_for(config, processor)
    model = _meta_model(config)
    weights = check_weights(Path(source), model) if Path(source).is_dir() else None
    lm = find_language_model(model)
    shape = lm.shape
    method = build_method("hificl", model, {"n_tokens": n_tokens, "rank": min(rank, shape.head_dim)}, seed=0)
    method.attach(model)
    touched = [name for name, m in model.named_modules() if "_virtual_kv" in m.__dict__]
    expected = {id(m) for m in lm.attentions}
    on_lm = sum(id(m) in expected for m in model.modules() if "_virtual_kv" in m.__dict__)
    method.detach()
    r = min(rank, shape.head_dim)
    return {
        "family": family.name,
        "processor": processor_report,
        "model_type": config.model_type,
        "architecture": type(model).__name__,
        "text_model_type": config.get_text_config(decoder=True).model_type,
        "image_placeholder": family.image_placeholder,
        "mrope": family.mrope,
        "language_model_layers": shape.num_layers,
        "patched_modules": len(touched),
        "patched_outside_language_model": len(touched) - on_lm,
        "first_patched": touched[0] if touched else None,
        "num_heads": shape.num_heads,
        "num_kv_heads": shape.num_kv_heads,
        "head_dim": shape.head_dim,
        "hidden_size": shape.hidden_size,
        "hificl": {"n_tokens": n_tokens, "rank": r},
        "hificl_params_formula": shape.num_layers * shape.num_heads * 2 * (n_tokens * r + r * shape.head_dim),
        "hificl_params_method": method.num_trainable(),
        "weights": weights,
    }
