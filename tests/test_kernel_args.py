"""The primitive honours every argument a model hands its attention kernel, or refuses it in one sentence.

Soft-capping (Gemma-2) reaches the virtual logits as the ICL run applies it to the demonstrations'; a sliding
window leaves the always-visible virtual tokens alone (the ICL equivalence holds when the window covers the
prompt, and otherwise equals the ICL run in which every demonstration stays visible to every query); a method
that adds nothing leaves the logits bit-identical; PaliGemma's 1-based positions reach the training forwards.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    DynamicCache,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    MistralConfig,
    MistralForCausalLM,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
)

from hificl.attention import KernelArgumentError, VirtualKVPatch, VirtualTokens, _check_arguments, virtual_kv_attention
from hificl.errors import ConfigError, HificlError
from hificl.models.families import position_ids, query_position_ids
from hificl.models.layers import find_language_model
from tests import family_models

VOCAB, DEMO, QUERY = 96, 14, 8
TEXT = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "pad_token_id": 0}
HEADS = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8}
LAYER_TYPES = ["sliding_attention", "full_attention"]


def gemma2(window: int, softcap: float | None = 2.0) -> Gemma2ForCausalLM:
    """Gemma-2 with a strong attention soft-cap (2.0: tanh bites on random logits) and alternating layers."""
    torch.manual_seed(0)
    config = Gemma2Config(
        **TEXT,
        **HEADS,
        sliding_window=window,
        attn_logit_softcapping=softcap,
        layer_types=LAYER_TYPES,
        initializer_range=0.2,  # random logits large enough for the cap to bite
    )
    config._attn_implementation = "eager"  # transformers refuses sdpa for soft-capped models
    return Gemma2ForCausalLM(config).eval()


def gemma3(window: int, attn: str = "sdpa") -> Gemma3ForCausalLM:
    torch.manual_seed(0)
    config = Gemma3TextConfig(**TEXT, **HEADS, sliding_window=window, layer_types=LAYER_TYPES)
    config._attn_implementation = attn
    return Gemma3ForCausalLM(config).eval()


def mistral(window: int, attn: str = "sdpa") -> MistralForCausalLM:
    torch.manual_seed(0)
    config = MistralConfig(**TEXT, **HEADS, sliding_window=window)
    config._attn_implementation = attn
    return MistralForCausalLM(config).eval()


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    """A custom 4-D mask as every kernel takes it: 0 where allowed, the dtype minimum elsewhere."""
    mask = torch.zeros(allowed.shape, dtype=torch.float32).masked_fill(~allowed, torch.finfo(torch.float32).min)
    return mask[None, None]


def _demos_always_visible(model: nn.Module, window: int) -> torch.Tensor | dict[str, torch.Tensor]:
    """The ICL run that the documented behaviour equals: the window applies among real tokens as the model
    applies it, but every query row also sees every demonstration (what an always-visible token is)."""
    total = DEMO + QUERY
    i, j = torch.arange(total)[:, None], torch.arange(total)[None, :]
    causal = j <= i
    sliding = causal & ((i - j < window) | ((i >= DEMO) & (j < DEMO)))
    if getattr(model.config, "layer_types", None) is None:
        return _additive(sliding)
    return {"full_attention": _additive(causal), "sliding_attention": _additive(sliding)}


def _theorem(model: nn.Module, icl_mask: torch.Tensor | dict | None = None) -> tuple[float, float]:
    """(|virtual-token run - ICL run|, |query alone - ICL run|) over the query's logits. The demonstrations'
    per-layer keys/values (from the ICL run) become virtual tokens of a run on the query alone at offset
    positions. A cache without a config keeps every key, so sliding layers' keys are complete."""
    ids = torch.randint(1, VOCAB, (1, DEMO + QUERY), generator=torch.Generator().manual_seed(1))
    extra = {} if icl_mask is None else {"attention_mask": icl_mask}
    with torch.no_grad():
        icl = model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True, **extra)
        positions = torch.arange(DEMO, DEMO + QUERY)[None]
        plain = model(input_ids=ids[:, DEMO:], position_ids=positions).logits
    sources = [
        (lambda k, v: lambda module: VirtualTokens(k, v, per_kv_head=True))(c.keys[:, :, :DEMO], c.values[:, :, :DEMO])
        for c in icl.past_key_values.layers
    ]
    patch = VirtualKVPatch(list(find_language_model(model).attentions), sources)
    with torch.no_grad():
        alone = model(input_ids=ids[:, DEMO:], position_ids=positions).logits
    patch.remove()
    reference = icl.logits[:, DEMO:]
    return (alone - reference).abs().max().item(), (plain - reference).abs().max().item()


