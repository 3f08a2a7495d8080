"""Official-format loaders: tiny files in each official format, read back, compared record by record."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from hificl.data.coco_files import needed_instances
from hificl.data.layout import VQA_FILES
from hificl.data.official import (
    describe_data,
    fixed_subset,
    load_coco_captions,
    load_okvqa,
    load_task,
    load_vqav2,
    open_image,
    resolve_data_root,
    subset_ids,
)
from hificl.data.records import CaptionRecord, VQARecord
from hificl.data.splits import TaskSplits, holdout_images, load_splits
from hificl.data.tasks import task_spec
from hificl.errors import DataError, HificlError

ANSWERS_A = ["two", "2", "2", "two", "2", "2", "2", "two", "2", "3"]
ANSWERS_B = ["yes"] * 10
ANSWERS_C = ["red", "red", "Red", "dark red", "red", "red", "red", "red", "maroon", "red"]


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def answers(texts: list[str]) -> list[dict[str, Any]]:
    return [{"answer": t, "answer_confidence": "yes", "answer_id": i + 1} for i, t in enumerate(texts)]


def write_vqa(root: Path, folder: str, qname: str, aname: str, split: str) -> tuple[Path, Path]:
    """Three questions on two images, in the official VQAv2 / OK-VQA format."""
    questions = [
        {"image_id": 42, "question": "How many dogs?", "question_id": 420},
        {"image_id": 7, "question": "Is it sunny?", "question_id": 70},
        {"image_id": 42, "question": "What color is the car?", "question_id": 421},
    ]
    anns = [  # annotation order differs from question order on purpose
        {"question_id": 421, "image_id": 42, "question_type": "what color is the", "answer_type": "other",
         "multiple_choice_answer": "red", "answers": answers(ANSWERS_C)},
        {"question_id": 420, "image_id": 42, "question_type": "how many", "answer_type": "number",
         "multiple_choice_answer": "2", "answers": answers(ANSWERS_A)},
        {"question_id": 70, "image_id": 7, "question_type": "is it", "answer_type": "yes/no",
         "multiple_choice_answer": "yes", "answers": answers(ANSWERS_B)},
    ]  # fmt: skip
    q = write_json(root / folder / qname.format(split=split), {"info": {}, "questions": questions})
    a = write_json(root / folder / aname.format(split=split), {"info": {}, "annotations": anns})
    return q, a


def write_vqav2(root: Path, split: str = "val") -> tuple[Path, Path]:
    return write_vqa(
        root,
        "vqav2",
        "v2_OpenEnded_mscoco_{split}2014_questions.json",
        "v2_mscoco_{split}2014_annotations.json",
        split,
    )


def write_okvqa(root: Path, split: str = "train") -> tuple[Path, Path]:
    return write_vqa(
        root,
        "okvqa",
        "OpenEnded_mscoco_{split}2014_questions.json",
        "mscoco_{split}2014_annotations.json",
        split,
    )


def sentence(raw: str) -> dict[str, Any]:
    return {"raw": raw, "tokens": raw.strip(" .").lower().split(), "imgid": 0, "sentid": 0}


def write_coco(root: Path) -> None:
    """Karpathy file with one image per split (train, restval, val, test) and the two instances files."""

    def image(split: str, folder: str, cocoid: int, raws: list[str]) -> dict[str, Any]:
        name = f"COCO_{folder}_{cocoid:012d}.jpg"
        return {"filepath": folder, "filename": name, "imgid": cocoid, "split": split,
                "sentences": [sentence(r) for r in raws], "cocoid": cocoid, "sentids": [0]}  # fmt: skip

    images = [
        image("train", "train2014", 9, ["A dog on a couch. ", "  a brown dog sleeping"]),
        image("val", "val2014", 391895, ["A man riding a bike."]),
        image("restval", "val2014", 5, ["Two cats and a dog."]),
        image("test", "val2014", 11, ["An empty room.\n"]),
    ]
    write_json(root / "coco" / "dataset_coco.json", {"images": images, "dataset": "coco"})
    categories = [
        {"id": i, "name": n} for i, n in ((1, "person"), (2, "bicycle"), (17, "cat"), (18, "dog"), (63, "couch"))
    ]
    write_instances(root, "train", [9, 100], [(9, 18), (9, 63), (100, 1)], categories)
    write_instances(root, "val", [391895, 5, 11], [(391895, 1), (391895, 2), (5, 17), (5, 17), (5, 18)], categories)


def write_instances(
    root: Path,
    split: str,
    image_ids: list[int],
    pairs: list[tuple[int, int]],
    categories: list[dict[str, Any]],
) -> None:
    """COCO instances file: `pairs` are (image_id, category_id) annotations; image 11 / 100 style ids may have none."""
    annotations = [
        {"id": i, "image_id": img, "category_id": cat, "bbox": [0, 0, 1, 1]} for i, (img, cat) in enumerate(pairs)
    ]
    write_json(
        root / "coco" / "annotations" / f"instances_{split}2014.json",
        {"images": [{"id": i} for i in image_ids], "annotations": annotations, "categories": categories},
    )


def vqa_records(root: Path, split: str, ext: str) -> list[VQARecord]:
    def path(image_id: int) -> Path:
        return root / "coco" / f"{split}2014" / f"COCO_{split}2014_{image_id:012d}{ext}"

    return [
        VQARecord(420, 42, path(42), "How many dogs?", tuple(ANSWERS_A), "how many", "number", "2"),
        VQARecord(70, 7, path(7), "Is it sunny?", tuple(ANSWERS_B), "is it", "yes/no", "yes"),
        VQARecord(421, 42, path(42), "What color is the car?", tuple(ANSWERS_C), "what color is the", "other", "red"),
    ]


# --- loaders --------------------------------------------------------------------------------------------


def test_vqav2_records_exact(tmp_path: Path) -> None:
    write_vqav2(tmp_path, "val")
    records = load_vqav2(tmp_path, "val")
    assert records == vqa_records(tmp_path, "val", ".jpg")
    assert str(records[0].image_path).endswith("coco/val2014/COCO_val2014_000000000042.jpg")
    assert len(records[2].answers) == 10
    assert load_task("vqav2", tmp_path, "val") == records


def test_okvqa_records_with_manifest_image_ext(tmp_path: Path) -> None:
    write_okvqa(tmp_path, "train")
    write_json(tmp_path / "hificl_dataset.json", {"name": "synthetic", "image_ext": ".png"})
    records = load_okvqa(tmp_path, "train")
    assert records == vqa_records(tmp_path, "train", ".png")
    assert records[1].image_path.name == "COCO_train2014_000000000007.png"


def test_coco_captions_train_is_train_plus_restval(tmp_path: Path) -> None:
    write_coco(tmp_path)
    records = load_coco_captions(tmp_path, "train")
    coco = tmp_path / "coco"
    assert records == [
        CaptionRecord(9, coco / "train2014" / "COCO_train2014_000000000009.jpg",
                      ("A dog on a couch.", "a brown dog sleeping"), frozenset({"dog", "couch"}), "train"),
        CaptionRecord(5, coco / "val2014" / "COCO_val2014_000000000005.jpg",
                      ("Two cats and a dog.",), frozenset({"cat", "dog"}), "restval"),
    ]  # fmt: skip


def test_coco_val_and_test_need_only_the_val_instances(tmp_path: Path) -> None:
    write_coco(tmp_path)
    (tmp_path / "coco" / "annotations" / "instances_train2014.json").unlink()
    val = load_task("coco", tmp_path, "val")
    test = load_coco_captions(tmp_path, "test")
    assert [(r.image_id, r.captions, r.objects, r.split) for r in val] == [
        (391895, ("A man riding a bike.",), frozenset({"person", "bicycle"}), "val")
    ]
    assert [(r.image_id, r.captions, r.objects) for r in test] == [(11, ("An empty room.",), frozenset())]
    with pytest.raises(DataError, match=r"instances_train2014\.json does not exist"):
        load_coco_captions(tmp_path, "train")


def test_coco_manifest_replaces_extension(tmp_path: Path) -> None:
    write_coco(tmp_path)
    write_json(tmp_path / "hificl_dataset.json", {"name": "synthetic", "image_ext": ".png"})
    (record,) = load_coco_captions(tmp_path, "val")
    assert record.image_path == tmp_path / "coco" / "val2014" / "COCO_val2014_000000391895.png"


# --- data root ------------------------------------------------------------------------------------------


def test_data_root_argument_beats_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_root, arg_root = tmp_path / "env", tmp_path / "arg"
    env_root.mkdir()
    arg_root.mkdir()
    monkeypatch.setenv("HIFICL_DATA_ROOT", str(env_root))
    assert resolve_data_root(str(arg_root)) == arg_root
    assert resolve_data_root(None) == env_root
    write_vqav2(env_root)
    assert len(load_vqav2(None, "val")) == 3


def test_missing_root_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIFICL_DATA_ROOT", raising=False)
    with pytest.raises(DataError, match="HIFICL_DATA_ROOT"):
        resolve_data_root(None)
    with pytest.raises(DataError, match=r"data root .*nowhere.* does not exist"):
        load_vqav2(tmp_path / "nowhere", "val")
    monkeypatch.setenv("HIFICL_DATA_ROOT", str(tmp_path / "gone"))
    with pytest.raises(HificlError, match=r"gone \(from \$HIFICL_DATA_ROOT\) does not exist"):
        resolve_data_root(None)


# --- errors ---------------------------------------------------------------------------------------------


def test_missing_file_names_path_and_split(tmp_path: Path) -> None:
    _, a = write_vqav2(tmp_path, "val")
    a.unlink()
    with pytest.raises(DataError) as info:
        load_vqav2(tmp_path, "val")
    assert str(a) in str(info.value) and "VQAv2 split 'val'" in str(info.value)
    with pytest.raises(DataError, match=r"OK-VQA split 'val': expected file .*OpenEnded_mscoco_val2014_questions"):
        load_okvqa(tmp_path, "val")
    with pytest.raises(DataError, match=r"COCO captions split 'test': expected file .*dataset_coco\.json"):
        load_coco_captions(tmp_path, "test")


def test_malformed_json_names_file_and_position(tmp_path: Path) -> None:
    q, _ = write_vqav2(tmp_path)
    q.write_text('{"questions": [\n  {"image_id": 1,, }]}')
    with pytest.raises(DataError) as info:
        load_vqav2(tmp_path, "val")
    message = str(info.value)
    assert str(q) in message and "line 2 column 18" in message


def test_annotation_without_answers(tmp_path: Path) -> None:
    _, a = write_vqav2(tmp_path)
    data = json.loads(a.read_text())
    data["annotations"][1]["answers"] = []
    a.write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"{re.escape(str(a))}: question_id 420 has no answers"):
        load_vqav2(tmp_path, "val")
    del data["annotations"][1]["answers"]
    a.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"question_id 420 has no answers \(field 'answers' missing"):
        load_vqav2(tmp_path, "val")


def test_question_without_annotation_and_vice_versa(tmp_path: Path) -> None:
    q, a = write_vqav2(tmp_path)
    data = json.loads(a.read_text())
    dropped = data["annotations"].pop(2)  # question 70
    a.write_text(json.dumps(data))
    with pytest.raises(
        DataError, match=rf"{re.escape(str(q))}: question_id 70 has no annotation in {re.escape(str(a))}"
    ):
        load_vqav2(tmp_path, "val")
    data["annotations"].append(dropped)
    data["annotations"].append({**dropped, "question_id": 999})
    a.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"question_id 999 has an annotation but no question"):
        load_vqav2(tmp_path, "val")


def test_image_mismatch_and_bad_field(tmp_path: Path) -> None:
    q, _ = write_vqav2(tmp_path)
    data = json.loads(q.read_text())
    data["questions"][1]["image_id"] = 8
    q.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"question_id 70 is about image_id 8 but .* says 7"):
        load_vqav2(tmp_path, "val")
    data["questions"][1]["question"] = None
    q.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"question_id 70 has no str field 'question'"):
        load_vqav2(tmp_path, "val")


def test_empty_split(tmp_path: Path) -> None:
    q, a = write_vqav2(tmp_path)
    write_json(q, {"questions": []})
    write_json(a, {"annotations": []})
    with pytest.raises(DataError, match=r"VQAv2 split 'val': .* holds no questions \(empty split\)"):
        load_vqav2(tmp_path, "val")
    write_json(tmp_path / "coco" / "dataset_coco.json", {"images": [{"split": "val", "cocoid": 1}]})
    with pytest.raises(DataError, match=r"COCO captions split 'test': .* has no image in Karpathy split"):
        load_coco_captions(tmp_path, "test")


def test_unknown_split_and_task(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"VQAv2: unknown split 'test'"):
        load_vqav2(tmp_path, "test")
    with pytest.raises(DataError, match=r"unknown task 'gqa'"):
        load_task("gqa", tmp_path, "val")


def test_bad_manifest_image_ext(tmp_path: Path) -> None:
    write_vqav2(tmp_path)
    write_json(tmp_path / "hificl_dataset.json", {"image_ext": "png"})
    with pytest.raises(DataError, match=r"hificl_dataset\.json: field 'image_ext' must look like '\.png', got 'png'"):
        load_vqav2(tmp_path, "val")


def test_coco_image_missing_from_instances(tmp_path: Path) -> None:
    write_coco(tmp_path)
    write_json(tmp_path / "coco" / "annotations" / "instances_val2014.json",
               {"images": [], "annotations": [], "categories": []})  # fmt: skip
    with pytest.raises(DataError, match=r"cocoid 391895 \(val2014\) is not an image of .*instances_val2014"):
        load_coco_captions(tmp_path, "val")


# --- images ---------------------------------------------------------------------------------------------


def test_open_image_rgb_and_errors(tmp_path: Path) -> None:
    gray = tmp_path / "g.png"
    Image.new("L", (3, 2), color=200).save(gray)
    jpeg = tmp_path / "c.jpg"
    Image.new("RGB", (4, 5), color=(255, 0, 0)).save(jpeg, quality=100)
    image = open_image(gray)
    assert image.mode == "RGB" and image.size == (3, 2) and image.getpixel((1, 1)) == (200, 200, 200)
    red = open_image(jpeg)
    assert red.size == (4, 5) and red.getpixel((0, 0))[0] > 250 and red.getpixel((0, 0))[1] < 5
    with pytest.raises(DataError, match=rf"image file {re.escape(str(tmp_path / 'none.png'))} does not exist"):
        open_image(tmp_path / "none.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=rf"image file {re.escape(str(bad))} is not an image"):
        open_image(bad)
    truncated = tmp_path / "trunc.png"
    Image.new("RGB", (64, 64), color=(1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(DataError, match=rf"image file {re.escape(str(truncated))}"):
        open_image(truncated)


def test_records_open_their_images(tmp_path: Path) -> None:
    write_vqav2(tmp_path)
    write_json(tmp_path / "hificl_dataset.json", {"name": "synthetic", "image_ext": ".png"})
    records = load_vqav2(tmp_path, "val")
    records[0].image_path.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8), color=(0, 128, 255)).save(records[0].image_path)
    assert open_image(records[0].image_path).getpixel((7, 7)) == (0, 128, 255)
    with pytest.raises(DataError, match=r"COCO_val2014_000000000007\.png does not exist"):
        open_image(records[1].image_path)


# --- subsets --------------------------------------------------------------------------------------------


def test_fixed_subset_is_pinned_and_deterministic() -> None:
    items = list(range(10))
    assert fixed_subset(items, 5, seed=0) == [9, 4, 0, 5, 2]  # pinned: a change here breaks reproducibility
    assert fixed_subset(items, None, seed=1) == [8, 0, 3, 4, 5, 2, 9, 6, 7, 1]
    assert fixed_subset(items, 100, seed=1) == fixed_subset(items, None, seed=1)
    big = list(range(1000))
    a, b = fixed_subset(big, 50, seed=3), fixed_subset(big, 50, seed=3)
    assert a == b
    assert len(set(a)) == 50 and set(a) <= set(big)
    assert fixed_subset(big, 50, seed=4) != a
    assert len(set(a) & set(fixed_subset(big, 50, seed=4))) < 15  # expected overlap 2.5
    assert fixed_subset(big, 200, seed=3)[:50] == a  # nested: a smaller subset is a prefix of a larger one


def test_fixed_subset_disjoint_halves_and_errors() -> None:
    big = list(range(101))
    order = fixed_subset(big, None, seed=7)
    demos, evaluation = order[:50], order[50:]
    assert set(demos).isdisjoint(evaluation) and sorted(demos + evaluation) == big
    for size in (0, -3):
        with pytest.raises(DataError, match=rf"subset size must be a positive integer or None, got {size}"):
            fixed_subset(big, size, seed=0)
    with pytest.raises(DataError, match="empty record list"):
        fixed_subset([], 3, seed=0)
    with pytest.raises(DataError, match="seed must be an integer"):
        fixed_subset(big, 3, seed="0")  # type: ignore[arg-type]


def test_fixed_subset_ignores_hash_seed(tmp_path: Path) -> None:
    code = "from hificl.data.subsets import fixed_subset; print(fixed_subset([str(i) for i in range(30)], 6, 11))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True, text=True, check=True,
        ).stdout
        for seed in ("1", "2")
    }  # fmt: skip
    assert outputs == {str(fixed_subset([str(i) for i in range(30)], 6, 11)) + "\n"}


def test_subset_ids(tmp_path: Path) -> None:
    write_vqav2(tmp_path)
    write_coco(tmp_path)
    vqa = fixed_subset(load_vqav2(tmp_path, "val"), 2, seed=0)
    assert subset_ids(vqa) == [r.question_id for r in vqa] and set(subset_ids(vqa)) <= {420, 70, 421}
    assert subset_ids(load_coco_captions(tmp_path, "train")) == [9, 5]
    with pytest.raises(DataError, match="record 0 is a int"):
        subset_ids([1])  # type: ignore[list-item]


# --- dry run --------------------------------------------------------------------------------------------


def test_describe_data_reports_found_missing_and_broken(tmp_path: Path) -> None:
    write_vqav2(tmp_path, "val")
    write_coco(tmp_path)
    (tmp_path / "coco" / "annotations" / "instances_train2014.json").unlink()
    broken, _ = write_okvqa(tmp_path, "val")
    broken.write_text("{")
    image = tmp_path / "coco" / "val2014" / "COCO_val2014_000000000042.jpg"
    image.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2)).save(image)
    report = describe_data(tmp_path)
    tasks = report["tasks"]
    assert report["found"] == ["vqav2/val", "coco/val", "coco/test"]
    assert tasks["vqav2"]["val"]["records"] == 3
    assert tasks["vqav2"]["val"]["images"] == 2 and tasks["vqav2"]["val"]["missing_images"] == 1
    assert tasks["vqav2"]["val"]["first_missing_image"].endswith("COCO_val2014_000000000007.jpg")
    assert tasks["vqav2"]["train"]["status"] == "absent" and len(tasks["vqav2"]["train"]["missing_files"]) == 2
    assert (
        tasks["okvqa"]["val"]["status"] == "error"
        and "malformed JSON at line 1 column 2" in tasks["okvqa"]["val"]["error"]
    )
    assert tasks["okvqa"]["train"]["status"] == "absent"
    assert "dev" not in tasks["vqav2"]  # real data has no dev split: it validates on a hold-out of train
    assert tasks["coco"]["train"]["status"] == "error" and "instances_train2014.json" in tasks["coco"]["train"]["error"]
    assert tasks["coco"]["val"]["records"] == 1 and tasks["coco"]["test"]["records"] == 1
    assert str(tmp_path / "coco" / "annotations" / "instances_train2014.json") in report["missing_files"]
    assert report["image_ext"] == ".jpg" and report["manifest"] is None


def test_bad_answer_entry_is_located(tmp_path: Path) -> None:
    _, a = write_vqav2(tmp_path)
    data = json.loads(a.read_text())
    data["annotations"][2]["answers"][3] = {"answer": 3}
    a.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"question_id 70 answers\[3\] has no str field 'answer' \(got 3\)"):
        load_vqav2(tmp_path, "val")


def test_needed_instances_files() -> None:
    assert needed_instances({"val2014"}) == ["val"]
    assert needed_instances({"val2014", "train2014"}) == ["train", "val"]
    assert needed_instances({"images"}) == ["train", "val"]  # an unknown folder: search both


# --- validation set: disjoint from training and evaluation, by question and by image ----------------------


def write_vqa_train(root: Path, task: str, n_images: int = 20) -> None:
    """A training split of `n_images` images with two questions each (ids unlike the val files' 42 and 7)."""
    folder, qname, aname = VQA_FILES[task]
    questions, anns = [], []
    for image in range(1000, 1000 + n_images):
        for j, text in enumerate(("What is it?", "How many?")):
            qid = image * 10 + j
            questions.append({"image_id": image, "question": text, "question_id": qid})
            anns.append({"question_id": qid, "image_id": image, "question_type": "what", "answer_type": "other",
                         "multiple_choice_answer": "two", "answers": answers(["two"] * 10)})  # fmt: skip
    write_json(root / folder / qname.format(split="train"), {"info": {}, "questions": questions})
    write_json(root / folder / aname.format(split="train"), {"info": {}, "annotations": anns})


def _question_and_image_ids(records: list[Any]) -> tuple[set[int], set[int]]:
    return {getattr(r, "question_id", -1) for r in records} - {-1}, {r.image_id for r in records}


def assert_disjoint(splits: TaskSplits) -> None:
    sets = {"pool": splits.pool, "validation": splits.validation, "evaluation": splits.evaluation}
    assert all(sets.values()), {k: len(v) for k, v in sets.items()}
    names = list(sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            qa, ia = _question_and_image_ids(sets[a])
            qb, ib = _question_and_image_ids(sets[b])
            assert not qa & qb and not ia & ib, (a, b)


@pytest.mark.parametrize("task", ["vqav2", "okvqa"])
def test_vqa_validation_is_a_seeded_image_holdout_of_train(tmp_path: Path, task: str) -> None:
    write_vqa_train(tmp_path, task)
    write_vqa(tmp_path, *VQA_FILES[task], "val")
    splits = load_splits(task_spec(task), tmp_path, holdout_seed=0)
    assert_disjoint(splits)
    train = load_task(task, tmp_path, "train")
    assert sorted(r.question_id for r in splits.pool + splits.validation) == sorted(r.question_id for r in train)
    held = {r.image_id for r in splits.validation}
    assert len(held) == 2 and len(splits.validation) == 4  # 10% of 20 images, both questions of each
    assert [r.question_id for r in splits.evaluation] == [420, 70, 421]  # the final table reads val, untouched
    assert held == holdout_images(train, 0) != holdout_images(train, 1)
    # training subsets are drawn from the pool only, whatever their size
    assert {r.question_id for r in fixed_subset(splits.pool, 1000, 0)} <= {r.question_id for r in splits.pool}


def test_coco_validates_on_karpathy_val(tmp_path: Path) -> None:
    write_coco(tmp_path)
    splits = load_splits(task_spec("coco"), tmp_path)
    assert_disjoint(splits)
    assert [r.image_id for r in splits.pool] == [9, 5]  # train + restval
    assert [r.image_id for r in splits.validation] == [391895] and [r.image_id for r in splits.evaluation] == [11]


def test_overlapping_splits_are_refused(tmp_path: Path) -> None:
    write_vqav2(tmp_path, "train")  # the same questions and images as val: a broken data root
    write_vqav2(tmp_path, "val")
    with pytest.raises(
        DataError, match=r"Task vqav2: the training and evaluation sets share 2 question id\(s\), e.g. 420"
    ):
        load_splits(task_spec("vqav2"), tmp_path)
