"""A checkpoint's weight files, read from their safetensors headers only (no tensor data, nothing unpickled).

Used before any weight is loaded: a truncated or corrupt file, pickle-only weights, or weights that do not fit
the architecture config.json describes (more layers in the config than in the weights would be randomly
initialised by transformers, with a warning, and training would go on) all fail here in one sentence.
Tensor names are not compared: transformers renames legacy checkpoint keys on load (LLaVA's
`language_model.model.*` -> `model.language_model.*`), so the check compares the multiset of shapes.
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from torch import nn

from hificl.errors import ModelError

SAFETENSORS_INDEX, SAFETENSORS = "model.safetensors.index.json", "model.safetensors"
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.ckpt.index", "tf_model.h5", "flax_model.msgpack")
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
DTYPE_BYTES |= {"F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}
MAX_HEADER = 100 * 1024 * 1024


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensors a safetensors file declares ({name: {dtype, shape, data_offsets}}), checked against its size."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ModelError(f"{path} is not a safetensors file ({size} bytes, truncated or empty).")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(MAX_HEADER, size - 8):
                raise ModelError(f"{path} is not a safetensors file (header length {length} exceeds the file).")
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as err:
        raise ModelError(f"{path} cannot be read ({err.strerror}).") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelError(f"{path} is not a safetensors file (its header is not JSON; corrupt).") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path} is not a safetensors file (its header is not a JSON object).")
    header.pop("__metadata__", None)
    end = 0
    for name, info in header.items():
        try:
            begin, stop = info["data_offsets"]
            nbytes = math.prod(info["shape"]) * DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{path} declares tensor {name!r} without a valid dtype, shape and offsets.") from None
        if stop - begin != nbytes:
            raise ModelError(f"{path}: tensor {name!r} has {stop - begin} bytes for shape {info['shape']}.")
        end = max(end, stop)
    if 8 + length + end != size:
        raise ModelError(f"{path} is truncated or padded: its header needs {8 + length + end} bytes, it has {size}.")
    return header


def weight_files(directory: Path) -> list[Path]:
    """The checkpoint's safetensors files (one file or an index's shards); pickle-only checkpoints are refused."""
    index = directory / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ModelError(f"{index} is not a valid safetensors index (no weight_map).") from None
        missing = [n for n in names if not (directory / n).is_file()]
        if missing:
            raise ModelError(f"{index} names shard(s) {missing} that are not in {directory}.")
        return [directory / n for n in names]
    if (directory / SAFETENSORS).is_file():
        return [directory / SAFETENSORS]
    pickled = [n for n in PICKLED if (directory / n).exists()]
    if pickled:
        raise ModelError(
            f"{directory} holds weights only as {pickled[0]}; hificl loads safetensors only (never unpickles): "
            "convert them with save_pretrained(safe_serialization=True)."
        )
    raise ModelError(f"{directory} holds no weights ({SAFETENSORS} or {SAFETENSORS_INDEX} is missing).")


def model_shapes(model: nn.Module) -> Counter[tuple[int, ...]]:
    """Shapes of the tensors a checkpoint of `model` must hold: parameters (tied ones once) and saved buffers."""
    shapes = Counter(tuple(p.shape) for _, p in model.named_parameters())
    persistent = set(model.state_dict(keep_vars=True))
    shapes.update(tuple(b.shape) for name, b in model.named_buffers() if name in persistent)
    return shapes


def check_weights(directory: Path, model: nn.Module) -> dict[str, Any]:
    """Refuse weight files that do not fit `model` (built on the meta device from config.json); report them."""
    files = weight_files(directory)
    found: Counter[tuple[int, ...]] = Counter()
    for path in files:
        found.update(tuple(info["shape"]) for info in read_header(path).values())
    needed = model_shapes(model)
    missing, extra = needed - found, found - needed
    config = directory / "config.json"
    if missing:
        n = sum(missing.values())
        shown = ", ".join(f"{list(s)} x{c}" for s, c in sorted(missing.items())[:3])
        raise ModelError(
            f"The weights in {directory} lack {n} tensor(s) that the architecture of {config} needs "
            f"(shapes {shown}): config.json and the weights describe different models."
        )
    # tensors a transformers version keeps but the model does not use (e.g. rotary inv_freq) may remain: only
    # refuse extras when they are real weights of layers the config does not have (two or more dims)
    matrices = {s: c for s, c in extra.items() if len(s) >= 2}
    if matrices:
        shown = ", ".join(f"{list(s)} x{c}" for s, c in sorted(matrices.items())[:3])
        raise ModelError(
            f"The weights in {directory} hold {sum(matrices.values())} tensor(s) that the architecture of {config} "
            f"has no place for (shapes {shown}): config.json and the weights describe different models."
        )
    return {"files": [p.name for p in files], "tensors": sum(found.values()), "parameters": _numel(found)}


def _numel(shapes: Counter[tuple[int, ...]]) -> int:
    return sum(math.prod(s) * c for s, c in shapes.items())
