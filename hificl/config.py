"""Typed configs from YAML: nested dicts -> dataclasses, `a.b=value` overrides, one error per bad key."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hificl.errors import ConfigError

T = TypeVar("T")
#: Exponent floats without a dot ("1e-3", "5E4") that PyYAML's YAML 1.1 resolver leaves as strings.
_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level, not {type(data).__name__}.")
    return data


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`train.lr=1e-3` style overrides; values are parsed as YAML scalars."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Override {item!r} must look like key.subkey=value.")
        key, raw = item.split("=", 1)
        nested: dict[str, Any] = yaml.safe_load(raw)
        for part in reversed(key.split(".")):
            nested = {part: nested}
        data = deep_merge(data, nested)
    return data


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from `data`, recursing into dataclass-typed fields; unknown keys are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {data!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls))}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"Unknown key(s) {unknown} in {where}; valid keys: {sorted(fields)}.")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = from_dict(typing.cast(Any, hint), value, f"{where}.{name}")
        else:
            values[name] = _check_type(value, hint, f"{where}.{name}")
    return cls(**values)


def _check_type(value: Any, hint: Any, where: str) -> Any:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    plain = tuple(typing.get_origin(a) or a for a in allowed)
    if any(a is Any for a in plain):
        return value
    if float in plain and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if float in plain and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string; every user means the number
    if isinstance(value, plain) and not (isinstance(value, bool) and bool not in plain and int in plain):
        return value
    names = " | ".join(getattr(a, "__name__", str(a)) for a in plain)
    raise ConfigError(f"{where} must be {names}, got {value!r}.")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
