"""Pretrain the tiny LMM on synthetic episodes, on 2 CPU cores in minutes, cached and written atomically.

A run is a function of (seed, config) alone: it always does `config.steps` steps (a time budget only warns), with
`config.threads` intra-op threads set for its duration, so the same recipe gives byte-identical weights however
busy the machine is. Float summation order depends on the thread count and on the CPU kernels torch dispatches
to (its `cpu_capability`, e.g. AVX512 vs AVX2), so both are recorded with the torch version and the weights' hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
import time
import typing
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from hificl.tiny.episodes import CELL_CLASSES, ScenePool, collate, curriculum, draw_shots, sample_episode
from hificl.tiny.model import TinyConfig, build_model, build_processor, image_tokens

INFO_FILE = "hificl_pretrain.json"


@dataclass(frozen=True)
class PretrainConfig:
    """Optimisation settings; with the architecture and the seed they form the cache key."""

    model: TinyConfig = field(default_factory=TinyConfig)
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    vision_lr: float = 4e-3
    warmup: int = 30
    weight_decay: float = 0.01
    max_shots: int = 8
    vision_warmup: float = 0.2
    copy_phase: float = 0.25
    shot_p: float = 0.2  # geometric number of demonstrations per episode (see episodes.draw_shots)
    pool_size: int = 8000
    query_only: bool = False
    aux_weight: float = 1.0
    threads: int = 2  # intra-op threads: part of the recipe, since the summation order depends on it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_info(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / INFO_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _lr_factor(step: int, progress: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 10% over the run's progress."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def weights_sha256(model_dir: Path) -> str:
    """sha256 of the saved weights file: two runs of one recipe are the same model iff these are equal."""
    digest = hashlib.sha256()
    with (Path(model_dir) / "model.safetensors").open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def environment() -> dict[str, str]:
    """What besides (seed, config) the weights depend on: torch version and the CPU kernels it dispatches to."""
    return {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


@contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    """Run the body with `n` intra-op threads, whatever the machine has, and restore the caller's count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pretrain(
    out_dir: Path, seed: int = 0, config: PretrainConfig | None = None, budget_minutes: float | None = 25.0
) -> Path:
    """Pretrain and save model + processor to `out_dir`; return at once if it already holds this exact run.

    Always runs `config.steps` steps: past `budget_minutes` it warns (the machine is slower or busier than the
    recipe was sized for) and carries on, so a busy machine gets the same model, later.
    """
    out_dir = Path(out_dir)
    config = config or PretrainConfig()
    key = {"seed": seed, "config": config.to_dict()}
    info = _read_info(out_dir)
    if info is not None and info.get("key") == key:
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} holds something other than this pretraining run; remove it or pick another.")
    with fixed_threads(config.threads):
        return _pretrain(out_dir, seed, config, key, budget_minutes)


def _pretrain(
    out_dir: Path, seed: int, config: PretrainConfig, key: dict[str, Any], budget_minutes: float | None
) -> Path:
    rng = np.random.default_rng([seed, 7])
    processor = build_processor(config.model)
    tokenizer = processor.tokenizer
    model = build_model(config.model, tokenizer, seed)
    vision = [p for n, p in model.named_parameters() if "vision_tower" in n or "multi_modal_projector" in n]
    ids = {id(p) for p in vision}
    text = [p for p in model.parameters() if id(p) not in ids]
    optimiser = torch.optim.AdamW(
        [{"params": vision, "lr": config.vision_lr}, {"params": text, "lr": config.lr}],
        weight_decay=config.weight_decay,
        betas=(0.9, 0.98),
    )
    base_lrs = [config.vision_lr, config.lr]
    # Auxiliary per-cell perception loss through a FROZEN random linear readout of the projector output (what the
    # LM reads): the vision tower must make each cell's shape, colour and size linearly decodable. Discarded after.
    probe = torch.nn.Linear(config.model.hidden, sum(CELL_CLASSES)).requires_grad_(False)
    captured: list[torch.Tensor] = []
    hook = model.model.multi_modal_projector.register_forward_hook(lambda _m, _i, out: captured.append(out))
    n_image = image_tokens(config.model)

    start, cpu_start = time.monotonic(), time.process_time()
    pool = ScenePool(rng, config.pool_size)
    model.train()
    losses: list[float] = []
    aux_losses: list[float] = []
    bar = tqdm(range(config.steps), desc="pretrain tiny LMM", dynamic_ncols=True)
    warned = False
    for step in bar:
        # Step-based, never cut short: wall time must not change the model (a time-based stop made the default
        # base model depend on how busy the machine was).
        if not warned and budget_minutes is not None and time.monotonic() - start > 60 * budget_minutes:
            warnings.warn(
                f"Pretraining passed its {budget_minutes:g}-minute budget at step {step} of {config.steps} (a busy "
                "or slow machine); it runs to the end, so the model is the same, only later.",
                stacklevel=3,
            )
            warned = True
        progress = step / config.steps
        mix = curriculum(progress, config.max_shots, config.vision_warmup, config.copy_phase)
        shots = draw_shots(rng, mix, config.shot_p)
        batch = collate(
            [sample_episode(pool, rng, shots, mix) for _ in range(config.batch_size * mix.batch_scale)],
            tokenizer,
            n_image,
            config.query_only,
        )
        for group, base in zip(optimiser.param_groups, base_lrs, strict=True):
            group["lr"] = base * _lr_factor(step, progress, config.warmup)
        cells = batch.pop("cell_labels")
        captured.clear()
        lm_loss = model(**batch).loss
        logits = probe(captured[0]).split(CELL_CLASSES, dim=-1)
        aux = typing.cast(
            torch.Tensor, sum(F.cross_entropy(lg.flatten(0, 1), cells[..., j].flatten()) for j, lg in enumerate(logits))
        )
        loss = lm_loss + config.aux_weight * aux
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        losses.append(lm_loss.item())
        aux_losses.append(aux.item())
        if step % 10 == 0:
            bar.set_postfix(
                loss=f"{np.mean(losses[-20:]):.3f}", aux=f"{np.mean(aux_losses[-20:]):.3f}", shots=mix.max_shots
            )
    bar.close()
    hook.remove()
    elapsed, cpu = time.monotonic() - start, time.process_time() - cpu_start

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.eval()
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        info = {
            "key": key,
            "steps_done": len(losses),
            "threads": torch.get_num_threads(),
            **environment(),
            "weights_sha256": weights_sha256(tmp),
            "pretrain_seconds": round(elapsed, 1),
            "steps_per_second": round(len(losses) / elapsed, 2) if elapsed > 0 else None,
            # CPU seconds of all threads: unlike wall time, barely moved by other processes (with passive
            # OpenMP waiting), so it estimates the idle time: between cpu / threads and cpu.
            "cpu_seconds": round(cpu, 1),
            "final_loss": float(np.mean(losses[-20:])) if losses else None,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
        tmp.chmod(0o755)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
