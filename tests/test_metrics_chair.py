"""CHAIR on hand-made captions: double words, plurals, the toilet-seat rule, ground truth from captions."""

from __future__ import annotations

from pathlib import Path

import pytest

from hificl.data.records import CaptionRecord
from hificl.metrics.chair import CHAIR, ChairScorer

CAPTIONS = [
    "A man riding a motor bike next to two hot dogs and a teddy bear.",
    "Two baby elephants and a toilet with the seat up near a passenger train.",
    "A dog and a dog and a cat.",
    "A plate of food.",
]
OBJECTS = [{"person"}, {"elephant"}, {"dog"}, {"dining table", "fork"}]
REFERENCES = [("A person on a motorcycle.",), ("An elephant next to a toilet.",), (), ()]


def test_mentions_with_double_words_and_plurals() -> None:
    scorer = ChairScorer()
    assert scorer.caption_objects(CAPTIONS[0]) == ["person", "motorcycle", "hot dog", "teddy bear"]
    # "baby elephants" -> elephant (not person), "seat" dropped next to "toilet", "passenger train" -> train
    assert scorer.caption_objects(CAPTIONS[1]) == ["elephant", "toilet", "train"]
    assert scorer.caption_objects("Buses, people and wine glasses on a table") == [
        "bus",
        "person",
        "wine glass",
        "dining table",
    ]


def test_per_caption_score() -> None:
    record = ChairScorer().score(CAPTIONS[1], OBJECTS[1], REFERENCES[1])
    assert record["hallucinated"] == ["train"]
    assert record["gt_objects"] == ["elephant", "toilet"]
    assert record["chair_s"] == 1
    assert record["chair_i"] == pytest.approx(1 / 3)
    assert record["recall"] == 1.0
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ChairScorer().score("a cat", {"spaceship"})


def test_corpus_chair_over_two_batches() -> None:
    metric = CHAIR()
    metric.update(CAPTIONS[:2], OBJECTS[:2], REFERENCES[:2])
    records = [
        CaptionRecord(image_id=i, image_path=Path(f"{i}.jpg"), captions=r, objects=frozenset(o))
        for i, (o, r) in enumerate(zip(OBJECTS[2:], REFERENCES[2:], strict=True))
    ]
    metric.update_records(CAPTIONS[2:], records)
    out = metric.compute()
    # mentions 4+3+3+0 = 10, hallucinated 2+1+1+0 = 4; 3 of 4 captions hallucinate;
    # recalled (2+2+1+0) of ground truth (2+2+1+2).
    assert out["chair_i"].item() == pytest.approx(0.4)
    assert out["chair_s"].item() == pytest.approx(0.75)
    assert out["recall"].item() == pytest.approx(5 / 7)
    assert metric.most_hallucinated(3) == [("cat", 1), ("hot dog", 1), ("teddy bear", 1)]
    assert metric.caption_records()[2] == {"hallucinated": {"cat": 1}, "mentioned": {"cat": 1, "dog": 2}}


def test_custom_shape_vocabulary_finds_plurals() -> None:
    shapes = {"circle": ["ring"], "square": [], "triangle": [], "star": []}
    metric = CHAIR(vocabulary=shapes)
    assert metric.scorer.caption_objects("Three circles, a star and two rings above a square.") == [
        "circle",
        "star",
        "circle",
        "square",
    ]
    metric.update(
        ["Three circles, a star and two rings above a square.", "Two triangles."], [{"circle", "square"}, {"triangle"}]
    )
    out = metric.compute()
    assert out["chair_i"].item() == pytest.approx(1 / 5)
    assert out["chair_s"].item() == pytest.approx(0.5)
    assert out["recall"].item() == pytest.approx(1.0)
