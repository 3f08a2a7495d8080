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
from hificl.errors import AdapterError
from hificl.methods.base import Method
from hificl.methods.exports import write_exports
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
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_method_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise AdapterError(f"No saved method at {directory}: {CONFIG} is missing.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AdapterError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}).") from err


def load_method(directory: str | Path, model: nn.Module) -> Method:
    """Rebuild the method saved in `directory` for `model`, check it is the same base model, load its tensors."""
    from hificl.methods.registry import build_method  # late: the registry imports every method

    directory = Path(directory)
    meta = read_method_config(directory)
    check_fingerprint(meta.get("base_model", {}), model, str(directory))
    method = build_method(meta["method"], model, meta["config"])
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as err:
        path = directory / WEIGHTS
        raise AdapterError(f"{path} cannot be read as safetensors (truncated or corrupt): {err}") from err
    missing = method.state_dict().keys() - tensors.keys()
    if missing:
        raise AdapterError(f"{directory / WEIGHTS} lacks the tensors {sorted(missing)} of method {meta['method']!r}.")
    method.load_state_dict(tensors)
    return method
