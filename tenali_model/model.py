"""A decoder-only LLaMA-style Transformer in plain PyTorch.

Token embedding -> n_layers x [RMSNorm -> grouped-query attention with RoPE -> residual,
RMSNorm -> SwiGLU (or GELU) MLP -> residual] -> RMSNorm -> lm head (tied to the embedding
when configured). Attention goes through `F.scaled_dot_product_attention`, so the fused
flash / memory-efficient kernels are used wherever torch has them.

Parameter names follow Meta's LLaMA code (wq/wk/wv/wo, w1/w2/w3); RoPE uses the "rotate half"
layout that Hugging Face LLaMA uses, so an export needs a rename and no weight permutation
(`hf.py`; its test checks the logits against transformers).

Training asks for the loss alone (`forward(..., with_logits=False)`): the lm head and cross-entropy
then run chunk by chunk in `loss.py` and the [B, T, vocab] logits are never held.

Activation checkpointing (`set_activation_checkpointing`) recomputes each block's forward during
the backward pass instead of keeping its activations; it lives inside `Block.forward`, so FSDP's
per-block hooks stay outside the recomputed region (the torchtitan arrangement).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .loss import linear_cross_entropy, linear_token_logps


def _cpu_paths(x: torch.Tensor) -> bool:
    """Whether x is on the CPU, where the model takes two paths of its own: grouped-query attention
    inside SDPA (CUDA's masked kernel lacks it) and RMSNorm's hand-written backward (CUDA has a fused
    kernel). Tests patch it to measure on CPU what CUDA keeps for backward (`test_model_plan.py`)."""
    return x.device.type == "cpu"


# The attention kernels inference may use on CUDA: every one but cuDNN's. PyTorch 2.11 tried cuDNN's
# first on an H200 (Hopper), and cuDNN builds an execution plan for each new shape, 40-62 ms each there;
# a decoding step meets a new key length every step and a prefill a new prompt length every request
# (docs/benchmarks.md, "GPU figures"). Training's shapes are fixed, so it keeps PyTorch's choice.
INFERENCE_SDPA = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)


def inference_attention(device: torch.device):
    """Context for an inference forward on `device`: SDPA without cuDNN's kernel on CUDA; elsewhere
    nothing changes."""
    return sdpa_kernel(list(INFERENCE_SDPA)) if device.type == "cuda" else contextlib.nullcontext()


class RMSNorm(nn.Module):
    """Scale by the root-mean-square (no mean subtraction, no bias); computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x * rsqrt(mean(x^2) + eps) * weight: F.rms_norm is a fused kernel on CUDA; on CPU its
        # gradient is autograd through the composite ops, so training there uses _RMSNormCPU (the same
        # forward bits, 1.3-1.5x faster forward + backward: bench/bench_train_parts.py).
        # The output keeps the input's dtype (a bfloat16 model's next Linear needs bfloat16).
        dtype, x, w = x.dtype, x.float(), self.weight.float()
        if _cpu_paths(x) and torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
            return _RMSNormCPU.apply(x, w, self.eps).to(dtype)
        return F.rms_norm(x, (x.shape[-1],), w, self.eps).to(dtype)


class _RMSNormCPU(torch.autograd.Function):
    """RMSNorm with a hand-written backward: dx = r * (gw - xhat * mean(gw * xhat)), gw = g * w,
    dw = sum(g * xhat), where xhat = x * r and r = rsqrt(mean(x^2) + eps), in fewer passes than
    autograd through F.rms_norm's composite (tests check both against each other)."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        r = torch.rsqrt(x.square().mean(-1, keepdim=True).add_(eps))
        xhat = x * r
        ctx.save_for_backward(xhat, r, weight)
        return xhat * weight

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        xhat, r, weight = ctx.saved_tensors
        dw = (grad * xhat).flatten(0, -2).sum(0) if ctx.needs_input_grad[1] else None
        if not ctx.needs_input_grad[0]:
            return None, dw, None
        gw = grad * weight
        dot = (gw * xhat).mean(-1, keepdim=True)
        return gw.sub_(xhat * dot).mul_(r), dw, None


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin of position * frequency, shape [max_seq_len, head_dim] (each half
    repeated; the first half of the sin table negated, see `apply_rope`)."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), freqs)
    sin = angles.sin()
    return torch.cat([angles, angles], dim=-1).cos(), torch.cat([-sin, sin], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + head_dim/2) of x [B, H, T, hd] by the position angles.

    Hugging Face's rotate_half(x) * sin is cat(-x2, x1) * sin; with the sign folded into the table
    (`rope_tables`) it is roll(x, half) * signed_sin: the same float bits in one op instead of four.
    """
    return (x * cos + x.roll(x.shape[-1] // 2, -1) * sin).type_as(x)


class KVCache:
    """Keys and values of past positions for incremental decoding, one slab for all layers."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int,
                 device: torch.device | str, dtype: torch.dtype):
        shape = (cfg.n_layers, batch_size, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len

    def update(self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor):
        """Store k/v [B, KV, T, hd] at start_pos and return everything up to start_pos + T."""
        end = start_pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked to write up to {end}")
        self.k[layer, :, :, start_pos:end] = k
        self.v[layer, :, :, start_pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, cache: KVCache | None = None, start_pos: int = 0,
                mask: torch.Tensor | None = None):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, start_pos, k, v)
        # GQA: query head h reads kv head h // n_rep. On CPU SDPA does that itself (no copies of k/v
        # and no summing of their gradients; the same bits); CUDA's masked kernel has no such mode.
        gqa = self.n_kv_heads != self.n_heads
        if gqa and not _cpu_paths(x):
            n_rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
            gqa = False
        if mask is not None:  # packed sequences: causal within each document only (doc_mask)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        elif start_pos == 0:  # square causal mask (training, or prefill of an empty cache)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:  # queries sit at start_pos.. and may see every key up to their own position
            # (is_causal would align the mask to the top-left corner, which is wrong here)
            S = k.shape[2]
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


def doc_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """Attention mask [B, 1, T, T] (True = may attend) from document ids [B, T]: causal, and only
    within the same document (block-diagonal)."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    same = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (same & causal)[:, None]


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.activation = cfg.activation
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)  # gate (swiglu) or up (gelu)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.dim, bias=False)  # down
        if cfg.activation == "swiglu":
            self.w3 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)  # up

    def forward(self, x):
        if self.activation == "swiglu":
            return self.w2(F.silu(self.w1(x)) * self.w3(x))
        return self.w2(F.gelu(self.w1(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.checkpointing = False  # set by Transformer.set_activation_checkpointing

    def forward(self, x, cos, sin, cache=None, start_pos=0, mask=None):
        if self.checkpointing and cache is None and torch.is_grad_enabled():
            # Keep only the block's input; rerun the block in backward (non-reentrant: works with
            # DDP, FSDP2, torch.compile and inputs that do not require grad).
            return checkpoint(self._forward, x, cos, sin, None, 0, mask, use_reentrant=False)
        return self._forward(x, cos, sin, cache, start_pos, mask)

    def _forward(self, x, cos, sin, cache=None, start_pos=0, mask=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, start_pos, mask)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.tie_weights()
        # RoPE tables are derived from the config, so they are buffers kept out of checkpoints.
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def tie_weights(self) -> None:
        """Share the lm head with the embedding (again after to_empty(), which unties them)."""
        if self.config.tie_embeddings:
            self.lm_head.weight = self.tok_embeddings.weight

    def init_rope(self) -> None:
        """(Re)compute the RoPE tables, e.g. after building on the meta device."""
        cos, sin = rope_tables(self.config.head_dim, self.config.max_seq_len, self.config.rope_theta)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def reset_parameters(self) -> None:
        """GPT-2 style init: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * n_layers)
        so the residual stream's variance does not grow with depth."""
        for name, p in self.named_parameters():
            if p.dim() < 2:
                nn.init.ones_(p)  # RMSNorm weights
            elif name.endswith(("attn.wo.weight", "mlp.w2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layers))
            else:
                nn.init.normal_(p, mean=0.0, std=0.02)

    def set_activation_checkpointing(self, enabled: bool = True) -> None:
        """Recompute every block's activations in the backward pass (less memory, ~1/3 more compute)."""
        for layer in self.layers:
            layer.checkpointing = enabled

    def chunked_head(self) -> bool:
        """Whether the lm head can be run from its weight a chunk of rows at a time (loss.py): a plain
        Linear (a hooked or adapted head must be called) and not inside torch.compile (inductor fuses
        the plain loss itself)."""
        return _plain(self.lm_head) and not torch.compiler.is_compiling()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # shared (tied) tensors counted once

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                cache: KVCache | None = None, start_pos: int = 0, z_loss: float = 0.0,
                doc_ids: torch.Tensor | None = None, last_only: bool = False, with_logits: bool = True,
                token_logps: bool = False, hidden: bool = False, head_loss=None):
        """idx [B, T] token ids -> (logits [B, T, V] float32, loss or None).

        doc_ids [B, T]: which document (conversation) each position belongs to, for several packed
        into one row; attention then never crosses a document boundary (see `doc_mask`). RoPE is
        relative, so a document scores exactly as it would alone at position 0.

        loss = mean cross-entropy over targets != -1, plus z_loss * mean(logsumexp(logits)^2),
        which keeps the softmax normaliser near 1 and large-scale runs stable.
        With a cache, idx holds the tokens at positions start_pos .. start_pos + T - 1.
        last_only (no targets): logits [B, 1, V] of the last position only, all that sampling the next
        token needs; a prompt's prefill then pays for the lm head once instead of T times.
        with_logits=False (with targets): return (None, loss), the loss computed by
        `loss.linear_cross_entropy` chunk by chunk without ever holding the [B, T, V] logits (what
        training and evaluation want: less memory and time; docs/benchmarks.md).
        token_logps=True (with targets): return (None, log p(targets) [B, T] float32, 0 where
        targets == -1), per position, as DPO sums them per sequence; computed chunk by chunk by
        `loss.linear_token_logps`, again without the logits. A forward mode rather than a method, so
        that DDP's forward (which prepares its gradient all-reduce) is what runs.
        hidden=True: return (the final norm's output [B, T, dim], None), for a loss that applies the
        lm head itself chunk by chunk (distillation: `loss.linear_distill_loss`).
        head_loss: a function of (the final norm's output [B, T, dim], the lm head's weight [V, dim]);
        returns (None, what it returns). The same as `hidden` followed by the function, but run inside
        the forward: under FSDP the head's weight is only whole (all-gathered) there, and DDP's and
        FSDP's backward hooks see every use of it.
        """
        B, T = idx.shape
        if start_pos + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start_pos + T} tokens exceeds max_seq_len "
                             f"{self.config.max_seq_len}")
        cos = self.rope_cos[start_pos:start_pos + T]
        sin = self.rope_sin[start_pos:start_pos + T]
        mask = None
        if doc_ids is not None:
            if cache is not None:
                raise ValueError("doc_ids (packed documents) cannot be combined with a KV cache")
            mask = doc_mask(doc_ids)
        x = self.tok_embeddings(idx)
        if cache is None:
            for layer in self.layers:
                x = layer(x, cos, sin, None, start_pos, mask)
        else:  # decoding or a prefill: shapes change from call to call
            with inference_attention(idx.device):
                for layer in self.layers:
                    x = layer(x, cos, sin, cache, start_pos, mask)
        if last_only:
            if targets is not None:
                raise ValueError("last_only computes no loss: it keeps the last position's logits only")
            x = x[:, -1:]
        if hidden:
            return self.norm(x), None
        if head_loss is not None:
            return None, head_loss(self.norm(x), self.lm_head.weight)
        if token_logps:
            if targets is None:
                raise ValueError("token_logps needs targets: the log-probabilities are of the targets")
            h, flat_targets = self.norm(x), targets.reshape(-1)
            h = h.reshape(-1, h.shape[-1])
            if self.chunked_head():
                logps = linear_token_logps(h, self.lm_head.weight, flat_targets)
            else:
                logps = torch.log_softmax(self.lm_head(h).float(), dim=-1)
                logps = logps.gather(1, flat_targets.clamp(min=0)[:, None]).squeeze(1)
                logps = torch.where(flat_targets != -1, logps, 0.0)
            return None, logps.view(targets.shape)
        if targets is not None and not with_logits and self.chunked_head():
            h = self.norm(x)
            return None, linear_cross_entropy(h.reshape(-1, h.shape[-1]), self.lm_head.weight,
                                              targets.reshape(-1), z_loss=z_loss)
        logits = self.lm_head(self.norm(x)).float()
        if targets is None:
            return logits, None
        flat_logits, flat_targets = logits.view(-1, logits.size(-1)), targets.reshape(-1)
        # Sums over max(1, counted targets), as `linear_cross_entropy` does: with every target -1
        # (an SFT row whose answer was cut off) the loss is 0, not the NaN of a mean over nothing,
        # whichever path runs (this one under torch.compile or with a hooked head).
        keep = flat_targets != -1
        n = keep.sum().clamp(min=1)
        loss = F.cross_entropy(flat_logits, flat_targets, ignore_index=-1, reduction="sum") / n
        if z_loss > 0:
            lse = torch.logsumexp(flat_logits[keep], dim=-1)
            loss = loss + z_loss * lse.pow(2).sum() / n
        return (logits if with_logits else None), loss


# --- slot-based decoding for a server: many sequences, each at its own position -----------------
# (For tenali_model.serve. Prompts are prefilled into their slots through `Transformer.forward` with
# `SlotKVCache.rows(slots)` as the cache; then all live sequences advance one token together with
# `decode_slots`.)


def _contiguous(slots: list[int]) -> slice | None:
    """slots as a slice when they are consecutive (the engine hands out the lowest free ones), so the
    cache rows are read and written as views; None when they are not (an index then gathers)."""
    first = slots[0]
    return slice(first, first + len(slots)) if slots == list(range(first, first + len(slots))) else None

class SlotKVCache:
    """One KV slab with a row ("slot") per concurrent sequence; rows are reused as requests come and go."""

    def __init__(self, cfg: ModelConfig, slots: int, max_len: int,
                 device: torch.device | str, dtype: torch.dtype):
        shape = self.shape(cfg, slots, max_len)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.slots, self.max_len = slots, max_len

    @staticmethod
    def shape(cfg: ModelConfig, slots: int, max_len: int) -> tuple[int, ...]:
        """The shape of the keys (and of the values): what allocating the cache will take, before it is."""
        return (cfg.n_layers, slots, cfg.n_kv_heads, max_len, cfg.head_dim)

    def view(self, slot: int) -> "_SlotView":
        """A KVCache-compatible view of one slot, for a prefill through `Transformer.forward`."""
        return self.rows([slot])

    def rows(self, slots: list[int]) -> "_SlotView":
        """A KVCache-compatible view of several slots: batch row i is slot slots[i] (a batched prefill)."""
        bad = [s for s in slots if not 0 <= s < self.slots]
        if bad or not slots:
            raise ValueError(f"slots {bad or slots} outside 0..{self.slots - 1}")
        return _SlotView(self, slots)


class _SlotView:
    def __init__(self, cache: SlotKVCache, slots: list[int]):
        self.cache, self.max_len = cache, cache.max_len
        self.index = _contiguous(slots) or torch.tensor(slots, device=cache.k.device)

    def update(self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor):
        end = start_pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked to write up to {end}")
        self.cache.k[layer, self.index, :, start_pos:end] = k
        self.cache.v[layer, self.index, :, start_pos:end] = v
        return self.cache.k[layer, self.index, :, :end], self.cache.v[layer, self.index, :, :end]


def _plain(mod: nn.Module) -> bool:
    """Whether mod is a bias-free nn.Linear with no hooks, so that its weight alone says what it does
    (not a LoRA layer or a hooked module, which must be called)."""
    return type(mod) is nn.Linear and mod.bias is None and not (mod._forward_hooks or mod._forward_pre_hooks)


def _linear(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """mod(x) for a 2-D x; a plain bias-free nn.Linear becomes the mm that F.linear would run,
    without its wrapper dispatches. Anything else (a LoRA layer, a hooked module) is called as is."""
    if _plain(mod):
        return torch.mm(x, mod.weight.t())
    return mod(x)


def _mlp(mlp: MLP, x: torch.Tensor) -> torch.Tensor:
    """MLP.forward with `_linear` (tests check the two agree)."""
    if mlp.activation == "swiglu":
        return _linear(mlp.w2, F.silu(_linear(mlp.w1, x)) * _linear(mlp.w3, x))
    return _linear(mlp.w2, F.gelu(_linear(mlp.w1, x), approximate="tanh"))


def _attention_slots(attn: Attention, x, rope: tuple, keys, values, rows, positions, span: int,
                     mask, same_pos: int | None, slab: tuple | None = None):
    """One new token per row: x [B, dim] at positions [B]; keys/values [B, KV, max_len, hd] are this
    layer's cache rows (views when the slots are contiguous) or the whole slab with `rows` an index.
    slab (`decode_static`): (cache.k, cache.v, this layer's index repeated [B], arange(B)), to write
    the new keys and values by indexing the cache itself: written through the layer's view, as eager
    mode does, torch.compile would copy the layer's whole slab and the cache back every step."""
    B = x.shape[0]
    q = _linear(attn.wq, x).view(B, attn.n_heads, 1, attn.head_dim)  # [B, heads, 1, hd]: one position per row
    k = _linear(attn.wk, x).view(B, attn.n_kv_heads, attn.head_dim)
    v = _linear(attn.wv, x).view(B, attn.n_kv_heads, attn.head_dim)
    cos_q, sin_q, cos_k, sin_k = rope
    q, k = apply_rope(q, cos_q, sin_q), apply_rope(k, cos_k, sin_k)
    if same_pos is not None and rows is None:  # plain strided copies into the views
        keys[:, :, same_pos] = k
        values[:, :, same_pos] = v
        k, v = keys[:, :, :span], values[:, :, :span]
    elif slab is not None:
        cache_k, cache_v, layer, index = slab
        cache_k[layer, index, :, positions] = k
        cache_v[layer, index, :, positions] = v
        k, v = keys[:, :, :span], values[:, :, :span]
    else:
        index = torch.arange(B, device=x.device) if rows is None else rows
        keys[index, :, positions] = k
        values[index, :, positions] = v
        k, v = (keys[:, :, :span], values[:, :, :span]) if rows is None else (keys[rows, :, :span], values[rows, :, :span])
    gqa = attn.n_kv_heads != attn.n_heads
    if gqa and not _cpu_paths(x):
        # CUDA's memory-efficient kernel (the one taking a mask) has no grouped-query mode: repeat.
        n_rep = attn.n_heads // attn.n_kv_heads
        k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        gqa = False
    # CPU: query head h reads kv head h // n_rep directly (no copies; the same bits as repeating).
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
    return _linear(attn.wo, y.view(B, -1))  # [B, heads, 1, hd] -> [B, heads * hd]


@torch.no_grad()
def decode_slots(model: "Transformer", tokens: torch.Tensor, cache: SlotKVCache,
                 slots: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Last-position logits [B, V] (float32) after feeding tokens [B] at positions [B] in cache rows slots [B].

    Each row must have been prefilled up to positions[b] - 1 in its slot. The arithmetic is the
    training forward's (the same logits, bit for bit, on CPU), with fewer dispatches, which are most
    of a small model's decoding step: activations stay [B, dim]; contiguous slots (the engine hands
    out the lowest free ones) are read as views; the mask is built once per step, or not at all
    when every row sits at the same position.
    """
    cfg = model.config
    pos = positions.tolist()
    span = max(pos) + 1
    if span > min(cfg.max_seq_len, cache.max_len):
        raise ValueError(f"position {span - 1} exceeds the context of {min(cfg.max_seq_len, cache.max_len)}")
    contiguous = _contiguous(slots.tolist())
    same_pos = pos[0] if min(pos) == span - 1 else None
    if same_pos is None:  # row b sees its own keys 0..positions[b]; longer rows' keys are masked
        mask = (torch.arange(span, device=tokens.device)[None, :] <= positions[:, None])[:, None, None, :]
        cos, sin = model.rope_cos[positions][:, None, :], model.rope_sin[positions][:, None, :]  # [B, 1, hd]
    else:  # every row sees all `span` keys
        mask = None
        cos, sin = model.rope_cos[same_pos], model.rope_sin[same_pos]  # [hd], broadcast over rows
    rope = (cos[..., None, :], sin[..., None, :], cos, sin)  # for q [B, heads, 1, hd] and k [B, kv, hd]
    if contiguous:
        keys, values, rows = cache.k[:, contiguous], cache.v[:, contiguous], None
    else:
        keys, values, rows = cache.k, cache.v, slots
    with inference_attention(tokens.device):  # a new key length every step
        return _decode_layers(model, tokens, rope, keys, values, rows, positions, span, mask, same_pos)


@torch.no_grad()
def decode_static(model: "Transformer", tokens: torch.Tensor, positions: torch.Tensor,
                  cache: SlotKVCache) -> torch.Tensor:
    """`decode_slots` for every slot of the cache at once: logits [slots, V] (float32) after feeding
    tokens[s] at positions[s] into slot s, attending over the cache's whole length under a mask.

    The shapes are the same every step and nothing is read back to the host, so a CUDA graph can
    capture one step and replay it (`serve.graph.StaticDecoder`): on a GPU a small model's step is
    hundreds of kernel launches, which then cost one. Rows that are not decoding must belong to free
    slots: they write their (dummy) token at their position and their logits are ignored; a slot is
    prefilled from position 0 before it is used again. Costs more arithmetic than `decode_slots`
    (every slot, every position), which on a GPU is the same weight reads and a few idle lanes.
    """
    cfg = model.config
    span = cache.max_len
    if span > cfg.max_seq_len:
        raise ValueError(f"the cache holds {span} positions, beyond the model's context of {cfg.max_seq_len}")
    if tokens.shape != (cache.slots,) or positions.shape != (cache.slots,):
        raise ValueError(f"tokens and positions must have one entry per slot ({cache.slots}), got "
                         f"{tuple(tokens.shape)} and {tuple(positions.shape)}")
    mask = (torch.arange(span, device=tokens.device)[None, :] <= positions[:, None])[:, None, None, :]
    cos, sin = model.rope_cos[positions][:, None, :], model.rope_sin[positions][:, None, :]  # [S, 1, hd]
    rope = (cos[..., None, :], sin[..., None, :], cos, sin)
    index = torch.arange(cache.slots, device=tokens.device)
    layers = torch.arange(cfg.n_layers, device=tokens.device)[:, None].expand(-1, cache.slots)
    return _decode_layers(model, tokens, rope, cache.k, cache.v, None, positions, span, mask, None,
                          slab=(layers, index))


def _decode_layers(model: "Transformer", tokens, rope, keys, values, rows, positions, span: int, mask,
                   same_pos: int | None, slab: tuple | None = None) -> torch.Tensor:
    """The layers and head of one decoding step (`decode_slots`, `decode_static`): logits [B, V] float32.
    slab (`decode_static`): (layer indices [n_layers, B], arange(B)), see `_attention_slots`."""
    x = model.tok_embeddings(tokens)
    for i, block in enumerate(model.layers):
        at = None if slab is None else (keys, values, slab[0][i], slab[1])
        x = x + _attention_slots(block.attn, block.attn_norm(x), rope, keys[i], values[i], rows,
                                 positions, span, mask, same_pos, at)
        x = x + _mlp(block.mlp, block.mlp_norm(x))
    logits = _linear(model.lm_head, model.norm(x))
    return logits if logits.dtype == torch.float32 else logits.float()
