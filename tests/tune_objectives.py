"""Cheap deterministic objectives for tests/test_tune.py, importable by spawned tuning workers."""

from __future__ import annotations

import math
import time
from typing import Any

import optuna

from hificl.errors import ConfigError

FAILING_RANK = 32
EPOCHS = 3


def score(n_tokens: int, rank: int) -> float:
    """Peaks at n=4, r=8 (1.0); each doubling away costs 0.1 (n) or 0.05 (r)."""
    return 1.0 - 0.1 * abs(math.log2(n_tokens) - 2) - 0.05 * abs(math.log2(rank) - 3)


def synthetic_objective(trial: optuna.Trial, values: dict[str, Any], metric: str) -> float:
    """Reports a rising curve per epoch (so the median pruner has something to compare) and fails for r = 32,
    as HiFICL does when r exceeds the model's head_dim."""
    n, r = values["method"]["n_tokens"], values["method"]["rank"]
    if r == FAILING_RANK:
        raise ConfigError(f"rank {r} exceeds head_dim 16.")
    final = score(n, r)
    for epoch in range(EPOCHS):
        time.sleep(0.005)
        trial.report(final * (epoch + 1) / EPOCHS, step=epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return final


def nan_objective(trial: optuna.Trial, values: dict[str, Any], metric: str) -> float:
    """A diverged run: the metric comes back NaN for n = 1."""
    return math.nan if values["method"]["n_tokens"] == 1 else score(values["method"]["n_tokens"], 8)


def slow_objective(trial: optuna.Trial, values: dict[str, Any], metric: str) -> float:
    """synthetic_objective at a pace a kill -9 can land inside (about 0.2 s a trial)."""
    time.sleep(0.2)
    return synthetic_objective(trial, values, metric)
