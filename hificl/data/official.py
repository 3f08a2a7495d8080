"""Loaders for the official VQAv2 / OK-VQA / COCO files a researcher already has under a data root.

This is the public entry point; the file formats live in `vqa_files` and `coco_files`, the layout and the
data-root rule (argument > $HIFICL_DATA_ROOT) in `layout`. docs/data.md describes the layout.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hificl.data.coco_files import load_coco_captions
from hificl.data.images import open_image
from hificl.data.layout import (
    DATA_ROOT_ENV,
    DEFAULT_IMAGE_EXT,
    KARPATHY_SPLITS,
    TASK_NAMES,
    VQA_SPLITS,
    instances_path,
    karpathy_path,
    read_manifest,
    resolve_data_root,
    vqa_paths,
)
from hificl.data.records import CaptionRecord, VQARecord
from hificl.data.subsets import fixed_subset, subset_ids
from hificl.data.vqa_files import load_okvqa, load_vqav2
from hificl.errors import DataError

__all__ = [
    "DATA_ROOT_ENV",
    "TASKS",
    "describe_data",
    "fixed_subset",
    "load_coco_captions",
    "load_okvqa",
    "load_task",
    "load_vqav2",
    "open_image",
    "resolve_data_root",
    "subset_ids",
]

#: The synthetic benchmark's own validation split; real data sets carve theirs from train (hificl.data.splits).
SYNTHETIC_ONLY_SPLIT = "dev"
Loader = Callable[[str | Path | None, str], list[Any]]
TASKS: dict[str, Loader] = {"vqav2": load_vqav2, "okvqa": load_okvqa, "coco": load_coco_captions}
TASK_SPLITS: dict[str, tuple[str, ...]] = {"vqav2": VQA_SPLITS, "okvqa": VQA_SPLITS, "coco": KARPATHY_SPLITS}


def load_task(task: str, root: str | Path | None, split: str) -> list[VQARecord] | list[CaptionRecord]:
    """The records of `task` ("vqav2" | "okvqa" | "coco") and `split` under the data root."""
    loader = TASKS.get(task)
    if loader is None:
        raise DataError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    return loader(root, split)


def expected_files(root: Path, task: str, split: str) -> list[Path]:
    """The files a task/split needs (COCO: the instances files its Karpathy split normally draws on)."""
    if task == "coco":
        coco_splits = ("train", "val") if split == "train" else ("val",)
        return [karpathy_path(root), *(instances_path(root, s) for s in coco_splits)]
    return list(vqa_paths(root, task, split))


def describe_data(root: str | Path | None, *, check_images: bool = True) -> dict[str, Any]:
    """What a dry run reports: per task/split its status, record count, missing files and missing images.

    Absent or broken tasks are reported, not raised; only an unusable data root raises.
    status: "ok" (loaded), "absent" (none of its files exist), "error" (files exist but loading failed).
    """
    data_root = resolve_data_root(root)
    report: dict[str, Any] = {"root": str(data_root), "manifest": None, "image_ext": DEFAULT_IMAGE_EXT}
    try:
        manifest = read_manifest(data_root)
    except DataError as exc:
        report["manifest_error"] = str(exc)
    else:
        report["manifest"] = manifest
        if manifest is not None and isinstance(manifest.get("image_ext"), str):
            report["image_ext"] = manifest["image_ext"]
    tasks: dict[str, dict[str, Any]] = {}
    missing_all: list[str] = []
    for task, splits in TASK_SPLITS.items():
        tasks[task] = {}
        for split in splits:
            entry = _describe_split(data_root, task, split, check_images)
            if split == SYNTHETIC_ONLY_SPLIT and entry["status"] == "absent":
                continue  # real VQAv2 / OK-VQA have no dev files: they validate on a hold-out of train
            tasks[task][split] = entry
            missing_all.extend(p for p in entry["missing_files"] if p not in missing_all)
    report["tasks"] = tasks
    report["found"] = [f"{t}/{s}" for t, by_split in tasks.items() for s, e in by_split.items() if e["status"] == "ok"]
    report["missing_files"] = missing_all
    return report


def _describe_split(root: Path, task: str, split: str, check_images: bool) -> dict[str, Any]:
    """One task/split's entry of describe_data."""
    files = expected_files(root, task, split)
    missing = [str(p) for p in files if not p.is_file()]
    entry: dict[str, Any] = {
        "name": TASK_NAMES[task],
        "status": "absent",
        "records": 0,
        "missing_files": missing,
    }
    if len(missing) == len(files):
        return entry
    try:
        records = load_task(task, root, split)
    except DataError as exc:
        entry.update(status="error", error=str(exc))
        return entry
    entry.update(status="ok", records=len(records))
    images = list(dict.fromkeys(record.image_path for record in records))
    entry["images"] = len(images)
    if check_images:
        absent = [p for p in images if not p.is_file()]
        entry["missing_images"] = len(absent)
        if absent:
            entry["first_missing_image"] = str(absent[0])
    return entry
