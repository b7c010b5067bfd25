"""Train the sentencepiece tokenizer and encode the corpus into token shards.

Tokenizer choices and why: BPE with byte fallback (no unknown tokens, ever); digits split one by
one (prices and amounts tokenise the same way wherever they appear); identity normalisation and no
whitespace folding (decode(encode(text)) == text exactly); newline as its own piece; the special
tokens ``<|endoftext|>``, ``<|user|>``, ``<|assistant|>``, ``<|pad|>`` as user-defined pieces so chat
markup encodes to one id each. Training is deterministic for the same input and settings.

Continued pretraining of a Hugging Face base model uses the base's own tokenizer instead (kind
"hf-base"): its tokenizer.json is encoded with the ``tokenizers`` library, documents end with
``<|endoftext|>`` when the vocabulary has it and with the base's eos token otherwise, and the report
and manifest record which tokenizer it was. A byte-level BPE round-trips exactly; others (a Llama-2
style Metaspace tokenizer drops or adds leading spaces) may not, which the report counts.

Shards use the versioned format of `tenali_model.data` (the training side reads them); this module
only decides which documents go into which shard and writes the manifest.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import polars as pl
import sentencepiece as spm

from tenali_model.tokenizer import EOT

from .sharding import HF_BASE, SENTENCEPIECE, Encoder, ShardWriter, TokenizerSource, as_source
from .text.corpus import SPECIAL_TOKENS

MANIFEST_VERSION = 1


@dataclass
class TokenizerConfig:
    vocab_size: int = 50_000
    character_coverage: float = 0.9999
    max_sentences: int = 2_000_000  # lines sampled for training; the rest of the corpus is not needed
    seed: int = 0


# Trainer threads, fixed: the model file records num_threads, so a machine-dependent count (os.cpu_count())
# would give the same vocabulary a different sha256 on another machine, and every shard (and the warm start
# of training) keyed on it would be thrown away. The pieces do not depend on it.
TRAIN_THREADS = 16


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> bytes:
    """Train on `texts` and return the serialised model (a .model file's bytes).

    `texts` is read once, lazily: sentencepiece keeps a reservoir sample of ``cfg.max_sentences`` lines,
    so an iterator over the corpus trains in memory that does not grow with it."""
    lines = (line for t in texts for line in t.split("\n") if line.strip())
    first = next(lines, None)
    if first is None:
        raise ValueError("The tokenizer has no training text: the corpus's training split is empty.")
    model = io.BytesIO()
    spm.set_random_generator_seed(cfg.seed)
    spm.SentencePieceTrainer.train(
        sentence_iterator=itertools.chain([first], lines),
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
        num_threads=TRAIN_THREADS,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        # Small corpora cannot fill a large vocabulary: stop early instead of failing.
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


def load_tokenizer(model_bytes: bytes) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_proto=model_bytes)


def _encoder(tok) -> Encoder:
    """An Encoder from what callers hold: an Encoder, or a sentencepiece processor (the older interface)."""
    if isinstance(tok, Encoder):
        return tok
    return TokenizerSource(SENTENCEPIECE, tok.serialized_model_proto()).load()


def tokenizer_report(tok: Encoder | spm.SentencePieceProcessor, val: pl.DataFrame | Iterable[pl.DataFrame],
                     each_batch=None, batch_rows: int = 10_000) -> dict:
    """Bytes per token per domain, byte-fallback rate, exact round trip and vocabulary use on `val`.

    val: the validation table, or an iterable of its batches (``Lake.iter_parquet``): only one batch is
    held at a time, so memory does not grow with the split. each_batch(texts, ids), when given, sees
    every batch's texts and ids (the asset's Hugging Face agreement count)."""
    enc = _encoder(tok)
    byte_ids = enc.byte_mask()
    used = np.zeros(enc.vocab_size, dtype=bool)
    frames = val.iter_slices(batch_rows) if isinstance(val, pl.DataFrame) else val
    n_docs = n_tokens = n_bytes = n_byte_tokens = roundtrip_failures = 0
    dom_tokens: dict[str, int] = {}
    dom_bytes: dict[str, int] = {}
    for frame in frames:
        texts, domains = frame["text"].to_list(), frame["domain"].to_list()
        ids = enc.encode(texts, threads=os.cpu_count() or 1)
        flat = np.fromiter((i for x in ids for i in x), dtype=np.int64)  # the batch's ids, once for all its counts
        n_byte_tokens += int(byte_ids[flat].sum())
        used[flat] = True
        n_docs, n_tokens = n_docs + len(texts), n_tokens + flat.size
        for x, text, domain in zip(ids, texts, domains):
            size = len(text.encode())
            n_bytes += size
            roundtrip_failures += enc.decode(x) != text
            dom_tokens[domain] = dom_tokens.get(domain, 0) + len(x)
            dom_bytes[domain] = dom_bytes.get(domain, 0) + size
        if each_batch is not None:
            each_batch(texts, ids)
    per_domain = {d: round(dom_bytes[d] / max(dom_tokens[d], 1), 3) for d in sorted(dom_tokens)}
    return {
        "kind": enc.kind,
        "sha256": enc.source.sha256,
        "vocab_size": enc.vocab_size,
        "eot_token": enc.source.eot_token,
        "eot_id": enc.eot_id,
        "val_documents": n_docs,
        "val_tokens": int(n_tokens),
        "bytes_per_token": round(n_bytes / max(n_tokens, 1), 3),
        "bytes_per_token_by_domain": per_domain,
        "byte_fallback_rate": n_byte_tokens / n_tokens if n_tokens else 0.0,
        "roundtrip_failures": int(roundtrip_failures),
        "vocab_used_fraction": round(int(used.sum()) / enc.vocab_size, 4),
    }


def encode_split(tok: Encoder | spm.SentencePieceProcessor, docs: pl.DataFrame, out_dir: Path, split: str,
                 shard_tokens: int) -> list[dict]:
    """Encode `docs` in order, each followed by the end-of-text id, into shards of about `shard_tokens`
    (an in-memory table; the token_shards asset streams corpus partitions through sharding.py).

    Shards end at document boundaries so each shard's byte count is exact (bits per byte needs it).
    Returns the manifest entries of the written shards.
    """
    enc = _encoder(tok)
    writer = ShardWriter(out_dir, lambda i: f"{split}_{i:05d}.bin", shard_tokens, enc.eot_id, enc.vocab_size)
    texts, domains = docs["text"].to_list(), docs["domain"].to_list()
    for ids, text, domain in zip(enc.encode(texts, threads=os.cpu_count() or 1), texts, domains):
        writer.add(ids, text, domain)
    return writer.close()


def build_manifest(tokenizer: bytes | TokenizerSource, tok: Encoder | spm.SentencePieceProcessor,
                   splits: dict[str, list[dict]], corpus: dict, tokenizer_cfg: TokenizerConfig | None = None,
                   base: dict | None = None) -> dict:
    """The shard manifest; its tokenizer block says which tokenizer made the shards (kind, sha256 of
    its file, end-of-text token and id) and, for a base model's tokenizer, which base (``base``)."""
    source, enc = as_source(tokenizer), _encoder(tok)
    return {
        "format_version": MANIFEST_VERSION,
        "tokenizer": {
            "kind": source.kind,
            "sha256": source.sha256,
            "vocab_size": enc.vocab_size,
            "eot_id": enc.eot_id,
            "eot_token": source.eot_token,
            "config": asdict(tokenizer_cfg) if tokenizer_cfg else None,
            **({"base": base} if base else {}),
        },
        "corpus": corpus,
        "splits": splits,
        "totals": {s: sum(e["tokens"] for e in entries) for s, entries in splits.items()},
    }


