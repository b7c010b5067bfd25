"""Token shards built in parallel and incrementally, with memory independent of corpus size.

The corpus splits are Parquet files sorted by date. A split is cut into *partitions*: runs of whole
calendar months, closed greedily from the first month once they hold ``partition_bytes`` of text,
so appending new days changes only the last partition and adds new ones. Each partition has a
fingerprint of its content and order (a polars hash of every text, weighted by its position).

Building shards then means, per partition:
- when the previous manifest has the same split, partition, fingerprint and tokenizer, its shards are
  reused as they are (no re-encoding);
- otherwise a worker process reads only that partition's rows (a row slice of the sorted file),
  encodes them in batches of ``batch_docs`` documents with sentencepiece, appends <|endoftext|> to
  each, and writes shards of about ``shard_tokens`` tokens, cut at document boundaries so each
  shard's byte count is exact (bits per byte needs it).
A new tokenizer invalidates every partition. Workers hold one batch and one shard at a time, and the
parent only ever holds per-month statistics, so peak memory does not grow with the corpus.

Shard names carry the split and partition (``train_2011-01_2011-06_0003.bin``); the manifest records,
for every shard, the partition it came from and that partition's fingerprint.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
from tenali_model.tokenizer import EOT

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
# Worker side (a separate process; imports nothing from Dagster).

_SP = None
_THREADS = 1


def _init_worker(model_bytes: bytes, threads: int = 1) -> None:
    global _SP, _THREADS
    import sentencepiece as spm

    _SP, _THREADS = spm.SentencePieceProcessor(model_proto=model_bytes), threads


class ShardWriter:
    """Documents in, shards out: each document gets <|endoftext|>, shards close at document boundaries
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
        write_shard(self.out_dir / name, np.concatenate(self._buf).astype(self.dtype), vocab_size=self.vocab_size)
        self.entries.append({"file": name, **self.stats, "domains": dict(sorted(self.stats["domains"].items())),
                             **self.extra})
        self._buf.clear()
        self._reset()

    def close(self) -> list[dict]:
        self.flush()
        return self.entries


def encode_partition(part: Partition, out_dir: str, shard_tokens: int, batch_docs: int = 2048) -> list[dict]:
    """Encode one partition into shards in out_dir; returns their manifest entries."""
    sp = _SP
    writer = ShardWriter(out_dir, lambda i: f"{part.split}_{part.label}_{i:04d}.bin", shard_tokens,
                         sp.piece_to_id(EOT), sp.vocab_size(),
                         extra={"prefix": part.split, "partition": part.label, "fingerprint": part.fingerprint})
    # One read of the partition (bounded by partition_bytes, whatever the corpus size), encoded in batches.
    rows = _scan(part.path, part.domain).slice(part.offset, part.rows).select("text", "domain").collect()
    for batch in rows.iter_slices(batch_docs):
        texts, domains = batch["text"].to_list(), batch["domain"].to_list()
        for ids, text, domain in zip(sp.encode(texts, num_threads=_THREADS), texts, domains):
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


def build_shards(parts: list[Partition], model_bytes: bytes, tokenizer_sha256: str, out_dir: Path,
                 shard_tokens: int, previous: dict | None = None, previous_dir: Path | None = None,
                 workers: int | None = None, batch_docs: int = 2048) -> tuple[dict[str, list[dict]], BuildReport]:
    """Shard entries per split prefix ("train", "val_<domain>"), reusing unchanged partitions.

    previous / previous_dir: the last manifest and the folder holding its shards; a reused shard is
    hard-linked (or copied) from there into out_dir.
    """
    reusable: dict[tuple[str, str, str], list[dict]] = {}
    if previous and previous_dir is not None and previous.get("tokenizer", {}).get("sha256") == tokenizer_sha256 \
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
        if workers == 1:  # one partition to encode: sentencepiece's own threads instead of processes
            _init_worker(model_bytes, threads=os.cpu_count() or 1)
            for p in todo:
                done[p] = encode_partition(p, str(out_dir), shard_tokens, batch_docs)
        else:
            # spawn, not fork: the parent may be a threaded Dagster step process.
            with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                        initargs=(model_bytes,)) as pool:
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
