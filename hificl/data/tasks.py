"""The tasks the package knows: which files they read, which prompt kind and metric they use, which splits.

The synthetic twins read the embedded benchmark, exported in the official formats, through the same loaders
as the real data sets; only their data root differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from hificl.errors import ConfigError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # prompt kind: "vqa" | "caption"
    files: str  # loader: "vqav2" | "okvqa" | "coco"
    metric: str  # "vqa" | "okvqa" | "caption"
    train_split: str
    eval_split: str
    val_split: str
    synthetic: bool = False


TASKS: dict[str, TaskSpec] = {
    "vqav2": TaskSpec("vqav2", "vqa", "vqav2", "vqa", "train", "val", "val"),
    "okvqa": TaskSpec("okvqa", "vqa", "okvqa", "okvqa", "train", "val", "val"),
    # Karpathy split: evaluate on test, select models on val.
    "coco": TaskSpec("coco", "caption", "coco", "caption", "train", "test", "val"),
    "syn-vqa": TaskSpec("syn-vqa", "vqa", "vqav2", "vqa", "train", "val", "val", synthetic=True),
    "syn-okvqa": TaskSpec("syn-okvqa", "vqa", "okvqa", "okvqa", "train", "val", "val", synthetic=True),
    "syn-caption": TaskSpec("syn-caption", "caption", "coco", "caption", "train", "test", "val", synthetic=True),
}


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ConfigError(f"Unknown task {name!r}; known tasks: {', '.join(TASKS)}.")
    return TASKS[name]
