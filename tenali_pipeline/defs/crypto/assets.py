"""Crypto: exchange OHLCV (ccxt live; generated sample).

Live runs are incremental (`update_incrementally`): a symbol checked within ``refresh_hours`` is not
asked again; the others are asked from their last stored candle minus one bar, and the candles are
merged without duplicates (one row per symbol and timestamp). Rows of another exchange or timeframe
than the configured one are dropped. The exchange's JSON is kept under ``raw/crypto/responses/``.
"""

import datetime as dt

import polars as pl

from ...sources.schema import CRYPTO_OHLCV
from ..common import source_assets, update_incrementally


def _fetch(run):
    client = run.sources.crypto(archive=run.archive)
    if run.sources.is_sample:  # fixed data: nothing to update incrementally
        return client.fetch()
    if run.previous is not None:  # the raw table is one exchange and timeframe: the configured ones
        run.previous = run.previous.filter((pl.col("exchange") == client.exchange_id)
                                           & (pl.col("timeframe") == client.timeframe))
    last: dict[str, dt.datetime] = {}
    if run.previous is not None and run.previous.height:
        last = dict(run.previous.group_by("symbol").agg(pl.col("timestamp").max()).iter_rows())
    bar = client.bar_ms()

    def fetch(since: dict) -> pl.DataFrame:
        # from the last stored candle minus one bar (re-read: it may have been stored before it closed)
        start = {s: int(last[s].timestamp() * 1000) - bar if d is not None and s in last else None
                 for s, d in since.items()}
        return client.fetch(start)

    return update_incrementally(run, list(client.symbols), key="symbol", time_column="timestamp",
                                schema=CRYPTO_OHLCV, fetch=fetch)


defs = source_assets(
    "crypto", name="crypto_ohlcv", group="crypto", time_column="timestamp",
    fetch=_fetch,
    description="Daily OHLCV per exchange symbol.",
)
