"""Runs that resume: a method-only checkpoint at the end of every epoch, and a restart that continues exactly.

`<run dir>/checkpoints/last.ckpt` holds the method's parameters (never the frozen LMM: the state dict is cut to
`method.*` keys), the optimizer and scheduler states, the loop counters (Lightning), and what Lightning does not
keep but an exact continuation needs: the torch / numpy / Python random states (LoRA's dropout) and the state of
the training loader's shuffling generator. A run killed at any moment restarts from the end of its last finished
epoch and, replaying the interrupted epoch in the same order with the same random draws, ends with the parameters
and metrics of a run that was never interrupted (tests/test_resume.py).

`checkpoints/experiment.json` names the experiment the checkpoint belongs to; resuming another experiment from it
is refused in one sentence.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from hificl.errors import ConfigError
from hificl.files import atomic_write_text

CHECKPOINTS, LAST, IDENTITY = "checkpoints", "last.ckpt", "experiment.json"


def checkpoint_callbacks(run_dir: Path, experiment_id: str) -> list[L.Callback]:
    """Save `run_dir/checkpoints/last.ckpt` at every epoch's end, with the state an exact resume needs."""
    directory = run_dir / CHECKPOINTS
    claim(directory, experiment_id)
    return [ExactResume(directory / LAST)]


def claim(directory: Path, experiment_id: str) -> None:
    """Mark `directory` as this experiment's, or refuse it if another experiment's checkpoint is there."""
    identity = directory / IDENTITY
    if identity.is_file():
        found = json.loads(identity.read_text()).get("experiment")
        if found != experiment_id:
            raise ConfigError(
                f"{directory} holds the checkpoint of another experiment ({found}, this is {experiment_id}); "
                "use another output_dir."
            )
        return
    atomic_write_text(identity, json.dumps({"experiment": experiment_id}) + "\n")


def resume_path(run_dir: Path) -> str | None:
    """The checkpoint to continue from, if a previous attempt of this run left one."""
    path = run_dir / CHECKPOINTS / LAST
    return str(path) if path.is_file() else None


class ExactResume(L.Callback):
    """Saves `path` at every epoch's end (written beside it, then renamed: a kill mid-save keeps the previous one),
    with the method-only state dict and the random and shuffling states."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: dict[str, Any] | None = None
        self._trainer: L.Trainer | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        partial = self.path.with_name(f".{self.path.name}.partial")
        trainer.save_checkpoint(partial)
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        trainer.strategy.barrier()

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("method.")}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state(),
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        generator = self._shuffle_generator(self._trainer)
        if generator is not None:
            state["shuffle"] = generator.get_state()
        return state

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict  # applied when training resumes: nothing may draw from the RNGs in between

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        random.setstate(state["python"])
        if "cuda" in state:
            torch.cuda.set_rng_state_all(state["cuda"])
        generator = self._shuffle_generator(trainer)
        if generator is not None and "shuffle" in state:
            # On a resume the loader's iterator already exists (Lightning made it while setting up), having drawn
            # its base seed from the fresh generator; an uninterrupted run draws that seed from the saved state,
            # then the epoch's permutation. Restore the state and replay that one draw, as torch's
            # _BaseDataLoaderIter makes it, so the permutation is the uninterrupted run's.
            generator.set_state(state["shuffle"])
            torch.empty((), dtype=torch.int64).random_(generator=generator)

    @staticmethod
    def _shuffle_generator(trainer: L.Trainer | None) -> torch.Generator | None:
        """The generator of the training loader's RandomSampler (a DistributedSampler seeds by epoch instead)."""
        loader = getattr(trainer, "train_dataloader", None) if trainer is not None else None
        sampler = getattr(loader, "sampler", None)
        generator = getattr(sampler, "generator", None)
        return generator if isinstance(generator, torch.Generator) else None


def _numpy_state() -> tuple[str, list[int], int, int, float]:
    """numpy's global state as plain Python values: Lightning loads checkpoints with `weights_only=True`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)
