"""Loss pieces shared by the teacher-based methods: answer cross-entropy, layer-wise alignment, answer-token KL.

Student and teacher rows are left-padded and end with the same query example (its last `query_len[i]`
positions). Positions are matched from the row END, and only after checking that the token ids there are the
same: the public MimIC code matched positions by counting tokens, which silently misaligns when a template or
tokenizer merges tokens across the demonstration/query boundary.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from hificl.batch import TrainBatch
from hificl.errors import DataError, TrainingError

IGNORE = -100
LayerReduction = Literal["mean", "sum"]


def require_teacher(batch: TrainBatch, teacher: object | None, method: str) -> None:
    """A clear error when a teacher-based method gets a batch (or outputs) without the teacher run."""
    if batch.teacher is None or teacher is None:
        raise TrainingError(f"{method} trains against a teacher run with demonstrations, but the batch has none.")


def check_query_spans(batch: TrainBatch) -> None:
    """Raise unless every row's query span holds the same token ids in the student and the teacher prompt."""
    if batch.teacher is None:
        raise TrainingError("Aligning the student to a teacher needs a teacher batch; this batch has none.")
    teacher = batch.teacher
    student_ids, teacher_ids = batch.student.inputs["input_ids"], teacher.inputs["input_ids"]
    if student_ids.shape[0] != teacher_ids.shape[0]:
        raise DataError(f"The student batch has {student_ids.shape[0]} rows, the teacher batch {teacher_ids.shape[0]}.")
    spans = zip(batch.student.query_len.tolist(), teacher.query_len.tolist(), strict=True)
    for row, (s_len, t_len) in enumerate(spans):
        if s_len != t_len:
            raise DataError(f"Row {row}: the student's query span has {s_len} tokens, the teacher's {t_len}.")
        if not 1 <= s_len <= min(student_ids.shape[1], teacher_ids.shape[1]):
            raise DataError(f"Row {row}: query_len={s_len} is not between 1 and the prompt's length.")
        if not torch.equal(student_ids[row, -s_len:], teacher_ids[row, -s_len:]):
            first = int((student_ids[row, -s_len:] != teacher_ids[row, -s_len:]).nonzero()[0])
            raise DataError(
                f"Row {row}: the teacher's query tokens differ from the student's at span position {first} "
                "(the demonstrations changed the query's tokenisation); positions cannot be aligned."
            )


def layerwise_alignment(
    student_hidden: tuple[torch.Tensor, ...],
    teacher_hidden: tuple[torch.Tensor, ...],
    batch: TrainBatch,
    reduction: LayerReduction = "mean",
) -> torch.Tensor:
    """MimIC's layer-wise L2 alignment of per-layer outputs (batch, seq, hidden) over the query span.

    The inputs are one tensor per decoder layer for the student and the teacher rows: each layer's FFN output
    (MimIC's default) or self-attention output, as `hificl.methods.alignment.LayerCapture` records them. Per
    row: the mean squared error over the span's real tokens and the hidden dimension, per layer, then averaged
    ("mean", the public code's `F.mse_loss` over [layers, tokens, d]) or summed ("sum") over layers; rows are
    averaged.
    """
    check_query_spans(batch)
    if len(student_hidden) != len(teacher_hidden):
        raise TrainingError(f"{len(student_hidden)} student layers against {len(teacher_hidden)} teacher layers.")
    mask = batch.student.inputs.get("attention_mask")
    rows = []
    for row, span in enumerate(batch.student.query_len.tolist()):
        real = slice(None) if mask is None else mask[row, -span:].bool()
        s = torch.stack([h[row, -span:][real] for h in student_hidden])
        t = torch.stack([h[row, -span:][real] for h in teacher_hidden]).detach()
        per_layer = (s.float() - t.float()).pow(2).mean(dim=(1, 2))
        rows.append(per_layer.mean() if reduction == "mean" else per_layer.sum())
    return torch.stack(rows).mean()


def answer_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, batch: TrainBatch) -> torch.Tensor:
    """KL(teacher || student) of the next-token distributions predicting the answer tokens, mean over tokens."""
    check_query_spans(batch)
    labels = batch.student.labels
    if labels is None:
        raise TrainingError("The answer-token KL needs the student's labels; the batch has none.")
    offset = teacher_logits.shape[1] - student_logits.shape[1]
    rows, cols = (labels[:, 1:] != IGNORE).nonzero(as_tuple=True)
    if rows.numel() == 0:
        raise TrainingError("The batch has no answer tokens (every label is -100).")
    log_s = student_logits[rows, cols].float().log_softmax(-1)
    log_t = teacher_logits[rows, cols + offset].detach().float().log_softmax(-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
