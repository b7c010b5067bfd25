"""Evaluation of chat models: loss on assistant tokens, completion log-likelihoods, greedy answers.

All three go through the one chat template (`chat.py`), so what is measured is what SFT trained
and what serving sends. Scoring (exact match, multiple-choice accuracy) is the caller's: the
pipeline knows what a correct answer is; this module only runs the model.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from .chat import encode_chat, prompt_ids, stop_ids
from .checkpoint import unwrap
from .generate import generate
from .model import inference_attention
from .tokenizer import EOT, TextTokenizer


def _windows(ids: list[int], mask: list[bool], max_len: int) -> tuple[list[int], list[int]]:
    """Inputs and targets (-1 where not a target) of one conversation, kept to the last max_len + 1 ids."""
    ids, mask = ids[-(max_len + 1):], mask[-(max_len + 1):]
    x = ids[:-1]
    y = [t if m else -1 for t, m in zip(ids[1:], mask[1:])]
    return x, y


@torch.no_grad()
def assistant_loss(model: torch.nn.Module, tok: TextTokenizer, conversations: Sequence[Sequence[Mapping]],
                   batch_size: int = 8, device: str | torch.device = "cpu") -> dict:
    """Mean cross-entropy (nats) and perplexity over the assistant tokens of held-out conversations."""
    m = unwrap(model)
    was_training = m.training
    m.eval()
    max_len = m.config.max_seq_len
    pairs = [_windows(*_enc(tok, c), max_len) for c in conversations]
    total, count = 0.0, 0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        width = max(len(x) for x, _ in chunk)
        x = torch.zeros(len(chunk), width, dtype=torch.long)
        y = torch.full((len(chunk), width), -1, dtype=torch.long)
        for j, (xs, ys) in enumerate(chunk):  # right padding: causal attention never sees it
            x[j, :len(xs)] = torch.tensor(xs)
            y[j, :len(ys)] = torch.tensor(ys)
        x = x.to(device)
        with inference_attention(x.device):  # a new width each batch
            logits, _ = m(x)
        losses = F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(), ignore_index=-1, reduction="sum")
        total += float(losses)
        count += int((y != -1).sum())
    m.train(was_training)
    if count == 0:
        raise ValueError("no assistant tokens to evaluate: the conversations have no assistant turn")
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss), "tokens": count, "conversations": len(pairs)}


def _enc(tok: TextTokenizer, conversation):
    e = encode_chat(tok, conversation)
    return e.ids, e.target_mask


@torch.no_grad()
def completion_logprobs(model: torch.nn.Module, tok: TextTokenizer, messages: Sequence[Mapping],
                        completions: Sequence[str], device: str | torch.device = "cpu",
                        end: bool = True) -> list[float]:
    """Sum of log-probabilities of each completion (as the assistant's answer, closing <|endoftext|>
    included unless `end` is False, as lm-evaluation-harness scores one) after the conversation
    `messages`: the log-likelihood form of a multiple-choice question."""
    m = unwrap(model)
    was_training = m.training
    m.eval()
    prompt = prompt_ids(tok, messages)
    closing = [tok.special(EOT)] if end else []
    out = []
    for text in completions:
        answer = tok.encode_content(text) + closing
        ids = (prompt + answer)[-(m.config.max_seq_len + 1):]
        n = min(len(answer), len(ids) - 1)
        x = torch.tensor([ids[:-1]], device=device)
        with inference_attention(x.device):  # a new length each completion
            logits, _ = m(x)
        logp = logits[0, -n:].float().log_softmax(-1)
        target = torch.tensor(ids[-n:], device=device)
        out.append(float(logp.gather(-1, target[:, None]).sum()))
    m.train(was_training)
    return out


def answer(model: torch.nn.Module, tok: TextTokenizer, messages: Sequence[Mapping], max_new_tokens: int = 64,
           temperature: float = 0.0, seed: int | None = None, device: str | torch.device = "cpu") -> str:
    """The model's answer to a conversation (greedy by default), without its stop token."""
    m = unwrap(model)
    ids = prompt_ids(tok, messages)
    room = m.config.max_seq_len - max_new_tokens
    if room < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in a {m.config.max_seq_len}-token context")
    ids = ids[-room:]
    stops = stop_ids(tok)
    out = generate(m, torch.tensor([ids], device=device), max_new_tokens, temperature=temperature, seed=seed,
                   eos_id=stops[0], stop_ids=stops[1:])[0, len(ids):].tolist()
    for k, t in enumerate(out):
        if t in stops:
            out = out[:k]
            break
    return tok.decode(out)
