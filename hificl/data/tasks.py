"""The tasks the package knows: which files they read, which prompt kind and metric they use, which splits.

The synthetic twins read the embedded benchmark, exported in the official formats, through the same loaders
as the real data sets; only their data root differs. Every task has a validation set disjoint from its training
pool and its evaluation set by question and image (hificl.data.splits): COCO's Karpathy val, the synthetic
benchmark's own "dev" split, and for VQAv2 / OK-VQA (whose papers report on val) a seeded hold-out of train.
"""

from __future__ import annotations

from dataclasses import dataclass

from hificl.errors import ConfigError

#: val_split of tasks validated on a seeded hold-out of their training split's images.
HOLDOUT = "train-holdout"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # prompt kind: "vqa" | "caption"
    files: str  # loader: "vqav2" | "okvqa" | "coco"
    metric: str  # "vqa" | "okvqa" | "caption"
    train_split: str
    eval_split: str  # the final table's split
    val_split: str  # model selection's split (HOLDOUT: carved from train_split)
    synthetic: bool = False


TASKS: dict[str, TaskSpec] = {
    "vqav2": TaskSpec("vqav2", "vqa", "vqav2", "vqa", "train", "val", HOLDOUT),
    "okvqa": TaskSpec("okvqa", "vqa", "okvqa", "okvqa", "train", "val", HOLDOUT),
    # Karpathy split: evaluate on test, select models on val.
    "coco": TaskSpec("coco", "caption", "coco", "caption", "train", "test", "val"),
    "syn-vqa": TaskSpec("syn-vqa", "vqa", "vqav2", "vqa", "train", "val", "dev", synthetic=True),
    "syn-okvqa": TaskSpec("syn-okvqa", "vqa", "okvqa", "okvqa", "train", "val", "dev", synthetic=True),
    "syn-caption": TaskSpec("syn-caption", "caption", "coco", "caption", "train", "test", "val", synthetic=True),
}


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ConfigError(f"Unknown task {name!r}; known tasks: {', '.join(TASKS)}.")
    return TASKS[name]
