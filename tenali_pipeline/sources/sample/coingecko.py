"""Deterministic CoinGecko market charts for made-up coins, parsed by the live parser.

Two coins (``samplecoin`` with a capped supply that grows by issuance, ``democoin`` uncapped),
daily 2010-01-01 .. 2013-02-28; the bodies have the documented ``market_chart`` shape (see
sources/live/coingecko.py) and go through `parse_market_chart` as live data does.
"""

from __future__ import annotations

import datetime as dt
import zlib

import numpy as np
import polars as pl

from ..live.coingecko import parse_market_chart
from ..schema import COIN_MARKETS, conform

SOURCE = "sample:generated"
COINS = {"samplecoin": ("SMPC", 21_000_000.0, 9_000_000.0), "democoin": ("DEMC", None, 50_000_000.0)}


class SampleCoinGeckoClient:
    def __init__(self, coins=None, *, start: str = "2010-01-01", end: str = "2013-03-01", seed: int = 9):
        self.start, self.end, self.seed = dt.date.fromisoformat(start), dt.date.fromisoformat(end), seed

    def market_chart(self, coin: str) -> dict:
        _, cap, supply0 = COINS[coin]
        days = (self.end - self.start).days
        rng = np.random.default_rng([self.seed, zlib.crc32(coin.encode())])
        price = 2.0 * np.exp(np.cumsum(rng.normal(0.002, 0.04, days)))
        growth = 1 + np.cumsum(np.full(days, 0.0004))
        supply = supply0 * growth if cap is None else np.minimum(cap, supply0 * growth)
        ms = [int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp() * 1000)
              for d in (self.start + dt.timedelta(days=i) for i in range(days))]
        volume = price * supply * rng.uniform(0.01, 0.05, days)
        return {"prices": [[t, float(p)] for t, p in zip(ms, price)],
                "market_caps": [[t, float(p * s)] for t, p, s in zip(ms, price, supply)],
                "total_volumes": [[t, float(v)] for t, v in zip(ms, volume)]}

    def fetch(self) -> pl.DataFrame:
        frames = []
        for coin, (symbol, cap, _) in COINS.items():
            frames.append(parse_market_chart(self.market_chart(coin)).with_columns(
                coin_id=pl.lit(coin), symbol=pl.lit(symbol),
                circulating_supply=pl.col("market_cap_usd") / pl.col("price_usd"),
                max_supply=pl.lit(cap, dtype=pl.Float64), source=pl.lit(SOURCE)))
        return conform(pl.concat(frames), COIN_MARKETS, what="sample CoinGecko")
