"""Train the sentencepiece tokenizer and encode the corpus into token shards.

Tokenizer choices and why: BPE with byte fallback (no unknown tokens, ever); digits split one by
one (prices and amounts tokenise the same way wherever they appear); identity normalisation and no
whitespace folding (decode(encode(text)) == text exactly); newline as its own piece; the special
tokens ``<|endoftext|>``, ``<|user|>``, ``<|assistant|>``, ``<|pad|>`` as user-defined pieces so chat
markup encodes to one id each. Training is deterministic for the same input and settings.

Shards use the versioned format of `tenali_model.data` (the training side reads them); this module
only decides which documents go into which shard and writes the manifest.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import sentencepiece as spm

from tenali_model.tokenizer import EOT

from .text.corpus import SPECIAL_TOKENS

MANIFEST_VERSION = 1


@dataclass
class TokenizerConfig:
    vocab_size: int = 50_000
    character_coverage: float = 0.9999
    max_sentences: int = 2_000_000  # lines sampled for training; the rest of the corpus is not needed
    seed: int = 0


def train_tokenizer(texts: list[str], cfg: TokenizerConfig) -> bytes:
    """Train on `texts` and return the serialised model (a .model file's bytes)."""
    lines = [line for t in texts for line in t.split("\n") if line.strip()]
    if not lines:
        raise ValueError("The tokenizer has no training text: the corpus's training split is empty.")
    model = io.BytesIO()
    spm.set_random_generator_seed(cfg.seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=cfg.vocab_size,
        byte_fallback=True,
        split_digits=True,
        user_defined_symbols=[*SPECIAL_TOKENS, "\n"],
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        character_coverage=cfg.character_coverage,
        input_sentence_size=cfg.max_sentences,
        shuffle_input_sentence=True,
        max_sentence_length=1 << 16,
        num_threads=os.cpu_count() or 1,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        # Small corpora cannot fill a large vocabulary: stop early instead of failing.
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


def load_tokenizer(model_bytes: bytes) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=model_bytes)


def tokenizer_report(sp: spm.SentencePieceProcessor, val: pl.DataFrame) -> dict:
    """Bytes per token per domain, byte-fallback rate, exact round trip and vocabulary use on `val`."""
    texts = val["text"].to_list()
    ids = sp.encode(texts, num_threads=os.cpu_count() or 1)
    byte_ids = np.array([sp.is_byte(i) for i in range(sp.vocab_size())])
    flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in ids]) if ids else np.zeros(0, np.int64)
    roundtrip_failures = sum(sp.decode(x) != t for x, t in zip(ids, texts))
    per_domain: dict[str, float] = {}
    for domain in sorted(set(val["domain"].to_list())):
        sel = [i for i, d in enumerate(val["domain"].to_list()) if d == domain]
        n_tok = sum(len(ids[i]) for i in sel)
        n_bytes = sum(len(texts[i].encode()) for i in sel)
        per_domain[domain] = round(n_bytes / max(n_tok, 1), 3)
    total_bytes = sum(len(t.encode()) for t in texts)
    return {
        "vocab_size": sp.vocab_size(),
        "val_documents": len(texts),
        "val_tokens": int(flat.size),
        "bytes_per_token": round(total_bytes / max(flat.size, 1), 3),
        "bytes_per_token_by_domain": per_domain,
        "byte_fallback_rate": float(byte_ids[flat].mean()) if flat.size else 0.0,
        "roundtrip_failures": int(roundtrip_failures),
        "vocab_used_fraction": round(len(np.unique(flat)) / sp.vocab_size(), 4),
    }


def encode_split(sp: spm.SentencePieceProcessor, docs: pl.DataFrame, out_dir: Path, split: str,
                 shard_tokens: int) -> list[dict]:
    """Encode `docs` in order, each followed by <|endoftext|>, into shards of about `shard_tokens`
    (an in-memory table; the token_shards asset streams corpus partitions through sharding.py).

    Shards end at document boundaries so each shard's byte count is exact (bits per byte needs it).
    Returns the manifest entries of the written shards.
    """
    from .sharding import ShardWriter

    writer = ShardWriter(out_dir, lambda i: f"{split}_{i:05d}.bin", shard_tokens, sp.piece_to_id(EOT), sp.vocab_size())
    texts, domains = docs["text"].to_list(), docs["domain"].to_list()
    for ids, text, domain in zip(sp.encode(texts, num_threads=os.cpu_count() or 1), texts, domains):
        writer.add(ids, text, domain)
    return writer.close()


def build_manifest(model_bytes: bytes, sp: spm.SentencePieceProcessor, splits: dict[str, list[dict]],
                   corpus: dict, tokenizer_cfg: TokenizerConfig | None = None) -> dict:
    return {
        "format_version": MANIFEST_VERSION,
        "tokenizer": {
            "sha256": hashlib.sha256(model_bytes).hexdigest(),
            "vocab_size": sp.vocab_size(),
            "eot_id": sp.piece_to_id(EOT),
            "config": asdict(tokenizer_cfg) if tokenizer_cfg else None,
        },
        "corpus": corpus,
        "splits": splits,
        "totals": {s: sum(e["tokens"] for e in entries) for s, entries in splits.items()},
    }
