"""MimIC, LIVE, LoRA (and HiFICL) as trained methods: exact forms, learning progress, frozen model, save/load."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import MistralConfig

from hificl.attention import virtual_kv_attention
from hificl.batch import PromptBatch, TrainBatch
from hificl.errors import ConfigError, DataError
from hificl.methods.io import load_method, save_method
from hificl.methods.lora import LoRA, LoRAConfig
from hificl.methods.losses import IGNORE, check_query_spans
from hificl.methods.mimic import MimIC, MimICConfig
from hificl.methods.presets import PRESETS, TRAINING_DEFAULTS, resolve_preset
from hificl.methods.registry import build_method, make_config
from hificl.models.layers import AttentionShape, attention_shape_from_config, find_language_model
from tests.models import IMAGE_SIZE, image_prompt, llava_qwen2

TRAINED = {
    "mimic": ({"form": "paper"}, 5e-2),
    "live": ({}, 5e-2),
    "lora": ({"rank": 4, "alpha": 8.0, "dropout": 0.0}, 1e-2),
    "hificl": ({"n_tokens": 4, "rank": 4}, 5e-2),
}


# ---------------------------------------------------------------- MimIC's token through the primitive


def _masked_direct(q, k, v, allowed, w, b, shift, scaling):
    """(1 - mu) SA + mu v and SA + mu v from MimIC's formula, computed without the primitive."""
    scores = (q @ k.transpose(-1, -2) * scaling).masked_fill(~allowed, -math.inf)
    sa = scores.softmax(-1) @ v
    z2 = scores.exp().sum(-1, keepdim=True)
    f = torch.einsum("bhtd,hd->bht", q, w)[..., None] + b[None, :, None, None]
    mu = f.exp() / (f.exp() + z2)
    s = shift[None, :, None, :]
    return ((1 - mu) * sa + mu * s).transpose(1, 2), (sa + mu * s).transpose(1, 2)


@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
def test_mimic_token_equals_its_formula_under_causal_and_padding_masks(kernel: str) -> None:
    heads, t, d = 2, 6, 8
    shape = AttentionShape(num_layers=1, num_heads=heads, num_kv_heads=heads, head_dim=d, hidden_size=heads * d)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, heads, t, d, generator=g) for _ in range(3))
    pad = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)  # row 0 left-padded by 2
    allowed = (torch.ones(t, t, dtype=torch.bool).tril()[None] & pad[:, None, :])[:, None]  # (B, 1, T, T)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal, module.scaling = 1, True, d**-0.5
    module.__dict__["_virtual_kv_config"] = None
    # trained-looking values: a sizeable weight, a real bias, a sizeable shift
    w, b, shift = (
        torch.randn(heads, d, generator=g) * 0.3,
        torch.tensor([0.7, -0.4]),
        torch.randn(heads, d, generator=g),
    )
    outputs = {}
    for form in ("paper", "public-code"):
        method = MimIC(MimICConfig(form=form), shape)
        with torch.no_grad():
            method.f_weight[0], method.f_bias[0], method.shift[0] = w, b, shift
        module.__dict__["_virtual_kv"] = lambda m, method=method: method.layer_tokens(0, m)
        with torch.no_grad():
            outputs[form], _ = virtual_kv_attention(kernel, module, q, k, v, allowed, scaling=module.scaling)
    paper, public = _masked_direct(q, k, v, allowed, w, b, shift, d**-0.5)
    real = pad[:, :, None, None].expand_as(paper)  # padded queries see no real key: SA is undefined there
    assert (outputs["paper"] - paper)[real].abs().max().item() < 1e-5
    assert (outputs["public-code"] - public)[real].abs().max().item() < 1e-5
    assert (outputs["paper"] - outputs["public-code"])[real].abs().max().item() > 1e-2  # the forms really differ


def test_mimic_rejects_unknown_form() -> None:
    shape = AttentionShape(1, 2, 2, 8, 16)
    with pytest.raises(ConfigError, match="form='both'"):
        MimIC(MimICConfig(form="both"), shape)


# ---------------------------------------------------------------- a hand-built student/teacher batch


def _left_pad(rows: list[torch.Tensor], fill: int) -> torch.Tensor:
    width = max(r.numel() for r in rows)
    return torch.stack([torch.cat([torch.full((width - r.numel(),), fill, dtype=r.dtype), r]) for r in rows])


def _prompts(rows: list[torch.Tensor], answers: list[int], query_len: list[int], pixels: torch.Tensor) -> PromptBatch:
    ids = _left_pad(rows, 0)
    mask = _left_pad([torch.ones_like(r) for r in rows], 0)
    labels = _left_pad(
        [torch.cat([torch.full((r.numel() - a,), IGNORE), r[-a:]]) for r, a in zip(rows, answers, strict=True)], IGNORE
    )
    inputs = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels}
    return PromptBatch(inputs, labels, torch.tensor(query_len))


