"""Corpus CIDEr (CIDEr-D), computed by pycocoevalcap's Cider after its PTBTokenizer, as COCOEvalCap does.

pycocoevalcap's "CIDEr" is CIDEr-D: n = 1..4, tf-idf with document frequencies over the references of the
evaluated set, clipped counts, a Gaussian length penalty (sigma 6) and a factor 10. Because the idf comes from
the evaluated set, CIDEr is corpus-level: a single image scores 0, and samples duplicated by a
DistributedSampler to even out ranks change the score slightly.

PTBTokenizer runs Stanford CoreNLP's tokenizer in Java (it writes a temporary file next to its jar).
Predictions and references are tokenized in two separate calls, as COCOEvalCap does.

DDP: strings cannot be all-gathered, so update() stores them UTF-8 encoded as uint8 tensors plus int64 length
tensors (list states, concatenated across ranks); compute() decodes and scores the whole corpus on every rank.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

JAVA_MISSING = "CIDEr needs Java 17 on PATH: pycocoevalcap's PTBTokenizer runs the Stanford tokenizer in Java."


def _require_java() -> None:
    if shutil.which("java") is None:
        raise RuntimeError(JAVA_MISSING)


def ptb_tokenize(texts: dict[int, list[str]]) -> dict[int, list[str]]:
    """pycocoevalcap's PTBTokenizer on {key: [sentence, ...]}: lower-cased, punctuation dropped."""
    _require_java()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({k: [{"caption": s} for s in v] for k, v in texts.items()})


def cider_score(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus CIDEr-D and per-sample scores, exactly as COCOEvalCap computes them (tokenize, then Cider)."""
    from pycocoevalcap.cider.cider import Cider

    if len(predictions) != len(references):
        raise ValueError(
            f"CIDEr got {len(predictions)} predictions but {len(references)} reference lists; they must pair up."
        )
    if not predictions:
        return 0.0, []
    for i, refs in enumerate(references):
        if len(refs) == 0:
            raise ValueError(f"CIDEr sample {i} has no reference caption; every prediction needs at least one.")
    gts = ptb_tokenize({i: list(refs) for i, refs in enumerate(references)})
    res = ptb_tokenize({i: [p] for i, p in enumerate(predictions)})
    score, scores = Cider().compute_score(gts, res)
    return float(score), [float(s) for s in scores]


def _encode(texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    blobs = [t.encode("utf-8") for t in texts]
    data = torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8) if any(blobs) else torch.empty(0)
    return data.to(torch.uint8), torch.tensor([len(b) for b in blobs], dtype=torch.long)


def _decode(data: Tensor, lengths: Tensor) -> list[str]:
    raw = bytes(data.to(torch.uint8).cpu().tolist())
    out, start = [], 0
    for n in lengths.long().tolist():
        out.append(raw[start : start + n].decode("utf-8"))
        start += n
    return out


def _cat(state: list[Tensor] | Tensor, dtype: torch.dtype) -> Tensor:
    if isinstance(state, list) and not state:
        return torch.empty(0, dtype=dtype)
    return dim_zero_cat(state).to(dtype)


class CIDEr(Metric):
    """Corpus CIDEr-D of generated captions against their reference captions (pycocoevalcap)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    pred_bytes: list[Tensor]
    pred_lengths: list[Tensor]
    ref_bytes: list[Tensor]
    ref_lengths: list[Tensor]
    ref_counts: list[Tensor]

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        _require_java()
        for name in ("pred_bytes", "pred_lengths", "ref_bytes", "ref_lengths", "ref_counts"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, predictions: list[str], references: list[list[str]]) -> None:
        """Add one batch: predictions[i] is a caption of the image whose reference captions are references[i]."""
        if len(predictions) != len(references):
            raise ValueError(
                f"CIDEr got {len(predictions)} predictions but {len(references)} reference lists; they must pair up."
            )
        if any(len(refs) == 0 for refs in references):
            raise ValueError("CIDEr got a prediction with no reference caption; every prediction needs one.")
        data, lengths = _encode(predictions)
        self.pred_bytes.append(data.to(self.device))
        self.pred_lengths.append(lengths.to(self.device))
        data, lengths = _encode([r for refs in references for r in refs])
        self.ref_bytes.append(data.to(self.device))
        self.ref_lengths.append(lengths.to(self.device))
        self.ref_counts.append(torch.tensor([len(refs) for refs in references], device=self.device))

    def gathered(self) -> tuple[list[str], list[list[str]]]:
        """The predictions and references this metric holds (all ranks once synced), decoded."""
        preds = _decode(_cat(self.pred_bytes, torch.uint8), _cat(self.pred_lengths, torch.long))
        flat = _decode(_cat(self.ref_bytes, torch.uint8), _cat(self.ref_lengths, torch.long))
        refs, start = [], 0
        for n in _cat(self.ref_counts, torch.long).tolist():
            refs.append(flat[start : start + n])
            start += n
        return preds, refs

    def compute(self) -> Tensor:
        """Corpus CIDEr-D (pycocoevalcap's scale: 1.0 = "100" in papers' tables); 0 with no samples."""
        preds, refs = self.gathered()
        score, _ = cider_score(preds, refs)
        return torch.tensor(score, dtype=torch.float64)
