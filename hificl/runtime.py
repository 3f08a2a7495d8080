"""What changes a run's numbers without being in its config: threads, device, matmul precision, world size.

Recorded in every result row (`runtime`), so two rows that disagree can be told apart by what the machine did.
"""

from __future__ import annotations

from typing import Any

import torch


def runtime_facts(device: torch.device | str | None = None, world_size: int = 1) -> dict[str, Any]:
    """Intra-/inter-op threads, the device (and its name on CUDA), float32 matmul precision, TF32 switches,
    deterministic-algorithm mode, world size, and the CUDA / cuDNN versions when present."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    facts: dict[str, Any] = {
        "intra_op_threads": torch.get_num_threads(),
        "inter_op_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "device_name": None,
        "world_size": world_size,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    if device.type == "cuda" and torch.cuda.is_available():
        facts["device_name"] = torch.cuda.get_device_name(device)
        facts["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        facts["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    return facts
