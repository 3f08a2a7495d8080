"""The synthetic benchmark: in-memory splits for pretraining, and an export in the official VQAv2 / OK-VQA / COCO
file formats so that it reads through the same loaders as the real data sets.

Everything is a pure function of (seed, split, size): the same call gives the same scenes, questions and files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from hificl.data.synthetic_scenes import SHAPES, Scene, bbox, object_mask, render, sample_scene
from hificl.data.synthetic_tasks import (
    ANSWER_TYPES,
    OKVQA_QUESTIONS,
    SYN_VQA_BINDING,
    answer,
    captions,
    ten_answers,
)
from hificl.metrics.okvqa import stem_answer

MANIFEST = "hificl_dataset.json"
#: 2: syn-OKVQA answers stored stemmed beside raw_answer, as the OK-VQA release does.
#: 3: a "dev" split of its own images (VQA files only): the syn-VQA / syn-OKVQA validation set for model selection.
#: 4: the world of issue 14 (overlapping colours, octagons, ambiguous knowledge questions, one caption convention).
VERSION = 4
SPLITS = ("train", "val", "dev")
_SPLIT_CODE = {"train": 1, "val": 2, "dev": 3}
_IMAGE_ID_BASE = {"train": 100_000, "val": 500_000, "dev": 900_000}


@dataclass(frozen=True)
class SynQuestion:
    """One syn-VQA or syn-OKVQA question; `image_index` points into its split's `scenes` / `images`."""

    question_id: int
    image_index: int
    image_id: int
    question: str
    answer: str
    answers: tuple[str, ...]
    family: str
    answer_type: str


@dataclass(frozen=True)
class SyntheticSplit:
    """Scenes, rendered images (N, 32, 32, 3 uint8) and the three tasks' items of one split."""

    split: str
    image_ids: tuple[int, ...]
    scenes: tuple[Scene, ...]
    images: np.ndarray
    vqa: tuple[SynQuestion, ...]
    okvqa: tuple[SynQuestion, ...]
    captions: tuple[tuple[str, ...], ...]


def _question(rng: np.random.Generator, qid: int, idx: int, image_id: int, text: str, family: str, scene: Scene):
    canonical = answer(scene, family)
    return SynQuestion(
        qid, idx, image_id, text, canonical, ten_answers(canonical, rng), family, ANSWER_TYPES.get(family, "other")
    )


