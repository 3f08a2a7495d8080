"""The study's settings (experiments/tune.yaml): what to search, how to sample and prune, where to store it.

One typed file so a bad value fails before any worker starts, with a sentence naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from hificl.config import apply_overrides, from_dict, read_yaml
from hificl.data.tasks import task_spec
from hificl.errors import ConfigError

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
PRUNERS = {"median": optuna.pruners.MedianPruner, "none": optuna.pruners.NopPruner}


@dataclass
class StudyConfig:
    name: str = "hificl-syn-vqa"
    direction: str = "maximize"
    metric: str | None = None  # None: the task's main metric (accuracy, or cider for captioning)
    n_trials: int = 20  # the study's total, over every run and worker
    storage: str = "sqlite:///results/tune/{study}.db"
    output_dir: str = "results/tune/{study}"
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe", "seed": 0})
    pruner: dict[str, Any] = field(
        default_factory=lambda: {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 1}
    )


@dataclass
class SearchSpace:
    n_tokens: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    rank: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32])
    lr: dict[str, float] | None = None  # {low, high}: log-uniform; None keeps the preset's lr


@dataclass
class TuneConfig:
    study: StudyConfig = field(default_factory=StudyConfig)
    search: SearchSpace = field(default_factory=SearchSpace)
    experiment: dict[str, Any] = field(default_factory=dict)  # the base experiment every trial starts from
    final: dict[str, Any] = field(default_factory=dict)  # applied to the best config only (e.g. the test split)


def load_tune_config(
    path: str, overrides: list[str], storage: str | None = None, n_trials: int | None = None
) -> TuneConfig:
    """Read the YAML, apply `--set` overrides and the CLI's --storage / --n-trials, check every value."""
    config = from_dict(TuneConfig, apply_overrides(read_yaml(path), overrides), "tune")
    study = config.study
    if storage is not None:
        study.storage = storage
    if n_trials is not None:
        study.n_trials = n_trials
    study.storage = study.storage.replace("{study}", study.name)
    study.output_dir = study.output_dir.replace("{study}", study.name)
    if study.metric is None:
        task = config.experiment.get("data", {}).get("task", "syn-vqa")
        study.metric = "cider" if task_spec(task).metric == "caption" else "accuracy"
    _check(config)
    return config


def _check(config: TuneConfig) -> None:
    study, search = config.study, config.search
    if study.direction not in ("maximize", "minimize"):
        raise ConfigError(f"tune.study.direction must be maximize or minimize, got {study.direction!r}.")
    if study.n_trials < 1:
        raise ConfigError(f"tune.study.n_trials must be >= 1, got {study.n_trials}.")
    for name in ("n_tokens", "rank"):
        values = getattr(search, name)
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
            raise ConfigError(f"tune.search.{name} must be a non-empty list of positive integers, got {values!r}.")
    if search.lr is not None:
        low, high = search.lr.get("low"), search.lr.get("high")
        if set(search.lr) != {"low", "high"} or not (isinstance(low, float | int) and isinstance(high, float | int)):
            raise ConfigError(f"tune.search.lr must be {{low: float, high: float}} or null, got {search.lr!r}.")
        if not 0 < low < high:
            raise ConfigError(f"tune.search.lr needs 0 < low < high, got low={low}, high={high}.")
    build_sampler(study.sampler, worker=0)
    build_pruner(study.pruner)


def _build(kind: str, table: Mapping[str, type], options: dict[str, Any]) -> Any:
    options = dict(options)
    name = options.pop("name", None)
    if name not in table:
        raise ConfigError(f"tune.study.{kind}.name must be one of {sorted(table)}, got {name!r}.")
    try:
        return table[name](**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"tune.study.{kind} options {options} are invalid for {name}: {err}") from err


def build_sampler(options: dict[str, Any], worker: int) -> optuna.samplers.BaseSampler:
    """Worker k samples with seed + k: equal seeds would make parallel workers propose the same points."""
    options = dict(options)
    if options.get("seed") is not None:
        options["seed"] = int(options["seed"]) + worker
    return _build("sampler", SAMPLERS, options)


def build_pruner(options: dict[str, Any]) -> optuna.pruners.BasePruner:
    return _build("pruner", PRUNERS, options)


def suggest(trial: optuna.Trial, search: SearchSpace) -> dict[str, Any]:
    """The trial's point in the search space, as Optuna params (flat names: n_tokens, rank, lr)."""
    params: dict[str, Any] = {
        "n_tokens": trial.suggest_categorical("n_tokens", search.n_tokens),
        "rank": trial.suggest_categorical("rank", search.rank),
    }
    if search.lr is not None:
        params["lr"] = trial.suggest_float("lr", search.lr["low"], search.lr["high"], log=True)
    return params


def experiment_values(params: dict[str, Any]) -> dict[str, Any]:
    """Optuna params -> the experiment-config keys they set (method.n_tokens, method.rank, train.lr)."""
    values: dict[str, Any] = {"method": {"n_tokens": params["n_tokens"], "rank": params["rank"]}}
    if "lr" in params:
        values["train"] = {"lr": params["lr"]}
    return values
