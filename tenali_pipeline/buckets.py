"""Instrument buckets: how the per-instrument sources (market prices, filings, fundamentals) are partitioned.

Why buckets, not dates or one partition per ticker (DESIGN.md, "partitions must survive real scale"):
- Yahoo, EDGAR and the SEC's companyfacts serve a whole instrument's history in one request, so a
  date-partitioned backfill would ask for every ticker once per day or month (10,000 tickers x 120
  months = 1.2M requests instead of 10,000).
- A date x ticker grid passes Dagster's ~100,000-partition advice at 10,000 tickers after ten days.
- One partition per ticker fits the limit but makes the end-of-day update 10,000 runs.

So each instrument goes to a fixed bucket by a stable hash of its id (`bucket_of`), a run fetches one
bucket's instruments (about 300 at 10,000 tickers and 32 buckets), the partition count does not grow
with the universe, and a failing ticker fails only its bucket. ``TENALI_INSTRUMENT_BUCKETS`` sets the
count: 1 (the demo's default) leaves these sources unpartitioned, so ``tenali demo`` stays one run.

Layout: a bucketed table is a folder of ``bucket-07-of-32.parquet`` files plus ``_buckets.json``
(``{"count": 32}``), written by each bucket's asset, which readers use to read exactly the current
set: files left by another count are ignored, and a missing bucket is a clear error.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import polars as pl

MANIFEST = "_buckets.json"
_FILE = re.compile(r"bucket-(\d+)-of-(\d+)\.parquet$")


def bucket_of(item: str, count: int) -> int:
    """The bucket of `item` (a ticker or CIK): stable across processes, machines and Python versions."""
    digest = hashlib.sha1(item.strip().upper().encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def _width(count: int) -> int:
    return max(2, len(str(count - 1)))


def bucket_keys(count: int) -> list[str]:
    """Partition keys ``00``..``NN`` for `count` buckets."""
    if count < 1:
        raise ValueError(f"TENALI_INSTRUMENT_BUCKETS must be at least 1, not {count}")
    return [f"{i:0{_width(count)}d}" for i in range(count)]


@dataclass(frozen=True)
class Bucket:
    """One bucket of `count`; `Bucket.whole()` stands for an unpartitioned run holding every instrument."""

    index: int
    count: int

    @classmethod
    def whole(cls) -> Bucket:
        return cls(0, 1)

    @classmethod
    def from_key(cls, key: str, count: int) -> Bucket:
        index = int(key)
        if not 0 <= index < count:
            raise ValueError(f"bucket {key!r} is not one of the {count} buckets")
        return cls(index, count)

    @property
    def key(self) -> str:
        return f"{self.index:0{_width(self.count)}d}"

    def holds(self, item: str) -> bool:
        return self.count == 1 or bucket_of(item, self.count) == self.index

    def select(self, items):
        """The items (in order) that belong to this bucket; a dict keeps its values."""
        if isinstance(items, dict):
            return {k: v for k, v in items.items() if self.holds(k)}
        return [i for i in items if self.holds(i)]

    @property
    def name(self) -> str:
        """"bucket-03-of-16": the stem of its file, and of its run's state file and response archive."""
        w = _width(self.count)
        return f"bucket-{self.index:0{w}d}-of-{self.count:0{w}d}"

    def file(self, folder: str) -> str:
        return f"{folder}/{self.name}.parquet"

    def __str__(self) -> str:
        return f"bucket {self.key} of {self.count}"


def write_bucket(lake, folder: str, bucket: Bucket, df: pl.DataFrame) -> str:
    """Write one bucket's table (atomically) and the folder's manifest."""
    uri = lake.write_parquet(bucket.file(folder), df)
    manifest = f"{folder}/{MANIFEST}"
    if not lake.exists(manifest) or lake.read_json(manifest).get("count") != bucket.count:
        lake.write_json(manifest, {"count": bucket.count})
    return uri


def read_bucket(lake, folder: str, bucket: Bucket) -> pl.DataFrame | None:
    """This bucket's table as last written, or None the first time."""
    key = bucket.file(folder)
    return lake.read_parquet(key) if lake.exists(key) else None


def bucket_files(lake, folder: str) -> dict[int, dict[int, str]]:
    """{count: {index: key}} of every bucket file in `folder`, whatever count wrote it."""
    found: dict[int, dict[int, str]] = {}
    for key in lake.list(folder):
        m = _FILE.search(key)
        if m:
            found.setdefault(int(m.group(2)), {})[int(m.group(1))] = key
    return found


def read_bucketed(lake, folder: str, *, asset: str) -> pl.DataFrame:
    """Every bucket of the current count, concatenated; an error names the buckets still missing."""
    manifest = f"{folder}/{MANIFEST}"
    if not lake.exists(manifest):
        raise FileNotFoundError(f"{lake.uri(folder)} holds no buckets: materialise {asset} first "
                                "(every partition: a backfill, when TENALI_INSTRUMENT_BUCKETS > 1)")
    count = int(lake.read_json(manifest)["count"])
    files = bucket_files(lake, folder).get(count, {})
    missing = [Bucket(i, count).key for i in range(count) if i not in files]
    if missing:
        shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise FileNotFoundError(f"{asset}: {len(missing)} of {count} buckets not materialised yet ({shown}): "
                                "materialise the missing partitions (a backfill) first")
    # diagonal: a column added to a schema later (filings' exhibits) reads as null in buckets written before it
    return pl.concat([lake.read_parquet(files[i]) for i in range(count)], how="diagonal_relaxed")


def seed_from_other_counts(lake, folder: str, bucket: Bucket, key_column: str) -> pl.DataFrame | None:
    """This bucket's rows from files written under another bucket count, so that changing
    ``TENALI_INSTRUMENT_BUCKETS`` re-buckets what was collected instead of fetching it all again."""
    parts = [lake.read_parquet(k) for count, files in bucket_files(lake, folder).items() if count != bucket.count
             for k in files.values()]
    if not parts:
        return None
    df = pl.concat(parts, how="diagonal_relaxed")
    keep = [v for v in df[key_column].unique().to_list() if v is not None and bucket.holds(v)]
    return df.filter(pl.col(key_column).is_in(keep))