def generate_split(split: str, n_images: int, seed: int = 0) -> SyntheticSplit:
    """One split of the benchmark: every image gets 3 syn-VQA questions, 3 syn-OKVQA questions, 5 captions."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"Unknown split {split!r}: expected one of {SPLITS}.")
    rng = np.random.default_rng([seed, _SPLIT_CODE[split]])
    scenes = tuple(sample_scene(rng) for _ in range(n_images))
    image_ids = tuple(_IMAGE_ID_BASE[split] + i for i in range(n_images))
    vqa, okvqa, caps = [], [], []
    for idx, (scene, image_id) in enumerate(zip(scenes, image_ids, strict=True)):
        for j, (text, family) in enumerate(SYN_VQA_BINDING.items()):
            vqa.append(_question(rng, image_id * 10 + j, idx, image_id, text, family, scene))
        for j, (family, text) in enumerate(OKVQA_QUESTIONS.items()):
            okvqa.append(_question(rng, image_id * 10 + j, idx, image_id, text, family, scene))
        caps.append(captions(scene, rng))
    images = np.stack([render(s) for s in scenes]) if scenes else np.zeros((0, 32, 32, 3), np.uint8)
    return SyntheticSplit(split, image_ids, scenes, images, tuple(vqa), tuple(okvqa), tuple(caps))


def image_filename(split: str, image_id: int) -> str:
    return f"COCO_{split}2014_{image_id:012d}.png"


def _answer(i: int, raw: str, stem: bool) -> dict[str, Any]:
    """One of the 10 answers; OK-VQA's release stores the stemmed answer beside the raw one (its evaluation stems
    predictions and compares them with the stemmed answers)."""
    if not stem:
        return {"answer": raw, "answer_confidence": "yes", "answer_id": i + 1}
    return {"answer": stem_answer(raw), "raw_answer": raw, "answer_confidence": "yes", "answer_id": i + 1}


def _vqa_files(split: SyntheticSplit, items: tuple[SynQuestion, ...], name: str, stem: bool) -> tuple[dict, dict]:
    common = {"info": {"description": f"hificl synthetic {name}", "version": VERSION}, "license": {"name": "CC0"}}
    subset = {"task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": f"{split.split}2014"}
    questions = [{"image_id": q.image_id, "question": q.question, "question_id": q.question_id} for q in items]
    annotations = [
        {
            "question_id": q.question_id,
            "image_id": q.image_id,
            "question_type": q.family,
            "answer_type": q.answer_type,
            "multiple_choice_answer": q.answer,
            "answers": [_answer(i, a, stem) for i, a in enumerate(q.answers)],
        }
        for q in items
    ]
    return {**common, **subset, "questions": questions}, {**common, **subset, "annotations": annotations}


def _karpathy(splits: list[SyntheticSplit]) -> dict[str, Any]:
    """Karpathy split: train2014 images are "train"; val2014 images are half "val", half "test" (dev: VQA only)."""
    images: list[dict[str, Any]] = []
    sentid = 0
    for split in (s for s in splits if s.split != "dev"):
        n = len(split.image_ids)
        for i, (image_id, caps) in enumerate(zip(split.image_ids, split.captions, strict=True)):
            karpathy = "train" if split.split == "train" else ("val" if i < n // 2 else "test")
            sentences = [
                {"tokens": c.split(), "raw": c, "imgid": len(images), "sentid": sentid + k} for k, c in enumerate(caps)
            ]
            images.append(
                {
                    "filepath": f"{split.split}2014",
                    "filename": image_filename(split.split, image_id),
                    "imgid": len(images),
                    "split": karpathy,
                    "sentences": sentences,
                    "sentids": [s["sentid"] for s in sentences],
                    "cocoid": image_id,
                }
            )
            sentid += len(caps)
    return {"images": images, "dataset": "coco"}


def _instances(split: SyntheticSplit) -> dict[str, Any]:
    """COCO instances: one annotation per drawn object, category = shape name."""
    categories = [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)]
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, scene in zip(split.image_ids, split.scenes, strict=True):
        images.append({"id": image_id, "file_name": image_filename(split.split, image_id), "width": 32, "height": 32})
        for obj in scene.objects:
            x, y, w, h = bbox(obj)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": SHAPES.index(obj.shape) + 1,
                    "bbox": [x, y, w, h],
                    "area": float(object_mask(obj).sum()),
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                    "iscrowd": 0,
                }
            )
    return {"info": {"description": "hificl synthetic"}, "images": images, "annotations": annotations,
            "categories": categories, "licenses": []}  # fmt: skip


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _manifest(seed: int, n_train_images: int, n_val_images: int, n_dev_images: int) -> dict[str, Any]:
    return {
        "name": "synthetic",
        "seed": seed,
        "image_ext": ".png",
        "version": VERSION,
        "n_train_images": n_train_images,
        "n_val_images": n_val_images,
        "n_dev_images": n_dev_images,
        "questions_per_image": {"vqav2": len(SYN_VQA_BINDING), "okvqa": len(OKVQA_QUESTIONS)},
        "captions_per_image": 5,
        "vqa_binding": SYN_VQA_BINDING,
    }


def export_benchmark(
    root: Path, seed: int = 0, n_train_images: int = 2000, n_val_images: int = 500, n_dev_images: int = 250
) -> Path:
    """Write the benchmark under `root` in the official layouts; a no-op when `root` already holds this export.

    Written to a temporary sibling directory and renamed into place, so an interrupted export leaves nothing.
    An export of an older format version is rewritten (same seed and sizes) in the current one.
    """
    root = Path(root)
    manifest = _manifest(seed, n_train_images, n_val_images, n_dev_images)
    manifest_path = root / MANIFEST
    if manifest_path.exists():
        existing = json.loads(manifest_path.read_text())
        if {k: v for k, v in existing.items() if k != "counts"} == manifest:
            return root
        if existing.get("name") != "synthetic":
            raise ValueError(f"{root} holds a data set other than the synthetic benchmark; choose another root.")
    elif root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} exists, is not empty and is no synthetic benchmark export; choose another root.")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        sizes = (n_train_images, n_val_images, n_dev_images)
        splits = [generate_split(s, n, seed) for s, n in zip(SPLITS, sizes, strict=True)]
        for split in splits:
            folder = tmp / "coco" / f"{split.split}2014"
            folder.mkdir(parents=True)
            for image_id, image in zip(split.image_ids, split.images, strict=True):
                Image.fromarray(image).save(folder / image_filename(split.split, image_id), compress_level=1)
            s = split.split
            vq, va = _vqa_files(split, split.vqa, "syn-VQA", stem=False)
            _write_json(tmp / "vqav2" / f"v2_OpenEnded_mscoco_{s}2014_questions.json", vq)
            _write_json(tmp / "vqav2" / f"v2_mscoco_{s}2014_annotations.json", va)
            oq, oa = _vqa_files(split, split.okvqa, "syn-OKVQA", stem=True)
            _write_json(tmp / "okvqa" / f"OpenEnded_mscoco_{s}2014_questions.json", oq)
            _write_json(tmp / "okvqa" / f"mscoco_{s}2014_annotations.json", oa)
            if s != "dev":  # COCO captions use Karpathy's val as validation; dev images are no COCO split
                _write_json(tmp / "coco" / "annotations" / f"instances_{s}2014.json", _instances(split))
        _write_json(tmp / "coco" / "dataset_coco.json", _karpathy(splits))
        counts = {f"{s.split}_{t}": len(getattr(s, t)) for s in splits for t in ("vqa", "okvqa", "captions")}
        _write_json(tmp / MANIFEST, {**manifest, "counts": counts})
        tmp.chmod(0o755)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def upgrade_export(root: Path) -> None:
    """Rewrite an export of an older format version (same seed and sizes) so it has every current split."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return
    manifest = json.loads(path.read_text())
    if manifest.get("name") != "synthetic" or manifest.get("version") == VERSION:
        return
    export_benchmark(
        Path(root),
        seed=manifest["seed"],
        n_train_images=manifest["n_train_images"],
        n_val_images=manifest["n_val_images"],
        n_dev_images=manifest.get("n_dev_images", 250),
    )
