"""The corpus build over tables larger than memory: corpus.py's steps, run as stages over files.

:func:`build_corpus_stream` reads document tables from the lake a batch at a time and writes the
validation, unique-training and (mixed) training tables back a row group at a time. Between them, a
local work folder holds what the stages hand each other. The stages, in order:

1. **map**, per input table, ``batch_rows`` documents at a time: quality filters (counted per
   reason), the exact-dedup hash, MinHash signatures and LSH band keys (dedup.py). Writes the kept
   documents, their signatures, and (id, hash, date, doc_id) and (band, key, id) rows spread over
   ``K`` hash buckets, where ``K = ceil(input documents / bucket_docs)``: a bucket holds about
   ``bucket_docs`` documents whatever the corpus size. Those rows are written in spill files of
   ``spill_rows`` rows, a row group per bucket (`_Spills`), so the cost per document does not grow
   with ``K``.
2. **exact**, per bucket: the earliest (date, doc_id) copy of each hash is kept. The dropped ids and a
   date histogram of the survivors come back; the default validation start (the latest tenth of the
   documents, corpus.val_start_from_counts) is read off that histogram.
3. **near-duplicates**, per bucket: candidate pairs from shared band keys; verified against the
   signatures in two passes over the signature files (each pair joined to its first document's
   signature, filed under its second document's table, then compared there); then dedup.decide over
   the verified pairs only. Band keys shared by more than dedup.LISTED_GROUP documents give their
   members instead of their pairs, and those members' signatures are read for dedup.decide.
4. **write**, per input table: the kept documents split at the validation start and appended to the
   validation and unique-training tables, with per-domain counts and a few samples per domain.
5. **mix** (mixing.mix_batches): three passes over the unique-training table, written as the training
   table.

Memory is one batch, the spill buffers, one bucket, and what grows with the number of duplicates (8 bytes per dropped
id, the verified pairs, the signatures of documents in large band keys), never with the number of documents:
bench/bench_corpus.py measures it at 1x and 10x. Every stage but the last two is a loop over independent units
(``map`` and the two verification passes per input table, ``exact`` and the candidate pairs per bucket): with
``StreamConfig.workers`` above 1 they run in that many spawned processes. ``write`` and ``mix`` append
to one output file each and run in this process. Output
rows follow the input tables' order, sorted by (date, doc_id) within each batch, not globally.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import math
import multiprocessing as mp
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from ..lake import Lake, ParquetAppender
from .corpus import FilterConfig, _normalised, domain_stats, filter_documents, first_copies, val_start_from_counts
from .dedup import MinHasher, NearDupConfig, NearDupReport, candidates, decide, similarity
from .mixing import MixConfig, MixReport, mix_batches

SAMPLES_PER_DOMAIN = 2
SAMPLE_CHARS = 1_200


@dataclass(frozen=True)
class StreamConfig:
    batch_rows: int = 5_000  # documents per map batch (and per row group of the outputs)
    bucket_docs: int = 100_000  # documents per hash bucket: sets the bucket count from the input size
    workers: int = 1  # processes for the stages' units (an input table, a bucket); 1 = this process
    spill_rows: int = 500_000  # hash-bucket rows held per input table and kind before a spill file is written


@dataclass(frozen=True)
class CorpusKeys:
    """Where the outputs go in the lake."""
    train: str
    train_unique: str
    val: str


@dataclass
class CorpusSummary:
    val_start: dt.date
    input_documents: int
    buckets: int
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> documents: filters, exact, near-duplicates
    near_duplicates: NearDupReport | None = None
    mixing: MixReport | None = None
    stats: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # split -> domain -> documents, bytes
    dates: dict[str, list[str | None]] = field(default_factory=dict)  # split -> [first, last] date described
    samples: dict[str, list[str]] = field(default_factory=dict)  # domain -> a few training documents
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds (map, exact, near, write, mix)

    def total(self, split: str, what: str = "documents") -> int:
        return sum(s[what] for s in self.stats.get(split, {}).values())

    def counts(self) -> dict:
        """Everything counted on the way, JSON-ready (for asset metadata)."""
        return {
            "filters": {k: v for k, v in self.dropped.items() if not k.startswith(("duplicate_", "near_duplicate_"))},
            "duplicate_exact": self.dropped.get("duplicate_exact", 0),
            "near_duplicates": self.near_duplicates.to_dict() if self.near_duplicates else None,
            "mixing": self.mixing.to_dict() if self.mixing else None,
        }


class _Stats:
    """Per-domain documents and bytes, first and last date, for one output table."""

    def __init__(self):
        self.domains: dict[str, dict[str, int]] = {}
        self.first: dt.date | None = None
        self.last: dt.date | None = None

    def add(self, df: pl.DataFrame) -> None:
        if df.is_empty():
            return
        for domain, counts in domain_stats(df).items():
            s = self.domains.setdefault(domain, {"documents": 0, "bytes": 0})
            s["documents"] += counts["documents"]
            s["bytes"] += counts["bytes"]
        lo, hi = df["date"].min(), df["date"].max()
        self.first = lo if self.first is None else min(self.first, lo)
        self.last = hi if self.last is None else max(self.last, hi)

    def dates(self) -> list[str | None]:
        return [str(self.first) if self.first else None, str(self.last) if self.last else None]


class _Spills:
    """Rows spread over hash buckets (``column % buckets``), held in memory up to ``spill_rows`` rows and
    then written as one spill file, ``folder/<name>-<n>.arrow``: an Arrow IPC file (zstd buffers) with
    one record batch per bucket present (bucket -> batch in the schema's metadata). IPC rather than
    Parquet: a reader jumps to one bucket's batch through a footer of a few bytes per batch, where a
    Parquet footer with a row group per bucket would be parsed whole for every bucket read.

    Why spills and not a file per bucket: writing each batch's share of every bucket costs a row group
    per bucket per batch, and the bucket count grows with the corpus (``bucket_docs``), so the map
    stage's cost per document would grow with it (on the same 20,000 documents it took 1.34x as long
    with 200 buckets as with 2; docs/benchmarks.md). A spill costs one write per
    ``spill_rows`` rows whatever the bucket count; a bucket then reads one batch per spill."""

    def __init__(self, folder: Path, name: str, buckets: int, column: str, spill_rows: int):
        self.folder, self.name, self.buckets, self.column, self.spill_rows = folder, name, buckets, column, spill_rows
        self.held: list[pl.DataFrame] = []
        self.rows = self.spilled = 0

    def write(self, df: pl.DataFrame) -> None:
        self.held.append(df)
        self.rows += df.height
        if self.rows >= self.spill_rows:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        df = pl.concat(self.held).with_columns(_bucket=(pl.col(self.column) % self.buckets).cast(pl.Int64))
        self.held, self.rows = [], 0
        parts = sorted(df.partition_by("_bucket", as_dict=True, include_key=False).items())
        del df
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.name}-{self.spilled:05d}.arrow"
        self.spilled += 1
        tables = [part.to_arrow() for _, part in parts]
        schema = tables[0].schema.with_metadata({"tenali_buckets": ",".join(str(k) for (k,), _ in parts)})
        with pa.ipc.new_file(str(path), schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as out:
            for table in tables:
                out.write_batch(table.cast(schema).combine_chunks().to_batches()[0])

    def close(self) -> None:
        self.flush()


def _read_bucket(folder: Path, k: int) -> pl.DataFrame | None:
    """Bucket ``k``'s rows from every spill file in ``folder``."""
    parts = []
    for path in sorted(folder.glob("*.arrow")) if folder.exists() else []:
        with pa.OSFile(str(path)) as source:  # read into memory: the rows outlive the file handle
            reader = pa.ipc.open_file(source)
            index = reader.schema.metadata[b"tenali_buckets"].decode().split(",")
            if str(k) in index:
                parts.append(pl.from_arrow(reader.get_batch(index.index(str(k)))))
    return pl.concat(parts) if parts else None


