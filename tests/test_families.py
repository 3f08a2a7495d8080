"""Every supported family, as a tiny checkpoint on disk loaded through load_model: virtual tokens reach exactly the
language model's self-attention, the ICL equivalence theorem holds with real images through the family's own
processor (M-RoPE included), generation with HiFICL attached equals a full recompute, parameter counts match, and
`hificl check` names the family. Qwen3 and Phi-3 (fused qkv_proj) text models run inside a LLaVA.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image
from transformers import (
    BaseImageProcessor,
    IdeficsConfig,
    IdeficsForVisionText2Text,
    MllamaConfig,
    PreTrainedTokenizerFast,
    VipLlavaConfig,
)

from hificl.attention import VirtualKVPatch, VirtualTokens
from hificl.cli import main
from hificl.data.prompts import Example
from hificl.errors import ModelError
from hificl.methods.registry import build_method
from hificl.models.families import family_for, position_ids, query_position_ids
from hificl.models.layers import attention_projections, find_language_model
from hificl.models.loading import LoadedModel, describe_model, load_model
from tests import family_models

NEEDS_TORCHVISION = {"mistral3"}
NAMES = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            name in NEEDS_TORCHVISION and not family_models.HAS_TORCHVISION,
            reason="Mistral-3's own processor (PixtralProcessor) needs torchvision; no CPU wheel here",
        ),
    )
    for name in family_models.BUILDERS
]
FAMILY_NAMES = {
    "llava": "LLaVA",
    "llava_onevision": "LLaVA-OneVision",
    "qwen2_vl": "Qwen2-VL",
    "qwen2_5_vl": "Qwen2-VL",
    "idefics2": "Idefics2",
    "idefics3": "Idefics3",
    "idefics": "Idefics (v1)",
    "qwen3_vl": "Qwen3-VL",
    "qwen3_vl_moe": "Qwen3-VL",
    "gemma3": "Gemma-3",
    "internvl": "InternVL",
    "mistral3": "Mistral-3",
    "llava_next": "LLaVA-NeXT",
    "llava_qwen3": "LLaVA",
    "llava_phi3": "LLaVA",
    "tiny": "LLaVA",
}
DEMOS = (Example("what is the color of the cat", "red"), Example("what is on the dog", "a cat"))
QUERY = Example("what is the color of the dog")
NEW_TOKENS = 4


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {
        name: family_models.save(builder, root / name)
        for name, builder in family_models.BUILDERS.items()
        if family_models.HAS_TORCHVISION or name not in NEEDS_TORCHVISION
    }


def _load(checkpoints: dict[str, Path], name: str) -> LoadedModel:
    return load_model(str(checkpoints[name]), dtype="float32")


def _texts(loaded: LoadedModel) -> tuple[str, str, str]:
    """(demonstrations + query, demonstrations alone, query alone): the first is the other two concatenated."""
    full = loaded.family.prompt("vqa", QUERY, DEMOS)
    query = loaded.family.prompt("vqa", QUERY, instruction=False)
    assert full.endswith(query)
    return full, full[: -len(query)], query


def _multi_image_view(full: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    """LLaVA-OneVision tiles a lone image (anyres) but gives each image of a multi-image prompt its base view
    only; the theorem compares the query WITH ITS ICL VIEW, so its image is taken from the full run's inputs."""
    return {
        "input_ids": full["input_ids"][:, n:],
        "attention_mask": full["attention_mask"][:, n:],
        "pixel_values": full["pixel_values"][-1:],
        "image_sizes": full["image_sizes"][-1:],
        "batch_num_images": torch.tensor([2]),  # any count > 1 selects the base view for this image
    }


def _idefics_query_view(
    full: dict[str, torch.Tensor], query: dict[str, torch.Tensor], n: int
) -> dict[str, torch.Tensor]:
    """Idefics v1 outside self-attention: each token cross-attends to the latest image before it, so inside the ICL
    prompt the query's leading "Image:" tokens see the LAST DEMONSTRATION'S image, which virtual tokens in
    self-attention cannot carry. The theorem is therefore checked with the query's ICL cross-attention view: its
    tokens from the full run (the processor also starts the query alone with <s>) and the last two images."""
    view = {
        "input_ids": full["input_ids"][:, n:],
        "attention_mask": full["attention_mask"][:, n:],
        "pixel_values": full["pixel_values"][:, -2:],
        "image_attention_mask": full["image_attention_mask"][:, n:, -2:],
    }
    assert query["input_ids"][0, 0].item() == 2 and torch.equal(query["input_ids"][:, 1:], view["input_ids"])
    assert torch.equal(query["pixel_values"], view["pixel_values"][:, -1:])
    own = query["image_attention_mask"][0, 1:, 0]  # the query's own image: from its <image> token on
    assert torch.equal(view["image_attention_mask"][0, :, 1], own)
    assert view["image_attention_mask"][0, : int((own == 0).sum()), 0].all()  # before it: the demonstration's
    return view


