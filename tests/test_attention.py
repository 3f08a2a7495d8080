"""The attention primitive is exactly the mathematics: decomposition identity and the ICL equivalence theorem."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from hificl.attention import VirtualKVPatch, VirtualTokens, virtual_kv_attention
from hificl.methods.registry import build_method
from hificl.models.layers import find_language_model
from tests.models import IMAGE_SIZE, IMAGE_TOKEN, image_prompt, llava_llama, llava_qwen2, mistral


class _Head(nn.Module):
    """A stand-in attention module: what the registry function reads off the real ones."""

    def __init__(self, groups: int, tokens: VirtualTokens) -> None:
        super().__init__()
        self.num_key_value_groups, self.is_causal = groups, True
        self.config = None
        self.__dict__["_virtual_kv"] = lambda module: tokens
        self.__dict__["_virtual_kv_config"] = None


def _reference(q, k, v, kd, vd, visible, bias=None):
    """alpha(q) SA(q, K, V) + beta(q) V_D with Z1, Z2 written out over the visible keys."""
    d = q.shape[-1]
    s_real = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    s_virt = (q @ kd.transpose(-1, -2)) / math.sqrt(d) + (0 if bias is None else bias[None, :, None, :])
    e_real = torch.exp(s_real) * visible
    e_virt = torch.exp(s_virt)
    z1, z2 = e_virt.sum(-1, keepdim=True), e_real.sum(-1, keepdim=True)
    sa = (e_real / z2) @ v
    alpha, beta = z2 / (z1 + z2), e_virt / (z1 + z2)
    return alpha * sa + beta @ vd, sa, beta @ vd


def _masked_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, h, t, n, d = 2, 4, 6, 3, 8
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64) for _ in range(3))
    kd, vd = (
        torch.randn(h, n, d, generator=g, dtype=torch.float64),
        torch.randn(h, n, d, generator=g, dtype=torch.float64),
    )
    padding = torch.ones(b, t, dtype=torch.bool)
    padding[1, :2] = False  # left padding of the second row
    visible = torch.ones(t, t, dtype=torch.bool).tril()[None, None] & padding[:, None, None, :]
    visible[1, :, :2] = True  # padded queries see themselves-free rows; keep them finite, they are discarded
    return q, k, v, kd, vd, visible


@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
@pytest.mark.parametrize("form", ["joint", "unscaled"])
def test_decomposition_identity_with_causal_and_padding_masks(kernel: str, form: str) -> None:
    q, k, v, kd, vd, visible = _masked_inputs()
    bias = torch.randn(4, 3, dtype=torch.float64)
    module = _Head(1, VirtualTokens(kd, vd, logit_bias=bias, form=form))
    out, _ = virtual_kv_attention(kernel, module, q, k, v, visible, scaling=q.shape[-1] ** -0.5)
    joint, sa, beta_vd = _reference(q, k, v, kd, vd, visible.double(), bias)
    expected = joint if form == "joint" else sa + beta_vd
    rows = torch.tensor([[True] * 6, [False, False] + [True] * 4])  # padded query rows are undefined
    diff = (out.transpose(1, 2) - expected).abs()[rows[:, None, :].expand(-1, 4, -1)]
    assert diff.max().item() < 1e-5


def test_skipped_causal_mask_is_rebuilt_and_virtual_tokens_stay_visible() -> None:
    q, k, v, kd, vd, _ = _masked_inputs(1)
    module = _Head(1, VirtualTokens(kd, vd))
    out, _ = virtual_kv_attention("sdpa", module, q, k, v, None, scaling=q.shape[-1] ** -0.5)
    causal = torch.ones(6, 6).tril()[None, None].double()
    joint, _, _ = _reference(q, k, v, kd, vd, causal)
    assert (out.transpose(1, 2) - joint).abs().max().item() < 1e-10


def _icl_equivalence(model, per_kv_head: bool, attn_pixel: bool = True) -> float:
    """Run [demonstrations + query]; inject the demonstrations' per-layer K/V as virtual tokens into a run on
    the query alone (positions offset by the demonstration length); return the largest logit difference."""
    g = torch.Generator().manual_seed(0)
    lm = find_language_model(model)
    has_vision = hasattr(model, "vision_tower") or hasattr(model.model, "vision_tower")
    demo = image_prompt(g, 7, images=2) if has_vision else torch.randint(1, 90, (20,), generator=g)
    query = image_prompt(g, 5) if has_vision else torch.randint(1, 90, (9,), generator=g)
    pixels = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    extra = {"pixel_values": pixels} if has_vision else {}
    with torch.no_grad():
        icl = model(input_ids=torch.cat([demo, query])[None], use_cache=True, **extra)
    n = demo.numel()
    cache = icl.past_key_values.layers
    groups = lm.shape.groups

    def source(i: int):
        keys, values = cache[i].keys[:, :, :n], cache[i].values[:, :, :n]
        if not per_kv_head:
            keys, values = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
        return lambda module: VirtualTokens(keys, values, per_kv_head=per_kv_head)

    patch = VirtualKVPatch(list(lm.attentions), [source(i) for i in range(len(cache))])
    extra = {"pixel_values": pixels[2:]} if has_vision else {}
    positions = torch.arange(n, n + query.numel())[None]
    with torch.no_grad():
        alone = model(input_ids=query[None], position_ids=positions, **extra)
    patch.remove()
    return (alone.logits - icl.logits[:, n:]).abs().max().item()


@pytest.mark.parametrize("build", [llava_qwen2, llava_llama, mistral])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("per_kv_head", [True, False])
def test_icl_equivalence_theorem(build, attn: str, per_kv_head: bool) -> None:
    assert _icl_equivalence(build(attn=attn), per_kv_head) < 1e-4


def test_without_tokens_the_query_alone_differs_from_icl() -> None:
    """Control for the theorem: the demonstrations matter, so equality above is not vacuous."""
    model = llava_qwen2()
    g = torch.Generator().manual_seed(0)
    demo, query = image_prompt(g, 7, images=2), image_prompt(g, 5)
    pixels = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    with torch.no_grad():
        icl = model(input_ids=torch.cat([demo, query])[None], pixel_values=pixels).logits[:, demo.numel() :]
        alone = model(input_ids=query[None], pixel_values=pixels[2:]).logits
    assert (icl - alone).abs().max().item() > 1e-2


def test_vision_tower_is_untouched() -> None:
    model = llava_qwen2()
    lm = find_language_model(model)
    patch = VirtualKVPatch(list(lm.attentions), [lambda m: None] * len(lm.attentions))
    assert model.config.text_config._attn_implementation == "virtual_kv:sdpa"
    assert model.config.vision_config._attn_implementation == "sdpa"
    touched = [name for name, m in model.named_modules() if "_virtual_kv" in m.__dict__]
    assert touched and all(name.startswith("model.language_model.layers.") for name in touched)
    assert len(touched) == len(lm.layers)
    patch.remove()
    assert model.config.text_config._attn_implementation == "sdpa"


@pytest.mark.parametrize("form", ["joint", "unscaled"])
@pytest.mark.parametrize("per_kv_head", [True, False])
@pytest.mark.parametrize("masked", [True, False])
def test_fused_inference_path_equals_the_concatenating_path(form: str, per_kv_head: bool, masked: bool) -> None:
    """Inference on CPU takes the closed-form decomposition (fused kernel + log-sum-exp); training concatenates.
    Both must give the same numbers, with GQA, padding, logit bias and both output forms."""
    q, k, v, _, _, visible = _masked_inputs(2)
    q, k, v = q.float(), k[:, :2].float(), v[:, :2].float()  # 4 query heads over 2 KV heads
    g = torch.Generator().manual_seed(5)
    heads = 2 if per_kv_head else 4
    tokens = VirtualTokens(
        torch.randn(heads, 3, 8, generator=g),
        torch.randn(heads, 3, 8, generator=g),
        logit_bias=torch.randn(heads, 3, generator=g),
        form=form,
        per_kv_head=per_kv_head,
    )
    module = _Head(2, tokens)
    mask = visible if masked else None
    concatenated, _ = virtual_kv_attention("sdpa", module, q, k, v, mask, scaling=8**-0.5)
    with torch.no_grad():
        fused, _ = virtual_kv_attention("sdpa", module, q, k, v, mask, scaling=8**-0.5)
    assert (fused - concatenated.detach()).abs().max().item() < 1e-5


@pytest.mark.parametrize("form", ["joint", "unscaled"])
@pytest.mark.parametrize("per_kv_head", [True, False])
@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_decode_step_routes_equal_the_concatenating_path(
    form: str, per_kv_head: bool, padded: bool, bias: bool
) -> None:
    """One decode step (a single query over the cache): the grouped single-call route (joint form) and the
    log-sum-exp route (unscaled form) give the concatenating path's numbers, frozen (memoised) tokens too."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (
        torch.randn(2, 4, 1, 8, generator=g),
        torch.randn(2, 2, 9, 8, generator=g),
        torch.randn(2, 2, 9, 8, generator=g),
    )
    heads = 2 if per_kv_head else 4
    tokens = VirtualTokens(
        torch.randn(heads, 3, 8, generator=g),
        torch.randn(heads, 3, 8, generator=g),
        logit_bias=torch.randn(heads, 3, generator=g) if bias else None,
        form=form,
        per_kv_head=per_kv_head,
    )
    mask = None
    if padded:
        mask = torch.ones(2, 1, 1, 9, dtype=torch.bool)
        mask[1, ..., :3] = False
    module = _Head(2, tokens)
    reference, _ = virtual_kv_attention("sdpa", module, q, k, v, mask, scaling=8**-0.5)
    frozen = dataclasses.replace(tokens, frozen=True)
    module.__dict__["_virtual_kv"] = lambda m: frozen
    with torch.no_grad():
        for _ in range(2):  # the second call reads the memoised layout
            fused, _ = virtual_kv_attention("sdpa", module, q, k, v, mask, scaling=8**-0.5)
            assert (fused - reference.detach()).abs().max().item() < 1e-5


