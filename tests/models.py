"""Small random-init Hugging Face LMMs built from config classes: the test subjects of the mathematics."""

from __future__ import annotations

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
)

VOCAB = 96
IMAGE_TOKEN = VOCAB - 1
IMAGE_SIZE, PATCH = 16, 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2


def _vision() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8
    )


def llava_qwen2(seed: int = 0, attn: str = "sdpa") -> LlavaForConditionalGeneration:
    """LLaVA with a Qwen2 text model using grouped-query attention (4 query heads, 2 KV heads)."""
    torch.manual_seed(seed)
    text = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    config = LlavaConfig(
        text_config=text,
        vision_config=_vision(),
        image_token_id=IMAGE_TOKEN,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    config._attn_implementation = attn
    return LlavaForConditionalGeneration(config).eval()


def llava_llama(seed: int = 0, attn: str = "sdpa") -> LlavaForConditionalGeneration:
    """LLaVA-1.5's shape: a Llama text model (multi-head attention) behind a CLIP tower."""
    torch.manual_seed(seed)
    text = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=0,
    )
    config = LlavaConfig(
        text_config=text,
        vision_config=_vision(),
        image_token_id=IMAGE_TOKEN,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    config._attn_implementation = attn
    return LlavaForConditionalGeneration(config).eval()


def mistral(seed: int = 0, attn: str = "sdpa") -> MistralForCausalLM:
    """A text-only Mistral decoder with GQA (Idefics2's text model)."""
    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=512,
        sliding_window=None,
        pad_token_id=0,
    )
    config._attn_implementation = attn
    return MistralForCausalLM(config).eval()


def image_prompt(generator: torch.Generator, text_len: int, images: int = 1) -> torch.Tensor:
    """Token ids: for each image a run of image tokens followed by text tokens."""
    parts = []
    for _ in range(images):
        parts.append(torch.full((IMAGE_TOKENS,), IMAGE_TOKEN))
        parts.append(torch.randint(1, IMAGE_TOKEN, (text_len,), generator=generator))
    return torch.cat(parts)