@pytest.mark.parametrize("name", NAMES)
def test_load_model_is_frozen_and_describes_the_family(checkpoints: dict[str, Path], name: str) -> None:
    loaded = _load(checkpoints, name)
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.fingerprint["architecture"] == type(loaded.model).__name__
    text = loaded.model.config.get_text_config(decoder=True)
    d = text.hidden_size // text.num_attention_heads
    expected = text.num_hidden_layers * text.num_attention_heads * 2 * (8 * 8 + 8 * d)
    assert build_method("hificl", loaded.model, {"n_tokens": 8, "rank": 8}).num_trainable() == expected == 2048
    report = describe_model(str(checkpoints[name]))
    assert report["family"] == loaded.family.name
    assert report["language_model_layers"] == report["patched_modules"] == text.num_hidden_layers == 2
    assert report["patched_outside_language_model"] == 0
    assert report["hificl_params_formula"] == report["hificl_params_method"] == expected
    assert (report["num_heads"], report["head_dim"]) == (4, 8)


@pytest.mark.parametrize("name", NAMES)
def test_virtual_tokens_reach_every_language_layer_and_no_vision_layer(checkpoints: dict[str, Path], name: str) -> None:
    loaded = _load(checkpoints, name)
    model, family = loaded.model, loaded.family
    lm = find_language_model(model)
    reached: list[torch.nn.Module] = []

    def source(module: torch.nn.Module) -> VirtualTokens:
        reached.append(module)
        size = (lm.shape.num_heads, 2, lm.shape.head_dim)
        return VirtualTokens(torch.randn(size), torch.zeros(size))

    patch = VirtualKVPatch(list(lm.attentions), [source] * len(lm.attentions))
    full, _, _ = _texts(loaded)
    inputs = family.processor_inputs(loaded.processor, [full], [family_models.images(3, size=32)])
    with torch.no_grad():
        model(**inputs)
    patch.remove()
    assert [id(m) for m in reached] == [id(m) for m in lm.attentions]
    vision = {id(m) for n, m in model.named_modules() if "vision" in n or "visual" in n}
    assert vision and not vision & {id(m) for m in reached}


@pytest.mark.parametrize("name", NAMES)
def test_icl_equivalence_theorem_through_the_processor(checkpoints: dict[str, Path], name: str) -> None:
    """Demonstrations' per-layer keys/values as virtual tokens + the query alone at offset positions = ICL."""
    loaded = _load(checkpoints, name)
    model, family, processor = loaded.model, loaded.family, loaded.processor
    full_text, demo_text, query_text = _texts(loaded)
    images = family_models.images(3, size=32)
    full = family.processor_inputs(processor, [full_text], [images])
    demos = family.processor_inputs(processor, [demo_text], [images[:2]])
    query = family.processor_inputs(processor, [query_text], [images[2:]])
    n = demos["input_ids"].shape[1]
    if name == "llava_onevision":
        query = _multi_image_view(full, n)
    if name == "idefics":
        query = _idefics_query_view(full, query, n)
    _assert_icl_equivalence(model, full, demos, query)


def _assert_icl_equivalence(
    model: torch.nn.Module,
    full: dict[str, torch.Tensor],
    demos: dict[str, torch.Tensor],
    query: dict[str, torch.Tensor],
) -> None:
    """The full run's per-layer demonstration keys/values as virtual tokens, the query alone at its ICL positions:
    logits equal to 1e-4, and the demonstrations matter (without the tokens they differ by more than 1e-3)."""
    n = demos["input_ids"].shape[1]
    assert torch.equal(full["input_ids"], torch.cat([demos["input_ids"], query["input_ids"]], 1))
    positions = query_position_ids(model, query, demos)
    assert torch.equal(positions, position_ids(model, full)[..., n:])
    with torch.no_grad():
        icl = model(**full, use_cache=True)
        plain = model(**query, position_ids=positions).logits
    cache = icl.past_key_values.layers
    lm = find_language_model(model)
    sources = [
        (lambda k, v: lambda module: VirtualTokens(k, v, per_kv_head=True))(c.keys[:, :, :n], c.values[:, :, :n])
        for c in cache
    ]
    patch = VirtualKVPatch(list(lm.attentions), sources)
    with torch.no_grad():
        alone = model(**query, position_ids=positions).logits
    patch.remove()
    assert (alone - icl.logits[:, n:]).abs().max().item() < 1e-4
    assert (plain - icl.logits[:, n:]).abs().max().item() > 1e-3  # the demonstrations matter