# ---------------------------------------------------------------------------------------------------
# A Hugging Face base model (TENALI_BASE_MODEL): a local folder or an s3:// prefix, read through the
# same pyarrow filesystems as the lake.

BASE_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def base_store(uri: str, s3_endpoint_url: str = ""):
    """The base model's folder as a Lake rooted at it (keys are file names: "config.json", ...)."""
    from .lake import Lake

    return Lake(uri, s3_endpoint_url=s3_endpoint_url or None)


def base_name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def read_base_tokenizer(uri: str, s3_endpoint_url: str = "") -> dict[str, bytes]:
    """config.json, tokenizer.json and (when present) tokenizer_config.json of the base; a base
    without a tokenizer.json is refused with the fix (a sentencepiece-only base must be converted)."""
    store = base_store(uri, s3_endpoint_url)
    if not store.exists("config.json"):
        raise ValueError(f"TENALI_BASE_MODEL={uri} has no config.json: point it at a Hugging Face model folder "
                         "(config.json, model.safetensors, tokenizer.json).")
    if not store.exists("tokenizer.json"):
        raise ValueError(f"TENALI_BASE_MODEL={uri} has no tokenizer.json: save the base's fast tokenizer next to it "
                         "(AutoTokenizer.from_pretrained(path).save_pretrained(path) writes one).")
    files = {"config.json": store.read_bytes("config.json")}
    for name in BASE_TOKENIZER_FILES:
        if store.exists(name):
            files[name] = store.read_bytes(name)
    return files