@pytest.mark.parametrize("form", ["joint", "unscaled"])
@pytest.mark.parametrize("per_kv_head", [True, False])
@pytest.mark.parametrize("q_len", [6, 1])
@pytest.mark.parametrize("masked", [True, False])
def test_value_map_adds_beta_q_w_on_every_route(form: str, per_kv_head: bool, q_len: int, masked: bool) -> None:
    """A query-dependent virtual value v + q W (MimIC's Tab. 8 "linear layer"): alpha SA + beta (v + q W) or
    SA + beta (v + q W), from the concatenating route (autograd on), the fused route and decoding (autograd
    off), with GQA, padding and a logit bias."""
    g = torch.Generator().manual_seed(11)
    q = torch.randn(2, 4, q_len, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 6, 8, generator=g, dtype=torch.float64) for _ in range(2))
    heads = 2 if per_kv_head else 4
    kd, vd = torch.randn(heads, 1, 8, generator=g), torch.randn(heads, 1, 8, generator=g)
    bias, w = torch.randn(heads, 1, generator=g), torch.randn(heads, 8, 8, generator=g) * 0.5
    tokens = VirtualTokens(kd, vd, logit_bias=bias, value_map=w, form=form, per_kv_head=per_kv_head)
    visible = torch.ones(6, 6, dtype=torch.bool).tril()[None, None, 6 - q_len :].repeat(2, 1, 1, 1)
    if masked:
        visible[1, ..., :2] = False  # left padding of the second row
    mask = visible if masked else None
    expand = 4 // heads
    kd_, vd_, b_, w_ = (x.double().repeat_interleave(expand, 0) for x in (kd, vd, bias, w))
    k_, v_ = (x.repeat_interleave(2, 1) for x in (k, v))
    _, sa, _ = _reference(q, k_, v_, kd_, vd_, visible, b_)
    s_virt = (q @ kd_.transpose(-1, -2)) / math.sqrt(8) + b_[None, :, None, :]
    z2 = (torch.exp(q @ k_.transpose(-1, -2) / math.sqrt(8)) * visible).sum(-1, keepdim=True)
    beta = torch.exp(s_virt) / (torch.exp(s_virt) + z2)
    value = vd_[None] + torch.einsum("bhtd,hde->bhte", q, w_)
    expected = ((1 - beta) * sa if form == "joint" else sa) + beta * value
    expected = expected.transpose(1, 2).float()
    keep = torch.ones_like(expected, dtype=torch.bool)
    if masked and q_len > 1:
        keep[1, :2] = False  # padded queries see no real key: SA is undefined there
    module = _Head(2, tokens)
    q, k, v = q.float(), k.float(), v.float()
    concatenated, _ = virtual_kv_attention("sdpa", module, q, k, v, mask, scaling=8**-0.5)
    with torch.no_grad():
        fused, _ = virtual_kv_attention("sdpa", module, q, k, v, mask, scaling=8**-0.5)
    assert (concatenated.detach() - expected)[keep].abs().max().item() < 1e-5
    assert (fused - expected)[keep].abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="exactly one virtual token; got 3"):
        VirtualTokens(torch.zeros(4, 3, 8), torch.zeros(4, 3, 8), value_map=torch.zeros(4, 8, 8))