@pytest.mark.parametrize("name", ["qwen2_vl", "qwen2_5_vl"])
def test_mrope_offset_is_the_positional_span_not_the_token_count(checkpoints: dict[str, Path], name: str) -> None:
    """Each 16x16 image is 2x2 merged patches: 4 tokens but 2 M-RoPE positions, so the span is n - 2 per image."""
    loaded = _load(checkpoints, name)
    _, demo_text, query_text = _texts(loaded)
    images = family_models.images(3, size=32)
    demos = loaded.family.processor_inputs(loaded.processor, [demo_text], [images[:2]])
    query = loaded.family.processor_inputs(loaded.processor, [query_text], [images[2:]])
    positions = query_position_ids(loaded.model, query, demos)
    assert positions.shape == (3, 1, query["input_ids"].shape[1])
    assert positions[:, 0, 0].tolist() == [demos["input_ids"].shape[1] - 4] * 3


def _extend(inputs: dict[str, torch.Tensor], token: torch.Tensor) -> dict[str, torch.Tensor]:
    out = dict(inputs, input_ids=torch.cat([inputs["input_ids"], token[:, None]], 1))
    out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(token[:, None])], 1)
    for key in ("mm_token_type_ids", "token_type_ids"):  # new tokens are text
        if key in inputs:
            out[key] = torch.cat([inputs[key], torch.zeros_like(token[:, None])], 1)
    if "image_attention_mask" in inputs:  # Idefics v1: a new token cross-attends to the latest image, as before
        mask = inputs["image_attention_mask"]
        out["image_attention_mask"] = torch.cat([mask, mask[:, -1:]], 1)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_generate_with_hificl_equals_full_recompute(checkpoints: dict[str, Path], name: str) -> None:
    """Greedy cached generation on a left-padded batch with HiFICL attached = argmax of uncached full forwards."""
    loaded = _load(checkpoints, name)
    model, family = loaded.model, loaded.family
    method = build_method("hificl", model, {"n_tokens": 4, "rank": 4}, seed=0)
    with torch.no_grad():
        method.v_b.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
    method.attach(model)
    images = family_models.images(3, size=32)
    texts = [family.prompt("vqa", QUERY, DEMOS[:1]), family.prompt("vqa", QUERY)]
    inputs = family.processor_inputs(loaded.processor, texts, [images[:2], images[2:]])
    assert (inputs["attention_mask"][1] == 0).any()  # the shorter row is left-padded
    eos = model.generation_config.eos_token_id
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
        step = inputs
        for _ in range(NEW_TOKENS):
            logits = model(**step, position_ids=position_ids(model, step), use_cache=False).logits[:, -1]
            logits[:, eos] = float("-inf")  # what min_new_tokens does
            step = _extend(step, logits.argmax(-1))
    method.detach()
    assert generated.shape == (2, inputs["input_ids"].shape[1] + NEW_TOKENS)
    assert torch.equal(generated, step["input_ids"])


def test_models_mixing_cross_attention_into_their_decoder_layers_are_refused(tmp_path: Path) -> None:
    MllamaConfig().save_pretrained(tmp_path)
    with pytest.raises(ModelError, match=re.escape("mllama") + ".*cross-attention.*self-attention"):
        load_model(str(tmp_path))


def test_idefics_v1_patches_self_attention_and_never_the_gated_cross_attention(checkpoints: dict[str, Path]) -> None:
    """Idefics v1 builds its gated cross-attention from the same attention class and calls the same registry
    function; those modules carry no virtual tokens, so they run the plain kernel: the first one (it runs before
    any patched layer) gives bit-identical output with HiFICL attached, while the logits do change."""
    loaded = _load(checkpoints, "idefics")
    model, family = loaded.model, loaded.family
    lm = find_language_model(model)
    cross = [layer.cross_attn for layer in model.model.gated_cross_attn_layers]
    assert len(cross) == 2 and all(m.is_cross_attention for m in cross)
    assert not {id(m) for m in cross} & {id(m) for m in lm.attentions}
    assert all(not m.is_cross_attention for m in lm.attentions)
    outputs: list[torch.Tensor] = []
    hook = cross[0].register_forward_hook(lambda module, args, out: outputs.append(out[0]))
    full, _, _ = _texts(loaded)
    inputs = family.processor_inputs(loaded.processor, [full], [family_models.images(3, size=32)])
    method = build_method("hificl", model, {"n_tokens": 4, "rank": 4}, seed=0)
    with torch.no_grad():
        method.v_b.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
        plain = model(**inputs).logits
        method.attach(model)
        patched = model(**inputs).logits
        method.detach()
    hook.remove()
    assert len(outputs) == 2 and outputs[0].abs().max() > 0  # the cross-attention ran and saw the images
    assert torch.equal(outputs[0], outputs[1])
    assert (patched - plain).abs().max().item() > 1e-3


