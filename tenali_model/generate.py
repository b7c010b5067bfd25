"""Autoregressive sampling with a KV cache: prefill the prompt once, then one token per step.

Per step: last-position logits -> frequency/presence penalties -> temperature -> top-k -> top-p ->
sample (or argmax when temperature < GREEDY_BELOW, 1e-5). Penalties follow OpenAI's definition:

    logits[j] -= frequency_penalty * c[j] + presence_penalty * (c[j] > 0)

where c[j] counts token j among the tokens generated so far in that sequence (the prompt is not
counted). Positive values discourage repetition, negative ones encourage it; OpenAI accepts -2..2.
Generation of a sequence stops at any of its stop tokens (eos_id and stop_ids); the stop token is
kept and finished sequences are padded (pad_id, by default eos_id or the first stop id) until all
have stopped or max_new_tokens is reached.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .checkpoint import unwrap
from .model import KVCache, Transformer, inference_attention

# Below this temperature sampling is greedy, as in vLLM (its _SAMPLING_EPS, 1e-5, reads a smaller
# temperature as 0): dividing float32 logits by a tinier one overflows them to inf, softmax then
# gives NaN and torch.multinomial raises, where the caller meant "as sure as possible".
GREEDY_BELOW = 1e-5


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids [B] from last-position logits [B, V]; temperature < GREEDY_BELOW means greedy."""
    if temperature < GREEDY_BELOW:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Keep the smallest prefix whose mass reaches top_p (HF, vLLM): a token goes once the ones
        # before it already hold top_p (>=, so a tie exactly at top_p adds no extra token); the most
        # likely token always stays (top_p <= 0 is greedy, not an all -inf row).
        drop = (probs.cumsum(-1) - probs) >= top_p
        drop[:, 0] = False
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def apply_penalties(logits: torch.Tensor, counts: torch.Tensor, frequency_penalty: float = 0.0,
                    presence_penalty: float = 0.0) -> torch.Tensor:
    """OpenAI's penalties on logits [B, V] given counts [B, V] of each token generated so far."""
    if frequency_penalty:
        logits = logits - frequency_penalty * counts.to(logits.dtype)
    if presence_penalty:
        logits = logits - presence_penalty * (counts > 0).to(logits.dtype)
    return logits


@torch.no_grad()
def generate(model: torch.nn.Module, idx: torch.Tensor, max_new_tokens: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, eos_id: int | None = None, use_cache: bool = True, *,
             frequency_penalty: float = 0.0, presence_penalty: float = 0.0,
             stop_ids: Sequence[int] | None = None, pad_id: int | None = None) -> torch.Tensor:
    """Extend idx [B, T] by up to max_new_tokens; returns [B, T + generated].

    A sequence stops after producing eos_id or any of stop_ids (the stop token is kept); finished
    sequences are padded with pad_id (default: eos_id, else the first stop id); generation ends
    when all have stopped. frequency_penalty / presence_penalty: see the module doc.
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
    if T == 0:  # nothing to condition on (the forward would fail deep in attention's reshape)
        raise ValueError("generate needs a prompt of at least one token, got idx of shape "
                         f"{tuple(idx.shape)}")
    use_cache = use_cache and T + max_new_tokens <= cfg.max_seq_len
    stops = ([] if eos_id is None else [eos_id]) + [int(t) for t in (stop_ids or []) if t != eos_id]
    if pad_id is None and stops:
        pad_id = stops[0]
    stop_tensor = torch.tensor(stops, dtype=torch.long, device=device)
    penalise = bool(frequency_penalty or presence_penalty)
    counts = torch.zeros(B, cfg.vocab_size, device=device) if penalise else None
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    out = idx
    cache = None
    if use_cache:
        dtype = next(model.parameters()).dtype
        cache = KVCache(cfg, B, T + max_new_tokens, device, dtype)
        logits, _ = model(idx, cache=cache, start_pos=0, last_only=True)  # prefill
    for i in range(max_new_tokens):
        if not use_cache:
            with inference_attention(out.device):  # a new length every step (cached forwards do this themselves)
                logits, _ = model(out[:, -cfg.max_seq_len:], last_only=True)
        last = logits[:, -1]
        if penalise:
            last = apply_penalties(last.float(), counts, frequency_penalty, presence_penalty)
        nxt = sample_next(last, temperature, top_k, top_p, generator)
        if stops:
            nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
            finished |= torch.isin(nxt, stop_tensor)
        if penalise:
            counts[torch.arange(B, device=device), nxt] += 1
        out = torch.cat([out, nxt[:, None]], dim=1)
        if stops and bool(finished.all()):
            break
        if use_cache and i + 1 < max_new_tokens:
            logits, _ = model(nxt[:, None], cache=cache, start_pos=T + i)
    model.train(was_training)
    return out
