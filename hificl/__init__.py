"""hificl: learnable virtual key-value pairs inside every attention head of a frozen multimodal LMM."""

import os

__version__ = "0.1.0"

# OpenMP threads that spin while waiting for each other collapse on a shared machine: a 2-thread pretraining ran
# 6.5x slower under load with the default policy than with passive waiting (docs/embedded-default.md). The wait
# policy changes no number (same weights), only speed; it must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
