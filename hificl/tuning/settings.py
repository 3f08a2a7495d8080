"""The study's settings (experiments/tune.yaml): what to search, how to sample and prune, where to store it.

One typed file so a bad value fails before any worker starts, with a sentence naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna

from hificl.config import apply_overrides, deep_merge, expand_path, from_dict, read_yaml
from hificl.data.tasks import task_spec
from hificl.errors import ConfigError

STUDY_NAME = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9._+\-]*")
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
    if not STUDY_NAME.fullmatch(study.name):
        raise ConfigError(
            f"tune.study.name {study.name!r} must be a plain file name (letters, digits, '.', '_', '+', '-', not "
            "starting with '.'): it names the study's database and output directory."
        )
    study.storage = _expand_storage(study.storage.replace("{study}", study.name))
    study.output_dir = expand_path(study.output_dir.replace("{study}", study.name))
    if study.metric is None:
        task = config.experiment.get("data", {}).get("task", "syn-vqa")
        study.metric = "cider" if task_spec(task).metric == "caption" else "accuracy"
    _check(config)
    _check_experiment(config)
    return config


def _expand_storage(spec: str) -> str:
    """`~` in a journal path or a SQLite file path means the home directory, as in every other path option."""
    for prefix in ("journal:", "sqlite:///"):
        if spec.startswith(prefix + "~"):
            return prefix + expand_path(spec[len(prefix) :])
    return spec


def _check_experiment(config: TuneConfig) -> None:
    """The experiment every trial runs, at the corners of the search space: a bad key or range fails now,
    not as N failed trials."""
    from hificl.experiment import experiment_config  # imports torch and Lightning

    search = config.search
    for n_tokens, rank in ((min(search.n_tokens), min(search.rank)), (max(search.n_tokens), max(search.rank))):
        params: dict[str, Any] = {"n_tokens": n_tokens, "rank": rank}
        if search.lr is not None:
            params["lr"] = search.lr["low"]
        values = deep_merge(config.experiment, experiment_values(params))
        experiment_config(values)
        experiment_config(deep_merge(values, config.final))


def _check(config: TuneConfig) -> None:
    study, search = config.study, config.search
    if study.direction not in ("maximize", "minimize"):
        raise ConfigError(f"tune.study.direction must be maximize or minimize, got {study.direction!r}.")
    if not study.storage.startswith("journal:") and "://" not in study.storage:
        raise ConfigError(
            f"Storage {study.storage!r} must be a database URL (sqlite:///x.db, postgresql://..) or journal:PATH."
        )
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
    seed = study.sampler.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"tune.study.sampler.seed must be a non-negative integer or null, got {seed!r}.")
    build_sampler(study.sampler, trial_number=0)
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


def build_sampler(options: dict[str, Any], trial_number: int) -> optuna.samplers.BaseSampler:
    """The sampler for trial `trial_number`, seeded from (seed, trial number).

    Seeding per trial, not per process, is what makes a search continue rather than repeat: a resumed study
    (after a kill, or a second `hificl tune`) samples its next trials with seeds it has not used yet, while
    trial k gets the point an uninterrupted run would have given it (same seed, same finished history).
    Parallel workers never share a seed either, since they never run the same trial number."""
    options = dict(options)
    if options.get("seed") is not None:
        sequence = np.random.SeedSequence([int(options["seed"]), trial_number])
        options["seed"] = int(sequence.generate_state(1)[0])
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
