"""Token shards built in parallel and incrementally, with memory independent of corpus size.

The corpus splits are Parquet files sorted by date. A split is cut into *partitions*: runs of whole
calendar months, closed greedily from the first month once they hold ``partition_bytes`` of text,
so appending new days changes only the last partition and adds new ones. Each partition has a
fingerprint of its content and order (a polars hash of every text, weighted by its position).

Building shards then means, per partition:
- when the previous manifest has the same split, partition, fingerprint and tokenizer, its shards are
  reused as they are (no re-encoding);
- otherwise a worker process reads only that partition's rows (a row slice of the sorted file),
  encodes them in batches of ``batch_docs`` documents, appends the end-of-text id to each, and
  writes shards of about ``shard_tokens`` tokens, cut at document boundaries so each shard's byte
  count is exact (bits per byte needs it).

The tokenizer is a `TokenizerSource`: Tenali's sentencepiece model, or a Hugging Face base model's
tokenizer.json (the continued-pretraining path), given as bytes so a spawned worker rebuilds it.
A new tokenizer invalidates every partition. Workers hold one batch and one shard at a time, and the
parent only ever holds per-month statistics, so peak memory does not grow with the corpus.

Shard names carry the split and partition (``train_2011-01_2011-06_0003.bin``); the manifest records,
for every shard, the partition it came from and that partition's fingerprint.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import multiprocessing as mp
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
from tenali_model.sentencepiece_proto import with_control_pieces
from tenali_model.tokenizer import EOT, SPECIAL_TOKENS

FINGERPRINT_METHOD = f"polars-{pl.__version__}-hash42-positional"


@dataclass(frozen=True)
class Partition:
    split: str              # shard name prefix: "train" or "val_<domain>"
    label: str              # "2011-01_2011-06"
    path: str               # the sorted Parquet file it reads
    domain: str | None      # rows of this domain only (validation shards are per domain)
    offset: int             # first row of the partition in the (domain-filtered) file
    rows: int
    bytes: int
    fingerprint: str


def _scan(path: str, domain: str | None) -> pl.LazyFrame:
    lf = pl.scan_parquet(path)
    return lf.filter(pl.col("domain") == domain) if domain is not None else lf


def plan_partitions(path: str | os.PathLike, split: str, partition_bytes: int, domain: str | None = None) -> list[Partition]:
    """Partitions of a date-sorted split file, from one streaming pass over its text."""
    lf = _scan(str(path), domain).select("date", "text").with_row_index("_i")
    months = (lf.with_columns(month=pl.col("date").dt.strftime("%Y-%m"),
                              _h=pl.col("text").hash(42), _n=pl.col("text").str.len_bytes())
              .group_by("month").agg(first=pl.col("_i").min(), rows=pl.len(), bytes=pl.col("_n").sum(),
                                     # order-sensitive: each text's hash weighted by its row position
                                     fp=(pl.col("_h") * (pl.col("_i").cast(pl.UInt64) + 1)).sum())
              .sort("first").collect(engine="streaming"))
    out: list[Partition] = []
    start = None
    acc_rows = acc_bytes = 0
    fps: list[str] = []
    for i, m in enumerate(months.iter_rows(named=True)):
        if start is None:
            start, first_month, offset = m, m["month"], m["first"]
        acc_rows += m["rows"]
        acc_bytes += m["bytes"]
        fps.append(f"{m['month']}:{m['rows']}:{m['fp']}")
        if acc_bytes >= partition_bytes or i == months.height - 1:
            fingerprint = f"{hash_strings(fps):016x}"
            out.append(Partition(split, f"{first_month}_{m['month']}", str(path), domain, offset, acc_rows, acc_bytes,
                                 fingerprint))
            start, acc_rows, acc_bytes, fps = None, 0, 0, []
    # The file must be sorted by date for partitions to be contiguous row ranges.
    for a, b in zip(out, out[1:]):
        if a.offset + a.rows != b.offset:
            raise ValueError(f"{path} is not sorted by date: months interleave; sort the corpus split by date.")
    return out


def hash_strings(items: list[str]) -> int:
    return int(pl.Series(["\n".join(items)]).hash(42)[0])


# ---------------------------------------------------------------------------------------------------
# Tokenizers: what encodes the corpus (also used by tokenization.py and the evaluation).

SENTENCEPIECE, HF_BASE = "sentencepiece", "hf-base"


@dataclass(frozen=True)
class TokenizerSource:
    """A tokenizer as the bytes of its file, so a spawned worker can rebuild it: Tenali's sentencepiece
    model (kind "sentencepiece") or a Hugging Face base model's tokenizer.json (kind "hf-base"), with
    the token that ends every document (a base without ``<|endoftext|>`` uses its own eos token)."""

    kind: str
    data: bytes
    eot_token: str = EOT

    def __post_init__(self) -> None:
        if self.kind not in (SENTENCEPIECE, HF_BASE):
            raise ValueError(f"tokenizer kind {self.kind!r} is not {SENTENCEPIECE!r} or {HF_BASE!r}")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def load(self) -> Encoder:
        return Encoder(self)


def as_source(tokenizer: bytes | TokenizerSource) -> TokenizerSource:
    """Bare bytes are a sentencepiece model (what callers passed before base models existed)."""
    return tokenizer if isinstance(tokenizer, TokenizerSource) else TokenizerSource(SENTENCEPIECE, bytes(tokenizer))


_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


class Encoder:
    """Batch encoding, decoding and the ids shards need, over sentencepiece or a `tokenizers.Tokenizer`.

    No special tokens are added by the encoder (no BOS): a document is its text's ids, then ``eot_id``.
    Document text is encoded as text: a special token's string inside it (``<|endoftext|>``, a chat
    marker, a base's ``</s>``) becomes ordinary pieces, never the special id, so the only end-of-text
    ids in a shard are the ones that end documents. ``sp`` / ``hf`` are the tokenizer as loaded (special
    strings match: what chat encoding wants); documents go through a copy that treats them as text.
    A tokenizer.json's truncation and padding settings are switched off (a document is encoded whole).
    """

    def __init__(self, source: TokenizerSource):
        self.source, self.kind = source, source.kind
        if source.kind == SENTENCEPIECE:
            import sentencepiece as spm

            self.sp, self.hf = spm.SentencePieceProcessor(model_proto=source.data), None
            self._text_sp = spm.SentencePieceProcessor(
                model_proto=with_control_pieces(source.data, {*SPECIAL_TOKENS, source.eot_token}))
            self.vocab_size = self.sp.vocab_size()
            eot = self.sp.piece_to_id(source.eot_token)
            eot = None if eot == self.sp.unk_id() and source.eot_token != self.sp.id_to_piece(eot) else eot
        else:
            from tokenizers import Tokenizer

            self.sp, self.hf = None, Tokenizer.from_str(source.data.decode())
            self._text_hf = Tokenizer.from_str(source.data.decode())
            for t in (self.hf, self._text_hf):
                t.no_truncation()
                t.no_padding()
            self._text_hf.encode_special_tokens = True  # special tokens' strings in text are split as text
            # Ids can have gaps (a vocabulary's size counts entries): the shard dtype must hold the largest id.
            ids = self.hf.get_vocab(with_added_tokens=True).values()
            self.vocab_size = max(self.hf.get_vocab_size(with_added_tokens=True), max(ids, default=-1) + 1)
            eot = self.hf.token_to_id(source.eot_token)
        if eot is None:
            raise ValueError(f"the {source.kind} tokenizer has no {source.eot_token!r} token to end documents with")
        self.eot_id = int(eot)

    def encode(self, texts: list[str], threads: int = 1) -> list[list[int]]:
        if self.sp is not None:
            return self._text_sp.encode(texts, num_threads=threads)
        return [e.ids for e in self._text_hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        return self.sp.decode(ids) if self.sp is not None else self.hf.decode(ids, skip_special_tokens=False)

    def byte_mask(self) -> np.ndarray:
        """True for byte-fallback pieces (``<0xNN>``); a byte-level BPE has none, all its pieces are bytes."""
        if self.sp is not None:
            return np.array([self.sp.is_byte(i) for i in range(self.vocab_size)], dtype=bool)
        mask = np.zeros(self.vocab_size, dtype=bool)
        for piece, i in self.hf.get_vocab(with_added_tokens=True).items():
            if i < self.vocab_size and _BYTE_PIECE.match(piece):
                mask[i] = True
        return mask


# ---------------------------------------------------------------------------------------------------
# Worker side (a separate process; imports nothing from Dagster).

_ENC: Encoder | None = None
_THREADS = 1


def _init_worker(tokenizer: bytes | TokenizerSource, threads: int = 1) -> None:
    global _ENC, _THREADS
    if threads == 1:  # one of several worker processes: keep the tokenizers library to one thread too
        os.environ.setdefault("RAYON_NUM_THREADS", "1")
    _ENC, _THREADS = as_source(tokenizer).load(), threads


class ShardWriter:
    """Documents in, shards out: each document gets the end-of-text id, shards close at document boundaries
    once the next document would pass ``shard_tokens`` (a longer document gets a shard of its own)."""

    def __init__(self, out_dir: str | os.PathLike, name, shard_tokens: int, eot: int, vocab_size: int,
                 extra: dict | None = None):
        self.out_dir, self.name, self.shard_tokens, self.eot = Path(out_dir), name, shard_tokens, eot
        self.vocab_size, self.extra = vocab_size, extra or {}
        self.dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
        self.entries: list[dict] = []
        self._buf: list[np.ndarray] = []
        self._reset()

    def _reset(self) -> None:
        self.stats = {"tokens": 0, "documents": 0, "bytes": 0, "domains": {}}

    def add(self, ids, text: str, domain: str) -> None:
        arr = np.fromiter((*ids, self.eot), dtype=np.int64, count=len(ids) + 1)
        st = self.stats
        if st["tokens"] and st["tokens"] + arr.size > self.shard_tokens:
            self.flush()
            st = self.stats
        self._buf.append(arr)
        st["tokens"] += int(arr.size)
        st["documents"] += 1
        st["bytes"] += len(text.encode())
        st["domains"][domain] = st["domains"].get(domain, 0) + int(arr.size)

    def flush(self) -> None:
        from tenali_model.data import write_shard

        if not self._buf:
            return
        name = self.name(len(self.entries))
        # int64 in: write_shard checks every id against vocab_size before narrowing (an astype here would
        # wrap an id above 65,535 into a valid-looking one)
        write_shard(self.out_dir / name, np.concatenate(self._buf), vocab_size=self.vocab_size)
        self.entries.append({"file": name, **self.stats, "domains": dict(sorted(self.stats["domains"].items())),
                             **self.extra})
        self._buf.clear()
        self._reset()

    def close(self) -> list[dict]:
        self.flush()
        return self.entries


def encode_partition(part: Partition, out_dir: str, shard_tokens: int, batch_docs: int = 2048) -> list[dict]:
    """Encode one partition into shards in out_dir; returns their manifest entries."""
    enc = _ENC
    writer = ShardWriter(out_dir, lambda i: f"{part.split}_{part.label}_{i:04d}.bin", shard_tokens,
                         enc.eot_id, enc.vocab_size,
                         extra={"prefix": part.split, "partition": part.label, "fingerprint": part.fingerprint})
    # One read of the partition (bounded by partition_bytes, whatever the corpus size), encoded in batches.
    rows = _scan(part.path, part.domain).slice(part.offset, part.rows).select("text", "domain").collect()
    for batch in rows.iter_slices(batch_docs):
        texts, domains = batch["text"].to_list(), batch["domain"].to_list()
        for ids, text, domain in zip(enc.encode(texts, threads=_THREADS), texts, domains):
            writer.add(ids, text, domain)
    return writer.close()


# ---------------------------------------------------------------------------------------------------
# Parent side.

@dataclass
class BuildReport:
    partitions: int
    encoded: int
    reused: int
    workers: int


def build_shards(parts: list[Partition], tokenizer: bytes | TokenizerSource, tokenizer_sha256: str, out_dir: Path,
                 shard_tokens: int, previous: dict | None = None, previous_dir: Path | None = None,
                 workers: int | None = None, batch_docs: int = 2048) -> tuple[dict[str, list[dict]], BuildReport]:
    """Shard entries per split prefix ("train", "val_<domain>"), reusing unchanged partitions.

    tokenizer: a `TokenizerSource`, or a sentencepiece model's bytes; tokenizer_sha256 keys the reuse
    (a partition is reused only when the previous manifest's tokenizer has the same sha256).

    previous / previous_dir: the last manifest and the folder holding its shards; a reused shard is
    hard-linked (or copied) from there into out_dir.
    """
    reusable: dict[tuple[str, str, str], list[dict]] = {}
    source = as_source(tokenizer)
    prev_tok = (previous or {}).get("tokenizer", {})
    # The same tokenizer.json can end documents with another token (a base's tokenizer_config.json names
    # its eos): reused shards would keep the old end-of-text id next to new ones, under a manifest naming one.
    if previous and previous_dir is not None and prev_tok.get("sha256") == tokenizer_sha256 \
            and prev_tok.get("eot_token", source.eot_token) == source.eot_token \
            and previous.get("fingerprint_method") == FINGERPRINT_METHOD:
        for entries in previous.get("splits", {}).values():
            for e in entries:
                if "partition" in e:
                    reusable.setdefault((e["prefix"], e["partition"], e["fingerprint"]), []).append(e)
    todo, done = [], {}
    reused = 0
    for p in parts:
        old = reusable.get((p.split, p.label, p.fingerprint))
        if old and all((previous_dir / e["file"]).is_file() for e in old):
            for e in old:
                _link(previous_dir / e["file"], out_dir / e["file"])
            done[p] = [{k: v for k, v in e.items() if k != "domain"} for e in old]
            reused += 1
        else:
            todo.append(p)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    if todo:
        if workers == 1:  # one partition to encode: the tokenizer's own threads instead of processes
            _init_worker(tokenizer, threads=os.cpu_count() or 1)
            for p in todo:
                done[p] = encode_partition(p, str(out_dir), shard_tokens, batch_docs)
        else:
            # spawn, not fork: the parent may be a threaded Dagster step process.
            with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                        initargs=(source,)) as pool:
                futures = {pool.submit(encode_partition, p, str(out_dir), shard_tokens, batch_docs): p for p in todo}
                for f in cf.as_completed(futures):
                    done[futures[f]] = f.result()
    splits: dict[str, list[dict]] = {}
    for p in parts:  # manifest order: the file order (date order) within each split prefix
        splits.setdefault(p.split, []).extend(done[p])
    return splits, BuildReport(len(parts), len(todo), reused, workers if todo else 0)


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def partition_summary(parts: list[Partition]) -> list[dict]:
    return [{k: v for k, v in asdict(p).items() if k != "path"} for p in parts]
