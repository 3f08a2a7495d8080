"""`make bench`: side-by-side timings and memory, printed as ratios and written to results/bench.json.

The inference and primitive comparisons run their contenders interleaved (A, B, A, B, ...) in one process on
the same inputs and report medians, so machine noise hits both sides alike. Benchmarks, not tests: nothing here
fails on a target; the targets are printed next to the measured ratios.

- inference: HiFICL vs the frozen model (prefill, per-token decode) at prompt length >= 256; 8-shot ICL vs
  zero-shot (the 8 demonstrations as long as the query);
- training: one optimiser step of HiFICL, MimIC (teacher pass with 8 demonstrations) and LoRA r=16, each
  method measured in turn (each needs its own attachment), through the LightningModule's `training_losses`;
- memory: a training step's peak (CUDA: allocator peak; CPU: tensors saved for backward + trainable
  state, measured through saved-tensor hooks, since CPU allocations are not tracked);
- the attention primitive alone vs plain sdpa at length 1024 with n = 8.
"""

from __future__ import annotations

import json
import statistics
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hificl.attention import VirtualTokens, virtual_kv_attention
from hificl.batch import PromptBatch, TrainBatch
from hificl.lightning.module import training_losses
from hificl.methods.base import Method, VirtualTokenMethod
from hificl.methods.presets import resolve_preset
from hificl.methods.registry import build_method

TARGETS = {
    "hificl_vs_zero_shot_prefill": "<= 1.05",
    "hificl_vs_zero_shot_decode": "<= 1.05",
    "mimic_vs_hificl_step": ">= 7.5",
    "hificl_vs_lora_memory": "<= 1.0",
    "primitive_vs_sdpa_throughput": ">= 0.9",
}


def _text_config(model: nn.Module) -> Any:
    """The language model's transformers config (`model` is a PreTrainedModel)."""
    return typing.cast(Any, model).config.get_text_config()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each function, measured in alternation after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
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
    model: nn.Module = LlavaForConditionalGeneration(config).to(device=device, dtype=dtype)  # type: ignore[call-arg]
    return model.eval().requires_grad_(False)


def _attach(model: nn.Module, preset: str) -> Method:
    spec = resolve_preset(preset)
    method = build_method(spec["method"], model, spec["config"], seed=0)
    v_b = getattr(method, "v_b", None)
    if isinstance(v_b, torch.Tensor):  # trained-like values, so nothing is skipped for being zero
        with torch.no_grad():
            v_b.normal_(0, 0.02)
    method.to(next(model.parameters()).device)
    method.attach(model)
    return method


