"""Turning records into model inputs: prompt text through the model's own processor, answer-only labels,
and the query span that teacher and student share.

Training rows are `prompt + " " + target + eos`; labels cover exactly the target and eos. The query span is
everything after the instruction, counted on the student row; the teacher row (demonstrations + the same
query) ends with the same tokens, which the teacher-based losses assert before aligning anything.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from hificl.batch import PromptBatch
from hificl.data.images import open_image
from hificl.data.prompts import INSTRUCTIONS, Example, build_prompt
from hificl.data.records import CaptionRecord, VQARecord

Record = VQARecord | CaptionRecord
ToInputs = Callable[[list[str], list[list[Image.Image]]], dict[str, torch.Tensor]]


def training_target(record: Record, seed: int = 0) -> str:
    """VQA: the official multiple-choice answer (else the most frequent one); caption: a seeded reference."""
    if isinstance(record, VQARecord):
        return record.multiple_choice_answer or Counter(record.answers).most_common(1)[0][0]
    return random.Random(f"{seed}:{record.image_id}").choice(record.captions)


def as_example(record: Record, target: str | None = None) -> Example:
    return Example(record.question if isinstance(record, VQARecord) else "", target)


def default_to_inputs(processor: Any) -> ToInputs:
    """Batch through a processor that takes one flat image list in prompt order (LLaVA-style)."""

    def to_inputs(texts: list[str], images: list[list[Image.Image]]) -> dict[str, torch.Tensor]:
        processor.tokenizer.padding_side = "left"
        flat = [image for row in images for image in row]
        return dict(processor(text=texts, images=flat or None, padding=True, return_tensors="pt"))

    return to_inputs


class PromptEncoder:
    """Encodes student (query alone) and teacher (demonstrations + query) rows for one prompt kind."""

    def __init__(
        self,
        processor: Any,
        kind: str,
        *,
        image_token: str = "<image>",
        instruction: bool = True,
        to_inputs: ToInputs | None = None,
    ) -> None:
        self.processor, self.kind, self.image_token, self.instruction = processor, kind, image_token, instruction
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.to_inputs = to_inputs or default_to_inputs(processor)
        prefix = INSTRUCTIONS[kind] + "\n" if instruction and INSTRUCTIONS.get(kind) else ""
        self.prefix_len = len(self.tokenizer(prefix)["input_ids"]) if prefix else self._specials()

    def _specials(self) -> int:
        return len(self.tokenizer("")["input_ids"])

    def prompt(self, query: Record, demonstrations: Sequence[tuple[Record, str]] = ()) -> str:
        demos = [as_example(r, t) for r, t in demonstrations]
        return build_prompt(
            self.kind, as_example(query), demos, instruction=self.instruction, image_token=self.image_token
        )

    def _encode(
        self, queries: Sequence[Record], demos: Sequence[Sequence[tuple[Record, str]]], targets: Sequence[str] | None
    ) -> PromptBatch:
        prompts = [self.prompt(q, d) for q, d in zip(queries, demos, strict=True)]
        texts = (
            prompts
            if targets is None
            else [f"{p} {t}{self.tokenizer.eos_token or ''}" for p, t in zip(prompts, targets, strict=True)]
        )
        images = [
            [open_image(r.image_path) for r, _ in d] + [open_image(q.image_path)]
            for q, d in zip(queries, demos, strict=True)
        ]
        inputs = self.to_inputs(texts, images)
        labels = None
        if targets is not None:
            labels = torch.full_like(inputs["input_ids"], -100)
            for i, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
                n = len(self.tokenizer(text)["input_ids"]) - len(self.tokenizer(prompt)["input_ids"])
                labels[i, -n:] = inputs["input_ids"][i, -n:]
        lengths = inputs["attention_mask"].sum(1)
        return PromptBatch(inputs, labels, lengths)

    def student(self, queries: Sequence[Record], targets: Sequence[str] | None = None) -> PromptBatch:
        """Query alone (the prompt every trained method is trained and evaluated with)."""
        batch = self._encode(queries, [()] * len(queries), targets)
        batch.query_len = batch.query_len - self.prefix_len
        return batch

    def teacher(
        self,
        queries: Sequence[Record],
        demos: Sequence[Sequence[tuple[Record, str]]],
        targets: Sequence[str] | None,
        query_len: torch.Tensor,
    ) -> PromptBatch:
        """Demonstrations + query; its query span is the student's (asserted by token ids where it is used)."""
        batch = self._encode(queries, demos, targets)
        batch.query_len = query_len.clone()
        return batch
