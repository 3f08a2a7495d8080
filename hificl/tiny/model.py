"""The tiny LMM: a real LLaVA (CLIP vision tower + Qwen2 decoder with grouped-query attention), a word-level
tokenizer and a LlavaProcessor, so every code path that loads a downloaded LMM loads this one unchanged.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from hificl.data.prompts import IMAGE_PLACEHOLDER, INSTRUCTIONS, STOP_WORDS
from hificl.data.synthetic_scenes import BACKGROUND, IMAGE_SIZE
from hificl.data.synthetic_tasks import vocabulary

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
# The background maps to 0: an empty cell embeds to (almost) nothing, so patch features start out content-driven.
IMAGE_MEAN = tuple(c / 255 for c in BACKGROUND)
IMAGE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TinyConfig:
    """Architecture of the tiny LMM; part of the pretraining cache key."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 512
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    patch: int = 16
    max_positions: int = 512

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def words() -> list[str]:
    """The word vocabulary: the prompt templates' words plus the benchmark's, split as the tokenizer splits."""
    splitter = pre_tokenizers.Whitespace()
    texts = [*INSTRUCTIONS.values(), *(w for ws in STOP_WORDS.values() for w in ws), ":", "\n", *vocabulary()]
    found = {piece for text in texts for piece, _ in splitter.pre_tokenize_str(text)}
    return sorted(found)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer (whitespace + punctuation split); `<image>` is an added special token."""
    specials = [PAD, UNK, BOS, EOS, IMAGE_PLACEHOLDER]
    vocab = {tok: i for i, tok in enumerate(specials + words())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        extra_special_tokens={"image_token": IMAGE_PLACEHOLDER},
        padding_side="left",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_PLACEHOLDER]})
    return tokenizer


def build_processor(config: TinyConfig) -> LlavaProcessor:
    """LlavaProcessor whose image processor only rescales and normalises: renders are already model-sized."""
    images = CLIPImageProcessorPil(
        do_resize=False,
        do_center_crop=False,
        do_convert_rgb=True,
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )
    return LlavaProcessor(
        image_processor=images,
        tokenizer=build_tokenizer(),
        patch_size=config.patch,
        vision_feature_select_strategy="default",
        image_token=IMAGE_PLACEHOLDER,
        num_additional_image_tokens=1,
    )


def image_tokens(config: TinyConfig) -> int:
    """Image tokens per image: one per patch (the CLS token is dropped by the "default" strategy)."""
    return (IMAGE_SIZE // config.patch) ** 2


def build_model(config: TinyConfig, tokenizer: PreTrainedTokenizerFast, seed: int) -> LlavaForConditionalGeneration:
    """A freshly initialised tiny LLaVA with sdpa attention."""
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        hidden_size=config.vision_hidden,
        intermediate_size=4 * config.vision_hidden,
        num_hidden_layers=config.vision_layers,
        num_attention_heads=config.vision_heads,
        image_size=IMAGE_SIZE,
        patch_size=config.patch,
        projection_dim=config.vision_hidden,
    )
    text = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden,
        intermediate_size=config.intermediate,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        num_key_value_heads=config.kv_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    llava = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=typing.cast(int, tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)),
        image_seq_length=image_tokens(config),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )
    llava._attn_implementation = "sdpa"
    model = LlavaForConditionalGeneration(llava)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def pixel_values(images: np.ndarray) -> torch.Tensor:
    """(N, 32, 32, 3) uint8 renders -> normalised (N, 3, 32, 32), exactly what the saved image processor gives."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std
