"""IPO listing performance: each listing joined to its first sessions in a daily price table.

Works on any price table with ``ticker``, ``date`` and ``close`` (``open`` used where present):
NSE bhavcopy through `bhavcopy_prices`, or the market prices of US tickers. Returns are against
the issue price:

- first day: the close of the listing session (and, where the table has opens, the open: the
  "listing gain" Indian markets quote);
- first week: the close of the 5th session, the listing day counted as the first;
- first month: the close of the 21st session.

Point in time: a horizon's return exists only when its session exists in the table (and is on or
before `as_of` when given), so an IPO listed last week has a first-day and a first-week figure
and no first-month one; nothing is extrapolated. The listing session is the first bar on or after
the listing date; when that bar is more than `max_gap_days` later, the table does not cover the
listing and no return is given (a table that starts years after the IPO must not pass its first
bar off as the listing day).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

WEEK_SESSIONS, MONTH_SESSIONS = 5, 21
PERFORMANCE_COLUMNS = {
    "first_date": pl.Date, "listing_open": pl.Float64, "listing_close": pl.Float64, "open_return": pl.Float64,
    "day1_return": pl.Float64, "week1_date": pl.Date, "week1_close": pl.Float64, "week1_return": pl.Float64,
    "month1_date": pl.Date, "month1_close": pl.Float64, "month1_return": pl.Float64, "sessions": pl.UInt32,
}

# Bhavcopy series in order of preference when a symbol has bars in two on one day.
_SERIES_RANK = {"EQ": 0, "BE": 1, "BZ": 2, "SM": 3, "ST": 4, "SZ": 5}


def bhavcopy_prices(bhav: pl.DataFrame) -> pl.DataFrame:
    """INDIA_BHAVCOPY -> one bar per symbol and day (ticker, date, open, high, low, close, volume).

    A new listing can move between series (trade-for-trade BE for its first days, then EQ): the
    bars are one price history whatever the series; where two series trade the same day, EQ wins.
    """
    rank = pl.col("series").replace_strict(_SERIES_RANK, default=9, return_dtype=pl.Int32)
    return (bhav.with_columns(_rank=rank).sort("symbol", "date", "_rank")
            .unique(["symbol", "date"], keep="first", maintain_order=True)
            .select(ticker="symbol", date="date", open="open", high="high", low="low", close="close", volume="volume"))


def listing_performance(listings: pl.DataFrame, prices: pl.DataFrame, *, ticker: str = "symbol",
                        as_of: dt.date | None = None, max_gap_days: int = 4, week_sessions: int = WEEK_SESSIONS,
                        month_sessions: int = MONTH_SESSIONS) -> pl.DataFrame:
    """One row per listed issue (listing date and issue price known, listed by `as_of`): the listing's
    columns plus `PERFORMANCE_COLUMNS`, null where the session is not (yet) in `prices`."""
    missing = [c for c in (ticker, "listing_date", "issue_price") if c not in listings.columns]
    missing += [f"prices.{c}" for c in ("ticker", "date", "close") if c not in prices.columns]
    if missing:
        raise ValueError(f"listing_performance: missing column(s) {missing}; listings need {ticker}, listing_date "
                         "and issue_price, prices need ticker, date and close (bhavcopy: use bhavcopy_prices)")
    listed = listings.filter(pl.col("listing_date").is_not_null(), pl.col("issue_price") > 0)
    opens = pl.col("open") if "open" in prices.columns else pl.lit(None, pl.Float64)
    bars = prices.select("ticker", "date", "close", open=opens)
    if as_of is not None:
        listed = listed.filter(pl.col("listing_date") <= as_of)
        bars = bars.filter(pl.col("date") <= as_of)
    keyed = listed.with_row_index("_row").select("_row", pl.col(ticker).alias("ticker"), "listing_date")
    after = (keyed.join(bars, on="ticker", how="inner")
             .filter(pl.col("date") >= pl.col("listing_date"))
             .sort("_row", "date")
             .with_columns(_n=pl.col("date").cum_count().over("_row")))
    first = after.filter(pl.col("_n") == 1).filter(
        pl.col("date") <= pl.col("listing_date") + pl.duration(days=max_gap_days))
    covered = after.join(first.select("_row"), on="_row", how="semi")

    def nth(n: int, prefix: str) -> pl.DataFrame:
        return covered.filter(pl.col("_n") == n).select("_row", pl.col("date").alias(f"{prefix}_date"),
                                                      pl.col("close").alias(f"{prefix}_close"))

    out = (listed.with_row_index("_row")
           .join(first.select("_row", first_date="date", listing_open="open", listing_close="close"), on="_row", how="left")
           .join(nth(week_sessions, "week1"), on="_row", how="left")
           .join(nth(month_sessions, "month1"), on="_row", how="left")
           .join(covered.group_by("_row").agg(sessions=pl.len()), on="_row", how="left"))
    price = pl.col("issue_price")
    out = out.with_columns(
        open_return=pl.col("listing_open") / price - 1, day1_return=pl.col("listing_close") / price - 1,
        week1_return=pl.col("week1_close") / price - 1, month1_return=pl.col("month1_close") / price - 1,
        sessions=pl.col("sessions").fill_null(0).cast(pl.UInt32))
    return out.select(*listings.columns, *[pl.col(c).cast(t) for c, t in PERFORMANCE_COLUMNS.items()])
