"""One attention function that prepends learned virtual key/value tokens to every head of a frozen LMM.

For a query q, real keys/values K, V and virtual keys/values K_D, V_D, softmax attention over [K_D; K] is

    Attn(q, [K_D; K], [V_D; V]) = alpha(q) * SA(q, K, V) + beta(q) @ V_D,
    alpha(q) = Z2 / (Z1 + Z2),  beta(q) = exp(q K_D^T / sqrt d) / (Z1 + Z2),

with Z2 summed over the real keys q may see (causal + padding mask) and Z1 over every virtual token. HiFICL
learns K_D, V_D; MimIC is one virtual token whose key is its linear map's weight and whose logit bias is that
map's bias. Registering this function in transformers' AttentionInterface (as "virtual_kv:<kernel>") injects
them into every decoder that uses the registry, then calls the kernel the model was configured with.

Two output forms are supported:
- "joint":    the softmax over [K_D; K] above (HiFICL; MimIC as the paper writes it, (1 - mu) SA + mu v);
- "unscaled": SA(q, K, V) + beta(q) @ V_D, beta still normalised by Z1 + Z2 (HiFICL's "w/o SA scaling"
  ablation; MimIC as its public code computes it, SA + mu v). Through the kernel (training, GPU) it costs two
  more kernel calls, one for alpha and one for SA; the fused CPU inference path computes it at no extra cost.

Virtual tokens never enter the KV cache: the cache is updated by the layer before this function runs, and
the tokens are prepended anew at every step. They carry no rotary position.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

PREFIX = "virtual_kv:"
KERNELS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
OutputForm = Literal["joint", "unscaled"]


@dataclass
class VirtualTokens:
    """Virtual keys/values for one layer.

    keys, values: (heads, n, head_dim) or (batch, heads, n, head_dim), where heads is the number of QUERY heads
    (the paper's per-head tokens) or of key/value heads (`per_kv_head=True`, cheaper under GQA).
    logit_bias: optional (heads, n) additive bias on the virtual tokens' attention logits.
    """

    keys: torch.Tensor
    values: torch.Tensor
    logit_bias: torch.Tensor | None = None
    form: OutputForm = "joint"
    per_kv_head: bool = False


TokenSource = Callable[[nn.Module], VirtualTokens]


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **_: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' standard eager kernel (every registry model defines the same one locally)."""
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def _base_kernel(name: str) -> Callable[..., tuple[torch.Tensor, Any]]:
    return eager_attention if name == "eager" else ALL_ATTENTION_FUNCTIONS[name]


class _ModuleView:
    """Reads through to the attention module, but with the grouping and config the kernel must now see.

    After per-query-head virtual tokens are added, keys/values already have one head per query head, so the
    kernel must not repeat them again; flash kernels read the implementation name from `module.config`.
    """

    def __init__(self, module: nn.Module, groups: int, config: Any) -> None:
        self.__dict__.update(_module=module, num_key_value_groups=groups, config=config)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _batched(t: torch.Tensor, batch: int, like: torch.Tensor) -> torch.Tensor:
    t = t.to(dtype=like.dtype, device=like.device)
    return t.unsqueeze(0).expand(batch, *t.shape) if t.dim() == 3 else t


def _dense_mask(
    mask: torch.Tensor | None, query: torch.Tensor, key: torch.Tensor, is_causal: bool
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The 4-D boolean/float mask over the real keys (built when the model skipped it), and the keys it covers.

    Mirrors transformers' sdpa path: a skipped mask means plain causal attention (top-left aligned, extra
    unfilled static-cache slots cropped) or, for a single query, no mask at all.
    """
    q_len, kv_len = query.shape[2], key.shape[2]
    if mask is not None or q_len == 1 or not is_causal:
        return mask, key
    key_len = min(kv_len, q_len)
    causal = torch.ones(q_len, key_len, dtype=torch.bool, device=query.device).tril()
    return causal.view(1, 1, q_len, key_len), key[:, :, :key_len]


def _prepend_to_mask(mask: torch.Tensor | None, n: int, bias: torch.Tensor | None, kv_len: int) -> torch.Tensor | None:
    """Every query sees every virtual token: prepend n visible columns (carrying the logit bias, if any)."""
    if bias is None:
        if mask is None:
            return None
        visible = torch.ones if mask.dtype == torch.bool else torch.zeros
        return torch.cat([visible(*mask.shape[:-1], n, dtype=mask.dtype, device=mask.device), mask], dim=-1)
    if mask is None:
        real = torch.zeros(1, 1, 1, kv_len, dtype=bias.dtype, device=bias.device)
    elif mask.dtype == torch.bool:
        real = torch.zeros(mask.shape, dtype=bias.dtype, device=mask.device)
        real = real.masked_fill(~mask, torch.finfo(bias.dtype).min)
    else:
        real = mask
    heads = bias.shape[0]
    real = real.expand(real.shape[0], heads, real.shape[2], kv_len)
    virtual = bias.view(1, heads, 1, n).expand(real.shape[0], heads, real.shape[2], n)
    return torch.cat([virtual, real], dim=-1)


def _flash_padding_mask(mask: torch.Tensor | None, n: int, bias: torch.Tensor | None) -> torch.Tensor | None:
    """Flash kernels take a 2-D padding mask and align causality bottom-right, so virtual keys stay visible."""
    if bias is not None:
        raise ValueError("Flash-attention kernels take no logit bias: load the model with attn_implementation='sdpa'.")
    if mask is None:
        return None
    return torch.cat([torch.ones(mask.shape[0], n, dtype=mask.dtype, device=mask.device), mask], dim=-1)


_CPU_FLASH: Any = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _use_fused_inference(kernel: str, query: torch.Tensor, kwargs: dict[str, Any]) -> bool:
    """Inference on CPU with sdpa: the fused causal kernel plus the virtual tokens' closed form (see below)."""
    return (
        kernel == "sdpa"
        and _CPU_FLASH is not None
        and query.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not kwargs.get("dropout")
    )


def _fused_inference(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    real_mask: torch.Tensor | None,
    is_causal: bool,
    tokens: VirtualTokens,
    vk: torch.Tensor,
    vv: torch.Tensor,
    bias: torch.Tensor | None,
    scaling: float | None,
) -> torch.Tensor:
    """The decomposition computed directly: SA and its log-sum-exp (log Z2) from torch's fused CPU kernel on the
    real tokens alone (causal fast path, no copy of the KV cache), the n virtual logits in closed form, then

        joint    = exp(log Z2 - log Z) SA + exp(s_D - log Z) V_D,   log Z = logaddexp(log Z2, log Z1)
        unscaled = SA + exp(s_D - log Z) V_D.

    The kernel's log-sum-exp carries no gradient, so training takes the concatenating path instead.
    """
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    groups = query.shape[1] // key.shape[1]
    key, value, vk, vv = (repeat_kv(t, groups) for t in (key, value, vk, vv))
    float_mask = None
    if real_mask is not None:
        float_mask = torch.zeros(real_mask.shape, dtype=query.dtype, device=query.device)
        float_mask = float_mask.masked_fill(~real_mask, float("-inf"))
    causal = real_mask is None and is_causal and query.shape[2] > 1
    out, lse = _CPU_FLASH(query, key, value, 0.0, causal, attn_mask=float_mask, scale=scaling)[:2]
    if real_mask is not None:  # the kernel reports log Z2 = 0 for a row that sees no real key
        lse = lse.masked_fill(~real_mask.any(-1).expand_as(lse), float("-inf"))
    logits = torch.matmul(query, vk.transpose(-1, -2)).float() * scaling
    if bias is not None:
        logits = logits + bias.float().view(1, -1, 1, logits.shape[-1])
    lse = lse.float()
    total = torch.logaddexp(lse, torch.logsumexp(logits, -1))
    virtual = torch.matmul(torch.exp(logits - total.unsqueeze(-1)).to(vv.dtype), vv)
    if tokens.form == "joint":  # one fused pass over the output instead of a scale and an add
        out = torch.addcmul(virtual, out, torch.exp(lse - total).unsqueeze(-1).to(out.dtype))
    else:
        out = out + virtual
    return out.transpose(1, 2).contiguous()


def virtual_kv_attention(
    kernel: str,
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    """Attention over [virtual; real] keys, then the model's own kernel; plain kernel when no tokens are set."""
    base = _base_kernel(kernel)
    source: TokenSource | None = module.__dict__.get("_virtual_kv")
    if source is None:
        return base(module, query, key, value, attention_mask, **kwargs)
    tokens = source(module)
    batch, heads = query.shape[:2]
    groups = getattr(module, "num_key_value_groups", 1)
    if not tokens.per_kv_head and groups > 1:
        key, value, groups = repeat_kv(key, groups), repeat_kv(value, groups), 1
    view = _ModuleView(module, groups, module.__dict__["_virtual_kv_config"])
    bias = None if tokens.logit_bias is None else tokens.logit_bias.to(query.dtype)
    if bias is not None and bias.shape[0] != heads:
        bias = bias.repeat_interleave(heads // bias.shape[0], dim=0)
    vk, vv = _batched(tokens.keys, batch, query), _batched(tokens.values, batch, query)
    n = vk.shape[2]

    if kernel.startswith("flash"):
        real_mask, virtual_mask = attention_mask, _flash_padding_mask(attention_mask, n, bias)
    else:
        is_causal = kwargs.pop("is_causal", None)
        is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        fused = attention_mask is None or attention_mask.dtype == torch.bool
        if fused and _use_fused_inference(kernel, query, kwargs):
            if attention_mask is None and is_causal and 1 < query.shape[2] < key.shape[2]:
                key, value = key[:, :, : query.shape[2]], value[:, :, : query.shape[2]]  # as _dense_mask crops
            return _fused_inference(
                query, key, value, attention_mask, is_causal, tokens, vk, vv, bias, kwargs.get("scaling")
            ), None
        real_mask, key_cropped = _dense_mask(attention_mask, query, key, is_causal)
        value = value[:, :, : key_cropped.shape[2]]
        key = key_cropped
        virtual_mask = _prepend_to_mask(real_mask, n, bias, key.shape[2])

    joint, weights = base(view, query, torch.cat([vk, key], 2), torch.cat([vv, value], 2), virtual_mask, **kwargs)
    if tokens.form == "joint":
        return joint, weights
    # "unscaled": SA + beta V_D = joint + (1 - alpha) SA, with alpha read off a second pass whose values are
    # 0 on virtual tokens and 1 on real ones (same head_dim, so every kernel accepts it).
    ones = torch.cat([torch.zeros_like(vv), torch.ones_like(value)], 2)
    alpha, _ = base(view, query, torch.cat([vk, key], 2), ones, virtual_mask, **kwargs)
    sa, _ = base(view, query, key, value, real_mask, **kwargs)
    return joint + (1 - alpha) * sa, weights


def _register() -> None:
    for kernel in KERNELS:
        name = PREFIX + kernel

        def fn(*args: Any, _kernel: str = kernel, **kwargs: Any) -> tuple[torch.Tensor, Any]:
            return virtual_kv_attention(_kernel, *args, **kwargs)

        AttentionInterface.register(name, fn)
        mask_kernel = "sdpa" if kernel == "sdpa" else ("eager" if kernel == "eager" else kernel)
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[mask_kernel])


_register()


class VirtualKVPatch:
    """The attachment of a token source to a model's language-model attention modules; switchable on/off.

    Attaching stores a callable on each attention module (not as a submodule, so the frozen model's
    state_dict is unchanged) and points the text config at "virtual_kv:<kernel>". Disabling restores the
    kernel name, so a disabled patch costs nothing.
    """

    def __init__(self, attention_modules: list[nn.Module], sources: Sequence[TokenSource]) -> None:
        if len(attention_modules) != len(sources):
            raise ValueError(f"{len(sources)} token sources for {len(attention_modules)} attention layers.")
        # transformers configs (PretrainedConfig) behind nn.Module attribute access
        configs: dict[int, Any] = {id(m.config): m.config for m in attention_modules}
        self._configs = list(configs.values())
        self._kernels: dict[int, str] = {}
        for config in self._configs:
            kernel = config._attn_implementation or "eager"
            kernel = kernel.removeprefix(PREFIX)
            if kernel not in KERNELS:
                raise ValueError(
                    f"Attention implementation {kernel!r} is not supported for virtual tokens; use one of {KERNELS}."
                )
            self._kernels[id(config)] = kernel
        self._modules = attention_modules
        for module, source in zip(attention_modules, sources, strict=True):
            if "_virtual_kv" in module.__dict__:
                raise RuntimeError("This model already has virtual tokens attached: detach them first.")
            base_config: Any = copy.copy(module.config)
            base_config._attn_implementation_internal = self._kernels[id(module.config)]
            module.__dict__["_virtual_kv"] = source
            module.__dict__["_virtual_kv_config"] = base_config
        self.enable()

    def enable(self) -> None:
        for config in self._configs:
            config._attn_implementation = PREFIX + self._kernels[id(config)]

    def disable(self) -> None:
        for config in self._configs:
            config._attn_implementation = self._kernels[id(config)]

    @property
    def enabled(self) -> bool:
        return all(c._attn_implementation.startswith(PREFIX) for c in self._configs)

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Run the frozen model as it was (e.g. the teacher pass), then switch the tokens back on."""
        was = self.enabled
        self.disable()
        try:
            yield
        finally:
            if was:
                self.enable()

    def remove(self) -> None:
        self.disable()
        for module in self._modules:
            module.__dict__.pop("_virtual_kv", None)
            module.__dict__.pop("_virtual_kv_config", None)
