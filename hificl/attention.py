"""One attention function that prepends learned virtual key/value tokens to every head of a frozen LMM.

For a query q, real keys/values K, V and virtual keys/values K_D, V_D, softmax attention over [K_D; K] is

    Attn(q, [K_D; K], [V_D; V]) = alpha(q) * SA(q, K, V) + beta(q) @ V_D,
    alpha(q) = Z2 / (Z1 + Z2),  beta(q) = exp(q K_D^T / sqrt d) / (Z1 + Z2),

with Z2 summed over the real keys q may see (causal + padding mask) and Z1 over every virtual token. HiFICL
learns K_D, V_D; MimIC is one virtual token whose key is its linear map's weight and whose logit bias is that
map's bias. Registering this function in transformers' AttentionInterface (as "virtual_kv:<kernel>") injects
them into every decoder that uses the registry, then calls the kernel the model was configured with (for
"eager", the model's OWN eager function, so model-specific logit processing such as soft-capping is kept).

Two output forms are supported:
- "joint":    the softmax over [K_D; K] above (HiFICL; MimIC's Tab. 8 "learnable vector" variant);
- "unscaled": SA(q, K, V) + beta(q) @ V_D, beta still normalised by Z1 + Z2 (HiFICL's "w/o SA scaling"
  ablation; MimIC as its paper and public code compute it, SA + mu v).

Three routes compute them, with the same numbers (tests hold them to 1e-5):
- decoding (one query per sequence) of the joint form, CPU sdpa inference: ONE sdpa call over [K_D; K], the
  query heads of a KV group as the rows of their KV head (no copy of the cache per query head) and a precomputed
  block mask that shows each head its own virtual tokens (with their logit bias) and every real key;
- other CPU sdpa inference (prefill, and decoding of the unscaled form): torch's fused CPU kernel on the REAL
  keys alone returns SA and its log-sum-exp log Z2 (causal fast path, grouped-query heads read in place), and
  the n virtual logits are added in closed form: one softmax over [K_D q, log Z2] gives beta and alpha together,
  then joint = alpha SA + beta V_D, unscaled = SA + beta V_D, merged in place into the kernel's output;
- everything else (training, eager, flash, CUDA): ONE call of the model's kernel over [K_D; K] for the joint
  form; the unscaled form adds a second call, SA over the real keys alone, and takes beta V_D from the first
  call with the real values set to zero.
A query-dependent virtual value v + q W (`value_map`, one token: MimIC's Tab. 8 "linear layer") adds beta(q) q W:
the fused route has beta in hand; the concatenating route reads it off one more kernel call; decoding of the
joint form takes the fused route instead of its single sdpa call. Without a value_map nothing changes.

Kernel arguments, each either honoured or refused (KernelArgumentError), never dropped:
- scaling, dropout, is_causal: applied to real and virtual logits alike;
- softcap (Gemma-2, PaliGemma-2: logits -> c tanh(logits / c)): applied to the virtual logits as the ICL run
  applies it to the demonstrations' (the model's eager or flash kernel sees [K_D; K]); a logit bias (MimIC) is
  added after the cap, like an attention mask. sdpa cannot soft-cap and is refused, as transformers refuses it;
- sliding_window (Mistral, Qwen2, Gemma-2/3 sliding layers): a virtual token is a learned token, not a past
  position, so it is ALWAYS VISIBLE, whatever the window; the window applies to the real keys exactly as the
  model applies it. So the ICL equivalence holds when the window covers the demonstrations and the prompt; when
  it does not, the result equals the ICL run in which every demonstration stays visible to every query (tests
  check both). sdpa and eager receive the window in their mask; flash applies it to the key positions, which
  would hide the virtual tokens, so flash is refused when the window would bite;
- bookkeeping (position_ids, cache_position, use_cache, output_attentions, ...): passed through untouched;
- arguments that describe the real keys' layout (packed-sequence lengths, a per-key position bias, a paged
  cache): refused, in one sentence, since prepended tokens would shift them;
- anything else (e.g. GPT-OSS's attention sinks): the model's own kernel receives it on the concatenating
  route and applies it to [K_D; K], as it applies it to the ICL run's keys.
With no tokens (a source that returns None, or n = 0) the model's own kernel runs with its own arguments, so
a method that adds nothing leaves the logits bit-identical.

Virtual tokens never enter the KV cache: the cache is updated by the layer before this function runs, and
the tokens are prepended anew at every step. They carry no rotary position. At inference they are constants:
a patch given the owning module materialises them once (K_A K_B, V_A V_B) and reuses them, with the decode
layout derived from them, until the owner's parameters change or it switches between train and eval mode.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import sys
import typing
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from hificl.errors import ConfigError

PREFIX = "virtual_kv:"
KERNELS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
OutputForm = Literal["joint", "unscaled"]
#: kernel arguments that change the attention and are applied to the virtual tokens too (see the docstring).
HONOURED = frozenset({"scaling", "dropout", "is_causal", "softcap", "sliding_window"})
#: kernel arguments that are bookkeeping for the layer, not part of the attention's mathematics.
INERT = frozenset(
    {
        "position_ids",
        "cache_position",
        "use_cache",
        "logits_to_keep",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
    }
)
#: kernel arguments that describe the real keys' layout (packed sequences, per-key biases, paged caches), which
#: prepended tokens would silently shift.
REFUSED = frozenset({"cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "position_bias", "cache"})


class KernelArgumentError(ConfigError, ValueError):
    """The model hands its attention kernel an argument that virtual tokens cannot honour."""


@dataclass(eq=False)
class VirtualTokens:
    """Virtual keys/values for one layer.

    keys, values: (heads, n, head_dim) or (batch, heads, n, head_dim), where heads is the number of QUERY heads
    (the paper's per-head tokens) or of key/value heads (`per_kv_head=True`, cheaper under GQA).
    logit_bias: optional (heads, n) additive bias on the virtual tokens' attention logits.
    value_map: optional (heads, head_dim, head_dim) W making the value query-dependent, v + q W (n = 1 only:
    MimIC's Tab. 8 "linear layer" h(q)); the output gains beta(q) q W, so the routes that add it need beta.
    frozen: the producer promises the tensors will not change, so layouts derived from them are memoised.
    """

    keys: torch.Tensor
    values: torch.Tensor
    logit_bias: torch.Tensor | None = None
    value_map: torch.Tensor | None = None
    form: OutputForm = "joint"
    per_kv_head: bool = False
    frozen: bool = False
    _derived: dict[Hashable, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.value_map is not None and self.keys.shape[-2] != 1:
            raise ValueError(f"A value_map needs exactly one virtual token; got {self.keys.shape[-2]}.")


TokenSource = Callable[[nn.Module], VirtualTokens | None]


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
    """transformers' standard eager kernel, for modules whose model file defines none."""
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


@functools.cache
def _model_eager(module_name: str) -> Callable[..., tuple[torch.Tensor, Any]]:
    """The eager kernel the model's own file defines (Gemma-2's soft-caps, GPT-OSS's has sinks), else ours."""
    fn = getattr(sys.modules.get(module_name), "eager_attention_forward", None)
    return fn if callable(fn) else eager_attention


def _base_kernel(name: str, module: nn.Module) -> Callable[..., tuple[torch.Tensor, Any]]:
    return _model_eager(type(module).__module__) if name == "eager" else ALL_ATTENTION_FUNCTIONS[name]


class _ModuleView:
    """Reads through to the attention module, but with the grouping and config the kernel must now see.

    After per-query-head virtual tokens are added, keys/values already have one head per query head, so the
    kernel must not repeat them again; flash kernels read the implementation name from `module.config`.
    """

    def __init__(self, module: nn.Module, groups: int, config: Any) -> None:
        self.__dict__.update(_module=module, num_key_value_groups=groups, config=config)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def _check_arguments(kernel: str, kwargs: dict[str, Any], n: int, kv_len: int) -> None:
    """Refuse, in one sentence, any kernel argument the virtual tokens cannot honour. Arguments neither honoured
    nor refused by name reach the model's own kernel on the concatenating route, applied to [K_D; K]."""
    for name in REFUSED.intersection(kwargs):
        if kwargs[name] is not None:
            raise KernelArgumentError(
                f"The model passes {name!r} to its {kernel} attention kernel; it describes the real keys' layout, "
                "which prepended virtual tokens would shift, so this model cannot take a virtual-token method."
            )
    if kernel == "sdpa" and kwargs.get("softcap") is not None:
        raise KernelArgumentError(
            f"sdpa cannot soft-cap attention logits (softcap={kwargs['softcap']}); load the model with "
            "attn_implementation='eager'."
        )
    window = kwargs.get("sliding_window")
    if kernel.startswith("flash") and window is not None and n + kv_len > window:
        raise KernelArgumentError(
            f"A flash kernel's sliding window ({window}) would hide the {n} always-visible virtual tokens from "
            f"{n + kv_len - window} keys on; load the model with attn_implementation='sdpa' or 'eager'."
        )


# --- inference route: fused CPU kernel on the real keys + the virtual tokens in closed form ---------------------

_CPU_FLASH: Any = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _use_fused_inference(kernel: str, query: torch.Tensor, mask: torch.Tensor | None, kwargs: dict) -> bool:
    """CPU sdpa inference whose every argument the closed form applies itself; anything else concatenates."""
    return (
        kernel == "sdpa"
        and _CPU_FLASH is not None
        and query.is_cpu
        and not torch.is_grad_enabled()
        and not kwargs.get("dropout")
        and (mask is None or mask.dtype == torch.bool)
        and all(v is None or k in _FUSED_ARGUMENTS for k, v in kwargs.items())
    )


#: what the fused routes apply themselves (softcap never reaches them: sdpa refuses it).
_FUSED_ARGUMENTS = frozenset({"scaling", "dropout", "sliding_window"}) | INERT


@dataclass(frozen=True)
class _Plan:
    """Virtual tokens laid out for batched matrix products over (batch x query heads): scaled K_D (BH, n, d),
    V_D with a zero row appended (BH, n + 1, d: the merge's last weight, alpha, picks up nothing) and the logit
    bias (BH, n, 1) in float32. Logits run along dim 1 (n + 1 entries, one column per query): a softmax over a
    short LAST dimension is an order of magnitude slower on CPU."""

    keys: torch.Tensor
    values_zero_row: torch.Tensor
    bias: torch.Tensor | None


def _plan(tokens: VirtualTokens, query: torch.Tensor, scaling: float) -> _Plan:
    """Derived once per frozen token set (per device, dtype, batch and scaling), at every call otherwise."""
    batch, heads, _, dim = query.shape
    key = (query.device, query.dtype, batch, heads, scaling)
    plan = tokens._derived.get(key) if tokens.frozen else None
    if plan is None:

        def per_query_head(t: torch.Tensor, unbatched_dims: int) -> torch.Tensor:
            """(heads or KV heads, ...) or (batch, heads or KV heads, ...) -> (batch * heads, ...)."""
            t = t.to(device=query.device)
            t = t.unsqueeze(0) if t.dim() == unbatched_dims else t
            t = t.repeat_interleave(heads // t.shape[1], dim=1).expand(batch, heads, *t.shape[2:])
            return t.reshape(batch * heads, *t.shape[2:])

        keys = per_query_head(tokens.keys.to(query.dtype), 3) * scaling
        values = per_query_head(tokens.values.to(query.dtype), 3)
        bias = None if tokens.logit_bias is None else per_query_head(tokens.logit_bias.float(), 2).unsqueeze(2)
        zero_row = torch.cat([values, values.new_zeros(values.shape[0], 1, dim)], 1)
        plan = _Plan(keys.contiguous(), zero_row, bias)
        if tokens.frozen:
            tokens._derived[key] = plan
    return plan


def _float_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive form of a boolean mask (the fused kernel takes no boolean mask); converted once per mask
    object, since every layer of a forward receives the same one."""
    version = None if mask.is_inference() else mask._version
    cached = getattr(mask, "_virtual_kv_additive", None)
    if cached is not None and cached[0] == version and cached[1].dtype == dtype:
        return cached[1]
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))
    mask._virtual_kv_additive = (version, additive)  # type: ignore[attr-defined]
    return additive


@dataclass
class _DecodeLayout:
    """Virtual tokens laid out for one grouped sdpa call at decode time: per KV head, the union of its query
    heads' tokens (batch, kv_heads, m, d), and the additive mask (1, kv_heads, group, m + capacity) that shows
    each query head its own tokens (with their logit bias) and every real key; sliced to the cache length."""

    keys: torch.Tensor
    values: torch.Tensor
    block: torch.Tensor | None
    mask: torch.Tensor | None = None


def _decode_layout(tokens: VirtualTokens, query: torch.Tensor, kv_heads: int) -> _DecodeLayout:
    batch, heads, _, dim = query.shape
    key = ("decode", query.device, query.dtype, batch, heads, kv_heads)
    layout = tokens._derived.get(key) if tokens.frozen else None
    if layout is None:
        group = heads // kv_heads
        keys, values = tokens.keys.to(query), tokens.values.to(query)
        if keys.dim() == 3:
            keys, values = keys.unsqueeze(0), values.unsqueeze(0)
        n = keys.shape[-2]
        per_query_head = keys.shape[1] == heads and group > 1
        block = None
        if per_query_head:  # head h = kv * group + j reads tokens j*n .. (j+1)*n of its KV head's union
            keys = keys.reshape(keys.shape[0], kv_heads, group * n, dim)
            values = values.reshape(values.shape[0], kv_heads, group * n, dim)
            own = torch.eye(group, dtype=torch.bool, device=query.device).repeat_interleave(n, dim=1)
            block = torch.zeros(own.shape, dtype=query.dtype, device=query.device).masked_fill_(~own, float("-inf"))
            block = block.expand(1, kv_heads, group, group * n)
        if tokens.logit_bias is not None:
            bias = tokens.logit_bias.to(device=query.device, dtype=query.dtype)
            bias = bias.reshape(kv_heads, -1)  # (kv heads, group * n) or (kv heads, n)
            bias = bias.view(1, kv_heads, 1, -1).expand(1, kv_heads, group, bias.shape[-1])
            block = bias if block is None else block + bias
        layout = _DecodeLayout(keys.expand(batch, *keys.shape[1:]), values.expand(batch, *values.shape[1:]), block)
        if tokens.frozen:
            tokens._derived[key] = layout
    return layout


def _decode_joint(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    layout: _DecodeLayout,
    scaling: float | None,
) -> torch.Tensor:
    """One decode step of the joint form as ONE sdpa call over [K_D; K] with the group's query heads as rows
    of their KV head: no copy of the cache per query head and no merge afterwards."""
    batch, heads, _, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    group, m = heads // kv_heads, layout.keys.shape[2]
    attn_mask = None
    if mask is not None:
        real = _float_mask(mask, query.dtype).expand(batch, kv_heads, group, kv_len)
        virtual = query.new_zeros(1, 1, 1, 1) if layout.block is None else layout.block
        attn_mask = torch.cat([virtual.expand(batch, kv_heads, group, m), real], -1)
    elif layout.block is not None:
        if layout.mask is None or layout.mask.shape[-1] < m + kv_len:  # grows by doubling, so rarely rebuilt
            capacity = max(1024, 2 * kv_len)
            layout.mask = torch.cat([layout.block, layout.block.new_zeros(1, kv_heads, group, capacity)], -1)
        attn_mask = layout.mask[..., : m + kv_len]
    out = nn.functional.scaled_dot_product_attention(
        query.reshape(batch, kv_heads, group, dim),
        torch.cat([layout.keys, key], 2),
        torch.cat([layout.values, value], 2),
        attn_mask=attn_mask,
        scale=scaling,
    )
    return out.view(batch, 1, heads, dim)


def _fused_inference(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    tokens: VirtualTokens,
    scaling: float | None,
) -> torch.Tensor:
    """SA and log Z2 from the fused kernel on the real keys, then one softmax over [K_D q (+ bias); log Z2]:
    its first n weights are beta, its last alpha, so joint = alpha SA + beta V_D and unscaled =
    SA + [beta, alpha] @ [V_D; 0]. The kernel's log-sum-exp carries no gradient, so training concatenates."""
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    scaling = dim**-0.5 if scaling is None else scaling
    causal = mask is None and is_causal and q_len > 1
    if causal and key.shape[2] > q_len:  # unfilled static-cache slots, cropped as transformers' sdpa does
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    additive = None if mask is None else _float_mask(mask, query.dtype)
    if q_len == 1 and (mask is None or mask.shape[1] == 1) and tokens.value_map is None:
        # decoding: a KV group's query heads become the rows of one head, so each KV head is read once
        grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)
        out, lse = _CPU_FLASH(grouped, key, value, 0.0, False, attn_mask=additive, scale=scaling)[:2]
    else:
        out, lse = _CPU_FLASH(query, key, value, 0.0, causal, attn_mask=additive, scale=scaling)[:2]
        if mask is not None and q_len > 1:  # the kernel reports log Z2 = 0 for a padding row that sees no key
            lse = lse.masked_fill(~mask.any(-1), float("-inf"))
    plan = _plan(tokens, query, scaling)
    rows = batch * heads
    q_t = query.reshape(rows, q_len, dim).transpose(1, 2)
    logits = torch.bmm(plan.keys, q_t) if plan.bias is None else torch.baddbmm(plan.bias, plan.keys, q_t)
    lse = lse.reshape(rows, 1, q_len)
    if logits.dtype != lse.dtype:  # the merge runs in float32, like the kernel's log-sum-exp
        logits = logits.to(lse.dtype)
    weights = torch.softmax(torch.cat([logits, lse], 1), 1).to(query.dtype).transpose(1, 2)  # (rows, q_len, n+1)
    if q_len == 1 and tokens.form == "unscaled" and tokens.value_map is None:  # one row per (batch, query head)
        return torch.baddbmm(out.reshape(rows, 1, dim), weights, plan.values_zero_row).view(batch, 1, heads, dim)
    out = out.view(batch, heads, q_len, dim)  # the kernel writes (batch, q_len, heads, dim): merge in place there
    beta_vd = torch.bmm(weights, plan.values_zero_row).view(batch, heads, q_len, dim)
    if tokens.value_map is not None:  # beta (q W): the query-dependent part of the one virtual token's value
        beta = weights[..., :1].reshape(batch, heads, q_len, 1)
        beta_vd.addcmul_(beta, _mapped_query(query, tokens.value_map))
    if tokens.form == "joint":
        torch.addcmul(beta_vd, weights[..., -1:].reshape(batch, heads, q_len, 1), out, out=out)
    else:
        out.add_(beta_vd)
    return out.transpose(1, 2).contiguous()  # free: already laid out as the layer expects


def _mapped_query(query: torch.Tensor, value_map: torch.Tensor) -> torch.Tensor:
    """q W per query head: (batch, heads, q_len, d) x (heads or KV heads, d, d) -> (batch, heads, q_len, d)."""
    w = value_map.to(dtype=query.dtype, device=query.device)
    return torch.matmul(query, w.repeat_interleave(query.shape[1] // w.shape[0], dim=0))


# --- concatenating route: the model's kernel over [K_D; K] ------------------------------------------------------


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
        raise KernelArgumentError(
            "Flash-attention kernels take no logit bias: load the model with attn_implementation='sdpa'."
        )
    if mask is None:
        return None
    return torch.cat([torch.ones(mask.shape[0], n, dtype=mask.dtype, device=mask.device), mask], dim=-1)


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
    base = _base_kernel(kernel, module)
    source: TokenSource | None = module.__dict__.get("_virtual_kv")
    tokens = None if source is None else source(module)
    if tokens is None or tokens.keys.shape[-2] == 0:
        return base(module, query, key, value, attention_mask, **kwargs)
    n = tokens.keys.shape[-2]
    _check_arguments(kernel, kwargs, n, key.shape[2])
    if not kernel.startswith("flash"):
        is_causal = kwargs.pop("is_causal", None)
        is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        if _use_fused_inference(kernel, query, attention_mask, kwargs):
            scaling = kwargs.get("scaling")
            if (
                query.shape[2] == 1
                and tokens.form == "joint"
                and tokens.value_map is None
                and (attention_mask is None or attention_mask.shape[1] == 1)
            ):
                layout = _decode_layout(tokens, query, key.shape[1])
                return _decode_joint(query, key, value, attention_mask, layout, scaling), None
            return _fused_inference(query, key, value, attention_mask, is_causal, tokens, scaling), None

    batch, heads = query.shape[:2]
    groups = getattr(module, "num_key_value_groups", 1)
    if not tokens.per_kv_head and groups > 1:
        key, value, groups = repeat_kv(key, groups), repeat_kv(value, groups), 1
    view = _ModuleView(module, groups, module.__dict__["_virtual_kv_config"])
    bias = None if tokens.logit_bias is None else tokens.logit_bias.to(query.dtype)
    if bias is not None and bias.shape[0] != heads:
        bias = bias.repeat_interleave(heads // bias.shape[0], dim=0)
    vk, vv = _batched(tokens.keys, batch, query), _batched(tokens.values, batch, query)

    if kernel.startswith("flash"):
        real_mask, virtual_mask = attention_mask, _flash_padding_mask(attention_mask, n, bias)
    else:
        real_mask, key = _dense_mask(attention_mask, query, key, is_causal)
        value = value[:, :, : key.shape[2]]
        virtual_mask = _prepend_to_mask(real_mask, n, bias, key.shape[2])

    all_keys = torch.cat([vk, key], 2)
    if tokens.value_map is not None:
        return _with_value_map(base, view, query, key, value, all_keys, vv, (real_mask, virtual_mask), tokens, kwargs)
    if tokens.form == "joint":
        return base(view, query, all_keys, torch.cat([vv, value], 2), virtual_mask, **kwargs)
    # "unscaled": SA over the real keys, plus beta V_D read off the joint softmax with the real values zeroed.
    sa, _ = base(view, query, key, value, real_mask, **kwargs)
    virtual, weights = base(view, query, all_keys, torch.cat([vv, torch.zeros_like(value)], 2), virtual_mask, **kwargs)
    return sa + virtual, weights


def _with_value_map(
    base: Callable[..., tuple[torch.Tensor, Any]],
    view: _ModuleView,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    all_keys: torch.Tensor,
    vv: torch.Tensor,
    masks: tuple[torch.Tensor | None, torch.Tensor | None],
    tokens: VirtualTokens,
    kwargs: dict[str, Any],
) -> tuple[torch.Tensor, Any]:
    """The form with the query-dependent virtual value v + q W: the vector form's calls, plus beta (q W) with
    beta read off one more call of the model's kernel over [K_D; K] with values [1; 0] (so masks, soft-capping
    and sliding windows reach beta exactly as they reach the rest). Correctness over speed: this variant
    (MimIC's Tab. 8 "linear layer") pays one extra kernel call; with attention dropout > 0 that call draws its
    own dropout mask."""
    (real_mask, virtual_mask), value_map = masks, typing.cast(torch.Tensor, tokens.value_map)
    zeros = torch.zeros_like(value)
    if tokens.form == "joint":
        out, weights = base(view, query, all_keys, torch.cat([vv, value], 2), virtual_mask, **kwargs)
    else:
        sa, _ = base(view, query, key, value, real_mask, **kwargs)
        virtual, weights = base(view, query, all_keys, torch.cat([vv, zeros], 2), virtual_mask, **kwargs)
        out = sa + virtual
    beta, _ = base(view, query, all_keys, torch.cat([torch.ones_like(vv), zeros], 2), virtual_mask, **kwargs)
    mapped = _mapped_query(query, value_map).transpose(1, 2)  # the kernels' (batch, q_len, heads, d)
    return out + beta[..., :1] * mapped, weights


def _register() -> None:
    for kernel in KERNELS:
        name = PREFIX + kernel

        def fn(*args: Any, _kernel: str = kernel, **kwargs: Any) -> tuple[torch.Tensor, Any]:
            return virtual_kv_attention(_kernel, *args, **kwargs)

        AttentionInterface.register(name, fn)
        mask_kernel = "sdpa" if kernel == "sdpa" else ("eager" if kernel == "eager" else kernel)
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[mask_kernel])


_register()


def _owner_state(owner: nn.Module) -> Hashable:
    """Changes whenever a parameter is updated in place (optimizer step, load_state_dict), moved or replaced,
    and when the owner switches between train and eval mode. (Writes through `.data` bypass autograd's version
    counter: switch the mode to refresh after one.)"""
    params = owner.parameters() if owner._modules else owner._parameters.values()
    return owner.training, [(p._version, p.data_ptr()) for p in params if p is not None]


class _Materialised:
    """A token source computed once while autograd is off and reused until the owner's state changes; with
    autograd on (training) it is computed afresh at every call, so gradients flow as before."""

    def __init__(self, source: TokenSource, owner: nn.Module) -> None:
        self.source, self.owner = source, owner
        self.state: Hashable = None
        self.tokens: VirtualTokens | None = None

    def __call__(self, module: nn.Module) -> VirtualTokens | None:
        if torch.is_grad_enabled():
            return self.source(module)
        state = _owner_state(self.owner)
        if state != self.state:
            tokens = self.source(module)
            self.tokens = None if tokens is None else dataclasses.replace(tokens, frozen=True)
            self.state = state
        return self.tokens


class VirtualKVPatch:
    """The attachment of a token source to a model's language-model attention modules; switchable on/off.

    Attaching stores a callable on each attention module (not as a submodule, so the frozen model's
    state_dict is unchanged) and points the text config at "virtual_kv:<kernel>". Disabling restores the
    kernel name, so a disabled patch costs nothing. With `owner` (the module holding the sources'
    parameters), inference reuses the materialised tokens until the owner changes (see _Materialised).
    """

    def __init__(
        self, attention_modules: list[nn.Module], sources: Sequence[TokenSource], owner: nn.Module | None = None
    ) -> None:
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
            module.__dict__["_virtual_kv"] = source if owner is None else _Materialised(source, owner)
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