def test_missing_path_is_named() -> None:
    with pytest.raises(ModelError, match="/no/such/model does not exist"):
        load_model("/no/such/model")


def test_unknown_family_falls_back_only_with_an_image_token() -> None:
    config = VipLlavaConfig()
    with pytest.warns(UserWarning, match="vipllava"):
        family = family_for(config, SimpleNamespace(image_token="<image>"))
    assert family.image_placeholder == "<image>" and family.name == "generic (vipllava)"
    with pytest.raises(ModelError, match=r"'vipllava' is not a supported family.*idefics2"):
        family_for(config, SimpleNamespace())


def test_idefics2_never_emits_end_of_utterance(checkpoints: dict[str, Path]) -> None:
    loaded = _load(checkpoints, "idefics2")
    full, _, _ = _texts(loaded)
    assert "<end_of_utterance>" not in full
    with pytest.raises(ModelError, match="end_of_utterance"):
        loaded.family.processor_inputs(loaded.processor, [full + "<end_of_utterance>"], [family_models.images(3)])


@pytest.mark.parametrize("name", NAMES)
def test_check_command_names_the_family(
    checkpoints: dict[str, Path], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "--model", str(checkpoints[name])]) == 0
    report = json.loads(capsys.readouterr().out)["model"]
    assert report["family"] == FAMILY_NAMES[name] and report["processor"].endswith("Processor")
    assert report["patched_modules"] == 2 and report["patched_outside_language_model"] == 0


@pytest.mark.parametrize(("name", "fused"), [("llava_phi3", True), ("llava_qwen3", False), ("idefics", False)])
def test_projection_metadata_locates_the_value_rows_the_model_really_uses(
    checkpoints: dict[str, Path], name: str, fused: bool
) -> None:
    """The rows `attention_projections` names as v, applied to the projection's input, are exactly the values the
    attention kernel receives (Phi-3: rows q+kv .. q+2kv of the fused qkv_proj)."""
    loaded = _load(checkpoints, name)
    lm = find_language_model(loaded.model)
    attention = lm.attentions[1]
    roles = attention_projections(attention, lm.shape)
    q, kv = lm.shape.num_heads * lm.shape.head_dim, lm.shape.num_kv_heads * lm.shape.head_dim
    assert roles["q"].fused is roles["v"].fused is fused and not roles["o"].fused
    assert roles["o"].name == "o_proj" and (roles["o"].in_features, roles["o"].out_features) == (q, 32)
    if fused:
        assert roles["q"] is roles["k"] is roles["v"] and roles["v"].name == "qkv_proj"
        assert roles["v"].rows == (("q", 0, q), ("k", q, q + kv), ("v", q + kv, q + 2 * kv))
    else:
        assert [roles[r].name for r in "qkv"] == ["q_proj", "k_proj", "v_proj"]
    (_, start, stop) = next(row for row in roles["v"].rows if row[0] == "v")
    seen: dict[str, torch.Tensor] = {}
    linear = getattr(attention, roles["v"].name)
    hook = linear.register_forward_hook(lambda module, args, out: seen.setdefault("out", out))
    full, _, _ = _texts(loaded)
    inputs = loaded.family.processor_inputs(loaded.processor, [full], [family_models.images(3, size=32)])
    with torch.no_grad():
        cache = loaded.model(**inputs, use_cache=True).past_key_values.layers[1]
    hook.remove()
    values = seen["out"][..., start:stop]
    values = values.view(*values.shape[:2], -1, lm.shape.head_dim).transpose(1, 2)
    assert torch.equal(values, cache.values)


def test_an_unknown_projection_layout_is_refused_in_one_sentence(checkpoints: dict[str, Path]) -> None:
    loaded = _load(checkpoints, "llava_qwen3")
    lm = find_language_model(loaded.model)
    attention = lm.attentions[0]
    attention.k_proj = torch.nn.Linear(32, 8, bias=False)
    with pytest.raises(ModelError, match=r"k_proj is 32 -> 8, expected 32 -> 16 for 4 heads \(2 key/value\)"):
        attention_projections(attention, lm.shape)
    del attention.k_proj
    with pytest.raises(ModelError, match=r"has no Linear k_proj \(its Linear layers: o_proj, q_proj, v_proj\)"):
        attention_projections(attention, lm.shape)


