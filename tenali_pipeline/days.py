"""Daily partitions: how the on-chain sources (DefiLlama, CoinGecko) are partitioned by the day described.

Why days here and buckets for instruments (`tenali_pipeline.buckets`): these sources hold a handful of
series (chains, protocols, coins), so a partition per item would be tiny, while their history is long
(DefiLlama from 2018) and revised at the source. A day per partition gives Dagster's UI the history as
a calendar (which days are held, which failed), a daily schedule that fills the newest day, and a
backfill that fills any range. A backfill runs as one run over its whole range
(``BackfillPolicy.single_run()``): DefiLlama serves a series' whole history per request and CoinGecko
a date range, so each series is asked once per backfill, not once per day.

Layout: a daily table is a folder of ``YYYY-MM-DD.parquet`` files, one per day of the partition range,
each holding the rows whose date is that day (an empty table for a day the source has nothing for, so
that a materialised day always has its file). Re-running a range rewrites exactly its days.
"""

from __future__ import annotations

import datetime as dt
import re

import polars as pl

_FILE = re.compile(r"/(\d{4}-\d{2}-\d{2})\.parquet$")


def day_file(folder: str, day: dt.date) -> str:
    return f"{folder}/{day.isoformat()}.parquet"


def days(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from `first` to `last`, both included."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def window_of(context) -> tuple[dt.date, dt.date]:
    """(first, last) day of a run's partition range (one day, or a backfill's whole range)."""
    window = context.partition_time_window
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()


def day_files(lake, folder: str) -> dict[dt.date, str]:
    """{day: key} of every day file in `folder`."""
    found = {}
    for key in lake.list(folder):
        m = _FILE.search(key)
        if m:
            found[dt.date.fromisoformat(m.group(1))] = key
    return found


def read_days(lake, folder: str, schema: dict, first: dt.date | None = None,
              last: dt.date | None = None) -> pl.DataFrame:
    """The rows of every day file in `folder` (those from `first` to `last` when given), as one table."""
    keys = [k for d, k in sorted(day_files(lake, folder).items())
            if (first is None or d >= first) and (last is None or d <= last)]
    return lake.read_parquet_files(keys, schema=schema)


def upsert(old: pl.DataFrame, new: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """`new`'s rows, and those of `old` whose key `new` lacks: after a partial failure, an item that
    failed keeps the rows it had while the items that answered are replaced."""
    if old.is_empty():
        return new
    return pl.concat([old.join(new.select(keys), on=keys, how="anti"), new], how="diagonal_relaxed")


def write_days(lake, folder: str, df: pl.DataFrame, *, time_column: str, first: dt.date, last: dt.date,
               keys: list[str] | None = None) -> str:
    """Write one file per day from `first` to `last` with that day's rows of `df` (rows outside the
    range are not written). `keys`: merge into the files already there (`upsert`) instead of
    replacing them. Returns the folder's address."""
    by_day = {d: part for (d,), part in df.partition_by(time_column, as_dict=True).items()} if df.height else {}
    held = day_files(lake, folder) if keys else {}
    for day in days(first, last):
        rows = by_day.get(day, df.clear())
        if keys and day in held:
            rows = upsert(lake.read_parquet(held[day]), rows, keys)
        lake.write_parquet(day_file(folder, day), rows)
    return lake.uri(folder)