def test_tokens_are_materialised_once_at_inference_and_refreshed_when_parameters_change() -> None:
    model = llava_qwen2()
    method = build_method("hificl", model, {"n_tokens": 2, "rank": 2}, seed=0)
    calls = []
    original = method.layer_tokens
    method.layer_tokens = lambda layer, module: calls.append(layer) or original(layer, module)
    method.attach(model)
    layers = len(find_language_model(model).layers)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, IMAGE_TOKEN, (1, 10), generator=g)
    method.eval()
    with torch.no_grad():
        first = model(input_ids=ids).logits
        model(input_ids=ids)
        assert len(calls) == layers  # once per layer, reused by the second forward
        method.v_b.normal_(0, 0.5, generator=g)  # what an optimizer step does: an in-place update
        changed = model(input_ids=ids).logits
        assert len(calls) == 2 * layers and (changed - first).abs().max().item() > 1e-3
    fresh = model(input_ids=ids).logits  # autograd on: computed afresh, gradients flow
    assert len(calls) == 3 * layers and (fresh.detach() - changed).abs().max().item() < 1e-5
    fresh.sum().backward()
    assert method.v_b.grad is not None and method.v_b.grad.abs().sum() > 0
    method.train()
    with torch.no_grad():
        model(input_ids=ids)
    assert len(calls) == 4 * layers  # switching mode invalidates
    method.detach()