def test_gemma2_softcap_bites_and_the_theorem_holds_through_it() -> None:
    """Soft-capping changes this model's logits, and the virtual tokens reproduce the soft-capped ICL run."""
    ids = torch.randint(1, VOCAB, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        capped, uncapped = gemma2(64)(input_ids=ids).logits, gemma2(64, softcap=None)(input_ids=ids).logits
    assert (capped - uncapped).abs().max().item() > 1e-2
    error, control = _theorem(gemma2(64))
    assert error < 1e-4 < 1e-3 < control


@pytest.mark.parametrize(
    "build", [gemma2, gemma3, lambda w: gemma3(w, "eager"), mistral, lambda w: mistral(w, "eager")]
)
def test_theorem_holds_when_the_sliding_window_covers_the_prompt(build) -> None:
    error, control = _theorem(build(DEMO + QUERY))
    assert error < 1e-4 < 1e-3 < control


@pytest.mark.parametrize(
    "build", [gemma2, gemma3, lambda w: gemma3(w, "eager"), mistral, lambda w: mistral(w, "eager")]
)
def test_virtual_tokens_stay_visible_when_the_window_does_not_cover(build) -> None:
    """Window 4 over a 22-token prompt: the virtual run equals the ICL run in which every demonstration stays
    visible to every query, and differs from the plain ICL run, whose window drops the demonstrations."""
    model = build(4)
    documented, _ = _theorem(model, _demos_always_visible(model, 4))
    differs_from_icl, _ = _theorem(model)
    assert documented < 1e-4
    assert differs_from_icl > 1e-3


@pytest.mark.parametrize("build", [lambda: gemma2(64), lambda: mistral(8)])
def test_a_method_that_adds_nothing_leaves_logits_bit_identical(build) -> None:
    model = build()
    ids = torch.randint(1, VOCAB, (2, 12), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    lm = find_language_model(model)
    head_dim = lm.shape.head_dim
    with torch.no_grad():
        frozen = model(input_ids=ids, attention_mask=mask).logits
        for source in (
            lambda m: None,
            lambda m: VirtualTokens(torch.zeros(4, 0, head_dim), torch.zeros(4, 0, head_dim)),
        ):
            patch = VirtualKVPatch(list(lm.attentions), [source] * len(lm.attentions))
            assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, frozen)
            patch.remove()
        # one token with zero softmax mass: no longer bit-identical (one more summand), but equal to rounding
        masked = VirtualTokens(
            torch.randn(4, 1, head_dim), torch.randn(4, 1, head_dim), logit_bias=torch.full((4, 1), -torch.inf)
        )
        patch = VirtualKVPatch(list(lm.attentions), [lambda m: masked] * len(lm.attentions))
        assert (model(input_ids=ids, attention_mask=mask).logits - frozen)[0].abs().max().item() < 1e-5
        patch.remove()


class _Head(nn.Module):
    def __init__(self, tokens: VirtualTokens) -> None:
        super().__init__()
        self.num_key_value_groups, self.is_causal, self.config = 1, True, None
        self.__dict__["_virtual_kv"] = lambda module: tokens
        self.__dict__["_virtual_kv_config"] = None


def _qkv() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(1, 4, 6, 8, generator=g) for _ in range(3))