def _pixtral_inputs(
    tok: PreTrainedTokenizerFast, pixels: BaseImageProcessor, text: str, images: list[Image.Image]
) -> dict[str, torch.Tensor]:
    """PixtralProcessor's layout without torchvision (its one dependency here): each [IMG] placeholder becomes rows
    of [IMG] ended by [IMG_BREAK], the last by [IMG_END], one per (patch x merge) cell (its replace_image_token)."""
    batch = pixels(images, return_tensors="pt")
    cell = family_models.PIXTRAL_PROCESSOR["patch_size"] * family_models.PIXTRAL_PROCESSOR["spatial_merge_size"]
    pieces = text.split("[IMG]")
    expanded = pieces[0]
    for (height, width), piece in zip(batch["image_sizes"].tolist(), pieces[1:], strict=True):
        rows = (["[IMG]"] * (width // cell) + ["[IMG_BREAK]"]) * (height // cell)
        expanded += " ".join([*rows[:-1], "[IMG_END]"]) + piece
    tokens = tok(expanded, return_tensors="pt")
    return {**tokens, "pixel_values": batch["pixel_values"], "image_sizes": batch["image_sizes"]}


def test_mistral3_theorem_with_its_image_processor_and_tokenizer(tmp_path: Path) -> None:
    """Mistral-3 without PixtralProcessor: the model, its Pixtral image processor and tokenizer, the processor's
    token layout written out above; the Pixtral tower attends block-diagonally across images, so the query's
    image reads the same alone. Without torchvision, load_model says the processor needs it, and `hificl check`
    still describes the registered family, with that sentence as its processor."""
    model, tok, pixels = family_models.mistral3_parts()
    family = family_for(model.config)
    full_text = family.prompt("vqa", QUERY, DEMOS)
    query_text = family.prompt("vqa", QUERY, instruction=False)
    images = family_models.images(3, size=32)
    full = _pixtral_inputs(tok, pixels, full_text, images)
    demos = _pixtral_inputs(tok, pixels, full_text[: -len(query_text)], images[:2])
    query = _pixtral_inputs(tok, pixels, query_text, images[2:])
    for token, count in (("[IMG]", 3 * 4), ("[IMG_BREAK]", 3), ("[IMG_END]", 3)):  # 3 images of 2 x 2 cells
        assert (full["input_ids"] == tok.convert_tokens_to_ids(token)).sum() == count
    _assert_icl_equivalence(model, full, demos, query)

    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    pixels.save_pretrained(tmp_path)
    config = {"processor_class": "PixtralProcessor", **family_models.PIXTRAL_PROCESSOR}
    (tmp_path / "processor_config.json").write_text(json.dumps(config))
    report = describe_model(str(tmp_path))
    assert report["family"] == "Mistral-3" and report["patched_modules"] == 2
    if not family_models.HAS_TORCHVISION:
        sentence = "transformers' PixtralProcessor needs torchvision, which is not installed."
        with pytest.raises(ModelError, match=re.escape(sentence) + "$"):
            load_model(str(tmp_path))
        assert report["processor"].endswith(sentence)


def test_idefics_9b_layout_on_the_meta_device() -> None:
    """MimIC's Idefics-9b (its config's shapes, no weights): HiFICL patches the 32 self-attention layers and none
    of the 8 gated cross-attention layers (one before every 4th decoder layer); n = r = 8 gives 32*32*2*(64 +
    8*128) = 2,228,224 parameters."""
    config = IdeficsConfig(
        vocab_size=32000,
        additional_vocab_size=2,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        cross_layer_interval=4,
        use_resampler=True,
        vision_config={"embed_dim": 1280, "image_size": 224, "intermediate_size": 5120, "patch_size": 14}
        | {"num_hidden_layers": 32, "num_attention_heads": 16},
        perceiver_config={"use_resampler": True, "resampler_n_latents": 64, "resampler_depth": 6}
        | {"resampler_n_heads": 16, "resampler_head_dim": 96},
    )
    with torch.device("meta"):
        model = IdeficsForVisionText2Text(config)
    method = build_method("hificl", model, {"n_tokens": 8, "rank": 8})
    assert method.num_trainable() == 2_228_224
    method.attach(model)
    patched = [m for m in model.modules() if "_virtual_kv" in m.__dict__]
    method.detach()
    cross = [layer.cross_attn for layer in model.model.gated_cross_attn_layers]
    assert len(patched) == 32 and len(cross) == 8
    assert [id(m) for m in patched] == [id(layer.self_attn) for layer in model.model.layers]
