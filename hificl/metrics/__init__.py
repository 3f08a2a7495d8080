"""The paper's metrics as torchmetrics Metrics, each matching its reference script (see docs/metrics.md)."""

from hificl.metrics.chair import CHAIR, ChairScorer
from hificl.metrics.cider import CIDEr, cider_score
from hificl.metrics.okvqa import OKVQAAccuracy, okvqa_accuracy, postprocess_okvqa
from hificl.metrics.vqa import VQAAccuracy, vqa_accuracy

__all__ = [
    "CHAIR",
    "CIDEr",
    "ChairScorer",
    "OKVQAAccuracy",
    "VQAAccuracy",
    "cider_score",
    "okvqa_accuracy",
    "postprocess_okvqa",
    "vqa_accuracy",
]
