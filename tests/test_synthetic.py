"""The synthetic benchmark: determinism, official file formats, and ground truth that matches the pixels."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hificl.data.official import describe_data, load_task
from hificl.data.splits import load_splits
from hificl.data.synthetic import VERSION, export_benchmark, generate_split, upgrade_export
from hificl.data.synthetic_scenes import BACKGROUND, COLOURS, SHAPES, object_mask, render
from hificl.data.synthetic_tasks import SYN_VQA_BINDING, VQA_FAMILIES
from hificl.data.tasks import task_spec
from hificl.metrics.okvqa import stem_answer
from tests.test_official_data import assert_disjoint


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_benchmark(
        tmp_path_factory.mktemp("syn") / "bench", seed=3, n_train_images=40, n_val_images=20, n_dev_images=10
    )


def test_same_seed_same_benchmark_other_seed_other_benchmark() -> None:
    a, b, c = generate_split("train", 30, 1), generate_split("train", 30, 1), generate_split("train", 30, 2)
    assert np.array_equal(a.images, b.images) and a.vqa == b.vqa and a.captions == b.captions
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.images, generate_split("val", 30, 1).images)


def test_syn_vqa_binding_is_fixed_and_families_are_balanced() -> None:
    split = generate_split("val", 50, 0)
    assert {q.question: q.family for q in split.vqa} == SYN_VQA_BINDING
    assert Counter(q.family for q in split.vqa) == {f: 50 for f in VQA_FAMILIES}
    # The same surface question has answers of different families across the benchmark's three questions.
    assert {q.answer for q in split.vqa if q.family == "count"} <= {"1", "2", "3", "4"}
    assert {q.answer for q in split.vqa if q.family == "colour"} <= set(COLOURS)


def test_exported_files_have_the_official_keys(root: Path) -> None:
    manifest = json.loads((root / "hificl_dataset.json").read_text())
    assert manifest["name"] == "synthetic" and manifest["seed"] == 3 and manifest["image_ext"] == ".png"
    for task, q_name, a_name in (
        ("vqav2", "v2_OpenEnded_mscoco_{}2014_questions.json", "v2_mscoco_{}2014_annotations.json"),
        ("okvqa", "OpenEnded_mscoco_{}2014_questions.json", "mscoco_{}2014_annotations.json"),
    ):
        for split, n_images in (("train", 40), ("val", 20), ("dev", 10)):
            questions = json.loads((root / task / q_name.format(split)).read_text())
            annotations = json.loads((root / task / a_name.format(split)).read_text())
            assert {"info", "task_type", "data_type", "data_subtype", "questions", "license"} <= set(questions)
            assert len(questions["questions"]) == 3 * n_images
            assert set(questions["questions"][0]) == {"image_id", "question", "question_id"}
            by_id = {a["question_id"]: a for a in annotations["annotations"]}
            assert set(by_id) == {q["question_id"] for q in questions["questions"]}
            for ann in annotations["annotations"]:
                assert len(ann["answers"]) == 10
                assert [a["answer_id"] for a in ann["answers"]] == list(range(1, 11))
                exact = sum(a.get("raw_answer", a["answer"]) == ann["multiple_choice_answer"] for a in ann["answers"])
                assert exact >= 8
                stemmed = [a for a in ann["answers"] if "raw_answer" in a]  # OK-VQA's release stems its answers
                assert all(a["answer"] == stem_answer(a["raw_answer"]) for a in stemmed)
                assert ann["question_type"] and ann["answer_type"] in {"other", "number"}
    karpathy = json.loads((root / "coco" / "dataset_coco.json").read_text())
    assert karpathy["dataset"] == "coco" and len(karpathy["images"]) == 60
    assert Counter(im["split"] for im in karpathy["images"]) == {"train": 40, "val": 10, "test": 10}
    for im in karpathy["images"]:
        assert len(im["sentences"]) == 5 and im["sentids"] == [s["sentid"] for s in im["sentences"]]
        assert (root / "coco" / im["filepath"] / im["filename"]).exists()


def test_instances_match_rendered_pixels(root: Path) -> None:
    instances = json.loads((root / "coco" / "annotations" / "instances_val2014.json").read_text())
    names = {c["id"]: c["name"] for c in instances["categories"]}
    assert sorted(names.values()) == sorted(SHAPES)
    split = generate_split("val", 20, 3)
    for image_id, scene in zip(split.image_ids, split.scenes, strict=True):
        anns = [a for a in instances["annotations"] if a["image_id"] == image_id]
        assert Counter(names[a["category_id"]] for a in anns) == Counter(o.shape for o in scene.objects)
        pixels = np.asarray(Image.open(root / "coco" / "val2014" / f"COCO_val2014_{image_id:012d}.png"))
        assert np.array_equal(pixels, render(scene))
        for obj, ann in zip(scene.objects, anns, strict=True):
            x, y, w, h = (int(v) for v in ann["bbox"])
            inside = pixels[y : y + h, x : x + w][object_mask(obj)[y : y + h, x : x + w]]
            assert (inside == obj.rgb).all() and ann["area"] == object_mask(obj).sum()
        background = ~np.any([object_mask(o) for o in scene.objects], axis=0)
        assert (pixels[background] == BACKGROUND).all()


def test_captions_name_every_object(root: Path) -> None:
    split = generate_split("train", 40, 3)
    for scene, captions in zip(split.scenes, split.captions, strict=True):
        for caption in captions:
            for obj in scene.objects:
                assert f"{obj.colour} {obj.shape}" in caption
            assert sum(caption.count(s) for s in SHAPES) == len(scene.objects)


def test_export_is_cached_and_refuses_foreign_directories(root: Path, tmp_path: Path) -> None:
    stamp = (root / "hificl_dataset.json").stat().st_mtime_ns
    assert export_benchmark(root, seed=3, n_train_images=40, n_val_images=20, n_dev_images=10) == root
    assert (root / "hificl_dataset.json").stat().st_mtime_ns == stamp
    (tmp_path / "mine.txt").write_text("not a benchmark")
    with pytest.raises(ValueError, match="not empty"):
        export_benchmark(tmp_path, seed=0, n_train_images=2, n_val_images=2)


@pytest.mark.parametrize("task", ["syn-vqa", "syn-okvqa", "syn-caption"])
def test_synthetic_tasks_validate_on_their_own_split(root: Path, task: str) -> None:
    """syn-VQA / syn-OKVQA: the export's "dev" images; syn-caption: Karpathy val; disjoint by question and image."""
    splits = load_splits(task_spec(task), root)
    assert_disjoint(splits)
    images = {r.image_id for r in splits.validation}
    if task == "syn-caption":
        assert len(images) == 10 and all(500_000 <= i < 500_010 for i in images)  # the first half of val2014
    else:
        assert images == set(range(900_000, 900_010)) and len(splits.validation) == 30
        assert len(splits.pool) == 120 and len(splits.evaluation) == 60  # train and val untouched
        assert describe_data(root)["tasks"]["vqav2"]["dev"]["records"] == 30


def test_an_older_export_is_upgraded_in_place(tmp_path: Path) -> None:
    old = export_benchmark(tmp_path / "bench", seed=1, n_train_images=6, n_val_images=4, n_dev_images=2)
    manifest = json.loads((old / "hificl_dataset.json").read_text())
    before = (old / "vqav2" / "v2_mscoco_val2014_annotations.json").read_text()
    for path in old.glob("*/*dev2014*"):  # what a version-2 export looked like: no dev split
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    manifest.update(version=2)
    del manifest["n_dev_images"]
    (old / "hificl_dataset.json").write_text(json.dumps(manifest))
    upgrade_export(old)
    assert json.loads((old / "hificl_dataset.json").read_text())["version"] == VERSION == 4
    assert load_task("vqav2", old, "dev")
    assert (old / "vqav2" / "v2_mscoco_val2014_annotations.json").read_text() == before
