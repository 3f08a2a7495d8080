"""`make bench`: side-by-side timings and memory, printed as ratios and written to results/bench.json.

Benchmarks, not tests: nothing here fails on a target; the targets are printed next to the measured ratios.

- inference: HiFICL, MimIC and LIVE (each attached once, in eval mode, tokens materialised) vs the frozen
  model, prefill and per-token decode, at prompt length >= 256; 8-shot ICL vs zero-shot (the 8 demonstrations
  as long as the query). Each method runs interleaved with its own switched-off state (A, B, A, B, ...) in one
  process on the same inputs, and the medians are compared, so machine noise hits both sides alike. Decoding
  is timed from a prefilled cache, cropped back to the prompt before every timed run (its contents do not
  change the cost), after one untimed step (where the method's tokens materialise);
- paper scale (CPU and GPU): the same prefill/decode ratios for ONE decoder layer at Mistral-7B's width
  (hidden 4,096, 32 heads, 8 KV heads, head dim 128, MLP 14,336) over a 1,024-token prompt;
- training: one optimiser step of HiFICL, MimIC (teacher pass with 8 demonstrations) and LoRA r=16, each
  timed in turn (a model carries one method at a time), medians of repeats; the MimIC / HiFICL step ratio is
  reported as measured, a property of the methods, not a target;
- memory: a training step's peak (CUDA: allocator peak; CPU: tensors saved for backward + trainable
  state, measured through saved-tensor hooks, since CPU allocations are not tracked);
- the attention primitive alone vs plain sdpa at length 1,024 with n = 8 (prefill-shaped call).

Clock: on CPU the bench runs torch with ONE intra-op thread and measures the thread's CPU time, so a busy
shared machine (other processes preempting this one) does not enter the ratios; `threads > 1` switches to
wall-clock time. On CUDA: wall-clock time between synchronisations.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from hificl.attention import VirtualTokens, virtual_kv_attention
from hificl.batch import PromptBatch, TrainBatch
from hificl.lightning.module import training_losses
from hificl.methods.base import Method
from hificl.methods.presets import resolve_preset
from hificl.methods.registry import build_method

TARGETS = {
    "hificl_vs_zero_shot_prefill": "<= 1.05",
    "hificl_vs_zero_shot_decode": "<= 1.05",
    "paper_scale_hificl_vs_zero_shot_prefill": "<= 1.05",
    "paper_scale_hificl_vs_zero_shot_decode": "<= 1.05",
    "hificl_vs_lora_memory": "<= 1.0",
    "primitive_vs_sdpa_throughput": ">= 0.95",
}
REPORTED = (
    "mimic_vs_zero_shot_prefill",
    "mimic_vs_zero_shot_decode",
    "live_vs_zero_shot_prefill",
    "live_vs_zero_shot_decode",
    "icl_vs_zero_shot_prefill",
    "icl_vs_zero_shot_decode",
    "mimic_vs_hificl_step",
    "lora_vs_hificl_step",
)
INFERENCE_PRESETS = ("hificl", "mimic", "live")
MODEL_CONFIGS = ("embedded", "tiny", "medium", "large")


class Clock:
    """Seconds of the measured work: thread CPU time (CPU, one thread) or synchronised wall-clock time."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_time = device.type == "cpu" and torch.get_num_threads() == 1
        self.name = "thread cpu time" if self.cpu_time else "wall clock"

    def __call__(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.thread_time() if self.cpu_time else time.perf_counter()


def _text_config(model: nn.Module) -> Any:
    """The language model's transformers config (`model` is a PreTrainedModel)."""
    return cast(Any, model).config.get_text_config()


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, clock: Clock) -> dict[str, float]:
    """Median seconds per call of each function, measured in alternation after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def random_llava(size: str, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A random-init LLaVA (CLIP + Qwen2 with GQA) for GPU-sized runs: 'large' ~ a 0.5B text model."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config

    dims = {"large": (1024, 24, 16, 4), "medium": (512, 8, 8, 2)}[size]
    hidden, layers, heads, kv = dims
    text = Qwen2Config(
        vocab_size=32000,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=8192,
    )
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2)
    config = LlavaConfig(text_config=text, vision_config=vision, image_token_index=31999)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model: nn.Module = LlavaForConditionalGeneration(config)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def mistral_layer(device: torch.device, dtype: torch.dtype) -> nn.Module:
    """ONE decoder layer at Mistral-7B's width (the papers' Idefics2 / LLaVA-sized text model), random init,
    with a small vocabulary so that the layer, not the embedding, is what is timed."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=1024,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=1,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=4096,
        sliding_window=None,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model: nn.Module = MistralForCausalLM(config)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def bench_model(config: str, base_model: str | Path, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The model a bench line runs on: the embedded tiny LMM (pretrained, from `base_model`), its architecture
    with random weights ('tiny': the same timings, no pretraining needed), or a random-init LLaVA."""
    if config == "embedded":
        from hificl.models.loading import load_model
        from hificl.tiny import build_base_model

        name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]
        return load_model(str(build_base_model(Path(base_model))), dtype=name).model.to(device)
    if config == "tiny":
        from hificl.tiny.model import TinyConfig, build_model, build_tokenizer

        model: nn.Module = build_model(TinyConfig(), build_tokenizer(), seed=0)
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return random_llava(config, device, dtype)


def _attach(model: nn.Module, preset: str) -> Method:
    spec = resolve_preset(preset)
    method = build_method(spec["method"], model, spec["config"], seed=0)
    if hasattr(method, "v_b"):  # trained-like values, so nothing is skipped for being zero
        with torch.no_grad():
            cast(nn.Parameter, method.v_b).normal_(0, 0.02)
    method.to(next(model.parameters()).device)
    method.attach(model)
    return method


def _timed_pair(
    model: nn.Module,
    contenders: dict[str, Callable[[], Any]],
    prompts: dict[str, torch.Tensor],
    steps: int,
    repeats: int,
    clock: Clock,
) -> tuple[dict[str, float], dict[str, float]]:
    """(prefill seconds, decode seconds per token) of each contender, interleaved. A contender is a context
    manager factory that puts the model in its state (method on, method off)."""
    from transformers import DynamicCache

    def prefill(name: str) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), contenders[name]():
                model(input_ids=prompts[name], use_cache=False)

        return run

    prefills = interleaved({name: prefill(name) for name in contenders}, repeats, clock)
    caches = {}
    with torch.no_grad():
        for name, ids in prompts.items():
            caches[name] = model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True).past_key_values

    def decode(name: str) -> float:
        cache, length, token = caches[name], prompts[name].shape[1], prompts[name][:, -1:]
        with torch.no_grad(), contenders[name]():
            if cache.get_seq_length() > length:
                cache.crop(length - cache.get_seq_length())  # negative: drop that many tokens from the end
            model(input_ids=token, past_key_values=cache, use_cache=True)  # untimed: tokens materialise here
            start = clock()
            for _ in range(steps):
                model(input_ids=token, past_key_values=cache, use_cache=True)
            return (clock() - start) / steps

    per_token: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name in contenders:
            per_token[name].append(decode(name))
    return prefills, {name: statistics.median(v) for name, v in per_token.items()}


def bench_inference(
    model: nn.Module,
    prompt_len: int,
    steps: int,
    repeats: int,
    clock: Clock,
    presets: tuple[str, ...] = INFERENCE_PRESETS,
    icl: bool = True,
) -> dict[str, float]:
    """Prefill and per-token decode of each preset vs zero-shot (and 8-shot ICL vs zero-shot). Each preset is
    attached once, in eval mode, and interleaved with its own switched-off state (the frozen model)."""
    device = next(model.parameters()).device
    vocab = _text_config(model).vocab_size
    g = torch.Generator().manual_seed(0)
    query = torch.randint(3, vocab - 2, (1, prompt_len), generator=g).to(device)
    out: dict[str, float] = {"prompt_len": prompt_len}

    def record(name: str, prefills: dict[str, float], decodes: dict[str, float]) -> None:
        out[f"prefill_{name}_ms"], out[f"decode_{name}_ms_per_token"] = 1000 * prefills[name], 1000 * decodes[name]
        out.setdefault("prefill_zero_shot_ms", 1000 * prefills["zero_shot"])
        out.setdefault("decode_zero_shot_ms_per_token", 1000 * decodes["zero_shot"])
        out[f"{name}_vs_zero_shot_prefill"] = prefills[name] / prefills["zero_shot"]
        out[f"{name}_vs_zero_shot_decode"] = decodes[name] / decodes["zero_shot"]

    for preset in presets:
        method = _attach(model, preset)
        method.eval()
        contenders: dict[str, Callable[[], Any]] = {"zero_shot": method.disabled, preset: nullcontext}
        record(preset, *_timed_pair(model, contenders, {"zero_shot": query, preset: query}, steps, repeats, clock))
        method.detach()
    if icl:
        demonstrations = torch.randint(3, vocab - 2, (1, 8 * prompt_len), generator=g).to(device)
        prompts = {"zero_shot": query, "icl": torch.cat([demonstrations, query], 1)}
        record(
            "icl", *_timed_pair(model, {"zero_shot": nullcontext, "icl": nullcontext}, prompts, steps, repeats, clock)
        )
    return out


def bench_paper_scale(device: torch.device, dtype: torch.dtype, repeats: int, clock: Clock) -> dict[str, Any]:
    """HiFICL vs zero-shot on one Mistral-7B-wide decoder layer, 1,024-token prompt."""
    layer = mistral_layer(device, dtype)
    results = bench_inference(layer, 1024, steps=8, repeats=repeats, clock=clock, presets=("hificl",), icl=False)
    del layer
    shape = {"hidden": 4096, "heads": 32, "kv_heads": 8, "head_dim": 128, "intermediate": 14336, "layers": 1}
    return {"shape": shape, **{f"paper_scale_{k}": v for k, v in results.items()}}


def _train_batch(model: nn.Module, batch: int, length: int, shots: int) -> TrainBatch:
    device = next(model.parameters()).device
    vocab = _text_config(model).vocab_size
    g = torch.Generator().manual_seed(1)
    student_ids = torch.randint(3, vocab - 2, (batch, length), generator=g)
    demos = torch.randint(3, vocab - 2, (batch, shots * length), generator=g)
    labels = torch.full_like(student_ids, -100)
    labels[:, -4:] = student_ids[:, -4:]
    span = torch.full((batch,), length)

    def prompt(ids: torch.Tensor, lab: torch.Tensor | None) -> PromptBatch:
        inputs = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
        return PromptBatch(inputs, None if lab is None else lab.to(device), span.to(device))

    teacher_ids = torch.cat([demos, student_ids], dim=1)
    teacher_labels = torch.cat([torch.full_like(demos, -100), labels], dim=1)
    return TrainBatch(prompt(student_ids, labels), prompt(teacher_ids, teacher_labels), [{}] * batch)


def _train_step(model: nn.Module, method: Method, batch: TrainBatch) -> Callable[[], None]:
    """The LightningModule's objective (`training_losses`), then backward and one AdamW step."""
    optimizer = torch.optim.AdamW(method.param_groups(5e-3, 1e-3))

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        training_losses(model, method, batch)["loss"].backward()
        optimizer.step()

    return run


def _saved_bytes(fn: Callable[[], None]) -> int:
    """Bytes of distinct tensors autograd saves for backward during `fn` (CPU stand-in for peak memory)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def bench_training(model: nn.Module, batch: int, length: int, repeats: int, clock: Clock) -> dict[str, Any]:
    device = next(model.parameters()).device
    data = _train_batch(model, batch, length, shots=8)
    results: dict[str, Any] = {}
    steps, memory = {}, {}
    for preset in ("hificl", "mimic", "lora"):
        method = _attach(model, preset)
        step = _train_step(model, method, data)
        steps[preset] = interleaved({preset: step}, repeats, clock)[preset]  # one contender: a median of repeats
        state = sum(p.numel() * p.element_size() * 4 for p in method.parameters())  # weights, grad, 2 Adam moments
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step()
            memory[preset] = torch.cuda.max_memory_allocated() - base
        else:
            memory[preset] = _saved_bytes(step) + state
        method.detach()
    results.update({f"{k}_step_ms": 1000 * v for k, v in steps.items()})
    results.update({f"{k}_memory_mb": v / 2**20 for k, v in memory.items()})
    results["mimic_vs_hificl_step"] = steps["mimic"] / steps["hificl"]
    results["lora_vs_hificl_step"] = steps["lora"] / steps["hificl"]
    results["hificl_vs_lora_memory"] = memory["hificl"] / memory["lora"]
    results["memory_measure"] = (
        "cuda allocator peak" if device.type == "cuda" else "saved-for-backward + trainable state"
    )
    return results


class _Head(nn.Module):
    """The attributes the registry function reads off an attention module."""

    def __init__(self, tokens: VirtualTokens | None) -> None:
        super().__init__()
        self.num_key_value_groups, self.is_causal, self.config = 1, True, None
        if tokens is not None:
            self.__dict__["_virtual_kv"] = lambda module: tokens
            self.__dict__["_virtual_kv_config"] = None


def bench_primitive(
    device: torch.device, dtype: torch.dtype, length: int, heads: int, dim: int, repeats: int, clock: Clock
) -> dict:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, length, dim, generator=g).to(device, dtype) for _ in range(3))
    kd, vd = (torch.randn(heads, 8, dim, generator=g).to(device, dtype) for _ in range(2))
    plain, virtual = _Head(None), _Head(VirtualTokens(kd, vd, frozen=True))  # materialised, as at inference
    scale = dim**-0.5

    def sdpa() -> None:
        virtual_kv_attention("sdpa", plain, q, k, v, None, scaling=scale)

    def primitive() -> None:
        virtual_kv_attention("sdpa", virtual, q, k, v, None, scaling=scale)

    with torch.no_grad():
        t = interleaved({"sdpa": sdpa, "virtual": primitive}, repeats, clock)
    return {
        "length": length,
        "heads": heads,
        "head_dim": dim,
        "n_tokens": 8,
        "sdpa_ms": 1000 * t["sdpa"],
        "virtual_ms": 1000 * t["virtual"],
        "primitive_vs_sdpa_throughput": t["sdpa"] / t["virtual"],
    }


def run_bench(
    model: nn.Module,
    *,
    out: str | Path = "results/bench.json",
    prompt_len: int = 256,
    repeats: int = 7,
    paper_scale: bool = True,
) -> dict[str, Any]:
    """Every line on `model`'s device and dtype; the clock follows torch's thread count (see the docstring)."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    clock = Clock(device)
    text = _text_config(model)
    threads = torch.get_num_threads()
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({threads} threads)",
        "dtype": str(dtype),
        "clock": clock.name,
        "model": {
            "layers": text.num_hidden_layers,
            "hidden": text.hidden_size,
            "heads": text.num_attention_heads,
            "kv_heads": text.num_key_value_heads,
        },
        "inference": bench_inference(model, prompt_len, steps=16, repeats=repeats, clock=clock),
        "training": bench_training(model, batch=8, length=64, repeats=repeats, clock=clock),
        "primitive": bench_primitive(
            device,
            dtype,
            1024,
            8 if device.type == "cpu" else 32,
            64 if device.type == "cpu" else 128,
            5 * repeats,  # one call is milliseconds: more repeats make the median stable at no cost
            clock,
        ),
        "targets": TARGETS,
    }
    if paper_scale:
        results["paper_scale"] = bench_paper_scale(device, dtype, max(3, repeats // 2), clock)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2))
    return results


def summary(results: dict[str, Any]) -> str:
    """The ratios, each beside its target (a missed target is marked MISSED) or marked as reported."""
    lines = [
        f"device: {results['device']}  dtype: {results['dtype']}  clock: {results['clock']}",
        f"model: {results['model']}",
    ]
    flat = {**results["inference"], **results["training"], **results["primitive"], **results.get("paper_scale", {})}
    for key, target in TARGETS.items():
        if key in flat:
            bound = float(target.split()[1])
            met = flat[key] <= bound if target.startswith("<=") else flat[key] >= bound
            lines.append(f"  {key:42s} {flat[key]:7.3f}   target {target}{'' if met else '   MISSED'}")
    for key in REPORTED:
        if key in flat:
            lines.append(f"  {key:42s} {flat[key]:7.3f}   (reported)")
    return "\n".join(lines)
