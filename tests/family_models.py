"""Tiny random-init checkpoints of every supported LMM family, written to disk as a real checkpoint would be.

Each builder makes the model from its config classes, a word-level tokenizer (the `tokenizers` library) with the
family's special tokens, and the family's own processor class from local objects, then saves all three to a
directory that `hificl.models.loading.load_model` reads back. Sizes are the smallest each architecture accepts
(hidden 32, 2 language layers, 1 vision layer, 16-32 pixel images) so the whole family suite runs in seconds.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    GotOcr2ImageProcessorPil,
    Idefics2Config,
    Idefics2ForConditionalGeneration,
    Idefics2ImageProcessorPil,
    Idefics2Processor,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    IdeficsConfig,
    IdeficsForVisionText2Text,
    IdeficsImageProcessorPil,
    IdeficsProcessor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    LlavaProcessor,
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    PixtralImageProcessorPil,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLProcessor,
    SiglipVisionConfig,
)
from transformers.processing_utils import ProcessorMixin

from hificl.data.prompts import INSTRUCTIONS
from hificl.models.loading import video_free_processor

#: transformers' PixtralProcessor (Mistral-3's own processor) is declared torchvision-only.
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None

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


def tokenizer(
    specials: list[str], named: dict[str, str] | None = None, add_bos: bool = False
) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the prompt templates' words; `specials` are added as special tokens, and `named`
    ones (e.g. {"image_token": "<image>"}) also become attributes, as the processors of Gemma-3 and InternVL read
    them (`tokenizer.image_token`, `tokenizer.image_token_id`). `add_bos`: prepend <s> as Llama's tokenizer does."""
    named = named or {}
    specials = [*specials, *(t for t in named.values() if t not in specials)]
    vocab = {token: i for i, token in enumerate([PAD, UNK, BOS, EOS, *specials, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    if add_bos:
        core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, vocab[BOS])])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        padding_side="left",
        extra_special_tokens=named,
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


