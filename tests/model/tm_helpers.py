"""Helpers for the tenali_model tests (a unique module name, importable from every test file)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from tenali_model.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
VOCAB = 64
SEQ = 32


def pattern_tokens(n: int, seed: int = 0, period: int = 37) -> np.ndarray:
    """A repeating random pattern: learnable, so a working trainer drives the loss down fast."""
    rng = np.random.default_rng(seed)
    return np.tile(rng.integers(0, VOCAB, size=period), n // period + 1)[:n]


def tiny_config(shards: dict, out_dir, **overrides) -> TrainConfig:
    kw = dict(train_shards=shards["train"], val_shards=shards["val"], out_dir=str(out_dir),
              model={"preset": "tiny", "vocab_size": VOCAB, "max_seq_len": SEQ}, steps=40,
              batch_size=8, seq_len=SEQ, lr=3e-3, min_lr=3e-4, warmup_steps=5, log_every=5,
              eval_every=20, eval_batches=2, ckpt_every=20, keep_last=2, device="cpu",
              num_threads=1, seed=7)
    kw.update(overrides)
    return TrainConfig(**kw)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


PYTHON = sys.executable