def _read_all(folder: Path) -> pl.DataFrame | None:
    files = sorted(folder.glob("*.parquet")) if folder.exists() else []
    return pl.read_parquet(files) if files else None


def _map_input(lake: Lake, key: str, t: int, work: Path, buckets: int, batch_rows: int, spill_rows: int,
               filters: FilterConfig, hasher: MinHasher | None) -> tuple[int, Counter]:
    """Stage 1 for input table ``t``: filter, hash, sign; returns the documents kept and the filters' counts.
    Touches only its own files, so tables can be mapped by separate processes."""
    row, dropped = 0, Counter()
    with contextlib.ExitStack() as stack:
        docs = stack.enter_context(contextlib.closing(ParquetAppender(work / "docs" / f"{t:05d}.parquet")))
        sigs = stack.enter_context(contextlib.closing(ParquetAppender(work / "sigs" / f"{t:05d}.parquet")))
        exact = stack.enter_context(contextlib.closing(_Spills(work / "exact", f"{t:05d}", buckets, "h", spill_rows)))
        bands = stack.enter_context(contextlib.closing(_Spills(work / "bands", f"{t:05d}", buckets, "key", spill_rows)))
        for batch in lake.iter_parquet(key, batch_rows):
            kept, counts = filter_documents(batch, filters)
            dropped.update(counts)
            if kept.is_empty():
                continue
            ids = (t << 32) + row + np.arange(kept.height, dtype=np.int64)
            row += kept.height
            kept = kept.with_columns(id=pl.Series(ids), h=_normalised(pl.col("text")).hash(seed=0))
            docs.write(kept.drop("h"))
            exact.write(kept.select("id", "h", "date", "doc_id"))
            if hasher is not None:
                sig = hasher.signatures(kept["text"].to_list())
                sigs.write(kept.select("id", "doc_id", "date", "domain").with_columns(sig=pl.Series(sig)))
                bands.write(hasher.band_rows(ids, sig))
    return row, dropped


