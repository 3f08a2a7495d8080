"""The batches the DataModule yields and every method's loss reads: student (no demonstrations) and teacher.

A neutral module below data/, methods/ and lightning/, so that all three can import it and imports run one way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class PromptBatch:
    """Processor outputs of left-padded prompts, with answer-only labels.

    inputs: what the model's forward takes (input_ids, attention_mask, pixel_values, image_grid_thw, ...).
    labels: input_ids where a token is part of the target (answer + eos), -100 elsewhere; None at evaluation.
    query_len: per row, how many trailing positions hold the query example (its image, question and, in
    training, answer); with left padding these are the last positions of the row in student and teacher alike.
    """

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor | None
    query_len: torch.Tensor

    def to(self, device: torch.device | str) -> PromptBatch:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.inputs.items()}
        labels = None if self.labels is None else self.labels.to(device)
        return PromptBatch(moved, labels, self.query_len.to(device))


@dataclass
class TrainBatch:
    """A training batch: the student prompt (query alone) and, for teacher-based methods, the same query
    preceded by demonstrations. `meta` carries per-row ids and references for evaluation."""

    student: PromptBatch
    teacher: PromptBatch | None = None
    meta: list[dict[str, Any]] = field(default_factory=list)
