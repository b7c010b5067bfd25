"""Deterministic synthetic daily crypto OHLCV (no crypto data ships in a package we depend on).

Prices follow a seeded geometric random walk with fat-tailed, volatility-clustered returns, so
indicators and rendered text see realistic shapes; the same arguments always give the same data.
The default symbols are made-up coins (``XSMP/USD``, ``XDEM/USD``, ``XALP/USD``, ``XBET/USD``) so that
the demo model is never taught invented prices for a real asset. Four coins over nine years give the
crypto domain enough text to reach its 10% share of the mix without heavy repetition.
"""

from __future__ import annotations

import zlib
from datetime import date, datetime

import numpy as np
import polars as pl

from ..schema import CRYPTO_OHLCV, conform

SOURCE = "sample:generated"
START_PRICES = {"XSMP/USD": 400.0, "XDEM/USD": 8.0, "XALP/USD": 55.0, "XBET/USD": 0.9}


class SampleCryptoClient:
    def __init__(self, symbols=("XSMP/USD", "XDEM/USD", "XALP/USD", "XBET/USD"), start: str = "2004-01-01", end: str = "2013-03-01",
                 exchange: str = "sample", seed: int = 7):
        self.symbols, self.exchange, self.seed = tuple(symbols), exchange, seed
        self.start, self.end = date.fromisoformat(start), date.fromisoformat(end)

    def fetch(self) -> pl.DataFrame:
        days = (self.end - self.start).days
        frames = []
        for symbol in self.symbols:
            rng = np.random.default_rng([self.seed, zlib.crc32(symbol.encode())])
            # GARCH(1,1)-like volatility clustering with Student-t shocks.
            shocks = rng.standard_t(df=4, size=days) / np.sqrt(2.0)
            vol = np.empty(days)
            ret = np.empty(days)
            var = 0.04**2
            for i in range(days):
                vol[i] = np.sqrt(var)
                ret[i] = 0.001 + vol[i] * shocks[i]
                var = 0.00002 + 0.08 * ret[i] ** 2 + 0.9 * var
            close = START_PRICES.get(symbol, 10.0) * np.exp(np.cumsum(ret))
            open_ = np.concatenate([[close[0] / np.exp(ret[0])], close[:-1]])
            spread = np.abs(rng.normal(0, 1, size=(2, days))) * vol * 0.6
            high = np.maximum(open_, close) * (1 + spread[0])
            low = np.minimum(open_, close) * (1 - spread[1])
            volume = np.exp(rng.normal(10, 0.5, size=days) + 8 * np.abs(ret))
            timestamps = pl.datetime_range(
                datetime(self.start.year, self.start.month, self.start.day),
                datetime(self.end.year, self.end.month, self.end.day),
                interval="1d", closed="left", eager=True, time_zone="UTC",
            )
            frames.append(
                pl.DataFrame({"timestamp": timestamps, "open": open_, "high": high, "low": low,
                              "close": close, "volume": volume})
                .with_columns(exchange=pl.lit(self.exchange), symbol=pl.lit(symbol),
                              timeframe=pl.lit("1d"), source=pl.lit(SOURCE))
            )
        if not frames:
            return pl.DataFrame(schema=CRYPTO_OHLCV)
        return conform(pl.concat(frames), CRYPTO_OHLCV, what="sample crypto")
