"""VQA / OK-VQA accuracy against hand-computed values of the official vqaEval.py rules."""

from __future__ import annotations

import pytest
import torch

from hificl.metrics.okvqa import OKVQAAccuracy, lemmatize_ing, okvqa_accuracy, postprocess_okvqa
from hificl.metrics.vqa import VQAAccuracy, normalize_prediction, process_punctuation, vqa_accuracy


def test_leave_one_out_two_of_ten() -> None:
    # 8 subsets keep both matches (2/3), 2 subsets keep one (1/3): (8*2/3 + 2*1/3) / 10 = 0.6
    assert vqa_accuracy("2", ["2"] * 2 + ["3"] * 8) == pytest.approx(0.6)


def test_three_matches_of_ten() -> None:
    # 3 subsets drop a match (2/3), 7 keep all three (1): (3*2/3 + 7) / 10 = 0.9
    assert vqa_accuracy("1,000", ["1000"] * 3 + ["100"] * 7) == pytest.approx(0.9)


def test_number_words_and_articles_apply_to_the_prediction_only() -> None:
    assert vqa_accuracy("Two", ["2"] * 10) == 1.0
    assert vqa_accuracy("a dog", ["dog"] * 10) == 1.0
    # Official quirk: ground truth is never digit/article-normalised.
    assert vqa_accuracy("two", ["two"] * 10) == 0.0
    assert vqa_accuracy("dog", ["a dog"] * 10) == 0.0
    assert vqa_accuracy("dog", ["a dog"] * 9 + ["cat"]) == 0.0


def test_contractions_use_the_typographic_apostrophe() -> None:
    assert normalize_prediction("dont") == "don\u2019t"
    assert normalize_prediction("don't") == "don t"
    answers = ["don't"] * 4 + ["no"] * 6
    assert vqa_accuracy("dont", answers) == 0.0
    assert vqa_accuracy("don't", answers) == 1.0


def test_punctuation_rules() -> None:
    assert process_punctuation("red/white") == "red white"
    assert process_punctuation("red / white") == "red  white"
    assert process_punctuation("1,000") == "1000"
    assert normalize_prediction("Yes.") == "yes"
    assert normalize_prediction("3.5") == "3.5"
    assert normalize_prediction(" the\tcat\n") == "cat"
    assert vqa_accuracy("red / white", ["red/white"] * 5 + ["red"] * 5) == 1.0
    # The period regex removes at most 32 periods (re.UNICODE passed as count).
    assert normalize_prediction("." * 40) == "." * 8


def test_metric_accumulates_over_batches() -> None:
    metric = VQAAccuracy()
    metric.update(["2", "yes"], [["2"] * 2 + ["3"] * 8, ["yes"] * 10])
    metric.update(["no"], [["yes"] * 10])
    assert metric.compute().item() == pytest.approx((0.6 + 1.0 + 0.0) / 3)
    metric.reset()
    assert metric.compute().item() == 0.0
    with pytest.raises(ValueError, match="pair up"):
        metric.update(["a"], [])
    assert isinstance(metric.compute(), torch.Tensor)


def test_okvqa_stemming() -> None:
    assert postprocess_okvqa("surfing Question: what is") == "surf"
    assert postprocess_okvqa("riding") == "ride"  # manual table
    assert postprocess_okvqa("leaves") == "leaf"
    assert postprocess_okvqa("hot dogs") == "hot dog"
    assert postprocess_okvqa("tennis") == "tennis"
    assert [lemmatize_ing(w) for w in ("running", "making", "skiing", "opening", "nothing")] == [
        "run",
        "make",
        "ski",
        "open",
        "nothing",
    ]
    assert okvqa_accuracy("Skiing", ["ski"] * 10) == 1.0
    assert okvqa_accuracy("Skiing", ["ski"] * 10, stem=False) == 0.0
    metric = OKVQAAccuracy()
    metric.update(["dogs", "surfing"], [["dog"] * 2 + ["puppy"] * 8, ["surf"] * 10])
    assert metric.compute().item() == pytest.approx((0.6 + 1.0) / 2)
