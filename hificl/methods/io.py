"""Saving and loading a method's parameters: safetensors + a JSON config carrying the base model's fingerprint.

Nothing is unpickled: tensors come from safetensors, everything else from JSON. Files are written to a
temporary directory and renamed into place, so a killed save never leaves a half-written adapter.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hificl import __version__
from hificl.errors import AdapterError, ConfigError
from hificl.methods.base import Method
from hificl.methods.exports import EXPORTS, write_exports
from hificl.models.fingerprint import check_fingerprint, model_fingerprint

WEIGHTS, CONFIG = "method.safetensors", "method.json"


def save_method(method: Method, directory: str | Path, model: nn.Module, extra: dict[str, Any] | None = None) -> Path:
    """Write `directory/method.safetensors` and `directory/method.json` atomically."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "method": method.name,
        "config": method.config_dict(),
        "base_model": model_fingerprint(model),
        "hificl_version": __version__,
        "num_trainable": method.num_trainable(),
        **(extra or {}),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the renamed adapter directory should not be
    try:
        tensors = {k: v.detach().contiguous().cpu() for k, v in method.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True))
        write_exports(method, model, tmp, meta)  # peft's format for LoRA, a model card
        if directory.exists():
            foreign = sorted(p.name for p in directory.iterdir() if p.name not in (WEIGHTS, CONFIG, *EXPORTS))
            if foreign:
                raise AdapterError(f"{directory} holds files that are not a saved method ({foreign}); not replaced.")
            old = tmp.with_name(f"{tmp.name}.old")
            os.replace(directory, old)  # never a moment with neither adapter nor a whole one in its place
            os.replace(tmp, directory)
            shutil.rmtree(old)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


#: The keys of method.json that loading relies on, and the JSON type each must have.
REQUIRED = {"method": str, "config": dict, "base_model": dict}


def read_method_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise AdapterError(f"No saved method at {directory}: {CONFIG} is missing.")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise AdapterError(f"{path} is not UTF-8 text (byte {err.start} cannot be decoded).") from None
    except json.JSONDecodeError as err:
        raise AdapterError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}).") from err
    if not isinstance(meta, dict):
        raise AdapterError(f"{path} must hold a JSON object, not {type(meta).__name__}.")
    for key, kind in REQUIRED.items():
        if not isinstance(meta.get(key), kind):
            raise AdapterError(f"{path} needs {key!r} as a JSON {kind.__name__}, got {meta.get(key)!r}.")
    return meta


def load_method(directory: str | Path, model: nn.Module) -> Method:
    """Rebuild the method saved in `directory` for `model`, check it is the same base model, load its tensors."""
    from hificl.methods.registry import build_method  # late: the registry imports every method

    directory = Path(directory)
    meta = read_method_config(directory)
    check_fingerprint(meta["base_model"], model, str(directory))
    try:
        method = build_method(meta["method"], model, meta["config"])
    except (ConfigError, TypeError, ValueError) as err:
        raise AdapterError(f"{directory / CONFIG} describes a method that cannot be built: {err}") from None
    path = directory / WEIGHTS
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise AdapterError(f"{path} cannot be read as safetensors (truncated or corrupt): {err}") from err
    expected = method.state_dict()
    missing, extra = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if missing:
        raise AdapterError(f"{path} lacks the tensors {missing} of method {meta['method']!r}.")
    if extra:
        raise AdapterError(f"{path} holds tensors {extra} that method {meta['method']!r} does not have.")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise AdapterError(
                f"{path}: tensor {name!r} has shape {list(tensor.shape)}, "
                f"but {meta['method']!r} with its config needs {list(expected[name].shape)}."
            )
        if not tensor.is_floating_point():
            raise AdapterError(f"{path}: tensor {name!r} is {tensor.dtype}, not a floating-point tensor.")
    method.load_state_dict(tensors)
    return method
