"""Standalone DDP run for tests/test_ddp.py: Lightning's "ddp" launcher re-executes sys.argv for rank 1,
so this must be a script, not a pytest function.

Usage: python tests/ddp_worker.py WORLD OUT [preset]. Trains a small method on WORLD/model with 2 CPU processes
(gloo), and writes per rank: init{rank}.safetensors (method at fit start), rank{rank}.safetensors (at fit end),
metrics{rank}.json (test metrics, this rank's predictions, world size, global step). Even question ids are
answered by an oracle at evaluation (see `generate_with_oracle`); training is untouched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from safetensors.torch import save_file

from hificl.batch import TrainBatch
from hificl.experiment import experiment_config, run_experiment
from hificl.lightning.module import ICLApproxModule

_generate = ICLApproxModule.generate


def generate_with_oracle(self: ICLApproxModule, batch: TrainBatch) -> list[str]:
    """The model's real generations, except that even question ids get their first reference answer.

    A random-init model scores 0 everywhere, which cannot tell a synced metric from a per-rank one; this
    makes the two ranks' own accuracies differ, so only a real cross-rank reduction gives the union's value.
    """
    generated = _generate(self, batch)
    return [m["answers"][0] if m["question_id"] % 2 == 0 else p for m, p in zip(batch.meta, generated, strict=True)]


def _tensors(module: L.LightningModule) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous().cpu() for k, v in module.method.state_dict().items()}


class DumpPerRank(L.Callback):
    """Writes what each rank holds, so the test can compare ranks with each other and with the union."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        save_file(_tensors(pl_module), str(self.out / f"init{trainer.global_rank}.safetensors"))

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        save_file(_tensors(pl_module), str(self.out / f"rank{trainer.global_rank}.safetensors"))

    def on_test_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        dump = {
            "metrics": pl_module.test_metrics,
            "predictions": pl_module.predictions,
            "world_size": trainer.world_size,
            "global_step": int(trainer.global_step),
        }
        (self.out / f"metrics{trainer.global_rank}.json").write_text(json.dumps(dump))


def main(world: str, out: str, preset: str = "hificl") -> None:
    torch.set_num_threads(1)
    ICLApproxModule.generate = generate_with_oracle  # type: ignore[method-assign]
    config = experiment_config(
        {
            "model": str(Path(world) / "model"),
            "preset": preset,
            "seed": 0,
            "progress": False,
            "data": {"task": "syn-vqa", "train_size": 16, "eval_size": 8, "batch_size": 4, "eval_batch_size": 4},
            "train": {"epochs": 2, "strategy": "ddp", "devices": 2, "accelerator": "cpu"},
        }
    )
    run_experiment(config, callbacks=[DumpPerRank(Path(out))])


if __name__ == "__main__":
    main(*sys.argv[1:])