class _Units:
    """Runs a stage's independent units (an input table, a bucket): in this process, or in a pool of
    ``workers`` spawned processes shared by the stages. Results come back in the units' order."""

    def __init__(self, workers: int):
        self.pool = (cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) if workers > 1 else None)

    def map(self, fn, args: list[tuple]) -> list:
        if self.pool is None or len(args) < 2:
            return [fn(*a) for a in args]
        return list(self.pool.map(fn, *zip(*args)))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _map_all(lake: Lake, inputs: list[str], work: Path, buckets: int, stream: StreamConfig,
             filters: FilterConfig, hasher: MinHasher | None, units: _Units) -> tuple[int, dict[str, int]]:
    """Stage 1 over every input table."""
    args = [(lake, key, t, work, buckets, stream.batch_rows, stream.spill_rows, filters, hasher)
            for t, key in enumerate(inputs)]
    results = units.map(_map_input, args)
    dropped: Counter = Counter()
    for _, counts in results:
        dropped.update(counts)
    return sum(r for r, _ in results), dict(dropped)  # every filter reason, zeros included, in filter order


def _exact_bucket(work: Path, k: int) -> tuple[np.ndarray, pl.DataFrame] | None:
    df = _read_bucket(work / "exact", k)
    if df is None:
        return None
    df = first_copies(df)
    return df.filter(~pl.col("first"))["id"].to_numpy(), df.filter(pl.col("first")).group_by("date").len()


def _exact(work: Path, buckets: int, units: _Units) -> tuple[np.ndarray, pl.DataFrame]:
    """Stage 2: ids of the later exact copies, and the survivors' documents per date."""
    found = [r for r in units.map(_exact_bucket, [(work, k) for k in range(buckets)]) if r is not None]
    drops, hist = [d for d, _ in found], [h for _, h in found]
    dropped = np.sort(np.concatenate(drops)) if drops else np.zeros(0, dtype=np.int64)
    per_date = (pl.concat(hist).group_by("date").agg(pl.col("len").sum()).sort("date") if hist
                else pl.DataFrame(schema={"date": pl.Date, "len": pl.UInt32}))
    return dropped, per_date


