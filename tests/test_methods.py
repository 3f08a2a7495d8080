"""MimIC, LIVE, LoRA (and HiFICL) as trained methods: exact forms, learning progress, frozen model, save/load."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hificl.attention import virtual_kv_attention
from hificl.batch import PromptBatch, TrainBatch
from hificl.errors import ConfigError, DataError, ModelError, TrainingError
from hificl.methods.io import load_method, save_method
from hificl.methods.lora import LoRA
from hificl.methods.losses import IGNORE, check_query_spans, layerwise_alignment
from hificl.methods.mimic import MimIC, MimICConfig
from hificl.methods.presets import PRESETS, TRAINING_DEFAULTS, resolve_preset
from hificl.methods.registry import build_method, make_config
from hificl.models.layers import AttentionShape, find_language_model
from tests.models import IMAGE_SIZE, image_prompt, llava_qwen2

TRAINED = {
    "mimic": ({"form": "unscaled"}, 5e-2),
    "mimic-linear": ({"form": "joint", "shift": "linear"}, 5e-2),
    "live": ({}, 5e-2),
    "lora": ({"rank": 4, "alpha": 8.0, "dropout": 0.0}, 1e-2),
    "hificl": ({"n_tokens": 4, "rank": 4}, 5e-2),
}


# ---------------------------------------------------------------- MimIC's token through the primitive


def _masked_direct(q, k, v, allowed, w, b, shift, scaling):
    """(1 - mu) SA + mu v (Tab. 8 "learnable vector") and SA + mu v (MimIC) from the formula, without the primitive."""
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
    for form in ("joint", "unscaled"):
        method = MimIC(MimICConfig(form=form), shape)
        with torch.no_grad():
            method.f_weight[0], method.f_bias[0], method.shift[0] = w, b, shift
        module.__dict__["_virtual_kv"] = lambda m, method=method: method.layer_tokens(0, m)
        with torch.no_grad():
            outputs[form], _ = virtual_kv_attention(kernel, module, q, k, v, allowed, scaling=module.scaling)
    joint, unscaled = _masked_direct(q, k, v, allowed, w, b, shift, d**-0.5)
    real = pad[:, :, None, None].expand_as(joint)  # padded queries see no real key: SA is undefined there
    assert (outputs["joint"] - joint)[real].abs().max().item() < 1e-5
    assert (outputs["unscaled"] - unscaled)[real].abs().max().item() < 1e-5
    assert (outputs["joint"] - outputs["unscaled"])[real].abs().max().item() > 1e-2  # the forms really differ
    assert MimICConfig().form == "unscaled" and resolve_preset("mimic")["config"]["form"] == "unscaled"
    assert resolve_preset("mimic-vector")["config"]["form"] == "joint"


def test_head_sharing_mu_ties_f_across_the_heads_of_a_layer() -> None:
    heads, t, d = 2, 5, 8
    shape = AttentionShape(num_layers=1, num_heads=heads, num_kv_heads=heads, head_dim=d, hidden_size=heads * d)
    method = MimIC(MimICConfig(mu="shared-head"), shape, torch.Generator().manual_seed(0))
    assert method.f_weight.shape == (1, 1, d) and method.f_bias.shape == (1, 1)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, heads, t, d, generator=g) for _ in range(3))
    allowed = torch.ones(t, t, dtype=torch.bool).tril()[None, None]
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal, module.scaling = 1, True, d**-0.5
    module.__dict__["_virtual_kv_config"] = None
    module.__dict__["_virtual_kv"] = lambda m: method.layer_tokens(0, m)
    with torch.no_grad():
        method.f_bias.fill_(0.3)
        method.shift.normal_(generator=g)
        out, _ = virtual_kv_attention("eager", module, q, k, v, allowed, scaling=module.scaling)
    w, b = method.f_weight[0].expand(heads, d), method.f_bias[0].expand(heads)
    _, expected = _masked_direct(q, k, v, allowed, w.detach(), b.detach(), method.shift[0].detach(), d**-0.5)
    assert (out - expected).abs().max().item() < 1e-5


def test_mimic_rejects_unknown_form() -> None:
    shape = AttentionShape(1, 2, 2, 8, 16)
    with pytest.raises(ConfigError, match="form='both'"):
        MimIC(MimICConfig(form="both"), shape)
    with pytest.raises(ConfigError, match="teacher_shots=0"):
        MimIC(MimICConfig(teacher_shots=0), shape)
    with pytest.raises(ConfigError, match="align_to='residual'"):
        MimIC(MimICConfig(align_to="residual"), shape)
    with pytest.raises(ConfigError, match="form='unscaled' only"):
        MimIC(MimICConfig(mu="shared-query", form="joint"), shape)
    with pytest.raises(ConfigError, match="shift='matrix'"):
        MimIC(MimICConfig(shift="matrix"), shape)
    with pytest.raises(ConfigError, match="shift='vector' only"):
        MimIC(MimICConfig(mu="shared-query", shift="linear"), shape)


# ---------------------------------------------------------------- Tab. 8 "linear layer": (1 - mu) SA + mu h(q)


def _linear_direct(q, k, v, allowed, w, b, weight_map, shift, scaling):
    """(1 - mu) SA + mu h(q), h(q) = q W + v per head, from q, K, V by hand (K, V already one head per query head).
    Masked logits are -1e9, not -inf, so a padded row (no key) stays finite and its zero cotangent no NaN."""
    scores = (q @ k.transpose(-1, -2) * scaling).masked_fill(~allowed, -1e9)
    sa = scores.softmax(-1) @ v
    z2 = scores.exp().sum(-1, keepdim=True)
    f = torch.einsum("bhtd,hd->bht", q, w)[..., None] + b[None, :, None, None]
    mu = f.exp() / (f.exp() + z2)
    h = torch.einsum("bhtd,hde->bhte", q, weight_map) + shift[None, :, None, :]
    return ((1 - mu) * sa + mu * h).transpose(1, 2)


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("kernel", ["sdpa", "eager"])
@pytest.mark.parametrize("q_len", [6, 1], ids=["prefill", "decode"])
def test_mimic_linear_equals_one_minus_mu_sa_plus_mu_h_of_q(kernel: str, grad: bool, q_len: int) -> None:
    """Every route (fused CPU inference, decoding, concatenating under autograd) against the formula, with
    grouped-query heads, causal + padding masks, and gradients equal to the formula's."""
    heads, kv_heads, t, d = 4, 2, 6, 8
    shape = AttentionShape(num_layers=1, num_heads=heads, num_kv_heads=kv_heads, head_dim=d, hidden_size=heads * d)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, heads, q_len, d, generator=g)
    k, v = (torch.randn(2, kv_heads, t, d, generator=g) for _ in range(2))
    pad = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)  # row 0 left-padded by 2
    causal = torch.ones(t, t, dtype=torch.bool).tril()[t - q_len :]
    allowed = (causal[None] & pad[:, None, :])[:, None]  # (B, 1, q_len, T)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal, module.scaling = heads // kv_heads, True, d**-0.5
    module.__dict__["_virtual_kv_config"] = None
    method = MimIC(MimICConfig(form="joint", shift="linear"), shape)
    with torch.no_grad():  # trained-looking values
        method.f_weight.normal_(generator=g).mul_(0.3)
        method.f_bias.normal_(generator=g)
        method.shift.normal_(generator=g)
        method.shift_map.normal_(generator=g).mul_(0.5)
    module.__dict__["_virtual_kv"] = lambda m: method.layer_tokens(0, m)
    with torch.set_grad_enabled(grad):
        out, _ = virtual_kv_attention(kernel, module, q, k, v, allowed, scaling=module.scaling)
    params = (method.f_weight[0], method.f_bias[0], method.shift_map[0], method.shift[0])
    k, v = (x.repeat_interleave(heads // kv_heads, dim=1) for x in (k, v))
    expected = _linear_direct(q, k, v, allowed, *params, d**-0.5)
    real = pad[:, -q_len:, None, None].expand_as(expected)  # padded queries see no real key: SA is undefined there
    assert (out - expected.detach())[real].abs().max().item() < 1e-5
    vector = _linear_direct(q, k, v, allowed, params[0], params[1], torch.zeros_like(params[2]), params[3], d**-0.5)
    assert (out - vector.detach())[real].abs().max().item() > 1e-2  # h(q) really depends on q
    if grad:
        cotangent = torch.randn(expected.shape, generator=g) * real
        trained = [method.f_weight, method.f_bias, method.shift_map, method.shift]
        got = torch.autograd.grad(out, trained, cotangent)
        want = torch.autograd.grad(expected, trained, cotangent)
        for a, b in zip(got, want, strict=True):
            assert (a - b).abs().max().item() < 1e-5
            assert b.abs().max().item() > 1e-3


def test_mimic_linear_counts_h_per_head_and_is_the_preset() -> None:
    """Idefics2-8B's shape (32 layers x 32 heads, head_dim 128): v (h's bias) + W + f's weight and bias per head,
    32 x 32 x (128 + 128^2 + 128 + 1) = 17,040,384, against MimIC's 263,168."""
    assert resolve_preset("mimic-linear")["config"] == {
        "teacher_shots": 8, "ce_weight": 0.5, "align_weight": 1.0, "form": "joint", "mu": "per-head",
        "shift": "linear", "align_to": "ffn",
    }  # fmt: skip
    shape = AttentionShape(num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128, hidden_size=4096)
    with torch.device("meta"):
        linear = MimIC(make_config("mimic", resolve_preset("mimic-linear")["config"]), shape)
        vector = MimIC(make_config("mimic", resolve_preset("mimic-vector")["config"]), shape)
    assert linear.num_trainable() == 32 * 32 * (128 + 128 * 128 + 128 + 1) == 17_040_384
    assert vector.num_trainable() == 263_168


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
    if method.teacher_shots:
        with torch.no_grad(), method.disabled():
            teacher = model(**batch.teacher.inputs)
    student = model(**batch.student.inputs)
    ce = answer_cross_entropy(student.logits, batch.student.labels)
    return method.training_loss(ce, student, teacher, batch)


def _attached(name: str):
    model = llava_qwen2()
    for p in model.parameters():
        p.requires_grad_(False)
    method = build_method(name.partition("-")[0], model, TRAINED[name][0], seed=0)  # "mimic-linear": a MimIC
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


@pytest.mark.parametrize(("preset", "child"), [("mimic", "mlp"), ("mimic-after-sa", "self_attn")])
def test_mimic_aligns_each_layers_ffn_output_or_after_sa(preset: str, child: str) -> None:
    model = llava_qwen2()
    model.requires_grad_(False)
    method = build_method("mimic", model, resolve_preset(preset)["config"], seed=0)
    method.attach(model)
    with torch.no_grad():
        method.shift.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    recorded: dict[str, list[torch.Tensor]] = {"student": [], "teacher": []}
    role = ["teacher"]

    def record(_m, _i, out) -> None:
        recorded[role[0]].append((out[0] if isinstance(out, tuple) else out).detach())

    layers = find_language_model(model).layers
    hooks = [getattr(layer, child).register_forward_hook(record) for layer in layers]
    batch = _train_batch()
    with torch.no_grad(), method.disabled():
        teacher = model(**batch.teacher.inputs, output_hidden_states=True)
    role[0] = "student"
    student = model(**batch.student.inputs, output_hidden_states=True)
    for hook in hooks:
        hook.remove()
    ce = answer_cross_entropy(student.logits, batch.student.labels)
    terms = method.training_loss(ce, student, teacher, batch)
    expected = layerwise_alignment(tuple(recorded["student"]), tuple(recorded["teacher"]), batch)
    residual = layerwise_alignment(student.hidden_states[1:], teacher.hidden_states[1:], batch)
    assert len(recorded["student"]) == len(layers) and torch.allclose(terms["align"], expected)
    assert terms["align"].item() > 0 and not torch.allclose(terms["align"], residual, rtol=1e-2)
    assert torch.allclose(terms["loss"], terms["align"] + 0.5 * terms["ce"])
    method.eval()
    with torch.no_grad():
        model(**batch.student.inputs)  # an inference forward records nothing: a training loss now has no pass
    with pytest.raises(TrainingError, match=r"No (ffn|attention) outputs"):
        method.training_loss(ce, student, teacher, batch)


def test_query_sharing_mu_adds_a_constant_shift_in_front_of_w_o() -> None:
    model = llava_qwen2()
    method = build_method("mimic", model, resolve_preset("mimic-shared-query")["config"], seed=0)
    method.attach(model)
    with torch.no_grad():
        method.shift.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
        method.mu_logit.fill_(0.4)
    seen = []
    o_proj = find_language_model(model).attentions[0].o_proj
    hook = o_proj.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    batch = _train_batch()
    with torch.no_grad():
        with method.disabled():
            model(**batch.student.inputs)
        model(**batch.student.inputs)
    hook.remove()
    constant = (torch.sigmoid(torch.tensor(0.4)) * method.shift[0]).flatten()
    assert torch.allclose(seen[1] - seen[0], constant.expand_as(seen[0]), atol=1e-6)
    assert method.num_trainable() == 3 * 4 * 16 + 3 * 4  # v per head + one mu per head, no f


def test_hificl_teacher_aligns_ffn_outputs() -> None:
    model = llava_qwen2()
    method = build_method("hificl", model, resolve_preset("hificl+teacher")["config"], seed=0)
    method.attach(model)
    with torch.no_grad():
        method.v_b.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    terms = _loss(model, method, _train_batch())
    assert terms["align"].item() > 0 and torch.allclose(terms["loss"], terms["ce"] + terms["align"])


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


def _wrapped(model) -> list[str]:
    return sorted(n for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer"))


def test_lora_adapts_vision_and_language_attention_lora_lm_only_the_language_model() -> None:
    model = llava_qwen2()
    vision_layers = model.config.vision_config.num_hidden_layers
    method = build_method("lora", model, resolve_preset("lora")["config"], seed=0)
    method.attach(model)
    wrapped = _wrapped(model)
    language = [n for n in wrapped if ".language_model." in n and ".self_attn." in n]
    vision = [n for n in wrapped if ".vision_tower." in n]
    assert len(language) == 3 * 4 and len(vision) == 3 * vision_layers and len(wrapped) == 12 + 3 * vision_layers
    assert {n.rpartition(".")[2] for n in vision} == {"q_proj", "k_proj", "v_proj"}  # CLIP's W_o is `out_proj`
    h_v = model.config.vision_config.hidden_size
    language_count = 3 * 16 * ((64 + 64) + 2 * (64 + 32) + (64 + 64))
    assert method.num_trainable() == language_count + vision_layers * 3 * 16 * (h_v + h_v)
    assert {id(p) for n, p in model.named_parameters() if "lora_" in n} == {id(p) for p in method.parameters()}
    method.detach()
    assert not _wrapped(model)
    lm_only = build_method("lora", model, resolve_preset("lora-lm")["config"], seed=0)
    lm_only.attach(model)
    assert _wrapped(model) == language and lm_only.num_trainable() == language_count


def test_lora_o1_is_rank_one_on_o_proj_only() -> None:
    model = llava_qwen2()
    preset = resolve_preset("lora-o1")
    method = build_method(preset["method"], model, preset["config"], seed=0)
    method.attach(model)
    wrapped = _wrapped(model)
    assert len(wrapped) == 3 and all(n.endswith("self_attn.o_proj") and ".language_model." in n for n in wrapped)
    assert all(model.get_submodule(n).lora_A["default"].weight.shape == (1, 64) for n in wrapped)
    assert method.num_trainable() == 3 * 1 * (64 + 64)


PAPER_COUNTS = {"mimic": 32 * 32 * (128 + 128 + 1), "hificl": 2_228_224, "live": 32 * 4096 + 32}


def _meta(cls, config):
    with torch.device("meta"):
        return cls(config)


def test_lora_counts_for_the_papers_models_on_the_meta_device() -> None:
    """The papers' LoRA is peft's suffix list q/k/v/o over the WHOLE model; its counts at the papers' shapes.

    LLaVA-Interleave-7B (llava-hf/llava-interleave-qwen-7b-hf: Qwen1.5-7B text, 32 layers, 4096 wide, 32 kv heads;
    SigLIP-so400m vision cut to 26 layers, 1152 wide): language model q/k/v/o = 32 x 4 x 16 x (4096 + 4096) =
    16,777,216 (the HiFICL paper's "16.8M"), vision q/k/v = 26 x 3 x 16 x (1152 + 1152) = 2,875,392 (its W_o is
    `out_proj`, not in the list), total 19,652,608: the paper's 19.7M. Idefics2-8B (Mistral-7B with 8 kv heads,
    SigLIP 27 x 1152, perceiver 3 layers of 16 x 96 queries over 4 x 96 keys/values): 13,631,488 + 2,985,984 +
    970,752 = 17,588,224. LoRA-dagger (W_o of the language model, r = 1): 32 x (4096 + 4096) = 262,144. At
    Idefics2's shape the other methods give the papers' counts too: MimIC 32 x 32 x (128 + 128 + 1) = 263,168
    ("0.26M"), HiFICL n = r = 8 2,228,224 ("2.2M"), LIVE 32 x 4096 + 32 = 131,104 (half of MimIC's).
    """
    from transformers import (
        Idefics2Config,
        Idefics2ForConditionalGeneration,
        LlavaConfig,
        LlavaForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    siglip = {"hidden_size": 1152, "intermediate_size": 4304, "num_attention_heads": 16, "patch_size": 14}
    llava = LlavaConfig(
        text_config=Qwen2Config(
            hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=32, vocab_size=152000,
        ),
        vision_config=SiglipVisionConfig(num_hidden_layers=26, image_size=384, **siglip),
    )  # fmt: skip
    model = _meta(LlavaForConditionalGeneration, llava)
    counts = {
        name: build_method("lora", model, resolve_preset(name)["config"]).num_trainable()
        for name in ("lora", "lora-lm", "lora-o1")
    }
    assert counts == {"lora": 19_652_608, "lora-lm": 16_777_216, "lora-o1": 262_144}
    idefics2 = Idefics2Config(
        text_config={
            "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32003,
        },
        vision_config={"num_hidden_layers": 27, "image_size": 980, **siglip},
        perceiver_config={
            "resampler_n_latents": 64, "resampler_depth": 3, "resampler_n_heads": 16, "resampler_head_dim": 96,
            "num_key_value_heads": 4,
        },
    )  # fmt: skip
    model = _meta(Idefics2ForConditionalGeneration, idefics2)
    method = build_method("lora", model, resolve_preset("lora")["config"])
    assert method.num_trainable() == 13_631_488 + 2_985_984 + 970_752
    # the other methods' counts at this shape, as both papers print them: MimIC 0.26M, HiFICL 2.2M, LIVE half MimIC's
    others = {name: build_method(name, model, resolve_preset(name)["config"]).num_trainable() for name in PAPER_COUNTS}
    assert others == PAPER_COUNTS
    method.to("meta").attach(model)  # peft injects on the meta device too: every counted target is wrapped
    assert len(_wrapped(model)) == 32 * 4 + 27 * 3 + 3 * 4


def test_fused_qkv_projection_gets_lora() -> None:
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    model = Phi3ForCausalLM(
        Phi3Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=64, pad_token_id=0,
        )
    ).eval()  # fmt: skip
    method = build_method("lora", model, resolve_preset("lora")["config"], seed=0)
    method.attach(model)
    assert _wrapped(model) == [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("o_proj", "qkv_proj")]
    assert method.num_trainable() == 2 * 16 * ((32 + 64) + (32 + 32))  # qkv: 32 -> 4x8 + 2x2x8 = 64
    ids = torch.randint(1, 64, (1, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        bare = model(input_ids=ids).logits
        for name, param in method.lora.items():
            if name.endswith("_B"):
                param.normal_(0, 0.5)
        assert (model(input_ids=ids).logits - bare).abs().max().item() > 1e-4


def test_lora_disabled_is_the_frozen_model() -> None:
    model, method = _attached("lora")
    batch = _train_batch()
    with torch.no_grad():
        next(p for k, p in method.lora.items() if k.endswith("v_proj__lora_B")).normal_(0, 0.5)
        bare = llava_qwen2()(**batch.student.inputs).logits
        on = model(**batch.student.inputs).logits
        with method.disabled():
            off = model(**batch.student.inputs).logits
    assert torch.equal(off, bare) and (on - bare).abs().max().item() > 1e-4


def test_lora_dropout_is_active_in_training_and_off_in_eval_while_the_model_stays_frozen() -> None:
    """The papers' LoRA dropout (0.05) lives inside the frozen model, which the LightningModule keeps in eval mode;
    it must still follow the trainer's mode, or the baseline trains without it."""
    from hificl.data.tasks import task_spec
    from hificl.lightning.module import ICLApproxModule, TrainConfig

    model = llava_qwen2()
    method = build_method("lora", model, {"rank": 4, "alpha": 8.0, "dropout": 0.5}, seed=0)
    method.attach(model)
    with torch.no_grad():
        next(p for k, p in method.lora.items() if k.endswith("v_proj__lora_B")).normal_(0, 0.5)
    module = ICLApproxModule(model, None, method, task_spec("syn-vqa"), TrainConfig())
    batch = _train_batch()
    module.train()
    assert not model.training and not any(m.training for n, m in model.named_modules() if n.endswith("mlp"))
    torch.manual_seed(0)
    with torch.no_grad():
        first, second = (model(**batch.student.inputs).logits for _ in range(2))
    assert (first - second).abs().max().item() > 1e-4  # a fresh dropout mask each forward
    module.eval()
    with torch.no_grad():
        first, second = (model(**batch.student.inputs).logits for _ in range(2))
    assert torch.equal(first, second)


@pytest.mark.parametrize(
    ("values", "word"),
    [({"rank": 0}, "rank=0"), ({"dropout": 1.0}, "dropout=1.0"), ({"targets": []}, "non-empty"),
     ({"scope": "vision"}, "scope='vision'")],
)  # fmt: skip
def test_lora_bad_settings_are_named(values: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        make_config("lora", values).validate()
    with pytest.raises(ModelError, match="named gate_projx"):
        build_method("lora", llava_qwen2(), {"targets": ["gate_projx"]})


# ---------------------------------------------------------------- presets


def test_presets_build_and_carry_paper_defaults() -> None:
    assert set(PRESETS) == {
        "zero-shot", "icl", "hificl", "hificl+teacher", "hificl-full-k", "hificl-full-v", "hificl-alpha1",
        "mimic", "mimic-vector", "mimic-linear", "mimic-shared-head", "mimic-shared-query", "mimic-after-sa", "live",
        "lora", "lora-lm", "lora-o1",
    }  # fmt: skip
    assert resolve_preset("icl")["shots"] == 8 and resolve_preset("icl")["method"] is None
    assert resolve_preset("hificl")["lr"] == 5e-3 and resolve_preset("lora")["lr"] == 5e-4
    assert resolve_preset("live")["train"] == {"epochs_at_1000": 10}
    assert all(p["train"] == {} for n, p in PRESETS.items() if n != "live")
    assert all(p["weight_decay"] == 1e-3 for p in PRESETS.values())
    assert TRAINING_DEFAULTS == {"optimizer": "adamw", "weight_decay": 1e-3, "scheduler": "cosine", "warmup_ratio": 0.1}
    with pytest.raises(ConfigError, match="Unknown preset 'mimc'; known presets: zero-shot, icl"):
        resolve_preset("mimc")


def test_the_teacher_has_one_switch_the_method_configs_teacher_shots() -> None:
    """No preset, data config or class attribute says whether a teacher runs: the method config's field does."""
    model = llava_qwen2()
    teachers = {}
    for name, preset in PRESETS.items():
        assert "teacher_shots" not in preset, name
        if preset["method"] is not None:
            teachers[name] = build_method(preset["method"], model, preset["config"], seed=0).teacher_shots
    with_teacher = {n for n, k in teachers.items() if k}
    assert with_teacher == {"hificl+teacher", "live"} | {n for n in PRESETS if n.startswith("mimic")}
    assert all(teachers[n] == 8 for n in with_teacher)
    assert build_method("hificl", model, {"teacher_shots": 3}).teacher_shots == 3
    assert not any(hasattr(cls, "needs_teacher") for cls in (MimIC, LoRA))
