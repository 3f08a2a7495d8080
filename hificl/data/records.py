"""The records every loader yields: the one shape shared by the real data sets and the synthetic benchmark.

Loaders (official VQAv2 / OK-VQA / COCO files, or the synthetic benchmark exported in those formats) produce
these; prompt building, metrics and the DataModule consume them. Images are paths, opened lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class VQARecord:
    """One question about one image, with the (normally 10) human answers of the official annotation file."""

    question_id: int
    image_id: int
    image_path: Path
    question: str
    answers: tuple[str, ...]
    question_type: str = ""
    answer_type: str = ""
    multiple_choice_answer: str = ""


@dataclass(frozen=True)
class CaptionRecord:
    """One image with its reference captions and the ground-truth object categories CHAIR compares against.

    `objects` holds the category names of the image's instance annotations (COCO instances JSON); CHAIR adds
    the objects named in `captions` itself, as the 2018 script does.
    """

    image_id: int
    image_path: Path
    captions: tuple[str, ...]
    objects: frozenset[str] = field(default_factory=frozenset)
    split: str = ""
