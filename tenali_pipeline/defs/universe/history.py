"""The universe across refreshes, and the ticker lists other assets read from it (no Dagster here).

Each refresh of the symbol database is a snapshot; `merge_snapshot` folds it into the table kept so
far, so that delistings and renames stay visible instead of vanishing:

- an instrument in the snapshot gets ``last_seen`` = the refresh date (``first_seen`` is kept from
  the first refresh that had it) and status ``listed`` or ``delisted`` (as the database marks it);
- an instrument missing from the snapshot keeps its row and its ``last_seen``; its status becomes
  ``renamed`` (with ``renamed_to``) when its SEC CIK now belongs to another listed symbol (FB ->
  META), else ``missing`` (dropped by the database: usually a delisting, or a changed filter).

`select_tickers` / `universe_tickers` are how the market and filings assets can take their ticker
lists from the universe ("10,000+ stocks" is then a filter setting, not a hand-written list).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from ...sources.schema import UNIVERSE

UNIVERSE_KEY = "universe/universe.parquet"
HISTORY = {**{k: v for k, v in UNIVERSE.items() if k != "source"},
           "first_seen": pl.Date, "last_seen": pl.Date, "status": pl.String, "renamed_to": pl.String,
           "source": pl.String}
STATUSES = ("listed", "delisted", "renamed", "missing")
_KEY = ["asset_class", "symbol"]


def merge_snapshot(previous: pl.DataFrame | None, snapshot: pl.DataFrame, as_of: dt.date) -> pl.DataFrame:
    """Fold one snapshot (UNIVERSE columns) into the history (HISTORY columns), as of `as_of`."""
    current = snapshot.with_columns(
        last_seen=pl.lit(as_of), status=pl.when(pl.col("delisted")).then(pl.lit("delisted")).otherwise(pl.lit("listed")),
        renamed_to=pl.lit(None, dtype=pl.String))
    if previous is None or previous.is_empty():
        return _order(current.with_columns(first_seen=pl.lit(as_of)))
    first = previous.select(*_KEY, "first_seen")
    current = current.join(first, on=_KEY, how="left").with_columns(pl.col("first_seen").fill_null(as_of))
    gone = previous.join(snapshot.select(_KEY), on=_KEY, how="anti")
    # A CIK now listed under another symbol of the same class: the old symbol was renamed.
    successors = (current.filter(pl.col("cik").is_not_null() & (pl.col("status") == "listed"))
                  .group_by("asset_class", "cik").agg(pl.col("symbol").sort().first().alias("_successor")))
    gone = (gone.join(successors, on=["asset_class", "cik"], how="left")
            .with_columns(renamed_to=pl.coalesce("_successor", "renamed_to"))
            .with_columns(status=pl.when(pl.col("renamed_to").is_not_null()).then(pl.lit("renamed"))
                          .otherwise(pl.lit("missing")))
            .drop("_successor"))
    return _order(pl.concat([current.select(list(HISTORY)), gone.select(list(HISTORY))], how="vertical_relaxed"))


def _order(df: pl.DataFrame) -> pl.DataFrame:
    return df.select([pl.col(c).cast(t) for c, t in HISTORY.items()]).sort(_KEY)


def select_tickers(universe: pl.DataFrame, *, asset_class: str = "equity", statuses: Sequence[str] = ("listed",),
                   mics: Sequence[str] = (), countries: Sequence[str] = (), with_cik: bool = False,
                   limit: int | None = None) -> list[str]:
    """Symbols of `asset_class` with one of `statuses` (and the given venues, domiciles), sorted.

    ``with_cik=True`` keeps only SEC filers (what the filings and fundamentals sources can use).
    """
    bad = set(statuses) - set(STATUSES)
    if bad:
        raise ValueError(f"unknown universe status(es) {sorted(bad)}: choose from {', '.join(STATUSES)}")
    df = universe.filter(pl.col("asset_class") == asset_class, pl.col("status").is_in(list(statuses)))
    if mics:
        df = df.filter(pl.col("mic").is_in(list(mics)))
    if countries:
        df = df.filter(pl.col("country").is_in(list(countries)))
    if with_cik:
        df = df.filter(pl.col("cik").is_not_null())
    symbols = df["symbol"].unique().sort().to_list()
    return symbols[:limit] if limit else symbols


def universe_tickers(lake, **filters) -> list[str]:
    """`select_tickers` on the universe table in `lake` (materialise the `universe` asset first)."""
    return select_tickers(lake.read_parquet(UNIVERSE_KEY), **filters)


def cik_map(universe: pl.DataFrame, asset_classes: Sequence[str] = ("equity",)) -> dict[str, str]:
    """SEC filers in the universe, whatever their status (a delisted company's history still counts):
    symbol -> 10-digit CIK, one symbol per CIK (the listed one first, then alphabetical)."""
    df = (universe.filter(pl.col("cik").is_not_null(), pl.col("asset_class").is_in(list(asset_classes)))
          .sort(pl.col("status") != "listed", "symbol").unique("cik", keep="first", maintain_order=True))
    return dict(df.select("symbol", "cik").iter_rows())
