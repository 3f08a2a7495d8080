"""The three record sets of a task, disjoint by question and by image: training pool, validation, evaluation.

Model selection (`hificl tune`, per-epoch validation) reads the validation set; the final table reads the
evaluation set; training subsets and demonstrations are drawn from the pool. Where a task has no validation split
of its own (VQAv2 and OK-VQA: the papers report on val), the validation set is a seeded hold-out of the training
split's IMAGES (every question on a held-out image is held out), and the pool is the rest of the training split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hificl.data.official import load_task
from hificl.data.records import CaptionRecord, VQARecord
from hificl.data.subsets import seeded_order
from hificl.data.tasks import HOLDOUT, TaskSpec
from hificl.errors import DataError

Record = VQARecord | CaptionRecord
#: Share of the training split's images held out for validation where a task has no validation split of its own
#: (VQAv2: ~8.3k of 82.8k images, ~44k questions; OK-VQA: ~900 images and questions).
HOLDOUT_FRACTION = 0.1


@dataclass(frozen=True)
class TaskSplits:
    pool: list[Record]  # training split minus the validation hold-out: training subsets and demonstrations
    validation: list[Record]
    evaluation: list[Record]


def holdout_images(records: Sequence[Record], seed: int, fraction: float = HOLDOUT_FRACTION) -> set[int]:
    """A seeded `fraction` (at least one) of the records' distinct image ids, never all of them."""
    images = sorted({r.image_id for r in records})
    if len(images) < 2:
        raise DataError(f"Carving a validation hold-out needs >= 2 training images; the split has {len(images)}.")
    n = min(len(images) - 1, max(1, round(fraction * len(images))))
    return {images[i] for i in seeded_order(len(images), seed)[:n]}


def _ids(records: Sequence[Record]) -> tuple[set[int], set[int]]:
    questions = {r.question_id for r in records if isinstance(r, VQARecord)}
    return questions, {r.image_id for r in records}


def check_disjoint(task: str, **sets: Sequence[Record]) -> None:
    """Raise unless the named record sets share no question id and no image id."""
    names = list(sets)
    ids = {name: _ids(records) for name, records in sets.items()}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for kind, index in (("question", 0), ("image", 1)):
                common = ids[a][index] & ids[b][index]
                if common:
                    raise DataError(
                        f"Task {task}: the {a} and {b} sets share {len(common)} {kind} id(s), e.g. {min(common)}; "
                        "validation, training and evaluation must not overlap."
                    )


def load_splits(spec: TaskSpec, root: str | Path | None, holdout_seed: int = 0) -> TaskSplits:
    """Pool, validation and evaluation records of a task, checked to be disjoint by question and image."""
    train = load_task(spec.files, root, spec.train_split)
    evaluation = load_task(spec.files, root, spec.eval_split)
    if spec.val_split == HOLDOUT:
        held = holdout_images(train, holdout_seed)
        pool = [r for r in train if r.image_id not in held]
        validation = [r for r in train if r.image_id in held]
    else:
        pool, validation = list(train), list(load_task(spec.files, root, spec.val_split))
    check_disjoint(spec.name, training=pool, validation=validation, evaluation=evaluation)
    return TaskSplits(pool, validation, list(evaluation))
