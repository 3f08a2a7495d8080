"""Shared fixtures: a random-init tiny LMM saved as a checkpoint, beside a small synthetic benchmark export."""

from __future__ import annotations

from pathlib import Path

import pytest

from hificl.data.synthetic import export_benchmark
from tests.family_models import save, tiny


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<root>/model` (random-init tiny LLaVA checkpoint) and `<root>/synthetic` (the benchmark beside it)."""
    root = tmp_path_factory.mktemp("world")
    save(tiny, root / "model")
    export_benchmark(root / "synthetic", seed=0, n_train_images=120, n_val_images=40)
    return root