def _outside(ids: pl.Series, drop: np.ndarray) -> pl.Series:
    """Whether each id is absent from the sorted array ``drop``: a binary search, so no hash set of
    ``drop`` is built per batch or bucket."""
    values = ids.to_numpy()
    if len(drop) == 0:
        return pl.Series(np.ones(len(values), dtype=bool))
    return pl.Series(drop[np.searchsorted(drop, values).clip(max=len(drop) - 1)] != values)


EXACT_DROPPED = "exact_dropped.npy"  # the exact stage's dropped ids, sorted: read by each bucket, mapped


def _candidates(work: Path, k: int) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """Bucket ``k``'s candidate pairs and the members of its large band keys (dedup.candidates)."""
    rows = _read_bucket(work / "bands", k)
    if rows is None:
        return None
    return candidates(rows.filter(_outside(rows["id"], np.load(work / EXACT_DROPPED, mmap_mode="r"))))


LARGE_MEMBERS = "large_members.npy"  # ids in large band keys, sorted: their signatures go to dedup.decide


def _large_signatures(work: Path, t: int, batch_rows: int) -> pl.DataFrame | None:
    """Table ``t``'s signatures (and doc_id, date, domain) of the documents in large band keys."""
    members = np.load(work / LARGE_MEMBERS, mmap_mode="r")
    lo, hi = np.searchsorted(members, [t << 32, (t + 1) << 32])
    if hi == lo or not (work / "sigs" / f"{t:05d}.parquet").exists():
        return None
    found = [batch.filter(~_outside(batch["id"], members[lo:hi]))
             for batch in Lake(str(work)).iter_parquet(f"sigs/{t:05d}.parquet", batch_rows)]
    return pl.concat(found)


def _side(s: str) -> dict[str, str]:
    """The signature file's columns, named for one side of a pair."""
    return {"id": s, "sig": f"sig_{s}", "doc_id": f"doc_{s}", "date": f"date_{s}", "domain": f"domain_{s}"}


def _file_first_signatures(work: Path, t: int, need: pl.DataFrame, batch_rows: int) -> None:
    """Pass A for table ``t``: its pairs' first signatures, filed under each pair's second table."""
    for i, batch in enumerate(Lake(str(work)).iter_parquet(f"sigs/{t:05d}.parquet", batch_rows)):
        joined = need.join(batch.rename(_side("a")), on="a")
        for (tb,), part in joined.partition_by("tb", as_dict=True).items():
            out = work / "verify" / f"{tb:05d}" / f"{t:05d}-{i:06d}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            part.write_parquet(out)


def _verify(work: Path, t: int, batch_rows: int, threshold: float) -> list[pl.DataFrame]:
    """Pass B for table ``t``: its signatures against the first signatures filed under it."""
    filed = _read_all(work / "verify" / f"{t:05d}")
    if filed is None:
        return []
    verified = []
    for batch in Lake(str(work)).iter_parquet(f"sigs/{t:05d}.parquet", batch_rows):
        j = filed.join(batch.rename(_side("b")), on="b")
        if j.is_empty():
            continue
        j = j.with_columns(similarity=pl.Series(similarity(j["sig_a"].to_numpy(), j["sig_b"].to_numpy())))
        verified.append(j.filter(pl.col("similarity") >= threshold).drop("sig_a", "sig_b"))
    return verified


