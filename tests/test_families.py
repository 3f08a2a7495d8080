"""Every supported family, as a tiny checkpoint on disk loaded through load_model: virtual tokens reach exactly the
language model's self-attention, the ICL equivalence theorem holds with real images through the family's own
processor (M-RoPE included), generation with HiFICL attached equals a full recompute, and parameter counts match.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import IdeficsConfig, LlavaNextConfig, MllamaConfig

from hificl.attention import VirtualKVPatch, VirtualTokens
from hificl.data.prompts import Example
from hificl.errors import ModelError
from hificl.methods.registry import build_method
from hificl.models.families import family_for, position_ids, query_position_ids
from hificl.models.layers import find_language_model
from hificl.models.loading import LoadedModel, describe_model, load_model
from tests import family_models

NAMES = list(family_models.BUILDERS)
DEMOS = (Example("what is the color of the cat", "red"), Example("what is on the dog", "a cat"))
QUERY = Example("what is the color of the dog")
NEW_TOKENS = 4


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: family_models.save(builder, root / name) for name, builder in family_models.BUILDERS.items()}


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
    n = demos["input_ids"].shape[1]
    query = family.processor_inputs(processor, [query_text], [images[2:]])
    if name == "llava_onevision":
        query = _multi_image_view(full, n)
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
    if "mm_token_type_ids" in inputs:
        out["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(token[:, None])], 1)
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


@pytest.mark.parametrize(
    ("config", "label"),
    [
        (IdeficsConfig(vision_config={"embed_dim": 32, "image_size": 16, "patch_size": 8}), "Idefics (v1)"),
        (MllamaConfig(), "mllama"),
    ],
)
def test_cross_attention_models_are_refused(tmp_path: Path, config: object, label: str) -> None:
    config.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match=re.escape(label) + ".*cross-attention.*self-attention"):
        load_model(str(tmp_path))


def test_missing_path_is_named() -> None:
    with pytest.raises(ModelError, match="/no/such/model does not exist"):
        load_model("/no/such/model")


def test_unknown_family_falls_back_only_with_an_image_token() -> None:
    config = LlavaNextConfig()
    with pytest.warns(UserWarning, match="llava_next"):
        family = family_for(config, SimpleNamespace(image_token="<image>"))
    assert family.image_placeholder == "<image>" and family.name == "generic (llava_next)"
    with pytest.raises(ModelError, match=r"'llava_next' is not a supported family.*idefics2"):
        family_for(config, SimpleNamespace())


def test_idefics2_never_emits_end_of_utterance(checkpoints: dict[str, Path]) -> None:
    loaded = _load(checkpoints, "idefics2")
    full, _, _ = _texts(loaded)
    assert "<end_of_utterance>" not in full
    with pytest.raises(ModelError, match="end_of_utterance"):
        loaded.family.processor_inputs(loaded.processor, [full + "<end_of_utterance>"], [family_models.images(3)])
