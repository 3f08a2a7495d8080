"""Named presets: each method and baseline with its paper's defaults, so a table row is one name.

A preset is {"method": registry name or None (no trained parameters), "config": the method's settings,
"lr", "weight_decay", "shots": demonstrations in the EVALUATION prompt (0 for every trained method: they
replace the demonstrations), "teacher_shots": demonstrations in the teacher prompt (0 when no teacher)}.
"""

from __future__ import annotations

import copy
from typing import Any

from hificl.errors import ConfigError

#: Shared by the HiFICL, MimIC and LIVE papers: AdamW, weight decay 1e-3, cosine schedule with 10% warmup.
TRAINING_DEFAULTS: dict[str, Any] = {
    "optimizer": "adamw",
    "weight_decay": 1e-3,
    "scheduler": "cosine",
    "warmup_ratio": 0.1,
}
WEIGHT_DECAY = TRAINING_DEFAULTS["weight_decay"]
SHOTS = 8


def _preset(method: str | None, lr: float | None, teacher_pass: bool = False, shots: int = 0, **config: Any) -> dict:
    return {
        "method": method,
        "config": config,
        "lr": lr,
        "weight_decay": WEIGHT_DECAY,
        "shots": shots,
        "teacher_shots": SHOTS if teacher_pass else 0,
    }


_HIFICL: dict[str, Any] = {"n_tokens": 8, "rank": 8}

PRESETS: dict[str, dict[str, Any]] = {
    "zero-shot": _preset(None, None),
    "icl": _preset(None, None, shots=SHOTS),
    "hificl": _preset("hificl", 5e-3, **_HIFICL),
    "hificl+teacher": _preset("hificl", 5e-3, teacher_pass=True, **_HIFICL, teacher=True),
    "hificl-full-k": _preset("hificl", 5e-3, **_HIFICL, full_rank_k=True),
    "hificl-full-v": _preset("hificl", 5e-3, **_HIFICL, full_rank_v=True),
    "hificl-alpha1": _preset("hificl", 5e-3, **_HIFICL, scale_sa=False),
    "mimic": _preset("mimic", 5e-3, teacher_pass=True, form="paper"),
    "mimic-public": _preset("mimic", 5e-3, teacher_pass=True, form="public-code"),
    "live": _preset("live", 5e-3, teacher_pass=True, alpha_init=0.1, alpha_lr=1e-2),
    "lora": _preset("lora", 5e-4, rank=16, alpha=32.0, dropout=0.05, targets=["q_proj", "k_proj", "v_proj", "o_proj"]),
    # LoRA-dagger: W_o only, rank 1 (alpha 2 keeps LoRA's alpha / r = 2).
    "lora-o1": _preset("lora", 5e-4, rank=1, alpha=2.0, dropout=0.05, targets=["o_proj"]),
}


def resolve_preset(name: str) -> dict[str, Any]:
    """A fresh copy of the preset `name` (callers may edit it)."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}; known presets: {', '.join(PRESETS)}.")
    return copy.deepcopy(PRESETS[name])
