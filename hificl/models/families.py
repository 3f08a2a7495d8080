"""Model families: what differs between LMMs at the prompt and batching level, keyed by config.model_type.

Everything HiFICL needs inside the network (decoder layers, attention modules, head shapes) is found from the
model's structure (hificl.models.layers); a family only says how text and images enter the model: the image
placeholder the prompt templates write, text the checkpoint must never see, and how the model's OWN processor
batches a prompt list (text with placeholders, or for Idefics v1 a list of text pieces and images). Position ids
are read structurally too: a model that owns `get_rope_index` (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) uses 3-D M-RoPE
positions, every other one 1-D positions.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from PIL import Image
from torch import nn
from transformers import PretrainedConfig
from transformers.processing_utils import ProcessorMixin

from hificl.data.prompts import Example, build_prompt
from hificl.errors import ModelError
from hificl.models.layers import find_language_model

#: Models whose decoder layers mix self- and cross-attention layers in one list: refused. (Idefics v1 keeps its
#: gated cross-attention layers in a list of their own; its self-attention layers are patched, see layers.py.)
CROSS_ATTENTION_TYPES = {"mllama": "Llama 3.2 Vision (mllama)", "flamingo": "Flamingo"}

QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


@dataclass(frozen=True)
class Family:
    """How one family of LMMs takes prompts and images; the model itself is handled structurally."""

    name: str
    model_types: tuple[str, ...]
    image_placeholder: str
    text_model: str
    #: strings the prompt formatting must never emit (e.g. tokens whose embedding the checkpoint never trained).
    forbidden: tuple[str, ...] = ()
    mrope: bool = False
    #: the processor takes each prompt as a list of text pieces and images (Idefics v1), not text with placeholders.
    interleaved: bool = False

    def check_text(self, text: str) -> None:
        for token in self.forbidden:
            if token in text:
                raise ModelError(f"{self.name} prompts must not contain {token!r}: the checkpoint never trained it.")

    def prompt(
        self, kind: str, query: Example, demonstrations: Sequence[Example] = (), *, instruction: bool = True
    ) -> str:
        """The shared prompt template with this family's image placeholder, checked against its text rules."""
        text = build_prompt(kind, query, demonstrations, instruction=instruction, image_token=self.image_placeholder)
        self.check_text(text)
        return text

    def processor_inputs(
        self,
        processor: ProcessorMixin,
        texts: Sequence[str],
        images: Sequence[Sequence[Image.Image]],
        padding_side: str = "left",
    ) -> dict[str, torch.Tensor]:
        """Batch prompts (one placeholder per image, in order) through the model's own processor, padded."""
        if len(texts) != len(images):
            raise ModelError(f"{len(texts)} prompts but {len(images)} image lists: give one image list per prompt.")
        for row, (text, row_images) in enumerate(zip(texts, images, strict=True)):
            self.check_text(text)
            found = text.count(self.image_placeholder)
            if found != len(row_images):
                raise ModelError(
                    f"Prompt {row} has {found} {self.image_placeholder!r} placeholders but {len(row_images)} images."
                )
        tokenizer = processor.tokenizer
        previous, tokenizer.padding_side = tokenizer.padding_side, padding_side
        try:
            if self.interleaved:
                batch = processor(text=[self._pieces(t, i) for t, i in zip(texts, images, strict=True)], padding=True)
            else:
                pixels = [list(row) for row in images] if any(images) else None
                batch = processor(text=list(texts), images=pixels, return_tensors="pt", padding=True)
        finally:
            tokenizer.padding_side = previous
        return dict(batch)

    def _pieces(self, text: str, images: Sequence[Image.Image]) -> list[str | Image.Image]:
        """Idefics v1's input form: the text between placeholders, each image where its placeholder was.
        (Its processor writes <fake_token_around_image><image><fake_token_around_image> there itself, and strips
        the spaces around each text piece.)"""
        segments = text.split(self.image_placeholder)
        pieces: list[str | Image.Image] = [segments[0]] if segments[0] else []
        for image, segment in zip(images, segments[1:], strict=True):
            pieces += [image, segment] if segment else [image]
        return pieces

    def check_model(self, model: nn.Module) -> None:
        """Raise ModelError unless the language model's self-attention goes through the attention registry."""
        find_language_model(model)


