"""Autoregressive sampling with a KV cache: prefill the prompt once, then one token per step."""

from __future__ import annotations

import torch

from .checkpoint import unwrap
from .model import KVCache, Transformer


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids [B] from last-position logits [B, V]; temperature <= 0 means greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest prefix reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, eos_id: int | None = None, use_cache: bool = True) -> torch.Tensor:
    """Extend idx [B, T] by up to max_new_tokens; returns [B, T + generated].

    Sequences that produced eos_id are padded with eos_id; generation stops when all have.
    Without the cache (or when prompt + new tokens exceed max_seq_len) every step reruns the
    whole (cropped) context: slower, and the reference the cached path is tested against.
    """
    model: Transformer = unwrap(model)
    was_training = model.training
    model.eval()
    cfg = model.config
    device = idx.device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    B, T = idx.shape
    use_cache = use_cache and T + max_new_tokens <= cfg.max_seq_len
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    out = idx
    cache = None
    if use_cache:
        dtype = next(model.parameters()).dtype
        cache = KVCache(cfg, B, T + max_new_tokens, device, dtype)
        logits, _ = model(idx, cache=cache, start_pos=0)  # prefill
    for i in range(max_new_tokens):
        if not use_cache:
            logits, _ = model(out[:, -cfg.max_seq_len:])
        nxt = sample_next(logits[:, -1], temperature, top_k, top_p, generator)
        if eos_id is not None:
            nxt = torch.where(finished, torch.full_like(nxt, eos_id), nxt)
            finished |= nxt == eos_id
        out = torch.cat([out, nxt[:, None]], dim=1)
        if eos_id is not None and bool(finished.all()):
            break
        if use_cache and i + 1 < max_new_tokens:
            logits, _ = model(nxt[:, None], cache=cache, start_pos=T + i)
    model.train(was_training)
    return out
