"""Deterministic DefiLlama responses for made-up chains and protocols, parsed by the live parsers.

Made-up names (like the sample crypto's XSMP/USD) so that no real chain is ever described with
invented numbers; daily 2010-01-01 .. 2013-02-28, inside the demo's date range. Each series is
built in the documented response shape of its endpoint (see sources/live/defillama.py) and goes
through the same parser and `to_frame` as live data.
"""

from __future__ import annotations

import datetime as dt
import zlib

import numpy as np
import polars as pl

from ..live.defillama import parse_chain_tvl, parse_protocol_tvl, parse_stablecoin_chart, parse_total_chart, to_frame

SOURCE = "sample:generated"
CHAINS = ("Samplechain", "Demochain")
PROTOCOLS = ("samplelend", "demoswap")


def _walk(key: str, days: int, level: float, vol: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    return level * np.exp(np.cumsum(rng.normal(0.0015, vol, days)))


class SampleDefiLlamaClient:
    def __init__(self, chains=None, protocols=None, *, start: str = "2010-01-01", end: str = "2013-03-01", seed: int = 5):
        # Configured (real) names are ignored on purpose: the sample only describes made-up ones.
        self.start, self.end, self.seed = dt.date.fromisoformat(start), dt.date.fromisoformat(end), seed
        self.missing: list[str] = []

    def responses(self) -> dict[tuple[str, str, str], object]:
        """(metric, scope, entity) -> the response body DefiLlama would send."""
        days = (self.end - self.start).days
        stamps = [int(dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp())
                  for d in (self.start + dt.timedelta(days=i) for i in range(days))]
        out: dict = {}
        for c in CHAINS:
            tvl = _walk(c + "tvl", days, 2e9, 0.02, self.seed)
            out[("tvl", "chain", c)] = [{"date": t, "tvl": float(v)} for t, v in zip(stamps, tvl)]
            out[("fees", "chain", c)] = {"totalDataChart": [[t, float(v * 4e-4)] for t, v in zip(stamps, tvl)]}
            out[("dex_volume", "chain", c)] = {"totalDataChart": [[t, float(v * 0.05)] for t, v in zip(stamps, tvl)]}
            stable = _walk(c + "stable", days, 5e8, 0.008, self.seed)
            out[("stablecoin_supply", "chain", c)] = [
                {"date": str(t), "totalCirculatingUSD": {"peggedUSD": float(v * 0.9), "peggedEUR": float(v * 0.1)}}
                for t, v in zip(stamps, stable)]
        for p in PROTOCOLS:
            tvl = _walk(p + "tvl", days, 3e8, 0.025, self.seed)
            out[("tvl", "protocol", p)] = {"name": p, "tvl": [{"date": t, "totalLiquidityUSD": float(v)}
                                                              for t, v in zip(stamps, tvl)]}
            out[("fees", "protocol", p)] = {"totalDataChart": [[t, float(v * 3e-4)] for t, v in zip(stamps, tvl)]}
            out[("revenue", "protocol", p)] = {"totalDataChart": [[t, float(v * 5e-5)] for t, v in zip(stamps, tvl)]}
        return out

    def fetch(self) -> pl.DataFrame:
        parsers = {("tvl", "chain"): parse_chain_tvl, ("tvl", "protocol"): parse_protocol_tvl,
                   ("stablecoin_supply", "chain"): parse_stablecoin_chart}
        series = {k: parsers.get(k[:2], parse_total_chart)(body) for k, body in self.responses().items()}
        return to_frame(series, SOURCE)
