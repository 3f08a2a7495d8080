"""End to end on a random-init tiny LMM: every preset trains (loss falls) and evaluates through the CLI path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hificl.experiment import experiment_config, run_experiment


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
    assert 0.0 <= row["metrics"]["accuracy"] <= 1.0
    assert row["eval_size"] == 8
    trained = preset not in ("zero-shot", "icl")
    assert (row["train_steps"] == 4) is trained  # 16 samples / batch 8 x 2 epochs
    assert (row["num_trainable"] > 0) is trained
    assert row["model_fingerprint"]["architecture"] == "LlavaForConditionalGeneration"
    assert row["config"]["preset"] == preset and row["versions"]["hificl"]


def test_same_seed_gives_identical_metrics_and_saved_method_reloads(tiny_world: Path, tmp_path: Path) -> None:
    first = run_experiment(_config(tiny_world, "hificl", output_dir=str(tmp_path / "a")))
    second = run_experiment(_config(tiny_world, "hificl"))
    assert first["metrics"] == second["metrics"]
    reloaded = run_experiment(
        _config(tiny_world, "zero-shot", adapter=str(tmp_path / "a" / "method"), output_dir=str(tmp_path / "b"))
    )
    assert reloaded["metrics"] == first["metrics"]
    predictions = [json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("a", "b")]
    assert len(predictions[0]) == 8 and predictions[0] == predictions[1]


def test_caption_task_reports_cider_and_chair(tiny_world: Path) -> None:
    row = run_experiment(_config(tiny_world, "hificl", task="syn-caption"))
    assert set(row["metrics"]) == {"cider", "chair_s", "chair_i", "recall"}