def llava(seed: int = 0, text: dict[str, Any] | None = None) -> tuple[PreTrainedModel, ProcessorMixin]:
    """LLaVA-Interleave's shape: CLIP tower, Qwen2 text model with GQA (`text` overrides its text config)."""
    torch.manual_seed(seed)
    tok = tokenizer(["<image>"])
    vision = CLIPVisionConfig(**VISION, image_size=16, patch_size=8)
    config = LlavaConfig(
        vision_config=vision,
        text_config={"model_type": "qwen2", **TEXT, "num_key_value_heads": 2, **_ids(tok)} | (text or {}),
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


def idefics(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Idefics v1 (MimIC's Idefics-9b): CLIP-like tower, perceiver resampler, Llama text layers with a gated
    cross-attention layer before each (cross_layer_interval 1). The gates start at tanh(1), not Idefics' tanh(0)
    = closed, so the images reach the text and the tests can see them. The tokenizer adds <s> as idefics-9b's
    Llama tokenizer does (the processor writes its own <s> and tokenizes without special tokens)."""
    torch.manual_seed(seed)
    tok = tokenizer(IDEFICS_SPECIALS, add_bos=True)
    config = IdeficsConfig(
        **TEXT,
        **_ids(tok),
        cross_layer_interval=1,
        alpha_initializer="ones",
        use_resampler=True,
        vision_config={"embed_dim": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
        | {"image_size": 16, "patch_size": 8},
        perceiver_config={"use_resampler": True, "resampler_n_latents": 4, "resampler_depth": 1}
        | {"resampler_n_heads": 2, "resampler_head_dim": 8},
    )
    pixels = IdeficsImageProcessorPil(image_size=16, image_mean=IMAGE_MEAN, image_std=IMAGE_STD)
    processor = IdeficsProcessor(image_processor=pixels, tokenizer=tok, image_size=16)
    return _finish(IdeficsForVisionText2Text(config), tok), processor


def _qwen3_vl(config_class: type, model_class: type, seed: int, text: dict[str, Any]):
    torch.manual_seed(seed)
    specials = ["<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"]
    tok = tokenizer(specials)
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in zip(("vs", "img", "ve", "vid"), specials, strict=True)}
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1], "mrope_interleaved": True}
    config = config_class(
        text_config={**TEXT, "num_key_value_heads": 2, "head_dim": 8, "rope_parameters": rope, **text}
        | {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "patch_size": 4}
        | {"spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 32, "num_position_embeddings": 16}
        | {"deepstack_visual_indexes": [0]},
        image_token_id=ids["img"],
        video_token_id=ids["vid"],
        vision_start_token_id=ids["vs"],
        vision_end_token_id=ids["ve"],
    )
    pixels = Qwen2VLImageProcessorPil(
        min_pixels=16 * 16, max_pixels=16 * 16, patch_size=4, temporal_patch_size=2, merge_size=2
    )
    processor = video_free_processor(Qwen3VLProcessor, image_processor=pixels, tokenizer=tok)
    return _finish(model_class(config), tok), processor


def qwen3_vl(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Qwen3-VL (the HiFICL code's third model): interleaved M-RoPE, DeepStack visual features added to the first
    text layers, Qwen3 text model (q/k RMS norms) with GQA."""
    return _qwen3_vl(Qwen3VLConfig, Qwen3VLForConditionalGeneration, seed, {})


def qwen3_vl_moe(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Qwen3-VL-MoE (e.g. Qwen3-VL-30B-A3B): Qwen3-VL with sparse-expert MLPs (4 experts, top 2)."""
    moe = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "decoder_sparse_step": 1}
    return _qwen3_vl(Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration, seed, moe)


GEMMA3_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}


def gemma3(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Gemma-3: SigLIP tower, average-pooled to 4 soft tokens per image (bidirectional among themselves), Gemma-3
    text model with a sliding-window layer and a global layer (window 512 covers every test prompt)."""
    torch.manual_seed(seed)
    tok = tokenizer([], GEMMA3_TOKENS)
    text = {**TEXT, "num_key_value_heads": 2, "head_dim": 8, "query_pre_attn_scalar": 8, "sliding_window": 512}
    text |= {"layer_types": ["sliding_attention", "full_attention"], **_ids(tok)}
    config = Gemma3Config(
        vision_config=SiglipVisionConfig(**VISION, image_size=16, patch_size=8),
        text_config=text,
        mm_tokens_per_image=4,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id,
    )
    pixels = Gemma3ImageProcessorPil(
        size={"height": 16, "width": 16}, image_mean=IMAGE_MEAN, image_std=IMAGE_STD, do_pan_and_scan=False
    )
    processor = Gemma3Processor(image_processor=pixels, tokenizer=tok, image_seq_length=4)
    return _finish(Gemma3ForConditionalGeneration(config), tok), processor


INTERNVL_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}


def internvl(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """InternVL (2.5/3): InternViT-like tower, pixel shuffle (ratio 0.5) + MLP projector, Qwen2 text model. The
    processor tiles each image as the checkpoints do (crop_to_patches): a 32x32 image is 4 tiles + a thumbnail,
    4 tokens each."""
    torch.manual_seed(seed)
    tok = tokenizer([], INTERNVL_TOKENS)
    config = InternVLConfig(
        vision_config={**VISION, "image_size": 16, "patch_size": 4},
        text_config={"model_type": "qwen2", **TEXT, "num_key_value_heads": 2, **_ids(tok)},
        image_token_id=tok.context_image_token_id,
        image_seq_length=4,
        downsample_ratio=0.5,
    )
    pixels = GotOcr2ImageProcessorPil(size={"height": 16, "width": 16}, image_mean=IMAGE_MEAN, image_std=IMAGE_STD)
    processor = video_free_processor(InternVLProcessor, image_processor=pixels, tokenizer=tok, image_seq_length=4)
    return _finish(InternVLForConditionalGeneration(config), tok), processor


def mistral3_parts(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerFast, PixtralImageProcessorPil]:
    """Mistral-3 (Mistral-Small-3.1): Pixtral tower (2-D RoPE, block-diagonal attention across images), 2x2 patch
    merger, Mistral text model with GQA; with its tokenizer and (PIL) image processor."""
    torch.manual_seed(seed)
    tok = tokenizer(list(PIXTRAL_TOKENS))
    config = Mistral3Config(
        vision_config={"model_type": "pixtral", **VISION, "image_size": 32, "patch_size": 4, "head_dim": 16},
        text_config={"model_type": "mistral", **TEXT, "num_key_value_heads": 2, "sliding_window": None, **_ids(tok)},
        image_token_index=tok.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=2,
        vision_feature_layer=-1,
    )
    pixels = PixtralImageProcessorPil(
        size={"longest_edge": 16}, patch_size={"height": 4, "width": 4}, image_mean=IMAGE_MEAN, image_std=IMAGE_STD
    )
    return _finish(Mistral3ForConditionalGeneration(config), tok), tok, pixels


PIXTRAL_TOKENS = ("[IMG]", "[IMG_BREAK]", "[IMG_END]")
#: what PixtralProcessor is built with for the model above (patch 4, 2x2 merge)
PIXTRAL_PROCESSOR = {"patch_size": 4, "spatial_merge_size": 2}


def mistral3(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Mistral-3 with its own processor, PixtralProcessor, which transformers declares torchvision-only."""
    from transformers.models.pixtral.processing_pixtral import PixtralProcessor

    model, tok, pixels = mistral3_parts(seed)
    return model, PixtralProcessor(image_processor=pixels, tokenizer=tok, **PIXTRAL_PROCESSOR)


def llava_next(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """LLaVA-NeXT (1.6): CLIP tower, anyres tiling (one 16x16 grid pinpoint: base view + 1 tile + row newlines),
    Mistral text model."""
    torch.manual_seed(seed)
    tok = tokenizer(["<image>"])
    pinpoints = [[16, 16]]
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**VISION, image_size=16, patch_size=8),
        text_config={"model_type": "mistral", **TEXT, "num_key_value_heads": 2, "sliding_window": None, **_ids(tok)},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    pixels = LlavaNextImageProcessorPil(
        size={"shortest_edge": 16},
        crop_size={"height": 16, "width": 16},
        image_grid_pinpoints=pinpoints,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    processor = LlavaNextProcessor(
        image_processor=pixels,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    return _finish(LlavaNextForConditionalGeneration(config), tok), processor


def llava_qwen3(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A LLaVA whose language model is Qwen3 (q/k RMS norms before RoPE, explicit head_dim, GQA)."""
    return llava(seed, {"model_type": "qwen3", "head_dim": 8})


def llava_phi3(seed: int = 0) -> tuple[PreTrainedModel, ProcessorMixin]:
    """A LLaVA whose language model is Phi-3: q, k and v fused into one Linear (`qkv_proj`), GQA."""
    return llava(seed, {"model_type": "phi3"})


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
    "idefics": idefics,
    "qwen3_vl": qwen3_vl,
    "qwen3_vl_moe": qwen3_vl_moe,
    "gemma3": gemma3,
    "internvl": internvl,
    "mistral3": mistral3,
    "llava_next": llava_next,
    "llava_qwen3": llava_qwen3,
    "llava_phi3": llava_phi3,
    "tiny": tiny,
}