FAMILIES: tuple[Family, ...] = (
    Family("LLaVA", ("llava",), "<image>", "Qwen2 (LLaVA-Interleave, the tiny model), Llama, Qwen3 or Phi-3"),
    Family("LLaVA-OneVision", ("llava_onevision",), "<image>", "Qwen2"),
    Family("LLaVA-NeXT", ("llava_next",), "<image>", "Mistral or Vicuna (Llama)"),
    Family("Qwen2-VL", ("qwen2_vl", "qwen2_5_vl"), QWEN_IMAGE, "Qwen2-VL text (M-RoPE)", mrope=True),
    Family("Qwen3-VL", ("qwen3_vl", "qwen3_vl_moe"), QWEN_IMAGE, "Qwen3 (interleaved M-RoPE, DeepStack)", mrope=True),
    Family("Idefics (v1)", ("idefics",), "<image>", "Llama self-attention layers", interleaved=True),
    Family("Idefics2", ("idefics2",), "<image>", "Mistral", forbidden=("<end_of_utterance>",)),
    Family("Idefics3", ("idefics3", "smolvlm"), "<image>", "Llama"),
    Family("Gemma-3", ("gemma3",), "<start_of_image>", "Gemma-3 text (sliding-window and global layers)"),
    Family("InternVL", ("internvl",), "<IMG_CONTEXT>", "Qwen2 / Qwen2.5 or Llama (InternLM)"),
    Family("Mistral-3", ("mistral3",), "[IMG]", "Mistral"),
)
BY_TYPE: dict[str, Family] = {t: family for family in FAMILIES for t in family.model_types}


def supported_types() -> str:
    return ", ".join(sorted(BY_TYPE))


def check_self_attention(config: PretrainedConfig) -> None:
    """LMMs whose decoder layers interleave cross-attention layers are refused up front, before any weights are
    loaded (Idefics v1 is not one: its cross-attention layers sit beside the decoder layers, and stay unpatched)."""
    name = CROSS_ATTENTION_TYPES.get(config.model_type)
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    if name or getattr(text, "cross_attention_layers", None):
        raise ModelError(
            f"{name or config.model_type} sees images through cross-attention layers; HiFICL approximates "
            "demonstrations as virtual tokens in decoder self-attention, so it does not apply to this model."
        )


def family_for(config: PretrainedConfig, processor: ProcessorMixin | None = None) -> Family:
    """The family of a config; unknown types fall back to a generic family when the processor names its
    image token (the caller must still confirm the text attention uses the registry: Family.check_model)."""
    check_self_attention(config)
    family = BY_TYPE.get(config.model_type)
    if family is not None:
        return family
    placeholder = getattr(processor, "image_token", None)
    if not isinstance(placeholder, str) or not placeholder:
        raise ModelError(
            f"Model type {config.model_type!r} is not a supported family ({supported_types()}) and its processor "
            "names no image_token to fall back on."
        )
    warnings.warn(
        f"Model type {config.model_type!r} is not a tested family; using a generic family with image "
        f"placeholder {placeholder!r}.",
        stacklevel=2,
    )
    text_type = config.get_text_config(decoder=True).model_type
    return Family(f"generic ({config.model_type})", (config.model_type,), placeholder, text_type)


def _rope_index_owner(model: nn.Module) -> Any:
    return next((m for m in model.modules() if callable(getattr(m, "get_rope_index", None))), None)


def _first_position(model: nn.Module) -> int:
    """The position generate() gives a sequence's first token: 0, or 1 for models whose generation numbers
    positions from 1 (PaliGemma's prepare_inputs_for_generation adds 1). Asked of the model, once per class."""
    cls = type(model)
    if cls not in _FIRST_POSITION:
        probe = torch.zeros(1, 1, dtype=torch.long)
        prepared = cast(Any, model).prepare_inputs_for_generation(
            probe, attention_mask=torch.ones_like(probe), position_ids=probe, use_cache=False
        )
        given = prepared.get("position_ids")
        _FIRST_POSITION[cls] = 0 if given is None else int(given.flatten()[0])
    return _FIRST_POSITION[cls]


_FIRST_POSITION: dict[type, int] = {}


def position_ids(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The position ids generate() gives a batch: (3, batch, len) M-RoPE or (batch, len), left padding aware,
    numbered from the model's first position (PaliGemma: 1).

    Passing them to forward makes a padded forward agree with generation (forward alone would count padding).
    """
    ids, mask = inputs["input_ids"], inputs.get("attention_mask")
    owner = _rope_index_owner(model)
    grids = {k: inputs.get(k) for k in ("image_grid_thw", "video_grid_thw")}
    if owner is not None and any(g is not None for g in grids.values()):
        positions, _ = owner.get_rope_index(
            ids, mm_token_type_ids=inputs["mm_token_type_ids"], attention_mask=mask, **grids
        )
        return positions
    first = _first_position(model)
    if mask is None:
        return torch.arange(first, first + ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
    return (mask.long().cumsum(-1) - 1 + first).masked_fill(mask == 0, 1)


def query_position_ids(
    model: nn.Module, query: dict[str, torch.Tensor], demonstrations: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Positions of a query run alone as if it followed the demonstrations: its own positions shifted by the
    demonstrations' positional span (max position + 1 - first position: their length for 1-D RoPE, less under
    M-RoPE, where an image of h x w merged patches spans max(h, w) positions)."""
    own, demo = position_ids(model, query), position_ids(model, demonstrations)
    batch = demo.shape[-2]
    span = demo.reshape(-1, batch, demo.shape[-1]).amax(dim=(0, 2)) + 1 - _first_position(model)
    return own + span.view(*([1] * (own.dim() - 2)), batch, 1)
