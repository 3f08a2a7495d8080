"""HiFICL's parameters: count, initial behaviour, generation with a cache, padding, gradients, save/load."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import MistralConfig

from hificl.attention import VirtualTokens, virtual_kv_attention
from hificl.errors import AdapterError, ConfigError
from hificl.methods.hificl import HiFICL, HiFICLConfig
from hificl.methods.io import load_method, save_method
from hificl.methods.registry import build_method
from hificl.models.layers import attention_shape_from_config, find_language_model
from tests.models import IMAGE_SIZE, image_prompt, llava_qwen2


def test_parameter_count_of_mistral_7b_shape() -> None:
    config = MistralConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, num_hidden_layers=32)
    method = HiFICL(HiFICLConfig(n_tokens=8, rank=8), attention_shape_from_config(config))
    assert method.num_trainable() == 2_228_224  # 32 layers x 32 heads x 2 x (8*8 + 8*128)


def test_ablation_parameter_counts() -> None:
    shape = attention_shape_from_config(MistralConfig(hidden_size=256, num_attention_heads=4, num_hidden_layers=2))
    n, r, d, units = 4, 2, 64, 2 * 4
    assert HiFICL(HiFICLConfig(n, r, full_rank_k=True), shape).num_trainable() == units * (n * d + n * r + r * d)
    assert HiFICL(HiFICLConfig(n, r, full_rank_v=True), shape).num_trainable() == units * (n * r + r * d + n * d)
    per_kv = HiFICL(
        HiFICLConfig(n, r, per_kv_head=True),
        attention_shape_from_config(
            MistralConfig(hidden_size=256, num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=2)
        ),
    )
    assert per_kv.num_trainable() == 2 * 1 * 2 * (n * r + r * d)


@pytest.mark.parametrize(("n", "r", "word"), [(0, 4, "n_tokens=0"), (2, 65, "rank=65"), (2, 0, "rank=0")])
def test_invalid_hyperparameters_are_named(n: int, r: int, word: str) -> None:
    shape = attention_shape_from_config(MistralConfig(hidden_size=256, num_attention_heads=4, num_hidden_layers=1))
    with pytest.raises(ConfigError, match=word):
        HiFICL(HiFICLConfig(n_tokens=n, rank=r), shape)


def test_init_matches_reference_code() -> None:
    shape = attention_shape_from_config(MistralConfig(hidden_size=512, num_attention_heads=8, num_hidden_layers=4))
    m = HiFICL(HiFICLConfig(n_tokens=16, rank=16), shape, generator=torch.Generator().manual_seed(0))
    assert abs(m.k_a.std().item() - 1.0) < 0.05 and abs(m.v_a.std().item() - 1.0) < 0.05
    assert abs(m.k_b.std().item() - 0.01) < 0.0005
    assert torch.count_nonzero(m.v_b) == 0


def test_zero_values_give_alpha_times_sa_not_identity() -> None:
    """V_B = 0 at init: the output is alpha(q) SA(q, K, V), i.e. the real attention scaled down, not the identity."""
    shape = attention_shape_from_config(MistralConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=1))
    method = HiFICL(HiFICLConfig(n_tokens=4, rank=4), shape, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 5, 32, generator=g) for _ in range(3))
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 1, True
    module.__dict__["_virtual_kv"] = lambda m: method.layer_tokens(0, m)
    module.__dict__["_virtual_kv_config"] = None
    with torch.no_grad():
        out, _ = virtual_kv_attention("sdpa", module, q, k, v, None, scaling=32**-0.5)
        keys = method.keys(0)
        sa, _ = virtual_kv_attention("sdpa", torch.nn.Module(), q, k, v, None, scaling=32**-0.5, is_causal=True)
    s_real = (q @ k.transpose(-1, -2) / math.sqrt(32)).masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), -1e9)
    z2 = s_real.exp().sum(-1, keepdim=True)
    z1 = (q @ keys.transpose(-1, -2) / math.sqrt(32)).exp().sum(-1, keepdim=True)
    alpha = (z2 / (z1 + z2)).transpose(1, 2)
    assert torch.allclose(out, alpha * sa, atol=1e-6)
    assert (alpha < 0.999).any()  # so the start is not the identity


def _attached(seed: int = 0, attn: str = "sdpa", **cfg):
    model = llava_qwen2(attn=attn)
    method = build_method("hificl", model, {"n_tokens": 4, "rank": 4, **cfg}, seed=seed)
    with torch.no_grad():  # non-zero values, as after training
        method.v_b.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed + 1))
    method.attach(model)
    return model, method


def _batch(n_prompts: int = 2):
    g = torch.Generator().manual_seed(3)
    prompts = [image_prompt(g, 4 + 3 * i) for i in range(n_prompts)]
    pixels = torch.randn(n_prompts, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    return prompts, pixels


def test_sdpa_and_eager_give_the_same_numbers() -> None:
    prompts, pixels = _batch(1)
    outs = []
    for attn in ("sdpa", "eager"):
        model, _ = _attached(attn=attn)
        with torch.no_grad():
            outs.append(model(input_ids=prompts[0][None], pixel_values=pixels).logits)
    assert (outs[0] - outs[1]).abs().max().item() < 1e-5


def test_switch_off_restores_the_frozen_model_exactly() -> None:
    prompts, pixels = _batch(1)
    frozen = llava_qwen2()
    with torch.no_grad():
        reference = frozen(input_ids=prompts[0][None], pixel_values=pixels).logits
    model, method = _attached()
    with torch.no_grad():
        on = model(input_ids=prompts[0][None], pixel_values=pixels).logits
        with method.patch.disabled():
            off = model(input_ids=prompts[0][None], pixel_values=pixels).logits
    assert torch.equal(off, reference)
    assert (on - reference).abs().max().item() > 1e-3


def test_generate_with_cache_equals_full_recompute() -> None:
    prompts, pixels = _batch(1)
    model, _ = _attached()
    ids = prompts[0][None]
    with torch.no_grad():
        cached = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=6, do_sample=False, use_cache=True)
        sequence = ids
        for _ in range(6):  # greedy decoding by full recomputation, no cache at all
            logits = model(input_ids=sequence, pixel_values=pixels, use_cache=False).logits[:, -1]
            sequence = torch.cat([sequence, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, sequence)


def test_left_and_right_padding_give_the_same_answers() -> None:
    prompts, pixels = _batch(2)
    model, _ = _attached()
    width = max(p.numel() for p in prompts)
    alone = []
    with torch.no_grad():
        for i, p in enumerate(prompts):
            out = model.generate(input_ids=p[None], pixel_values=pixels[i : i + 1], max_new_tokens=5, do_sample=False)
            alone.append(out[0, p.numel() :])
        left = torch.stack([torch.cat([torch.zeros(width - p.numel(), dtype=torch.long), p]) for p in prompts])
        mask = (torch.arange(width)[None] >= (width - torch.tensor([p.numel() for p in prompts]))[:, None]).long()
        batched = model.generate(
            input_ids=left, attention_mask=mask, pixel_values=pixels, max_new_tokens=5, do_sample=False
        )
        right = torch.stack([torch.cat([p, torch.zeros(width - p.numel(), dtype=torch.long)]) for p in prompts])
        right_logits = model(
            input_ids=right,
            attention_mask=(right != 0).long() | (right == 0).cumsum(1).eq(0).long(),
            pixel_values=pixels,
        ).logits
    for i, p in enumerate(prompts):
        assert torch.equal(batched[i, width:], alone[i])
        with torch.no_grad():
            single = model(input_ids=p[None], pixel_values=pixels[i : i + 1]).logits[0]
        assert (right_logits[i, : p.numel()] - single).abs().max().item() < 1e-5


def test_only_hificl_parameters_learn_and_the_model_stays_bit_identical() -> None:
    model, method = _attached()
    for p in model.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hificl_before = {k: v.clone() for k, v in method.state_dict().items()}
    prompts, pixels = _batch(1)
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-2)
    ids = prompts[0][None]
    loss = model(input_ids=ids, pixel_values=pixels, labels=ids).loss
    loss.backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())
    optimizer.step()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(not torch.equal(v, hificl_before[k]) for k, v in method.state_dict().items())


def test_save_load_round_trip_and_base_model_check(tmp_path) -> None:
    model, method = _attached()
    prompts, pixels = _batch(1)
    with torch.no_grad():
        expected = model(input_ids=prompts[0][None], pixel_values=pixels).logits
    save_method(method, tmp_path / "adapter", model)
    method.detach()
    loaded = load_method(tmp_path / "adapter", model)
    loaded.attach(model)
    with torch.no_grad():
        assert torch.equal(model(input_ids=prompts[0][None], pixel_values=pixels).logits, expected)
    with pytest.raises(AdapterError, match="another base model"):
        load_method(tmp_path / "adapter", llava_qwen2(seed=1))
    weights = tmp_path / "adapter" / "method.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(AdapterError, match="truncated"):
        load_method(tmp_path / "adapter", model)


def test_layers_are_found_from_structure() -> None:
    lm = find_language_model(llava_qwen2())
    assert lm.shape.num_layers == 3 and lm.shape.num_heads == 4 and lm.shape.num_kv_heads == 2
    assert all(type(a).__name__ == "Qwen2Attention" for a in lm.attentions)


def test_unscaled_form_differs_from_joint_by_one_minus_alpha_sa() -> None:
    """alpha = 1 ablation: with V_D = 0 its output is SA itself, the joint form's is alpha SA."""
    prompts, pixels = _batch(1)
    model, method = _attached(scale_sa=False)
    with torch.no_grad():
        method.v_b.zero_()
        out = model(input_ids=prompts[0][None], pixel_values=pixels).logits
        with method.patch.disabled():
            frozen = model(input_ids=prompts[0][None], pixel_values=pixels).logits
    assert (out - frozen).abs().max().item() < 1e-5
    assert isinstance(method.layer_tokens(0, None), VirtualTokens)
