"""End to end on a random-init tiny LMM: every preset trains (loss falls) and evaluates through the CLI path."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from hificl.errors import ConfigError
from hificl.experiment import build_experiment, experiment_config, run_experiment
from hificl.results import CellRow, ResultRow, ResultsStore


def _config(world: Path, preset: str, task: str = "syn-vqa", **extra):
    values = {
        "model": str(world / "model"),
        "preset": preset,
        "seed": 0,
        "progress": False,
        "data": {"task": task, "train_size": 16, "eval_size": 8, "batch_size": 8, "eval_batch_size": 8},
        "train": {"epochs": 2},
    }
    for key, value in extra.items():
        values[key] = {**values.get(key, {}), **value} if isinstance(value, dict) else value
    return experiment_config(values)


@pytest.mark.parametrize("preset", ["zero-shot", "icl", "hificl", "hificl+teacher", "mimic", "live", "lora"])
def test_every_preset_runs_end_to_end(tiny_world: Path, preset: str) -> None:
    row = run_experiment(_config(tiny_world, preset))
    assert 0.0 <= row.metrics["accuracy"] <= 1.0
    assert row.eval_size == 8
    trained = preset not in ("zero-shot", "icl")
    assert (row.train_steps == 4) is trained  # 16 samples / batch 8 x 2 epochs
    assert (row.num_trainable > 0) is trained
    assert (row.train_size == 16) is trained and (row.timings.step_s > 0) is trained
    assert row.model_fingerprint["architecture"] == "LlavaForConditionalGeneration"
    assert row.config["preset"] == preset and row.environment.versions["hificl"]
    assert row.method == (row.config["method_name"] or preset)
    assert row.environment.threads == torch.get_num_threads() and row.environment.device == "cpu"


def test_same_seed_gives_identical_metrics_and_saved_method_reloads(tiny_world: Path, tmp_path: Path) -> None:
    first = run_experiment(_config(tiny_world, "hificl", output_dir=str(tmp_path / "a")))
    second = run_experiment(_config(tiny_world, "hificl"))
    assert first.metrics == second.metrics
    reloaded = run_experiment(
        _config(tiny_world, "zero-shot", adapter=str(tmp_path / "a" / "method"), output_dir=str(tmp_path / "b"))
    )
    assert reloaded.metrics == first.metrics
    assert reloaded.train_steps == 0 and reloaded.train_size == 0  # evaluated, not trained
    predictions = [json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("a", "b")]
    assert len(predictions[0]) == 8 and predictions[0] == predictions[1]
    written = ResultRow.from_dict(json.loads((tmp_path / "a" / "result.json").read_text()))
    assert written == first


def test_caption_task_reports_cider_and_chair(tiny_world: Path) -> None:
    row = run_experiment(_config(tiny_world, "hificl", task="syn-caption"))
    assert set(row.metrics) == {"cider", "chair_s", "chair_i", "recall"}
    assert 0.0 <= row.metrics["recall"] <= 1.0


def test_the_row_round_trips_through_the_store(tiny_world: Path, tmp_path: Path) -> None:
    row = run_experiment(_config(tiny_world, "zero-shot", data={"eval_size": 4}))
    store = ResultsStore(tmp_path)
    store.put_run("r", row)
    store.put_cell(CellRow("c", "r", "main", "zero-shot", row))
    assert store.run("r") == row
    assert store.cell_rows() == [CellRow("c", "r", "main", "zero-shot", row)]


def test_the_builder_wires_config_into_each_part(tiny_world: Path) -> None:
    config = _config(tiny_world, "live", train={"optimizer": "sgd", "scheduler": "linear", "warmup_ratio": 0.5})
    experiment = build_experiment(config)
    try:
        assert experiment.datamodule.data_root == (tiny_world / "synthetic").resolve()
        assert experiment.module.hparams["method"] == "live"
        assert experiment.module.hparams["train"]["optimizer"] == "sgd"
        assert experiment.trainer.max_epochs == 2
        experiment.trainer.fit(experiment.module, datamodule=experiment.datamodule)
        optimizer = experiment.trainer.optimizers[0]
        assert isinstance(optimizer, torch.optim.SGD)
        # linear: 4 steps, 2 of warm-up; after the 4th step the factor is (4 - 4) / (4 - 2) = 0
        scheduler = experiment.trainer.lr_scheduler_configs[0].scheduler
        assert scheduler.get_last_lr() == [0.0] * len(optimizer.param_groups)
        assert experiment.trainer.callback_metrics["train/loss"].isfinite()
    finally:
        if experiment.method is not None:
            experiment.method.detach()


def test_unknown_optimizer_or_scheduler_fails_when_the_config_is_read(tiny_world: Path) -> None:
    with pytest.raises(ConfigError, match=r"train\.optimizer 'lion'"):
        _config(tiny_world, "hificl", train={"optimizer": "lion"})
    with pytest.raises(ConfigError, match=r"train\.scheduler 'onecycle'"):
        _config(tiny_world, "hificl", train={"scheduler": "onecycle"})
    with pytest.raises(ConfigError, match="method_name 'lora'"):
        experiment_config({"preset": "hificl", "method_name": "lora"})


def test_validation_each_epoch_reaches_callbacks_through_callback_metrics(tiny_world: Path) -> None:
    """What the Optuna pruner reads: "val/accuracy" after every epoch, logged by the module."""
    seen: list[float] = []

    class Record(L.Callback):
        def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            seen.append(float(trainer.callback_metrics["val/accuracy"]))

    row = run_experiment(_config(tiny_world, "hificl", validate=True), callbacks=[Record()])
    assert len(seen) == 2 and all(0.0 <= v <= 1.0 for v in seen)  # two epochs
    assert row.train_steps == 4
