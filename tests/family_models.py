"""Tiny random-init checkpoints of every supported LMM family, written to disk as a real checkpoint would be.

Each builder makes the model from its config classes, a word-level tokenizer (the `tokenizers` library) with the
family's special tokens, and the family's own processor class from local objects, then saves all three to a
directory that `hificl.models.loading.load_model` reads back. Sizes are the smallest each architecture accepts
(hidden 32, 2 language layers, 1 vision layer, 16-32 pixel images) so the whole family suite runs in seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    Idefics2Config,
    Idefics2ForConditionalGeneration,
    Idefics2ImageProcessorPil,
    Idefics2Processor,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
    SiglipVisionConfig,
)
from transformers.processing_utils import ProcessorMixin

from hificl.data.prompts import INSTRUCTIONS
from hificl.models.loading import video_free_processor

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
WORDS = sorted(
    {
        piece
        for text in [
            INSTRUCTIONS["vqa"],
            "Image: Question: Answer: Caption:",
            "what is the color of the cat dog red blue green a an one two three on in yes no",
        ]
        for piece, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)
    }
)
IMAGE_MEAN = IMAGE_STD = [0.5, 0.5, 0.5]
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}


def tokenizer(specials: list[str]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the prompt templates' words; `specials` are added as special tokens."""
    vocab = {token: i for i, token in enumerate([PAD, UNK, BOS, EOS, *specials, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS, padding_side="left"
    )
    tok.add_special_tokens({"additional_special_tokens": specials})
    return tok


def _ids(tok: PreTrainedTokenizerFast) -> dict[str, int]:
    return {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "bos_token_id": 2, "eos_token_id": 3}


def images(count: int, size: int = 16, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def _finish(model: PreTrainedModel, tok: PreTrainedTokenizerFast) -> PreTrainedModel:
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.eval()


def llava(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """LLaVA-Interleave's shape: CLIP tower, Qwen2 text model with GQA."""
    torch.manual_seed(seed)
    tok = tokenizer(["<image>"])
    vision = CLIPVisionConfig(**VISION, image_size=16, patch_size=8)
    config = LlavaConfig(
        vision_config=vision,
        text_config={"model_type": "qwen2", **TEXT, "num_key_value_heads": 2, **_ids(tok)},
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=4,
    )
    pixels = CLIPImageProcessorPil(
        size={"shortest_edge": 16},
        crop_size={"height": 16, "width": 16},
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    processor = LlavaProcessor(
        image_processor=pixels,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return _finish(LlavaForConditionalGeneration(config), tok), processor


def llava_onevision(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """LLaVA-OneVision: SigLIP tower, anyres tiling (one 16x16 grid pinpoint), Qwen2 text model."""
    torch.manual_seed(seed)
    tok = tokenizer(["<image>", "<video>"])
    pinpoints = [[16, 16]]
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**VISION, image_size=16, patch_size=8),
        text_config={"model_type": "qwen2", **TEXT, "num_key_value_heads": 2, **_ids(tok)},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
    )
    pixels = LlavaOnevisionImageProcessorPil(
        size={"height": 16, "width": 16}, image_grid_pinpoints=pinpoints, image_mean=IMAGE_MEAN, image_std=IMAGE_STD
    )
    processor = video_free_processor(
        LlavaOnevisionProcessor,
        image_processor=pixels,
        tokenizer=tok,
        num_image_tokens=4,
        vision_feature_select_strategy="full",
    )
    return _finish(LlavaOnevisionForConditionalGeneration(config), tok), processor


def _qwen_vl(config_class: type, model_class: type, processor_class: type, seed: int):
    torch.manual_seed(seed)
    specials = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
    tok = tokenizer(specials)
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in zip(("vs", "img", "ve", "vid"), specials, strict=True)}
    # head_dim 8: M-RoPE sections (temporal, height, width) over its 4 frequency pairs.
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
    vision = {"depth": 1, "hidden_size": 32, "num_heads": 2, "patch_size": 4, "spatial_merge_size": 2}
    vision |= {"temporal_patch_size": 2, "in_channels": 3}
    vision |= {"embed_dim": 16, "mlp_ratio": 2} if config_class is Qwen2VLConfig else {"intermediate_size": 64}
    vision |= {"out_hidden_size": 32, "fullatt_block_indexes": [0]} if config_class is Qwen2_5_VLConfig else {}
    config = config_class(
        text_config={**TEXT, "num_key_value_heads": 2, "rope_parameters": rope, **_ids(tok)},
        vision_config=vision,
        image_token_id=ids["img"],
        video_token_id=ids["vid"],
        vision_start_token_id=ids["vs"],
        vision_end_token_id=ids["ve"],
    )
    pixels = Qwen2VLImageProcessorPil(
        min_pixels=16 * 16, max_pixels=16 * 16, patch_size=4, temporal_patch_size=2, merge_size=2
    )
    processor = video_free_processor(processor_class, image_processor=pixels, tokenizer=tok)
    return _finish(model_class(config), tok), processor


def qwen2_vl(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Qwen2-VL: M-RoPE (3-D positions), patch-merging vision tower, Qwen2 text model with GQA."""
    return _qwen_vl(Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor, seed)


def qwen2_5_vl(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Qwen2.5-VL: Qwen2-VL's M-RoPE with a windowed-attention vision tower."""
    return _qwen_vl(Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor, seed)


IDEFICS_SPECIALS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>"]


def idefics2(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Idefics2: SigLIP-like tower, perceiver resampler (4 latents), Mistral text model with GQA."""
    torch.manual_seed(seed)
    tok = tokenizer(IDEFICS_SPECIALS)
    config = Idefics2Config(
        vision_config={**VISION, "image_size": 16, "patch_size": 8},
        perceiver_config={
            "hidden_size": 32,
            "resampler_n_latents": 4,
            "resampler_depth": 1,
            "resampler_n_heads": 2,
            "resampler_head_dim": 8,
            "num_key_value_heads": 1,
        },
        text_config={"model_type": "mistral", **TEXT, "num_key_value_heads": 1, "sliding_window": None, **_ids(tok)},
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    pixels = Idefics2ImageProcessorPil(
        size={"shortest_edge": 16, "longest_edge": 16},
        do_image_splitting=False,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    processor = Idefics2Processor(image_processor=pixels, tokenizer=tok, image_seq_len=4)
    return _finish(Idefics2ForConditionalGeneration(config), tok), processor


def idefics3(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Idefics3 / SmolVLM's shape: SigLIP-like tower, pixel-shuffle connector, Llama text model."""
    torch.manual_seed(seed)
    tok = tokenizer([*IDEFICS_SPECIALS, "<global-img>"])
    config = Idefics3Config(
        vision_config={**VISION, "image_size": 32, "patch_size": 8},
        text_config={"model_type": "llama", **TEXT, "num_key_value_heads": 4, **_ids(tok)},
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
    )
    pixels = Idefics3ImageProcessorPil(
        size={"longest_edge": 32},
        max_image_size={"longest_edge": 32},
        do_image_splitting=False,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    processor = Idefics3Processor(image_processor=pixels, tokenizer=tok, image_seq_len=4)
    return _finish(Idefics3ForConditionalGeneration(config), tok), processor


def tiny(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """The package's embedded tiny LMM (a LLaVA), at test size."""
    from hificl.tiny.model import TinyConfig, build_model, build_processor, build_tokenizer

    config = TinyConfig(
        hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, vision_hidden=32, vision_layers=1, vision_heads=2
    )
    return build_model(config, build_tokenizer(), seed).eval(), build_processor(config)


def save(builder: Callable[[], tuple[PreTrainedModel, ProcessorMixin]], path: Path) -> Path:
    """Write model, tokenizer, image processor and processor config as a downloaded checkpoint lays them out."""
    model, processor = builder()
    model.save_pretrained(path)
    processor.tokenizer.save_pretrained(path)
    processor.image_processor.save_pretrained(path)
    config = processor.to_dict()
    for key in ("tokenizer", "image_processor", "video_processor", "chat_template"):
        config.pop(key, None)
    (path / "processor_config.json").write_text(json.dumps(config, indent=2))
    return path


BUILDERS: dict[str, Callable[[], tuple[PreTrainedModel, ProcessorMixin]]] = {
    "llava": llava,
    "llava_onevision": llava_onevision,
    "qwen2_vl": qwen2_vl,
    "qwen2_5_vl": qwen2_5_vl,
    "idefics2": idefics2,
    "idefics3": idefics3,
    "tiny": tiny,
}
