"""VQAv2 and OK-VQA loaders: the official questions + annotations JSON files joined by question_id.

The two files are checked against each other (same question ids, same image per question, answers present)
because a mismatch silently changes every accuracy number computed from them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hificl.data.layout import (
    TASK_NAMES,
    VQA_SPLITS,
    check_split,
    coco_image_path,
    image_ext,
    read_json,
    resolve_data_root,
    typed_field,
    vqa_paths,
)
from hificl.data.records import VQARecord
from hificl.errors import DataError

# question_id -> (image_id, answers, question_type, answer_type, multiple_choice_answer)
_Annotation = tuple[int, tuple[str, ...], str, str, str]


def load_vqav2(root: str | Path | None, split: str) -> list[VQARecord]:
    """VQAv2 records of `split` ("train" | "val"), in the questions file's order."""
    return load_vqa_task("vqav2", root, split)


def load_okvqa(root: str | Path | None, split: str) -> list[VQARecord]:
    """OK-VQA records of `split` ("train" | "val"), in the questions file's order."""
    return load_vqa_task("okvqa", root, split)


def load_vqa_task(task: str, root: str | Path | None, split: str) -> list[VQARecord]:
    """Join the questions and annotations files of `task` ("vqav2" | "okvqa") for `split`."""
    check_split(task, split, VQA_SPLITS)
    data_root = resolve_data_root(root)
    questions_path, annotations_path = vqa_paths(data_root, task, split)
    what = f"{TASK_NAMES[task]} split {split!r}"
    for path in (questions_path, annotations_path):  # fail on a missing file before parsing a large one
        if not path.is_file():
            raise DataError(f"{what}: expected file {path} does not exist")
    ext = image_ext(data_root)
    annotations = _read_annotations(annotations_path, what)
    records = _join_questions(questions_path, what, annotations, annotations_path, data_root, split, ext)
    if annotations:
        qid = next(iter(annotations))
        raise DataError(f"{annotations_path}: question_id {qid} has an annotation but no question in {questions_path}")
    if not records:
        raise DataError(f"{what}: {questions_path} holds no questions (empty split)")
    return records


def _entries(path: Path, what: str, key: str) -> list[Any]:
    """The top-level list `key` of an official file (the rest of the file is dropped right away)."""
    data = read_json(path, what)
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataError(f"{path}: expected a JSON object with a list field {key!r}")
    return data[key]


def _read_annotations(path: Path, what: str) -> dict[int, _Annotation]:
    """question_id -> the light tuple a record needs; the raw JSON is freed on return."""
    out: dict[int, _Annotation] = {}
    intern = sys.intern
    for index, entry in enumerate(_entries(path, what, "annotations")):
        qid = typed_field(entry, "question_id", int, path, f"annotations[{index}]")
        where = f"question_id {qid}"
        if qid in out:
            raise DataError(f"{path}: question_id {qid} is annotated twice")
        answers = entry.get("answers")
        if not isinstance(answers, list) or not answers:
            raise DataError(f"{path}: question_id {qid} has no answers (field 'answers' missing or empty)")
        texts = _answer_texts(answers, path, where)
        out[qid] = (
            typed_field(entry, "image_id", int, path, where),
            texts,
            intern(_optional_str(entry, "question_type", path, where)),
            intern(_optional_str(entry, "answer_type", path, where)),
            intern(_optional_str(entry, "multiple_choice_answer", path, where)),
        )
    return out


def _answer_texts(answers: list[Any], path: Path, where: str) -> tuple[str, ...]:
    """The answers' texts, interned (answers repeat a lot: "yes", "2"); a bad entry is located precisely."""
    try:  # fast path: ~4M answers in VQAv2 train; sys.intern rejects anything but str
        return tuple([sys.intern(answer["answer"]) for answer in answers])
    except (TypeError, KeyError):
        pass
    for i, answer in enumerate(answers):
        typed_field(answer, "answer", str, path, f"{where} answers[{i}]")
    raise AssertionError("unreachable: the fast path failed on a valid answers list")


def _optional_str(entry: dict[str, Any], name: str, path: Path, where: str) -> str:
    """A string field that may be absent (OK-VQA lacks some), but is never another type."""
    value = entry.get(name, "")
    if not isinstance(value, str):
        raise DataError(f"{path}: {where} field {name!r} must be a string, got {value!r}")
    return value


def _join_questions(
    path: Path,
    what: str,
    annotations: dict[int, _Annotation],
    annotations_path: Path,
    root: Path,
    split: str,
    ext: str | None,
) -> list[VQARecord]:
    """Records in question order; each used annotation is popped so leftovers reveal unmatched annotations."""
    records: list[VQARecord] = []
    paths: dict[int, Path] = {}  # one Path object per image, shared by its questions
    seen: set[int] = set()
    for index, entry in enumerate(_entries(path, what, "questions")):
        qid = typed_field(entry, "question_id", int, path, f"questions[{index}]")
        where = f"question_id {qid}"
        if qid in seen:
            raise DataError(f"{path}: question_id {qid} appears twice")
        seen.add(qid)
        image_id = typed_field(entry, "image_id", int, path, where)
        question = typed_field(entry, "question", str, path, where)
        annotation = annotations.pop(qid, None)
        if annotation is None:
            raise DataError(f"{path}: question_id {qid} has no annotation in {annotations_path}")
        ann_image, answers, question_type, answer_type, mc_answer = annotation
        if ann_image != image_id:
            raise DataError(
                f"{path}: question_id {qid} is about image_id {image_id} but {annotations_path} says {ann_image}"
            )
        image_path = paths.get(image_id)
        if image_path is None:
            image_path = paths[image_id] = coco_image_path(root, split, image_id, ext)
        records.append(
            VQARecord(
                question_id=qid,
                image_id=image_id,
                image_path=image_path,
                question=question,
                answers=answers,
                question_type=question_type,
                answer_type=answer_type,
                multiple_choice_answer=mc_answer,
            )
        )
    return records
