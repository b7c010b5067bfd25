"""Incremental updates of per-instrument daily histories: ask only for what is new, merge without duplicates.

Used by the bucketed sources (market prices; see `defs/common.py`). Rules, and why:
- An instrument checked less than `min_interval` ago is not asked again, so a second run right after
  a first fetches nothing (the check times live in the partition's state file).
- An instrument already held is asked from its last stored day minus `overlap`: the last bar may have
  been taken intraday, and a few days back catches late corrections.
- The overlap also detects a history the source has re-adjusted (Yahoo rewrites ``adj_close`` back to
  the listing after every dividend and split): when an overlapping value changed, the instrument's
  whole history is fetched again instead of mixing two adjustment bases.
- Fetched rows replace stored rows with the same (instrument, day); the result is sorted by key, so
  re-running a partition never duplicates a row.
"""

from __future__ import annotations

import datetime as dt

import polars as pl


def plan_updates(
    previous: pl.DataFrame | None,
    items: list[str],
    *,
    key: str,
    time_column: str,
    checked: dict[str, str],
    now: dt.datetime,
    min_interval: dt.timedelta,
    overlap: dt.timedelta = dt.timedelta(days=7),
) -> dict[str, dt.date | None]:
    """{item: first day to ask for (None: the whole history)} for the items due for an update."""
    last: dict[str, dt.date] = {}
    if previous is not None and previous.height:
        for item, day in previous.group_by(key).agg(pl.col(time_column).max()).iter_rows():
            last[item] = day.date() if isinstance(day, dt.datetime) else day
    due: dict[str, dt.date | None] = {}
    for item in items:
        seen = checked.get(item)
        if seen and now - dt.datetime.fromisoformat(seen) < min_interval:
            continue  # asked recently, whether or not it had rows (a 404, a ticker without bars)
        due[item] = last[item] - overlap if item in last else None
    return due


def merge_updates(
    previous: pl.DataFrame | None,
    fetched: pl.DataFrame,
    *,
    key: str,
    time_column: str,
    compare: tuple[str, ...] = (),
    rtol: float = 1e-6,
) -> tuple[pl.DataFrame, list[str]]:
    """(previous with fetched rows added or replacing theirs, items whose overlapping `compare` values changed)."""
    on = [key, time_column]
    if previous is None or previous.is_empty():
        return fetched.sort(on), []
    changed: list[str] = []
    if compare and fetched.height:
        both = fetched.select(*on, *compare).join(previous.select(*on, *compare), on=on, suffix="_old")
        differs = pl.any_horizontal(
            [((pl.col(c) - pl.col(f"{c}_old")).abs() > rtol * pl.max_horizontal(pl.col(f"{c}_old").abs(), pl.lit(1e-12)))
             .fill_null(False) for c in compare])
        changed = sorted(both.filter(differs)[key].unique().to_list())
    return upsert(previous, fetched, on), changed


def upsert(previous: pl.DataFrame | None, new: pl.DataFrame | None, key: list[str],
           sort: list[str] | None = None) -> pl.DataFrame | None:
    """`new` rows added to `previous`, a new row replacing a held one with the same `key`; sorted by
    `sort` (default the key). Either side may be None (nothing held yet; nothing fetched). A column one side
    lacks (added to the schema after `previous` was written: filings' exhibits) is kept, null on that side."""
    if previous is None or previous.is_empty():
        return new
    if new is None:
        return previous
    both = pl.concat([previous, new], how="diagonal_relaxed")
    return both.unique(key, keep="last", maintain_order=True).sort(sort or key)


def replace_items(table: pl.DataFrame, fresh: pl.DataFrame, items: list[str], *, key: str, time_column: str) -> pl.DataFrame:
    """`table` with every row of `items` replaced by `fresh` (their re-fetched whole histories); columns as
    in `upsert`."""
    kept = table.filter(~pl.col(key).is_in(items))
    return pl.concat([kept, fresh], how="diagonal_relaxed").sort(key, time_column)
