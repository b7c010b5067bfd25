"""Daily OHLCV for AAPL, FB, GOOG, IBM and MSFT (2000-2013) from ``bokeh_sampledata.stocks``.

The data is Quandl's public-domain WIKI prices: open/high/low/close/volume unadjusted,
``adj_close`` split- and dividend-adjusted. It has no dividend or split columns, so they are recovered
from the adjustment factor ``close / adj_close``: a day on which it falls by half or more is a split
(ratio ``1/r``, e.g. AAPL 2:1 on 2005-02-28), a small fall is an ex-dividend day paying
``previous close * (1 - r)`` (IBM's quarterly dividends come out at their real $0.12-0.15 in 2000).
"""

from __future__ import annotations

import gzip
from importlib import resources

import polars as pl

from ..schema import MARKET_PRICES, conform

SOURCE = "sample:bokeh_sampledata.stocks"


class SampleMarketClient:
    def __init__(self, tickers: tuple[str, ...] | list[str] | None = None, start: str | None = None, end: str | None = None):
        self.tickers = tuple(tickers) if tickers is not None else None  # () holds no ticker
        self.start, self.end = start, end

    def fetch(self, since: dict | None = None) -> pl.DataFrame:
        """Like the live client: every ticker, or those in `since` from their day (None: all history)."""
        raw = resources.files("bokeh_sampledata").joinpath("_data", "stocks.csv.gz").read_bytes()
        df = pl.read_csv(gzip.decompress(raw), try_parse_dates=True)
        df = df.rename(
            {"Ticker": "ticker", "Date": "date", "Open": "open", "High": "high", "Low": "low",
             "Close": "close", "Volume": "volume", "Adj Close": "adj_close"}
        ).sort("ticker", "date")
        factor = pl.col("close") / pl.col("adj_close")
        r = (factor / factor.shift(1).over("ticker")).fill_null(1.0)
        df = df.with_columns(
            splits=pl.when(r < 0.75).then((1 / r).round(2)).otherwise(0.0),
            dividends=pl.when((r >= 0.75) & (r < 1 - 1e-5))
            .then((pl.col("close").shift(1).over("ticker") * (1 - r)).round(4))
            .otherwise(0.0),
            source=pl.lit(SOURCE),
        )
        if self.tickers is not None:
            df = df.filter(pl.col("ticker").is_in(self.tickers))
        if since is not None:
            first = pl.DataFrame({"ticker": list(since), "first": [d for d in since.values()]},
                                 schema={"ticker": pl.String, "first": pl.Date})
            df = df.join(first, on="ticker").filter(pl.col("first").is_null() | (pl.col("date") >= pl.col("first")))
            df = df.drop("first")
        if self.start:
            df = df.filter(pl.col("date") >= pl.lit(self.start).str.to_date())
        if self.end:
            df = df.filter(pl.col("date") < pl.lit(self.end).str.to_date())
        return conform(df, MARKET_PRICES, what="sample market")
