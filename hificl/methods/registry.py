"""Method names -> classes, and building a method sized for a given model from a plain config dict."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from hificl.errors import ConfigError
from hificl.methods.base import Method
from hificl.methods.hificl import HiFICL
from hificl.methods.live import LIVE
from hificl.methods.lora import LoRA
from hificl.methods.mimic import MimIC

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (HiFICL, MimIC, LIVE, LoRA)}


def make_config(name: str, values: dict[str, Any]) -> Any:
    """The method's typed config from a dict, naming any unknown field."""
    if name not in METHODS:
        raise ConfigError(f"Unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}.")
    config_class = METHODS[name].config_class
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"Unknown {name} setting(s) {unknown}; valid: {sorted(fields)}.")
    return config_class(**values)


def build_method(name: str, model: nn.Module, values: dict[str, Any], seed: int | None = None) -> Method:
    """A fresh method for `model` (initialised from `seed` if given), not yet attached."""
    config = make_config(name, values)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return METHODS[name].for_model(config, model, generator)
