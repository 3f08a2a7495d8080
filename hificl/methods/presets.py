"""Named presets: each method and baseline with its paper's defaults, so a table row is one name.

A preset is {"method": registry name or None (no trained parameters), "config": the method's settings (its
`teacher_shots` is the one switch for the teacher pass), "lr", "weight_decay", "train": other training settings
that differ from the shared defaults (LIVE's schedule), "shots": demonstrations in the EVALUATION prompt (0 for
every trained method: they replace the demonstrations)}. docs/presets.md lists every value with its source.
"""

from __future__ import annotations

import copy
from typing import Any

from hificl.errors import ConfigError

#: MimIC supplementary Tab. 7 (shared by the HiFICL paper): AdamW, weight decay 1e-3, 10% warmup, cosine schedule.
TRAINING_DEFAULTS: dict[str, Any] = {
    "optimizer": "adamw",
    "weight_decay": 1e-3,
    "scheduler": "cosine",
    "warmup_ratio": 0.1,
}
WEIGHT_DECAY = TRAINING_DEFAULTS["weight_decay"]
#: k-shot ICL and the teacher's demonstrations (Idefics2 and LLaVA-Interleave in both papers; MimIC used 32 on
#: Idefics1).
SHOTS = 8


def _preset(
    method: str | None, lr: float | None, shots: int = 0, train: dict[str, Any] | None = None, **config: Any
) -> dict[str, Any]:
    return {
        "method": method,
        "config": config,
        "lr": lr,
        "weight_decay": WEIGHT_DECAY,
        "train": dict(train or {}),
        "shots": shots,
    }


_HIFICL: dict[str, Any] = {"n_tokens": 8, "rank": 8}
_MIMIC: dict[str, Any] = {"teacher_shots": SHOTS, "ce_weight": 0.5, "align_weight": 1.0}
_LORA: dict[str, Any] = {"rank": 16, "alpha": 32.0, "dropout": 0.05}

PRESETS: dict[str, dict[str, Any]] = {
    "zero-shot": _preset(None, None),
    "icl": _preset(None, None, shots=SHOTS),
    "hificl": _preset("hificl", 5e-3, **_HIFICL),
    "hificl+teacher": _preset("hificl", 5e-3, **_HIFICL, teacher_shots=SHOTS),
    "hificl-full-k": _preset("hificl", 5e-3, **_HIFICL, full_rank_k=True),
    "hificl-full-v": _preset("hificl", 5e-3, **_HIFICL, full_rank_v=True),
    "hificl-alpha1": _preset("hificl", 5e-3, **_HIFICL, scale_sa=False),
    # MimIC: SA + mu(q) v per head, aligned on each layer's FFN output; then its supplementary's and paper's variants.
    "mimic": _preset("mimic", 5e-3, **_MIMIC, form="unscaled", mu="per-head", align_to="ffn"),
    "mimic-vector": _preset("mimic", 5e-3, **_MIMIC, form="joint", mu="per-head", align_to="ffn"),
    "mimic-linear": _preset("mimic", 5e-3, **_MIMIC, form="joint", mu="per-head", shift="linear", align_to="ffn"),
    "mimic-shared-head": _preset("mimic", 5e-3, **_MIMIC, form="unscaled", mu="shared-head", align_to="ffn"),
    "mimic-shared-query": _preset("mimic", 5e-3, **_MIMIC, form="unscaled", mu="shared-query", align_to="ffn"),
    "mimic-after-sa": _preset("mimic", 5e-3, **_MIMIC, form="unscaled", mu="per-head", align_to="attention"),
    # LIVE: 10 epochs at 1000 samples (the others 5): MimIC supplementary Sec. 7.2, after LIVE's own paper.
    "live": _preset("live", 5e-3, train={"epochs_at_1000": 10}, alpha_init=0.1, alpha_lr=1e-2, teacher_shots=SHOTS),
    "lora": _preset("lora", 5e-4, **_LORA, scope="model"),
    "lora-lm": _preset("lora", 5e-4, **_LORA, scope="language-model"),
    # LoRA-dagger: W_o of the language model only, rank 1 (alpha 2 keeps LoRA's alpha = 2r).
    "lora-o1": _preset("lora", 5e-4, rank=1, alpha=2.0, dropout=0.05, targets=["o_proj"], scope="language-model"),
}


def resolve_preset(name: str) -> dict[str, Any]:
    """A fresh copy of the preset `name` (callers may edit it)."""
    if name not in PRESETS:
        raise ConfigError(f"Unknown preset {name!r}; known presets: {', '.join(PRESETS)}.")
    return copy.deepcopy(PRESETS[name])
