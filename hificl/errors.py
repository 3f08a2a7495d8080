"""The package's error classes: one sentence naming the file / field / value that is wrong.

The CLI catches `HificlError`, prints its message and exits non-zero; anything else is a bug and keeps its
traceback. Subclasses say which stage failed so callers can catch narrowly.
"""

from __future__ import annotations


class HificlError(Exception):
    """Base of every error the package raises on bad input (files, config, arguments)."""


class DataError(HificlError):
    """A data root, data file, image or subset request is missing, malformed or inconsistent."""


class ModelError(HificlError):
    """A model cannot take the method: unknown family, cross-attention, no attention registry, wrong shapes."""


class ConfigError(HificlError):
    """A hyperparameter or config value is invalid (n = 0, r > head_dim, unknown method, ...)."""


class AdapterError(HificlError):
    """A saved method file is missing, truncated, or was trained on another base model."""


class TrainingError(HificlError):
    """Training cannot go on (e.g. the loss became NaN); the message says at which step."""
