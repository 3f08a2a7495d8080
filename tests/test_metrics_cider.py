"""CIDEr equals a direct pycocoevalcap call; an exact-copy corpus scores exactly 10."""

from __future__ import annotations

import shutil

import pytest

from hificl.metrics.cider import CIDEr

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="CIDEr's PTBTokenizer needs Java")

PREDS = ["A dog runs on the grass.", "Two cats sleep on a red sofa!", "A pizza, on a table."]
REFS = [
    ["a dog running on grass", "the dog is running in a field"],
    ["two cats sleeping on a couch", "cats asleep on a red sofa"],
    ["a pizza on a wooden table", "pizza sitting on a table"],
]


def test_matches_pycocoevalcap_and_identity_property() -> None:
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(REFS)})
    res = tok.tokenize({i: [{"caption": p}] for i, p in enumerate(PREDS)})
    expected, _ = Cider().compute_score(gts, res)

    metric = CIDEr()
    metric.update(PREDS[:2], REFS[:2])
    metric.update(PREDS[2:], REFS[2:])
    assert metric.compute().item() == pytest.approx(expected, abs=1e-12)
    assert 0 < expected < 10

    # Candidate == every reference, no n-gram shared across images: each cosine is 1, so 10 * mean(1) = 10.
    metric.reset()
    same = ["a red bus parked outside", "three cats sleeping together quietly"]
    metric.update(same, [[s, s] for s in same])
    assert metric.compute().item() == pytest.approx(10.0, abs=1e-9)
