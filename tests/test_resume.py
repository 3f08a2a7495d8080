"""Runs that resume: killed mid-epoch, a run continues from its last per-epoch checkpoint and ends with the
parameters and metrics of a run that was never interrupted; checkpoints hold the method only."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from hificl.errors import ConfigError
from hificl.experiment import experiment_config, run_experiment


class Killed(Exception):
    """Stands in for SIGKILL / preemption at an arbitrary training step."""


class KillAtStep(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise Killed(f"killed after step {self.step}")


def _config(world: Path, preset: str, out: Path, **method: Any):
    return experiment_config(
        {
            "model": str(world / "model"),
            "preset": preset,
            "seed": 3,
            "progress": False,
            "output_dir": str(out / "out"),
            "run_dir": str(out / "run"),
            "method": method,
            "data": {"task": "syn-vqa", "train_size": 16, "eval_size": 4, "batch_size": 4, "eval_batch_size": 4},
            "train": {"epochs": 3},  # 4 steps per epoch, 12 in all
        }
    )


# HiFICL: virtual tokens in the attention kernel; LoRA: peft's layers, whose dropout would draw from torch's
# global RNG (the checkpoint keeps it), though the frozen model's eval mode switches that dropout off today.
@pytest.mark.parametrize(("preset", "method"), [("hificl", {}), ("lora", {"rank": 2, "dropout": 0.3})])
def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_parameters(
    tiny_world: Path, tmp_path: Path, preset: str, method: dict[str, Any]
) -> None:
    whole = run_experiment(_config(tiny_world, preset, tmp_path / "whole", **method))

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run_experiment(_config(tiny_world, preset, out, **method), callbacks=[KillAtStep(6)])  # mid epoch 2
    checkpoint = torch.load(out / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 4 and checkpoint["epoch"] == 0  # the end of the first epoch
    assert checkpoint["state_dict"] and all(k.startswith("method.") for k in checkpoint["state_dict"])
    assert not (out / "out" / "method").exists()  # nothing of the killed attempt looks finished

    resumed = run_experiment(_config(tiny_world, preset, out, **method))
    assert resumed.train_steps == whole.train_steps == 12
    assert resumed.metrics == whole.metrics
    ours, theirs = (load_file(str(d / "out" / "method" / "method.safetensors")) for d in (out, tmp_path / "whole"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    at_epoch_1 = {k.removeprefix("method."): v for k, v in checkpoint["state_dict"].items()}
    assert at_epoch_1.keys() == ours.keys()
    assert any(not torch.equal(at_epoch_1[k], ours[k]) for k in ours)  # the resumed 8 steps did move them
    # The log keeps the killed attempt's steps before the checkpoint (Lightning would start the file afresh):
    # every step once, with the uninterrupted run's losses.
    losses = [_losses(d / "run" / "metrics.csv") for d in (out, tmp_path / "whole")]
    assert [step for step, _ in losses[0]] == list(range(12))
    assert losses[0] == losses[1]


def _losses(path: Path) -> list[tuple[int, str]]:
    with path.open(newline="") as handle:
        return [(int(r["step"]), r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")]


def test_a_checkpoint_of_another_experiment_is_not_resumed(tiny_world: Path, tmp_path: Path) -> None:
    with pytest.raises(Killed):
        run_experiment(_config(tiny_world, "hificl", tmp_path), callbacks=[KillAtStep(5)])
    with pytest.raises(ConfigError, match="holds the checkpoint of another experiment"):
        run_experiment(_config(tiny_world, "hificl", tmp_path, rank=2))
