"""The method's own diagnostics, logged with the losses at every training step (`diag/...` in metrics.csv).

- HiFICL: the Frobenius norm of each layer's virtual keys K_D = K_A K_B and values V_D = V_A V_B (or the full-rank
  K / V of the ablations); V_D starts at 0, so its norm shows how far training has moved the values.
- LIVE: each layer's learned scale alpha and the norm of its shift vector.
- MimIC: per layer, the norm of f's weight (the virtual token's key), the mean of f's bias (its logit bias) and
  the norm of the shifted value v; with query-sharing mu (no f) the learned constant mu = sigmoid(m), mean over
  heads, instead of f's two.
The losses each method returns (task CE, alignment, KL) are logged as separate `train/<term>` columns by the
LightningModule itself.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from hificl.methods.base import Method


@torch.no_grad()
def method_diagnostics(method: Method) -> dict[str, float]:
    layers = range(method.shape.num_layers)
    m: Any = method  # each method's own attributes (nn.Module's __getattr__ types them Tensor | Module)
    out: dict[str, float] = {}

    def per_layer(name: str, values: list[torch.Tensor]) -> None:
        for i, v in zip(layers, values, strict=True):
            out[f"diag/{name}/layer_{i}"] = float(v)
        out[f"diag/{name}/mean"] = float(torch.stack(values).float().mean())

    if method.name == "hificl":
        per_layer("key_norm", [m.keys(i).norm() for i in layers])
        per_layer("value_norm", [m.values(i).norm() for i in layers])
    elif method.name == "live":
        per_layer("alpha", list(m.alpha.detach()))
        per_layer("vector_norm", [v.norm() for v in m.vectors])
    elif method.name == "mimic":
        if m.config.mu == "shared-query":  # a learned constant mu per head, no f
            per_layer("mu_mean", list(torch.sigmoid(m.mu_logit).mean(dim=1)))
        else:
            per_layer("f_weight_norm", [w.norm() for w in m.f_weight])
            per_layer("f_bias_mean", [b.mean() for b in m.f_bias])
        per_layer("value_norm", [s.norm() for s in m.shift])
    return out


class MethodDiagnostics(L.Callback):
    """Logs `method_diagnostics` after every optimizer step, through the LightningModule's `log`."""

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        method = getattr(pl_module, "method", None)
        if method is None:
            return
        values = method_diagnostics(method)
        if values:
            pl_module.log_dict(values, on_step=True, on_epoch=False, batch_size=len(batch.meta))
