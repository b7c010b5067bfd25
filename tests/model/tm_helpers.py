"""Helpers for the tenali_model tests (a unique module name, importable from every test file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def flip(path) -> None:
    """Flip one byte in the middle of a file, as a storage fault would: its sha256 no longer matches."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


FINANCE_TEXT = [
    "Apple (AAPL) closed at $189.25 on 2024-05-01, up 1.5% on volume of 58,414,500 shares.",
    "The Federal Reserve held the federal funds rate at 5.25%-5.50%; CPI rose 3.4% year over year.",
    "Bitcoin funding rates turned negative while open interest fell 12% in 24 hours.",
    "Item 7. Management's Discussion and Analysis: revenue increased 8% to $94,930 million.",
    "Treasury yields: 2-year 4.87%, 10-year 4.50%; the curve stayed inverted for a 22nd month.",
    "Table:  two spaces\twith a tab and   three spaces",
    "Émissions d'obligations: 3,5 milliards d'euros — Ünïcödé and 日本 text, plus 🙂.",
]


def train_sentencepiece(path, texts=FINANCE_TEXT, vocab_size=400, **overrides) -> None:
    """A small sentencepiece model with the pipeline's settings (tenali_pipeline.tokenization.
    train_tokenizer: BPE, byte fallback, split digits, identity normaliser, spaces kept, the special
    tokens and "\\n" as user-defined pieces, no bos/eos)."""
    import io

    import sentencepiece as spm

    from tenali_model.tokenizer import SPECIAL_TOKENS
    lines = [line for t in texts * 30 for line in t.split("\n")]
    settings = dict(model_type="bpe", vocab_size=vocab_size, byte_fallback=True, split_digits=True,
                    user_defined_symbols=[*SPECIAL_TOKENS, "\n"],
                    normalization_rule_name="identity", remove_extra_whitespaces=False,
                    allow_whitespace_only_pieces=True, character_coverage=1.0, num_threads=1,
                    unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, hard_vocab_limit=False, minloglevel=2)
    settings.update(overrides)
    model = io.BytesIO()
    spm.set_random_generator_seed(0)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, **settings)
    Path(path).write_bytes(model.getvalue())


def assert_same_tensors(dir_a, dir_b, names) -> None:
    """Each safetensors file in ``names`` holds the same tensors, bit for bit, under both folders
    (a resumed run against an uninterrupted one)."""
    import torch
    from safetensors.torch import load_file

    for name in names:
        a, b = load_file(str(Path(dir_a) / name)), load_file(str(Path(dir_b) / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def train_until_signalled(cfg_path: Path, out: Path, sig: int, cmd_prefix: list[str], at_step: int = 15):
    """Start the trainer, signal it once metrics.jsonl shows `at_step`, return (exit code, stderr)."""
    proc = subprocess.Popen([*cmd_prefix, "--config", str(cfg_path)], env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = out / "metrics.jsonl"
            lines = metrics.read_text().split("\n")[:-1] if metrics.exists() else []  # whole lines only
            if lines and json.loads(lines[-1])["step"] >= at_step:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err