def base_eot_token(files: dict[str, bytes]) -> str:
    """The token that ends documents: ``<|endoftext|>`` when the base's vocabulary has it, else its eos
    token (tokenizer_config.json's eos_token, or config.json's eos_token_id)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(files["tokenizer.json"].decode())
    if tok.token_to_id(EOT) is not None:
        return EOT
    eos = json.loads(files.get("tokenizer_config.json", b"{}")).get("eos_token")
    if isinstance(eos, dict):
        eos = eos.get("content")
    if isinstance(eos, str) and tok.token_to_id(eos) is not None:
        return eos
    eos_id = json.loads(files["config.json"]).get("eos_token_id")
    eos_id = eos_id[0] if isinstance(eos_id, list) and eos_id else eos_id
    if isinstance(eos_id, int) and tok.id_to_token(eos_id) is not None:
        return tok.id_to_token(eos_id)
    raise ValueError(f"The base tokenizer has no {EOT!r} and names no eos token (tokenizer_config.json eos_token "
                     "or config.json eos_token_id): add the base's end-of-text token as eos_token in its "
                     "tokenizer_config.json.")


def fetch_base(uri: str, dest: Path, s3_endpoint_url: str = "") -> Path:
    """A local folder with the base model's files: the folder itself when local, else `dest`, synced
    from S3 (files whose size and time match are kept, each download is verified and atomic). Every
    file under the prefix is copied, so keep only the Hugging Face files there."""
    from .lake import Lake

    uri = uri.rstrip("/")
    if not uri.startswith("s3://"):
        folder = Path(uri).expanduser()
        if not folder.is_dir():
            raise ValueError(f"TENALI_BASE_MODEL={uri} is not a folder.")
        return folder
    parent, name = uri.rsplit("/", 1)
    if parent == "s3:/":
        raise ValueError(f"TENALI_BASE_MODEL={uri}: give s3://bucket/prefix, the folder holding the model.")
    return Lake(parent, s3_endpoint_url=s3_endpoint_url or None).download_dir(name, dest)


def base_weights_sha256(folder: Path) -> str:
    """Identity of a base model's weights: sha256 over config.json and every weight file's sha256."""
    from tenali_model.checkpoint import sha256_file

    index = folder / "model.safetensors.index.json"
    names = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for name in names:
        digest.update(f"{name}:{sha256_file(folder / name)}".encode())
    return digest.hexdigest()
