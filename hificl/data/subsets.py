"""Seeded, reproducible subsets of records (e.g. the evaluation subset of a paper's table).

The shuffle uses only `random.Random(seed).random()`, whose sequence for an int seed Python guarantees across
versions (`shuffle`/`sample` are not guaranteed), and never hashes, so PYTHONHASHSEED cannot change it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from hificl.data.records import CaptionRecord, VQARecord
from hificl.errors import DataError

T = TypeVar("T")


def seeded_order(n: int, seed: int) -> list[int]:
    """A permutation of range(n) determined by `seed` alone (Fisher-Yates driven by Random.random())."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"subset seed must be an integer, got {seed!r}")
    rng = random.Random(seed)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        order[i], order[j] = order[j], order[i]
    return order


def fixed_subset(records: Sequence[T], size: int | None, seed: int) -> list[T]:
    """The first `size` records of a seeded order (all of them if size is None or >= len(records)).

    Subsets of one seed are nested: the size-100 subset is the first 100 records of the size-1000 subset.
    """
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        raise DataError(f"subset size must be a positive integer or None, got {size!r}")
    if not records:
        raise DataError("cannot take a subset of an empty record list")
    order = seeded_order(len(records), seed)
    if size is not None:
        order = order[:size]
    return [records[i] for i in order]


def subset_ids(records: Sequence[VQARecord | CaptionRecord]) -> list[int]:
    """The ids that identify the records used (question_id for VQA, image_id for captions), in order."""
    ids = []
    for index, record in enumerate(records):
        if isinstance(record, VQARecord):
            ids.append(record.question_id)
        elif isinstance(record, CaptionRecord):
            ids.append(record.image_id)
        else:
            raise DataError(f"record {index} is a {type(record).__name__}, not a VQARecord or CaptionRecord")
    return ids