def _decode(model: nn.Module, ids: torch.Tensor, steps: int) -> Callable[[], None]:
    """Per-token decoding with a KV cache after one prefill (the prefill is excluded from the timing)."""

    def run() -> None:
        with torch.no_grad():
            out = model(input_ids=ids, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            _sync(ids.device)
            start = time.perf_counter()
            for _ in range(steps):
                out = model(input_ids=token, past_key_values=cache, use_cache=True)
                cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
            _sync(ids.device)
            run.elapsed = (time.perf_counter() - start) / steps  # type: ignore[attr-defined]

    return run


def bench_inference(model: nn.Module, prompt_len: int, steps: int, repeats: int) -> dict[str, float]:
    device = next(model.parameters()).device
    vocab = _text_config(model).vocab_size
    g = torch.Generator().manual_seed(0)
    query = torch.randint(3, vocab - 2, (1, prompt_len), generator=g).to(device)
    icl = torch.randint(3, vocab - 2, (1, 9 * prompt_len), generator=g).to(device)

    def prefill(ids: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                model(input_ids=ids, use_cache=False)

        return run

    method = _attach(model, "hificl")
    patch = typing.cast(VirtualTokenMethod, method).patch

    def with_patch(fn: Callable[[], None], on: bool) -> Callable[[], None]:
        def run() -> None:
            (patch.enable if on else patch.disable)()
            fn()

        return run

    prefills = interleaved(
        {
            "zero_shot": with_patch(prefill(query), False),
            "hificl": with_patch(prefill(query), True),
            "icl": with_patch(prefill(icl), False),
        },
        repeats,
        device,
    )
    decoders = {
        "zero_shot": _decode(model, query, steps),
        "hificl": _decode(model, query, steps),
        "icl": _decode(model, icl, steps),
    }
    per_token: dict[str, list[float]] = {k: [] for k in decoders}
    for _ in range(repeats):
        for name, fn in decoders.items():
            (patch.enable if name == "hificl" else patch.disable)()
            fn()
            per_token[name].append(fn.elapsed)  # type: ignore[attr-defined]
    method.detach()
    decode = {k: statistics.median(v) for k, v in per_token.items()}
    return {
        "prompt_len": prompt_len,
        **{f"prefill_{k}_ms": 1000 * v for k, v in prefills.items()},
        **{f"decode_{k}_ms_per_token": 1000 * v for k, v in decode.items()},
        "hificl_vs_zero_shot_prefill": prefills["hificl"] / prefills["zero_shot"],
        "hificl_vs_zero_shot_decode": decode["hificl"] / decode["zero_shot"],
        "icl_vs_zero_shot_prefill": prefills["icl"] / prefills["zero_shot"],
        "icl_vs_zero_shot_decode": decode["icl"] / decode["zero_shot"],
    }


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


def bench_training(model: nn.Module, batch: int, length: int, repeats: int) -> dict[str, Any]:
    device = next(model.parameters()).device
    data = _train_batch(model, batch, length, shots=8)
    results: dict[str, Any] = {}
    steps, memory = {}, {}
    for preset in ("hificl", "mimic", "lora"):
        method = _attach(model, preset)
        step = _train_step(model, method, data)
        steps[preset] = interleaved({preset: step}, repeats, device)[preset]
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


def bench_primitive(device: torch.device, dtype: torch.dtype, length: int, heads: int, dim: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, length, dim, generator=g).to(device, dtype) for _ in range(3))
    kd, vd = (torch.randn(heads, 8, dim, generator=g).to(device, dtype) for _ in range(2))
    plain, virtual = _Head(None), _Head(VirtualTokens(kd, vd))
    scale = dim**-0.5

    def sdpa() -> None:
        virtual_kv_attention("sdpa", plain, q, k, v, None, scaling=scale)

    def primitive() -> None:
        virtual_kv_attention("sdpa", virtual, q, k, v, None, scaling=scale)

    with torch.no_grad():
        t = interleaved({"sdpa": sdpa, "virtual": primitive}, repeats, device)
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
    model: nn.Module, *, out: str | Path = "results/bench.json", prompt_len: int = 256, repeats: int = 7
) -> dict[str, Any]:
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    text = _text_config(model)
    results = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": str(dtype),
        "model": {
            "layers": text.num_hidden_layers,
            "hidden": text.hidden_size,
            "heads": text.num_attention_heads,
            "kv_heads": text.num_key_value_heads,
        },
        "inference": bench_inference(model, prompt_len, steps=16, repeats=repeats),
        "training": bench_training(model, batch=8, length=64, repeats=repeats),
        "primitive": bench_primitive(
            device, dtype, 1024, 8 if device.type == "cpu" else 32, 64 if device.type == "cpu" else 128, 5 * repeats
        ),  # one call is milliseconds: more repeats make the median stable at no cost
        "targets": TARGETS,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2))
    return results


def summary(results: dict[str, Any]) -> str:
    lines = [f"device: {results['device']}  dtype: {results['dtype']}  model: {results['model']}"]
    flat = {**results["inference"], **results["training"], **results["primitive"]}
    for key, target in TARGETS.items():
        lines.append(f"  {key:34s} {flat[key]:7.3f}   target {target}")
    for key in ("icl_vs_zero_shot_prefill", "icl_vs_zero_shot_decode", "lora_vs_hificl_step"):
        lines.append(f"  {key:34s} {flat[key]:7.3f}   (reported)")
    return "\n".join(lines)
