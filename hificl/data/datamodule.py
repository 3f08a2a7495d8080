"""The LightningDataModule: seeded training subset, demonstrations, student/teacher prompts, validation and
evaluation sets.

The task's three record sets are disjoint by question and image (hificl.data.splits): the training subset and
every demonstration come from the training pool, per-epoch validation (`val_dataloader`, what `hificl tune`
selects on) from the validation set, the final table (`test_dataloader`) from the evaluation set. Each subset has
its own seed, and their ids are exposed (`subset_record`) so every result row can say which samples it used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from hificl.batch import TrainBatch
from hificl.data.demonstrations import DemonstrationSampler
from hificl.data.encoding import PromptEncoder, ToInputs, training_target
from hificl.data.records import CaptionRecord, VQARecord
from hificl.data.splits import load_splits
from hificl.data.subsets import fixed_subset, subset_ids
from hificl.data.synthetic import upgrade_export
from hificl.data.tasks import TaskSpec, task_spec
from hificl.errors import ConfigError

Record = VQARecord | CaptionRecord


@dataclass
class DataConfig:
    task: str = "syn-vqa"
    data_root: str | None = None
    train_size: int = 1000
    eval_size: int = 200
    val_size: int = 200  # validation subset (per-epoch validation, `hificl tune`)
    seed: int = 0  # training subset, demonstrations, shuffling (experiment_config sets it to the run seed)
    eval_seed: int = 0
    val_seed: int = 0  # validation subset, and the hold-out carved from train where the task has no val split
    eval_shots: int = 0  # demonstrations in evaluation prompts (k-shot ICL); 0 for every trained method
    demo_selection: str = "random"
    batch_size: int = 2
    eval_batch_size: int = 8
    instruction: bool = True
    num_workers: int = 0

    def validate(self) -> None:
        from hificl.validation import check_data  # every range check lives in one module

        check_data(self)


def object_vocabulary(records: Sequence[Record]) -> dict[str, list[str]]:
    """Every object the records name, each its own only synonym (the synthetic benchmark's CHAIR vocabulary)."""
    names = sorted({o for r in records if isinstance(r, CaptionRecord) for o in r.objects})
    return {name: [name] for name in names}


def meta(record: Record) -> dict[str, Any]:
    """What evaluation needs besides the prompt: references and ids."""
    if isinstance(record, VQARecord):
        return {
            "question_id": record.question_id,
            "image_id": record.image_id,
            "answers": list(record.answers),
            "question_type": record.question_type,
        }
    return {"image_id": record.image_id, "captions": list(record.captions), "objects": sorted(record.objects)}


class ICLDataModule(L.LightningDataModule):
    def __init__(
        self,
        config: DataConfig,
        processor: Any,
        *,
        image_token: str = "<image>",
        to_inputs: ToInputs | None = None,
        teacher_shots: int = 0,
        synthetic_root: Path | None = None,
    ) -> None:
        """`teacher_shots`: demonstrations in the teacher rows, the method's `teacher_shots` (0: no teacher rows)."""
        super().__init__()
        config.validate()
        if teacher_shots < 0:
            raise ConfigError(f"teacher_shots must be >= 0; got {teacher_shots}.")
        self.config, self.teacher_shots = config, teacher_shots
        self.synthetic_root = synthetic_root  # where a synthetic task's files are when data_root is not set
        self.spec: TaskSpec = task_spec(config.task)
        self.encoder = PromptEncoder(
            processor, self.spec.kind, image_token=image_token, instruction=config.instruction, to_inputs=to_inputs
        )
        self.train_records: list[Record] = []
        self.val_records: list[Record] = []
        self.eval_records: list[Record] = []
        self.sampler: DemonstrationSampler | None = None
        #: CHAIR's object vocabulary: None (COCO's 80 categories) except for the synthetic caption task.
        self.chair_vocabulary: dict[str, list[str]] | None = None

    @property
    def data_root(self) -> Path | None:
        """The configured root; for a synthetic task without one, the benchmark exported beside the model."""
        if self.config.data_root:
            return Path(self.config.data_root)
        return self.synthetic_root if self.spec.synthetic else None

    def setup(self, stage: str | None = None) -> None:
        if self.eval_records:
            return
        c = self.config
        root = self.data_root
        if self.spec.synthetic and root is not None:
            upgrade_export(root)
        splits = load_splits(self.spec, root, c.val_seed)
        self.train_records = fixed_subset(splits.pool, c.train_size, c.seed) if c.train_size else []
        self.val_records = fixed_subset(splits.validation, c.val_size, c.val_seed)
        self.eval_records = fixed_subset(splits.evaluation, c.eval_size, c.eval_seed)
        if self.teacher_shots or c.eval_shots:
            self.sampler = DemonstrationSampler(splits.pool, c.seed, c.demo_selection)
        if self.spec.metric == "caption" and self.spec.synthetic:
            named = self.train_records + self.eval_records if self.train_records else splits.pool
            self.chair_vocabulary = object_vocabulary(named)

    def subset_record(self) -> dict[str, Any]:
        """The ids of the samples used, for the result row."""
        return {
            "train_ids": subset_ids(self.train_records),
            "val_ids": subset_ids(self.val_records),
            "eval_ids": subset_ids(self.eval_records),
        }

    def _demos(self, query: Record, k: int) -> list[tuple[Record, str]]:
        if not k or self.sampler is None:
            return []
        return [(d, training_target(d, self.config.seed)) for d in self.sampler.sample(query, k)]

    def collate_train(self, records: list[Record]) -> TrainBatch:
        targets = [training_target(r, self.config.seed) for r in records]
        student = self.encoder.student(records, targets)
        teacher = None
        if self.teacher_shots:
            demos = [self._demos(r, self.teacher_shots) for r in records]
            teacher = self.encoder.teacher(records, demos, targets, student.query_len)
        return TrainBatch(student, teacher, [meta(r) for r in records])

    def collate_eval(self, records: list[Record]) -> TrainBatch:
        k = self.config.eval_shots
        if k:
            demos = [self._demos(r, k) for r in records]
            student = self.encoder.teacher(records, demos, None, torch.zeros(len(records), dtype=torch.long))
        else:
            student = self.encoder.student(records)
        return TrainBatch(student, None, [meta(r) for r in records])

    def train_dataloader(self) -> DataLoader:
        if not self.train_records:
            raise ConfigError(f"No training samples for task {self.config.task} (train_size=0).")
        generator = torch.Generator().manual_seed(self.config.seed)
        return DataLoader(
            self.train_records,  # type: ignore[arg-type]  # a list is a map-style dataset
            batch_size=self.config.batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=self.collate_train,
            num_workers=self.config.num_workers,
        )

    def _eval_loader(self, records: list[Record]) -> DataLoader:
        return DataLoader(
            records,  # type: ignore[arg-type]  # a list is a map-style dataset
            batch_size=self.config.eval_batch_size,
            shuffle=False,
            collate_fn=self.collate_eval,
            num_workers=self.config.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        """The validation set: model selection only, never the final table."""
        return self._eval_loader(self.val_records)

    def test_dataloader(self) -> DataLoader:
        """The evaluation set: the final table."""
        return self._eval_loader(self.eval_records)