def _near_duplicates(work: Path, buckets: int, inputs: int, exact_dropped: np.ndarray, val_start: dt.date,
                     cfg: NearDupConfig, batch_rows: int, units: _Units) -> tuple[dict[int, str], NearDupReport]:
    """Stage 3: candidates per bucket, verified against the signatures (two passes, per table), then decided."""
    np.save(work / EXACT_DROPPED, exact_dropped)  # once, not pickled to every bucket's task
    found = [c for c in units.map(_candidates, [(work, k) for k in range(buckets)]) if c is not None]
    pairs = pl.concat([p for p, _ in found]).unique() if found else pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64})
    large = pl.concat([g for _, g in found]) if found else None
    np.save(work / LARGE_MEMBERS, np.unique(large["id"].to_numpy()) if large is not None else np.zeros(0, np.int64))
    large_sigs = [s for s in units.map(_large_signatures, [(work, t, batch_rows) for t in range(inputs)])
                  if s is not None]
    pairs = pairs.with_columns(ta=pl.col("a") // (1 << 32), tb=pl.col("b") // (1 << 32))
    needs = [(t, pairs.filter(pl.col("ta") == t)) for t in range(inputs)]
    units.map(_file_first_signatures, [(work, t, need, batch_rows) for t, need in needs if not need.is_empty()])
    verified = [v for vs in units.map(_verify, [(work, t, batch_rows, cfg.threshold) for t in range(inputs)]) for v in vs]
    if not verified and not large_sigs:
        return {}, NearDupReport(by_domain={}, examples=[])
    v = pl.concat(verified) if verified else None
    docs = ([v.select(id=f"{s}", doc_id=f"doc_{s}", date=f"date_{s}", domain=f"domain_{s}") for s in "ab"]
            if v is not None else [])
    sigs = pl.concat(large_sigs) if large_sigs else None
    docs += [sigs.select("id", "doc_id", "date", "domain")] if sigs is not None else []
    docs = pl.concat(docs).unique("id").with_columns(is_val=pl.col("date") >= val_start)
    pairs = (v.select("a", "b", "similarity") if v is not None
             else pl.DataFrame(schema={"a": pl.Int64, "b": pl.Int64, "similarity": pl.Float64}))
    return decide(pairs, docs, groups=large, signatures=sigs.select("id", "sig") if sigs is not None else None,
                  threshold=cfg.threshold)


def build_corpus_stream(lake: Lake, inputs: list[str], outputs: CorpusKeys, *, work: Path,
                        val_start: dt.date | None = None, filters: FilterConfig | None = None,
                        near_dup: NearDupConfig | bool = True, mixing: MixConfig | None = None,
                        stream: StreamConfig | None = None) -> CorpusSummary:
    """Filter, deduplicate (exact, then near-duplicates across the split), split by time and mix the
    document tables at ``inputs`` into the tables at ``outputs`` (see the module docstring). ``work``
    is a local scratch folder, emptied first and removed at the end."""
    stream = stream or StreamConfig()
    filters = filters or FilterConfig()
    cfg = (near_dup if isinstance(near_dup, NearDupConfig) else NearDupConfig()) if near_dup is not False else None
    hasher = MinHasher(cfg) if cfg else None
    total = sum(lake.parquet_rows(k) for k in inputs)
    if total == 0:
        raise ValueError("No documents were rendered: materialise the source and document assets first.")
    buckets = max(1, math.ceil(total / stream.bucket_docs))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    units = _Units(min(stream.workers, max(len(inputs), buckets)))
    try:
        return _build(lake, inputs, outputs, work, val_start, filters, cfg, hasher, mixing, stream, total, buckets,
                      units)
    finally:
        units.close()
        shutil.rmtree(work, ignore_errors=True)


def _build(lake: Lake, inputs: list[str], outputs: CorpusKeys, work: Path, val_start: dt.date | None,
           filters: FilterConfig, cfg: NearDupConfig | None, hasher: MinHasher | None, mixing: MixConfig | None,
           stream: StreamConfig, total: int, buckets: int, units: _Units) -> CorpusSummary:
    seconds: dict[str, float] = {}
    since = time.perf_counter()

    def lap(stage: str) -> None:  # the wall seconds since the last lap, as this stage's
        nonlocal since
        now = time.perf_counter()
        seconds[stage], since = round(now - since, 3), now

    kept, dropped = _map_all(lake, inputs, work, buckets, stream, filters, hasher, units)
    lap("map")
    if kept == 0:
        raise ValueError(f"Every document was filtered out ({dropped}); loosen FilterConfig.")
    exact_dropped, per_date = _exact(work, buckets, units)
    lap("exact")
    dropped["duplicate_exact"] = len(exact_dropped)
    val_start = val_start or val_start_from_counts(per_date)
    n_train = int(per_date.filter(pl.col("date") < val_start)["len"].sum())
    n_val = int(per_date["len"].sum()) - n_train
    if n_train == 0 or n_val == 0:
        raise ValueError(
            f"The temporal split at {val_start} leaves {n_train} training and {n_val} validation "
            "documents; set TENALI_VAL_START inside the corpus's date range "
            f"({per_date['date'].min()} to {per_date['date'].max()})."
        )
    near, report = {}, None
    if cfg is not None:
        near, report = _near_duplicates(work, buckets, len(inputs), exact_dropped, val_start, cfg,
                                        stream.batch_rows, units)
        dropped["near_duplicate_val"] = report.near_duplicate_val
        dropped["near_duplicate_train"] = report.near_duplicate_train
        if report.near_duplicate_val + report.near_duplicate_train >= n_train:
            raise ValueError(f"Every training document near-duplicates a validation document ({dropped}); "
                             "raise NearDupConfig.threshold or move the validation start.")
        lap("near_duplicates")
    drop = np.union1d(exact_dropped, np.fromiter(near, dtype=np.int64, count=len(near)))
    summary = CorpusSummary(val_start=val_start, input_documents=total, buckets=buckets, dropped=dropped,
                            near_duplicates=report)
    schema = lake.parquet_schema(inputs[0])
    stats = {"train_unique": _Stats(), "val": _Stats(), "train": _Stats()}
    with contextlib.ExitStack() as stack:
        val_w = stack.enter_context(lake.parquet_writer(outputs.val, schema=schema))
        uniq_w = stack.enter_context(lake.parquet_writer(outputs.train_unique, schema=schema))
        train_w = None if mixing else stack.enter_context(lake.parquet_writer(outputs.train, schema=schema))
        for t in range(len(inputs)):
            path = work / "docs" / f"{t:05d}.parquet"
            if not path.exists():
                continue
            for batch in Lake(str(work)).iter_parquet(f"docs/{t:05d}.parquet", stream.batch_rows):
                lo, hi = np.searchsorted(drop, [batch["id"][0], batch["id"][-1] + 1])
                if hi > lo:
                    batch = batch.filter(_outside(batch["id"], drop[lo:hi]))
                batch = batch.drop("id").sort("date", "doc_id")
                val, train = batch.filter(pl.col("date") >= val_start), batch.filter(pl.col("date") < val_start)
                val_w.write(val)
                uniq_w.write(train)
                stats["val"].add(val)
                stats["train_unique"].add(train)
                if train_w is not None:
                    train_w.write(train)
                for domain, texts in train.group_by("domain").agg(pl.col("text").head(SAMPLES_PER_DOMAIN)).iter_rows():
                    have = summary.samples.setdefault(domain, [])
                    have.extend(t[:SAMPLE_CHARS] for t in texts[: SAMPLES_PER_DOMAIN - len(have)])
    lap("write")
    if mixing is None:
        stats["train"] = stats["train_unique"]
    else:
        def write(df):
            train_w.write(df)
            stats["train"].add(df)
        with lake.parquet_writer(outputs.train, schema=schema) as train_w:
            summary.mixing = mix_batches(lambda: lake.iter_parquet(outputs.train_unique, stream.batch_rows),
                                         write, mixing)
    lap("mix")
    summary.seconds = seconds
    summary.stats = {split: dict(sorted(s.domains.items())) for split, s in stats.items()}
    summary.dates = {split: s.dates() for split, s in stats.items()}
    summary.samples = dict(sorted(summary.samples.items()))
    return summary
