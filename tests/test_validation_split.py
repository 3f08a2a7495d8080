"""Model selection never sees the evaluation questions: the DataModule and per-epoch validation on the tiny world."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from hificl.data.datamodule import DataConfig, ICLDataModule
from hificl.experiment import experiment_config, run_experiment
from hificl.models.loading import load_model

DEV, VAL = range(900_000, 1_000_000), range(500_000, 600_000)  # the export's dev2014 / val2014 image ids


def _datamodule(world: Path, teacher_shots: int) -> ICLDataModule:
    loaded = load_model(str(world / "model"))
    family, processor = loaded.family, loaded.processor
    config = DataConfig(
        task="syn-vqa", data_root=str(world / "synthetic"), train_size=16, val_size=8, eval_size=8, batch_size=4
    )
    return ICLDataModule(
        config,
        processor,
        image_token=family.image_placeholder,
        to_inputs=lambda texts, images: family.processor_inputs(processor, texts, images),
        teacher_shots=teacher_shots,
    )


def _images(loader: Any) -> set[int]:
    return {m["image_id"] for batch in loader for m in batch.meta}


def test_datamodule_trains_validates_and_evaluates_on_disjoint_sets(tiny_world: Path) -> None:
    dm = _datamodule(tiny_world, teacher_shots=2)
    dm.setup()
    train, val, test = _images(dm.train_dataloader()), _images(dm.val_dataloader()), _images(dm.test_dataloader())
    assert val <= set(DEV) and test <= set(VAL) and not train & (set(DEV) | set(VAL))
    assert len({q for q in dm.subset_record()["val_ids"]}) == 8
    pool_images = {r.image_id for r in dm.sampler.pool}
    assert not pool_images & (val | test)  # demonstrations come from the training pool only
    batch = next(iter(dm.train_dataloader()))
    assert (
        batch.teacher is not None
        and batch.teacher.inputs["input_ids"].shape[1] > batch.student.inputs["input_ids"].shape[1]
    )
    no_teacher = _datamodule(tiny_world, teacher_shots=0)
    no_teacher.setup()
    assert next(iter(no_teacher.train_dataloader())).teacher is None and no_teacher.sampler is None


class _SeenImages(L.Callback):
    def __init__(self) -> None:
        self.val: set[int] = set()
        self.test: set[int] = set()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val |= {m["image_id"] for m in batch.meta}

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.test |= {m["image_id"] for m in batch.meta}


def test_per_epoch_validation_reads_the_validation_set_and_the_table_the_evaluation_set(tiny_world: Path) -> None:
    config = experiment_config(
        {
            "model": str(tiny_world / "model"),
            "preset": "hificl",
            "progress": False,
            "validate": True,
            "data": {"task": "syn-vqa", "train_size": 8, "val_size": 4, "eval_size": 4, "batch_size": 8},
            "train": {"epochs": 2, "decoding": "greedy"},
        }
    )
    seen = _SeenImages()
    row = run_experiment(config, callbacks=[seen])
    assert seen.val and seen.val <= set(DEV)
    assert seen.test and seen.test <= set(VAL) and row.eval_size == 4