def test_layout_arguments_are_refused_in_one_sentence() -> None:
    q, k, v = _qkv()
    head = _Head(VirtualTokens(torch.randn(4, 2, 8), torch.randn(4, 2, 8)))
    with pytest.raises(KernelArgumentError, match="'cu_seq_lens_q'") as info:
        virtual_kv_attention("eager", head, q, k, v, None, cu_seq_lens_q=torch.tensor([0, 6]))
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, HificlError) and str(info.value).count(". ") == 0
    with pytest.raises(KernelArgumentError, match="soft-cap"):
        virtual_kv_attention("sdpa", head, q, k, v, None, softcap=30.0)
    # bookkeeping arguments pass; an argument set to None is no argument
    out, _ = virtual_kv_attention("sdpa", head, q, k, v, None, position_ids=torch.arange(6)[None], position_bias=None)
    assert out.shape == (1, 6, 4, 8)


def test_other_arguments_reach_the_models_own_kernel_with_the_virtual_keys() -> None:
    """An argument the closed form does not know goes to the model's kernel on the concatenating route."""
    q, k, v = _qkv()
    head = _Head(VirtualTokens(torch.randn(4, 2, 8), torch.randn(4, 2, 8)))
    seen: dict[str, object] = {}

    def kernel(module, query, key, value, mask, **kwargs):
        seen.update(kwargs, keys=key.shape[2])
        return torch.zeros(1, 6, 4, 8), None

    import hificl.attention as attention

    original = attention._model_eager
    attention._model_eager = lambda name: kernel
    try:
        with torch.no_grad():
            virtual_kv_attention("eager", head, q, k, v, None, s_aux=torch.ones(4))
    finally:
        attention._model_eager = original
    assert seen["keys"] == 2 + 6 and torch.equal(seen["s_aux"], torch.ones(4))


def test_flash_sliding_window_is_refused_only_when_it_would_hide_virtual_tokens() -> None:
    _check_arguments("flash_attention_2", {"sliding_window": 16}, n=4, kv_len=12)  # covers all 16 keys
    with pytest.raises(KernelArgumentError, match="sliding window"):
        _check_arguments("flash_attention_2", {"sliding_window": 16}, n=4, kv_len=13)
    _check_arguments("sdpa", {"sliding_window": 4}, n=4, kv_len=100)  # sdpa/eager: the window is in the mask


def _paligemma() -> PaliGemmaForConditionalGeneration:
    torch.manual_seed(0)
    vision = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64}
    vision |= {"num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 16, "patch_size": 8}
    text = {"model_type": "gemma", **TEXT, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 8}
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_id=VOCAB - 1, projection_dim=32)
    return PaliGemmaForConditionalGeneration(config).eval()


def _generate_positions(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The position ids generate() hands the language model at prefill."""
    seen: list[torch.Tensor] = []
    backbone = find_language_model(model).backbone
    hook = backbone.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["position_ids"]), with_kwargs=True)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=1, do_sample=False, pad_token_id=0)
    hook.remove()
    return seen[0]


@pytest.mark.parametrize(("build", "first"), [(_paligemma, 1), (lambda: family_models.llava()[0], 0)])
def test_training_positions_are_the_positions_generate_uses(build, first: int) -> None:
    """PaliGemma numbers positions from 1 in generate(); position_ids (what training forwards pass) agrees,
    left padding included, and the query-alone offset still equals the full run's positions."""
    model = build()
    vocab = model.config.get_text_config().vocab_size
    ids = torch.randint(6, vocab - 2, (2, 7), generator=torch.Generator().manual_seed(3))  # no special tokens
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    ours = position_ids(model, inputs)
    assert ours[0, 0].item() == first
    assert torch.equal(ours[mask.bool()], _generate_positions(model, inputs)[mask.bool()])
    demos, query = {"input_ids": ids[:1, :4]}, {"input_ids": ids[:1, 4:]}
    full = position_ids(model, {"input_ids": ids[:1]})
    assert torch.equal(query_position_ids(model, query, demos), full[:, 4:])
