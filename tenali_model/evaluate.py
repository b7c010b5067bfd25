"""Validation loss, perplexity and bits per byte of a checkpoint on held-out token shards.

    python -m tenali_model.evaluate CKPT --val val_000.bin [val_001.bin ...] \\
        [--seq-len N] [--batch-size 8] [--max-batches N] [--bytes-per-token F] \\
        [--device cpu] [--json out.json]

CKPT is a checkpoint directory or an out_dir (its latest checkpoint is used). The result is
printed as JSON and, with --json, written there atomically.

bits_per_byte = loss_nats / ln 2 / bytes_per_token compares models with different tokenizers:
bytes_per_token is the mean UTF-8 bytes per token of the validation text (the tokenizer knows it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Iterable

import torch

from .checkpoint import CheckpointError, load_meta, load_model, resolve_checkpoint
from .config import atomic_write_text
from .data import iter_eval_windows


@torch.no_grad()
def loss_sum(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             device: torch.device | str, autocast: contextlib.AbstractContextManager | None = None
             ) -> tuple[float, int]:
    """(sum of per-token cross-entropy in nats, number of tokens) over the batches.

    Sums rather than means, so ranks and uneven last batches combine exactly. Targets of -1 are
    not counted (a batch of only -1 still runs its forward: FSDP ranks pad with such batches).
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast or contextlib.nullcontext():
            _, loss = model(x, y, with_logits=False)
        n = int((y != -1).sum())
        if n:
            total += loss.item() * n
            count += n
    model.train(was_training)
    return total, count


def evaluate_model(model: torch.nn.Module, val_shards, seq_len: int | None = None, batch_size: int = 8,
                   max_batches: int | None = None, bytes_per_token: float | None = None,
                   device: str = "cpu") -> dict:
    """Mean validation loss (nats/token), perplexity, token count, and bits/byte when possible, for a
    model already loaded (so several shard sets, e.g. one per domain, share one load)."""
    seq_len = seq_len or model.config.max_seq_len
    total, count = loss_sum(model, iter_eval_windows(val_shards, seq_len, batch_size, max_batches,
                                                     vocab_size=model.config.vocab_size), device)
    if count == 0:
        raise ValueError(f"validation shards hold too few tokens for one window of {seq_len + 1}")
    loss = total / count
    result = {"val_loss": loss, "perplexity": math.exp(loss), "tokens": count, "seq_len": seq_len}
    if bytes_per_token:
        result["bits_per_byte"] = loss / math.log(2) / bytes_per_token
    return result


def evaluate_checkpoint(ckpt_dir, val_shards, seq_len: int | None = None, batch_size: int = 8,
                        max_batches: int | None = None, bytes_per_token: float | None = None,
                        device: str = "cpu") -> dict:
    """`evaluate_model` on a checkpoint directory (or an out_dir: its latest), plus its step."""
    ckpt_dir = resolve_checkpoint(ckpt_dir)
    model = load_model(ckpt_dir, device=device)
    result = evaluate_model(model, val_shards, seq_len, batch_size, max_batches, bytes_per_token, device)
    return {"checkpoint": str(ckpt_dir), "step": load_meta(ckpt_dir)["step"], **result}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tenali_model.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint directory, or an out_dir (uses its latest)")
    p.add_argument("--val", nargs="+", required=True, help="validation token shards")
    p.add_argument("--seq-len", type=int, default=None, help="default: the model's max_seq_len")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-batches", type=int, default=None)
    p.add_argument("--bytes-per-token", type=float, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="also write the result to this file")
    args = p.parse_args(argv)
    missing = [s for s in args.val if not Path(s).is_file()]
    if missing:
        print(f"tenali_model.evaluate: error: validation shard(s) not found: {missing}", file=sys.stderr)
        return 2
    try:
        result = evaluate_checkpoint(args.checkpoint, args.val, args.seq_len, args.batch_size,
                                     args.max_batches, args.bytes_per_token, args.device)
    except (CheckpointError, ValueError) as e:
        print(f"tenali_model.evaluate: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if args.json:
        atomic_write_text(args.json, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
