"""Display names and orders shared by tables and figures, so a method looks the same everywhere in a paper."""

from __future__ import annotations

import pandas as pd

#: Main-table rows in the paper's order: baselines first, HiFICL last.
METHOD_LABELS: dict[str, str] = {
    "zero-shot": "Zero-shot",
    "icl": "8-shot ICL",
    "lora": "LoRA",
    "lora-lm": "LoRA (LM only)",
    "lora-o1": "LoRA-o1",
    "live": "LIVE",
    "mimic": "MimIC",
    "mimic-vector": "MimIC (learnable vector)",
    "mimic-linear": "MimIC (linear layer)",
    "mimic-shared-head": "MimIC (head-sharing μ)",
    "mimic-shared-query": "MimIC (query-sharing μ)",
    "mimic-after-sa": "MimIC (align after SA)",
    "hificl": "HiFICL",
}
VARIANT_LABELS: dict[str, str] = {
    "hificl": "HiFICL (full)",
    "hificl+teacher": "+ teacher alignment",
    "hificl-full-k": "full-rank K",
    "hificl-full-v": "full-rank V",
    "hificl-alpha1": "w/o SA scaling (α = 1)",
}
TASK_ORDER = ("syn-vqa", "syn-okvqa", "syn-caption", "vqav2", "okvqa", "coco")
TASK_METRIC = {"syn-caption": "cider", "coco": "cider"}
METRIC_LABELS = {"accuracy": "Acc", "cider": "CIDEr", "chair_s": "CHAIRs", "chair_i": "CHAIRi", "recall": "Recall"}
#: Metrics are stored as fractions; papers print percentages and CIDEr x 100.
SCALE = 100.0


def ordered(keys: list[str], order: list[str] | tuple[str, ...]) -> list[str]:
    """Known keys in `order`, then the rest alphabetically."""
    known = [k for k in order if k in keys]
    return known + sorted(set(keys) - set(known))


def method_label(preset: str) -> str:
    return METHOD_LABELS.get(preset, preset)


def variant_label(variant: str) -> str:
    """A variant's label; a variant named after a preset (the "mimic" group's) reads as that method."""
    return VARIANT_LABELS.get(variant) or method_label(variant)


def tasks_of(frame: pd.DataFrame) -> list[str]:
    return ordered(list(frame["task"].dropna().unique()), TASK_ORDER)


def task_metric(frame: pd.DataFrame, task: str) -> str:
    """CIDEr for caption tasks, accuracy for VQA; an unknown task uses whichever of the two its cells hold."""
    if task in TASK_METRIC:
        return TASK_METRIC[task]
    cells = frame[frame["task"] == task]
    return "accuracy" if "accuracy" in cells and cells["accuracy"].notna().any() else "cider"


def task_header(frame: pd.DataFrame, task: str) -> str:
    return f"{task} ({METRIC_LABELS[task_metric(frame, task)]})"
