"""Shared fixtures: a random-init tiny LMM saved as a checkpoint, beside a small synthetic benchmark export."""

from __future__ import annotations

from pathlib import Path

import pytest

import hificl.lightning.loggers
from hificl.data.synthetic import export_benchmark
from tests.family_models import save, tiny


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<root>/model` (random-init tiny LLaVA checkpoint) and `<root>/synthetic` (the benchmark beside it)."""
    root = tmp_path_factory.mktemp("world")
    save(tiny, root / "model")
    export_benchmark(root / "synthetic", seed=0, n_train_images=120, n_val_images=40)
    return root


@pytest.fixture(scope="session", autouse=True)
def _logs_outside_the_repository(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs without a run_dir log under lightning_logs/ of the working directory; in tests, under a temp dir."""
    hificl.lightning.loggers.DEFAULT_ROOT = tmp_path_factory.mktemp("lightning_logs")
