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


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""


def _strict_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise ConfigError(f"{key_node.start_mark.name}: key {key!r} appears twice in one mapping (line {line}).")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> Python values, refusing duplicate keys; errors name `where` (a file or an override)."""
    loader = _StrictLoader(text)
    loader.name = where
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "unparseable"
        raise ConfigError(f"{where} is not valid YAML ({problem}{at}).") from None
    finally:
        loader.dispose()


def expand_path(value: str | Path) -> str:
    """`~` means the home directory in every path option (as a shell would), never a directory named '~'."""
    return str(Path(value).expanduser())


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(expand_path(path))
    if not path.is_file():
        raise ConfigError(f"Config file {path} {'is not a file' if path.exists() else 'does not exist'}.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start} cannot be decoded).") from None
    except OSError as err:
        raise ConfigError(f"Config file {path} cannot be read ({err.strerror}).") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
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
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"Override {item!r} names no key; write key.subkey=value.")
        nested: Any = parse_yaml(raw, f"The value of override {item!r}")
        for part in reversed(key.split(".")):
            nested = {part: nested}
        data = deep_merge(data, nested)
    return data


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from `data`, recursing into dataclass-typed fields; unknown keys are errors."""
    if data is None:
        data = {}  # an empty YAML section (`train:` with nothing under it) means the defaults
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
    if tuple in plain and isinstance(value, list):
        return tuple(value)  # YAML and JSON have lists only
    if float in plain and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads "1e-3" (no dot) as a string; every user means the number
    if isinstance(value, plain) and not (isinstance(value, bool) and bool not in plain and int in plain):
        return value
    names = " | ".join(getattr(a, "__name__", str(a)) for a in plain)
    raise ConfigError(f"{where} must be {names}, got {value!r}.")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