def _train_batch(seed: int = 3) -> TrainBatch:
    """Two rows; student = image + question + answer; teacher = one demonstration (image + text) + the same query."""
    g = torch.Generator().manual_seed(seed)
    queries, demos, answers = [], [], [2, 3]
    for i, answer in enumerate(answers):
        question = image_prompt(g, 3 + 2 * i)
        queries.append(torch.cat([question, torch.randint(1, 90, (answer,), generator=g)]))
        demos.append(image_prompt(g, 5 + i))
    query_pixels = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    demo_pixels = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    teacher_pixels = torch.stack([demo_pixels[0], query_pixels[0], demo_pixels[1], query_pixels[1]])
    query_len = [q.numel() for q in queries]
    student = _prompts(queries, answers, query_len, query_pixels)
    teacher = _prompts(
        [torch.cat([d, q]) for d, q in zip(demos, queries, strict=True)], answers, query_len, teacher_pixels
    )
    return TrainBatch(student, teacher)


def answer_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens (the logits predicting token t sit at t - 1)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)


def _loss(model, method, batch: TrainBatch) -> dict[str, torch.Tensor]:
    teacher = None
    if method.needs_teacher:
        with torch.no_grad(), method.disabled():
            teacher = model(**batch.teacher.inputs, output_hidden_states=True)
    student = model(**batch.student.inputs, output_hidden_states=True)
    ce = answer_cross_entropy(student.logits, batch.student.labels)
    return method.training_loss(ce, student, teacher, batch)


def _attached(name: str):
    model = llava_qwen2()
    for p in model.parameters():
        p.requires_grad_(False)
    method = build_method(name, model, TRAINED[name][0], seed=0)
    method.attach(model)
    return model, method


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_training_lowers_the_loss_and_touches_only_the_method(name: str, tmp_path) -> None:
    model, method = _attached(name)
    frozen = llava_qwen2().state_dict()  # same seed: the model as it was before anything was attached
    start = {k: v.clone() for k, v in method.state_dict().items()}
    batch = _train_batch()
    optimizer = torch.optim.AdamW(method.param_groups(TRAINED[name][1], TRAINING_DEFAULTS["weight_decay"]))
    losses = []
    for _ in range(10):
        loss = _loss(model, method, batch)["loss"]
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        losses.append(_loss(model, method, batch)["loss"].item())
    assert losses[-1] < 0.97 * losses[0] and losses[-1] < min(losses[:3]), losses
    assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    assert all(not torch.equal(v, start[k]) for k, v in method.state_dict().items())

    with torch.no_grad():
        expected = model(**batch.student.inputs).logits
    save_method(method, tmp_path / name, model)
    method.detach()
    after = model.state_dict()
    assert after.keys() == frozen.keys() and all(torch.equal(after[k], v) for k, v in frozen.items())
    loaded = load_method(tmp_path / name, model)
    loaded.attach(model)
    with torch.no_grad():
        assert torch.equal(model(**batch.student.inputs).logits, expected)


def test_teacher_methods_report_their_terms() -> None:
    batch = _train_batch()
    model, mimic = _attached("mimic")
    terms = _loss(model, mimic, batch)
    assert torch.allclose(terms["loss"], terms["align"] + 0.5 * terms["ce"])
    assert terms["align"].item() > 0
    mimic.detach()
    live = build_method("live", model, {}, seed=0)
    live.attach(model)
    terms = _loss(model, live, batch)
    assert torch.allclose(terms["loss"], terms["kl"] + 0.5 * terms["ce"]) and terms["kl"].item() > 0


def test_misaligned_teacher_span_is_refused() -> None:
    batch = _train_batch()
    check_query_spans(batch)  # the well-formed batch passes
    batch.teacher.inputs["input_ids"][1, -4] += 1  # one query token differs in row 1
    with pytest.raises(DataError, match="Row 1: the teacher's query tokens differ"):
        check_query_spans(batch)
    model, method = _attached("mimic")
    with pytest.raises(DataError, match="Row 1"):
        _loss(model, method, batch)
    shifted = _train_batch()
    shifted.teacher.query_len[0] += 1
    with pytest.raises(DataError, match="Row 0: the student's query span has"):
        check_query_spans(shifted)


# ---------------------------------------------------------------- LIVE specifics


def test_live_is_norm_preserving_and_switches_off() -> None:
    model, method = _attached("live")
    batch = _train_batch()
    h = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = method.shifted(1, h)
    assert torch.allclose(out.norm(dim=-1), h.norm(dim=-1), atol=1e-5) and not torch.allclose(out, h)
    with torch.no_grad():
        with method.disabled():
            off = model(**batch.student.inputs).logits
        on = model(**batch.student.inputs).logits
        method.detach()
        bare = model(**batch.student.inputs).logits
    assert torch.equal(off, bare) and (on - bare).abs().max().item() > 1e-4
    groups = method.param_groups(5e-3, 1e-3)
    assert [g["lr"] for g in groups] == [5e-3, 1e-2] and groups[1]["params"][0] is method.alpha
    assert torch.equal(method.alpha.detach(), torch.full((3,), 0.1))


