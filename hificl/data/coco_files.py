"""COCO captions loader: Karpathy's dataset_coco.json for splits and captions, COCO instances for objects.

Objects come from the instances files because CHAIR needs each image's ground-truth categories; only the
instances file(s) the split's images live in are parsed (each is hundreds of MB).
"""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path

from hificl.data.layout import (
    KARPATHY_SPLITS,
    check_split,
    image_ext,
    instances_path,
    karpathy_path,
    read_json,
    resolve_data_root,
    typed_field,
)
from hificl.data.records import CaptionRecord
from hificl.errors import DataError

# Karpathy "train" is train + restval (the 30k val2014 images outside Karpathy val/test), as every paper uses it.
KARPATHY_MEMBERS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}
COCO_SPLITS = ("train", "val")  # the instances files: instances_train2014.json, instances_val2014.json


def load_coco_captions(root: str | Path | None, split: str) -> list[CaptionRecord]:
    """Caption records of Karpathy `split` ("train" = train+restval | "val" | "test"), in dataset_coco.json order."""
    check_split("coco", split, KARPATHY_SPLITS)
    data_root = resolve_data_root(root)
    what = f"COCO captions split {split!r}"
    karpathy = karpathy_path(data_root)
    if not karpathy.is_file():
        raise DataError(f"{what}: expected file {karpathy} does not exist")
    ext = image_ext(data_root)
    images = _karpathy_images(karpathy, what, split)
    if not images:
        raise DataError(f"{what}: {karpathy} has no image in Karpathy split(s) {list(KARPATHY_MEMBERS[split])}")
    objects = _objects(data_root, what, {entry[2]: entry[0] for entry in images})
    return [
        CaptionRecord(
            image_id=cocoid,
            image_path=_image_path(data_root, filepath, filename, ext),
            captions=captions,
            objects=objects[cocoid],
            split=karpathy_split,
        )
        for filepath, filename, cocoid, captions, karpathy_split in images
    ]


def needed_instances(filepaths: set[str]) -> list[str]:
    """Which instances files ("train" / "val") cover images in these folders; an unknown folder needs both."""
    needed = {path.removesuffix("2014") for path in filepaths}
    return [s for s in COCO_SPLITS if s in needed] if needed <= set(COCO_SPLITS) else list(COCO_SPLITS)


def _karpathy_images(path: Path, what: str, split: str) -> list[tuple[str, str, int, tuple[str, ...], str]]:
    """(filepath, filename, cocoid, captions, karpathy split) of the split's images; the raw JSON is freed."""
    data = read_json(path, what)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: expected a JSON object with a list field 'images'")
    members = KARPATHY_MEMBERS[split]
    out = []
    seen: set[int] = set()
    for index, entry in enumerate(data["images"]):
        if not isinstance(entry, dict):
            raise DataError(f"{path}: images[{index}] is not a JSON object")
        if entry.get("split") not in members:
            continue
        cocoid = typed_field(entry, "cocoid", int, path, f"images[{index}]")
        where = f"cocoid {cocoid}"
        if cocoid in seen:
            raise DataError(f"{path}: {where} appears twice in split {split!r}")
        seen.add(cocoid)
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise DataError(f"{path}: {where} has no captions (field 'sentences' missing or empty)")
        captions = tuple(
            typed_field(sentence, "raw", str, path, f"{where} sentences[{i}]").strip()
            for i, sentence in enumerate(sentences)
        )
        filepath = typed_field(entry, "filepath", str, path, where)
        filename = typed_field(entry, "filename", str, path, where)
        out.append((filepath, filename, cocoid, captions, entry["split"]))
    return out


def _objects(root: Path, what: str, folders: dict[int, str]) -> dict[int, frozenset[str]]:
    """cocoid -> category names of its instance annotations, for the wanted cocoids only."""
    files = [instances_path(root, s) for s in needed_instances(set(folders.values()))]
    for path in files:
        if not path.is_file():
            raise DataError(f"{what}: expected file {path} does not exist")
    found: dict[int, set[str]] = {}
    for path in files:
        _collect_objects(path, what, folders.keys(), found)
    missing = next((cocoid for cocoid in folders if cocoid not in found), None)
    if missing is not None:
        names = " or ".join(str(p) for p in files)
        raise DataError(f"{what}: cocoid {missing} ({folders[missing]}) is not an image of {names}")
    return {cocoid: frozenset(names) for cocoid, names in found.items()}


def _collect_objects(path: Path, what: str, wanted: Container[int], found: dict[int, set[str]]) -> None:
    """Add the wanted images of one instances file to `found` (an image without annotations gets an empty set)."""
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with fields 'images', 'annotations', 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: expected a list field {key!r}")
    names = {
        typed_field(c, "id", int, path, f"categories[{i}]"): typed_field(c, "name", str, path, f"categories[{i}]")
        for i, c in enumerate(data["categories"])
    }
    for i, image in enumerate(data["images"]):
        image_id = typed_field(image, "id", int, path, f"images[{i}]")
        if image_id in wanted:
            found.setdefault(image_id, set())
    for i, ann in enumerate(data["annotations"]):
        image_id = typed_field(ann, "image_id", int, path, f"annotations[{i}]")
        if image_id not in wanted:
            continue
        category = typed_field(ann, "category_id", int, path, f"annotations[{i}]")
        if category not in names:
            raise DataError(f"{path}: annotations[{i}] has category_id {category}, which is not in 'categories'")
        found.setdefault(image_id, set()).add(names[category])


def _image_path(root: Path, filepath: str, filename: str, ext: str | None) -> Path:
    """ROOT/coco/{filepath}/{filename}, the extension replaced by the manifest's image_ext when it sets one."""
    name = Path(filename)
    return root / "coco" / filepath / (name.with_suffix(ext) if ext and name.name else name)
