"""Where the official data files live under a data root, and how they are read.

Every loader goes through this module so that the expected paths are written in one place: the loaders, the
error messages and `describe_data`'s dry run all name the same files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hificl.errors import DataError

DATA_ROOT_ENV = "HIFICL_DATA_ROOT"
MANIFEST_NAME = "hificl_dataset.json"
DEFAULT_IMAGE_EXT = ".jpg"
#: "dev": the synthetic benchmark's validation split (real VQAv2 / OK-VQA validate on a hold-out of train).
VQA_SPLITS = ("train", "val", "dev")
KARPATHY_SPLITS = ("train", "val", "test")
# task -> (directory, questions file pattern, annotations file pattern); `{split}` is "train", "val" or "dev".
VQA_FILES: dict[str, tuple[str, str, str]] = {
    "vqav2": (
        "vqav2",
        "v2_OpenEnded_mscoco_{split}2014_questions.json",
        "v2_mscoco_{split}2014_annotations.json",
    ),
    "okvqa": ("okvqa", "OpenEnded_mscoco_{split}2014_questions.json", "mscoco_{split}2014_annotations.json"),
}
TASK_NAMES = {"vqav2": "VQAv2", "okvqa": "OK-VQA", "coco": "COCO captions"}


def resolve_data_root(root: str | Path | None) -> Path:
    """The data root: the argument (CLI flag or config value) wins over $HIFICL_DATA_ROOT."""
    if root is not None and str(root) != "":
        source = "the data root argument"
    else:
        root = os.environ.get(DATA_ROOT_ENV, "")
        source = f"${DATA_ROOT_ENV}"
        if not root:
            raise DataError(f"no data root given: pass one (e.g. --data-root) or set ${DATA_ROOT_ENV}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root {path} (from {source}) does not exist or is not a directory")
    return path


def read_json(path: Path, what: str) -> Any:
    """Parse one JSON file; a missing file or bad JSON becomes a DataError naming the file (and position)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what}: expected file {path} does not exist") from None
    except OSError as exc:
        raise DataError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): {exc.msg}"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8/16/32 text at byte {exc.start}: {exc.reason}") from None


def read_manifest(root: Path) -> dict[str, Any] | None:
    """ROOT/hificl_dataset.json if present (the synthetic benchmark writes it), else None."""
    path = root / MANIFEST_NAME
    if not path.exists():
        return None
    manifest = read_json(path, "data-set manifest")
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: the manifest must be a JSON object, got {type(manifest).__name__}")
    return manifest


def image_ext(root: Path) -> str | None:
    """The manifest's `image_ext` (e.g. ".png"), or None when there is no manifest or it sets none."""
    manifest = read_manifest(root)
    if manifest is None or "image_ext" not in manifest:
        return None
    ext = manifest["image_ext"]
    if not isinstance(ext, str) or not ext.startswith(".") or len(ext) < 2 or "/" in ext or "\\" in ext:
        raise DataError(f"{root / MANIFEST_NAME}: field 'image_ext' must look like '.png', got {ext!r}")
    return ext


def coco_image_path(root: Path, split: str, image_id: int, ext: str | None) -> Path:
    """ROOT/coco/{split}2014/COCO_{split}2014_{image_id:012d}{ext}: where VQAv2 / OK-VQA images live."""
    folder = f"{split}2014"
    return root / "coco" / folder / f"COCO_{folder}_{image_id:012d}{ext or DEFAULT_IMAGE_EXT}"


def vqa_paths(root: Path, task: str, split: str) -> tuple[Path, Path]:
    """(questions file, annotations file) of a VQA-style task and split."""
    folder, questions, annotations = VQA_FILES[task]
    return root / folder / questions.format(split=split), root / folder / annotations.format(split=split)


def karpathy_path(root: Path) -> Path:
    """ROOT/coco/dataset_coco.json: the Karpathy caption splits."""
    return root / "coco" / "dataset_coco.json"


def instances_path(root: Path, coco_split: str) -> Path:
    """ROOT/coco/annotations/instances_{train,val}2014.json: COCO object annotations."""
    return root / "coco" / "annotations" / f"instances_{coco_split}2014.json"


def typed_field(entry: Any, name: str, kind: type, path: Path, where: str) -> Any:
    """entry[name] checked to be of type `kind` (bool is not an int here); `where` locates the entry in `path`."""
    if not isinstance(entry, dict):
        raise DataError(f"{path}: {where} is not a JSON object")
    value = entry.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(f"{path}: {where} has no {kind.__name__} field {name!r} (got {value!r})")
    return value


def check_split(task: str, split: str, allowed: tuple[str, ...]) -> None:
    """Reject a split name the task does not have, listing the ones it has."""
    if split not in allowed:
        raise DataError(f"{TASK_NAMES.get(task, task)}: unknown split {split!r}; expected one of {list(allowed)}")
