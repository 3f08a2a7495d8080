"""Every range check of an experiment config, in one place, run when the config is read (before any model loads).

`experiment_config` calls `check_experiment`, so `hificl train`, each cell of `hificl ablate` (expanded before
any run starts) and each Optuna trial refuse a bad value in the first second, in one sentence naming the field
and the value. Checks that need the model's shapes (HiFICL's rank <= head_dim) stay with the method.
"""

from __future__ import annotations

import inspect
import math
import re
import typing
from typing import Any

from hificl.config import expand_path, from_dict
from hificl.errors import ConfigError

if typing.TYPE_CHECKING:
    from hificl.experiment import ExperimentConfig

DTYPES = ("auto", "float32", "bfloat16", "float16")
PRECISIONS = ("16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true", "32", "16", "bf16", "64")
DEMO_SELECTIONS = ("random", "similar")
#: Integer method settings that must be >= 1 whatever the model (their upper bounds depend on its shapes).
POSITIVE_METHOD_INTS = ("n_tokens", "rank")
SEED_LIMIT = 2**32  # numpy's seed range, which Lightning's seed_everything feeds


def _fail(where: str, rule: str, value: Any) -> None:
    raise ConfigError(f"{where} must be {rule}, got {value!r}.")


def _at_least(where: str, value: int | None, low: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value < low:
        _fail(where, f">= {low}", value)


def _finite(where: str, value: float, rule: str, ok: bool) -> None:
    if not (math.isfinite(value) and ok):
        _fail(where, rule, value)


def _seed(where: str, value: int) -> None:
    if not 0 <= value < SEED_LIMIT:
        _fail(where, f"in 0..{SEED_LIMIT - 1}", value)


def check_experiment(config: ExperimentConfig) -> None:
    """Refuse any out-of-range value of `config`; expand `~` in its paths (in place)."""
    _seed("experiment.seed", config.seed)
    if config.dtype not in DTYPES:
        _fail("experiment.dtype", f"one of {', '.join(DTYPES)}", config.dtype)
    for name in ("model", "output_dir", "run_dir", "adapter"):
        value = getattr(config, name)
        if isinstance(value, str) and value.startswith("~"):
            setattr(config, name, expand_path(value))
    if config.data.data_root and config.data.data_root.startswith("~"):
        config.data.data_root = expand_path(config.data.data_root)
    check_data(config.data)
    check_train(config.train)
    check_method(config.preset, config.method, config.adapter)


def check_data(data: Any) -> None:
    from hificl.data.tasks import task_spec

    task_spec(data.task)  # an unknown task names the known ones
    _at_least("experiment.data.train_size", data.train_size, 0)
    _at_least("experiment.data.eval_size", data.eval_size, 1)
    _at_least("experiment.data.val_size", data.val_size, 1)
    _at_least("experiment.data.eval_shots", data.eval_shots, 0)
    _at_least("experiment.data.batch_size", data.batch_size, 1)
    _at_least("experiment.data.eval_batch_size", data.eval_batch_size, 1)
    _at_least("experiment.data.num_workers", data.num_workers, 0)
    _seed("experiment.data.seed", data.seed)
    _seed("experiment.data.eval_seed", data.eval_seed)
    _seed("experiment.data.val_seed", data.val_seed)
    if data.demo_selection not in DEMO_SELECTIONS:
        _fail("experiment.data.demo_selection", f"one of {', '.join(DEMO_SELECTIONS)}", data.demo_selection)


def check_train(train: Any) -> None:
    _finite("experiment.train.lr", train.lr, "a finite number > 0", train.lr > 0)
    _finite("experiment.train.weight_decay", train.weight_decay, "a finite number >= 0", train.weight_decay >= 0)
    _finite("experiment.train.warmup_ratio", train.warmup_ratio, "in [0, 1)", 0 <= train.warmup_ratio < 1)
    # epochs = 0 would save an untrained method as a result; evaluate a baseline with preset zero-shot instead.
    _at_least("experiment.train.epochs", train.epochs, 1, optional=True)
    _at_least("experiment.train.epochs_at_1000", train.epochs_at_1000, 1)
    _at_least("experiment.train.accumulate", train.accumulate, 1)
    _at_least("experiment.train.max_new_tokens", train.max_new_tokens, 1, optional=True)
    if train.gradient_clip is not None:
        _finite("experiment.train.gradient_clip", train.gradient_clip, "a finite number > 0", train.gradient_clip > 0)
    if str(train.precision) not in PRECISIONS:
        _fail("experiment.train.precision", f"one of {', '.join(PRECISIONS[:6])}", train.precision)
    devices = train.devices
    if isinstance(devices, int) and not (devices >= 1 or devices == -1):
        _fail("experiment.train.devices", ">= 1, -1 (all) or 'auto'", devices)
    if isinstance(devices, str) and devices != "auto" and not re.fullmatch(r"-1|\d+(\s*,\s*\d+)*,?", devices):
        _fail("experiment.train.devices", "a count, a list like '0,1', -1 or 'auto'", devices)


def method_config(name: str, values: dict[str, Any]) -> Any:
    """The method's typed config (its dataclass), type-checked field by field, with its model-free checks run."""
    from hificl.methods.registry import METHODS, make_config

    make_config(name, values)  # unknown method or setting: names the valid ones
    typed: Any = from_dict(METHODS[name].config_class, values, "experiment.method")
    for field in POSITIVE_METHOD_INTS:
        value = getattr(typed, field, None)
        if isinstance(value, int) and value < 1:
            _fail(f"experiment.method.{field}", ">= 1", value)
    validate = getattr(typed, "validate", None)
    if validate is not None and not inspect.signature(validate).parameters:
        validate()
    return typed


def check_method(preset_name: str, values: dict[str, Any], adapter: str | None) -> None:
    from hificl.methods.presets import resolve_preset

    preset = resolve_preset(preset_name)
    if adapter:
        return  # the adapter's own method.json says what it is; load_method checks it against the model
    if not preset.get("method"):
        if values:
            raise ConfigError(
                f"experiment.method sets {sorted(values)} but preset {preset_name!r} trains no method; "
                "remove them or pick a trained preset."
            )
        return
    method_config(preset["method"], values)


def check_matrix(spec: dict[str, Any], where: str) -> None:
    """The ablation matrix's structure: tasks and seeds are lists, groups map to {tasks?, variants: {name: dict}}."""

    def is_list_of(value: Any, kind: type) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(v, kind) for v in value)

    def seeds_ok(value: Any) -> bool:
        return is_list_of(value, int) and not any(isinstance(v, bool) for v in value)

    for key in ("tasks", "groups"):
        if key not in spec:
            raise ConfigError(f"{where} lacks its {key!r} section.")
    if not is_list_of(spec["tasks"], str):
        _fail(f"{where}: tasks", "a non-empty list of task names", spec["tasks"])
    for section in ("seeds",):
        if section in spec and not seeds_ok(spec[section]):
            _fail(f"{where}: seeds", "a non-empty list of integers", spec[section])
    for section in ("defaults", "quick"):
        if section in spec and not isinstance(spec[section] or {}, dict):
            _fail(f"{where}: {section}", "a mapping", spec[section])
    quick = spec.get("quick") or {}
    if "seeds" in quick and not seeds_ok(quick["seeds"]):
        _fail(f"{where}: quick.seeds", "a non-empty list of integers", quick["seeds"])
    if not isinstance(spec["groups"], dict) or not spec["groups"]:
        _fail(f"{where}: groups", "a non-empty mapping of group names", spec["groups"])
    for group, body in spec["groups"].items():
        if not isinstance(body, dict) or set(body) - {"tasks", "variants"}:
            _fail(f"{where}: groups.{group}", "a mapping with 'variants' (and optionally 'tasks')", body)
        if "tasks" in body and not is_list_of(body["tasks"], str):
            _fail(f"{where}: groups.{group}.tasks", "a non-empty list of task names", body["tasks"])
        variants = body.get("variants")
        if not isinstance(variants, dict) or not variants:
            _fail(f"{where}: groups.{group}.variants", "a non-empty mapping of variant names", variants)
        for variant, settings in variants.items():
            if settings is not None and not isinstance(settings, dict):
                _fail(f"{where}: groups.{group}.variants.{variant}", "a mapping of experiment settings", settings)


def check_models(models: set[str]) -> None:
    """Every model a batch of runs needs exists (a local directory, or an owner/name hub id): checked once for
    the whole ablation matrix or study, before the first run, not when the first cell needing it starts."""
    from hificl.models.loading import resolve

    for model in sorted(models):
        resolve(expand_path(model))
