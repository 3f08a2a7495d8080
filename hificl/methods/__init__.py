"""Every method as trainable parameters plus the way they attach to a frozen LMM.

method = build_method("hificl", model, {"n_tokens": 8, "rank": 8}, seed=0)
method.attach(model)            # virtual tokens in every language-model attention head
save_method(method, "adapter", model);  load_method("adapter", model)
"""

from hificl.methods.base import Method, VirtualTokenMethod
from hificl.methods.hificl import HiFICL, HiFICLConfig
from hificl.methods.io import load_method, save_method
from hificl.methods.presets import PRESETS, resolve_preset
from hificl.methods.registry import METHODS, build_method

__all__ = [
    "METHODS",
    "PRESETS",
    "HiFICL",
    "HiFICLConfig",
    "Method",
    "VirtualTokenMethod",
    "build_method",
    "load_method",
    "resolve_preset",
    "save_method",
]