# ---------------------------------------------------------------- LoRA specifics


def _lora_count(shape: AttentionShape, rank: int, targets: tuple[str, ...]) -> int:
    h, q, kv = shape.hidden_size, shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    per = {"q_proj": h + q, "k_proj": h + kv, "v_proj": h + kv, "o_proj": q + h}
    return shape.num_layers * rank * sum(per[t] for t in targets)


def test_lora_wraps_only_language_model_projections() -> None:
    model = llava_qwen2()
    method = build_method("lora", model, {"rank": 16, "alpha": 32.0}, seed=0)
    method.attach(model)
    wrapped = sorted(n for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
    assert len(wrapped) == 3 * 4
    assert all(".language_model." in n and ".self_attn." in n for n in wrapped)
    assert not any("vision" in n for n in wrapped)  # the CLIP tower also has q/k/v projections
    assert any("vision_tower" in n and n.endswith("q_proj") for n, _ in model.named_modules())
    shape = find_language_model(model).shape
    assert (
        method.num_trainable()
        == _lora_count(shape, 16, ("q_proj", "k_proj", "v_proj", "o_proj"))
        == 3 * 16 * ((64 + 64) + 2 * (64 + 32) + (64 + 64))
    )
    lora_params = {id(p) for n, p in model.named_parameters() if "lora_" in n}
    assert lora_params == {id(p) for p in method.parameters()}


def test_lora_o1_is_rank_one_on_o_proj_only() -> None:
    model = llava_qwen2()
    preset = resolve_preset("lora-o1")
    method = build_method(preset["method"], model, preset["config"], seed=0)
    method.attach(model)
    wrapped = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")]
    assert len(wrapped) == 3 and all(n.endswith("self_attn.o_proj") for n in wrapped)
    assert all(model.get_submodule(n).lora_A["default"].weight.shape == (1, 64) for n in wrapped)
    assert method.num_trainable() == 3 * 1 * (64 + 64)
    gqa = attention_shape_from_config(
        MistralConfig(hidden_size=512, num_attention_heads=8, num_key_value_heads=2, num_hidden_layers=4)
    )
    assert LoRA(LoRAConfig(rank=1, alpha=2.0, targets=("o_proj",)), gqa).num_trainable() == 4 * (512 + 512)
    assert LoRA(LoRAConfig(), gqa).num_trainable() == 4 * 16 * (2 * (512 + 512) + 2 * (512 + 128))


def test_lora_disabled_is_the_frozen_model() -> None:
    model, method = _attached("lora")
    batch = _train_batch()
    with torch.no_grad():
        method.lora["layers_0_v_proj_lora_B"].normal_(0, 0.5)
        bare = llava_qwen2()(**batch.student.inputs).logits
        on = model(**batch.student.inputs).logits
        with method.disabled():
            off = model(**batch.student.inputs).logits
    assert torch.equal(off, bare) and (on - bare).abs().max().item() > 1e-4


@pytest.mark.parametrize(
    ("values", "word"),
    [({"rank": 0}, "rank=0"), ({"dropout": 1.0}, "dropout=1.0"), ({"targets": ["gate_proj"]}, "gate_proj")],
)
def test_lora_bad_settings_are_named(values: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        LoRA(make_config("lora", values), AttentionShape(1, 2, 2, 8, 16))


# ---------------------------------------------------------------- presets


def test_presets_build_and_carry_paper_defaults() -> None:
    assert set(PRESETS) == {
        "zero-shot", "icl", "hificl", "hificl+teacher", "hificl-full-k", "hificl-full-v", "hificl-alpha1",
        "mimic", "mimic-public", "live", "lora", "lora-o1",
    }  # fmt: skip
    assert resolve_preset("icl")["shots"] == 8 and resolve_preset("icl")["method"] is None
    assert resolve_preset("hificl")["lr"] == 5e-3 and resolve_preset("lora")["lr"] == 5e-4
    assert resolve_preset("mimic-public")["config"]["form"] == "public-code"
    assert all(p["weight_decay"] == 1e-3 for p in PRESETS.values())
    assert TRAINING_DEFAULTS == {"optimizer": "adamw", "weight_decay": 1e-3, "scheduler": "cosine", "warmup_ratio": 0.1}
    model = llava_qwen2()
    for name, preset in PRESETS.items():
        if preset["method"] is None:
            continue
        method = build_method(preset["method"], model, preset["config"], seed=0)
        assert preset["teacher_shots"] == (8 if method.needs_teacher else 0), name
    with pytest.raises(ConfigError, match="Unknown preset 'mimc'; known presets: zero-shot, icl"):
        resolve_preset("mimc")
