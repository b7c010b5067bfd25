"""Deterministic news items written from real price moves in the sample market data.

Each day a sample stock moves more than a threshold becomes a short wire-style item, published
after that day's close, so headlines line up with the prices the model also reads. Shaped like the
live RSS/Atom client's output.
"""

from __future__ import annotations

import hashlib
import zlib

import polars as pl

from ..schema import NEWS, conform
from .market import SampleMarketClient

SOURCE = "sample:generated-from-bokeh_sampledata"
FEED = "sample://market-wire"

UP = ["{t} shares jump {p:.1f}%", "{t} rallies {p:.1f}% in heavy trading", "{t} climbs {p:.1f}% as buyers return"]
DOWN = ["{t} shares fall {p:.1f}%", "{t} slides {p:.1f}% in heavy trading", "{t} drops {p:.1f}% as sellers take control"]
BODY = [
    "{t} closed at ${c:,.2f} on {d:%A, %B %d, %Y}, {dir} {p:.1f}% from the previous close of ${pc:,.2f}. "
    "Volume reached {v:,.0f} shares, {vr:.1f} times the 20-day average.",
    "Shares of {t} ended the session at ${c:,.2f}, a move of {sign}{p:.1f}%. About {v:,.0f} shares changed hands, "
    "{vr:.1f}x the recent average, after trading between ${lo:,.2f} and ${hi:,.2f}.",
]


class SampleNewsClient:
    def __init__(self, tickers=None, start: str | None = "2008-01-01", end: str | None = None, threshold: float = 0.04):
        self.market = SampleMarketClient(tickers, start, end)
        self.threshold = threshold

    def fetch(self) -> pl.DataFrame:
        df = (
            self.market.fetch()
            .sort("ticker", "date")
            .with_columns(
                prev_close=pl.col("close").shift(1).over("ticker"),
                # adjusted closes, so that a split day is not reported as a crash
                ret=(pl.col("adj_close") / pl.col("adj_close").shift(1).over("ticker") - 1),
                avg_volume=pl.col("volume").rolling_mean(20).shift(1).over("ticker"),
            )
            .filter(pl.col("ret").abs() >= self.threshold, pl.col("avg_volume") > 0)
        )
        rows = []
        for r in df.iter_rows(named=True):
            h = zlib.crc32(f"{r['ticker']}{r['date']}".encode())
            p = abs(r["ret"]) * 100
            up = r["ret"] > 0
            title = (UP if up else DOWN)[h % 3].format(t=r["ticker"], p=p)
            summary = BODY[h % 2].format(
                t=r["ticker"], c=r["close"], d=r["date"], dir="up" if up else "down", p=p, pc=r["prev_close"],
                v=r["volume"], vr=r["volume"] / r["avg_volume"], sign="+" if up else "-", lo=r["low"], hi=r["high"],
            )
            link = f"sample://market-wire/{r['ticker']}/{r['date']}"
            rows.append(dict(feed=FEED, entry_id=hashlib.sha1(link.encode()).hexdigest(), link=link, title=title,
                             summary=summary, published=f"{r['date']}T21:00:00Z", source=SOURCE,
                             article=None))
        if not rows:
            return pl.DataFrame(schema=NEWS)
        out = pl.DataFrame(rows).with_columns(pl.col("published").str.to_datetime(time_zone="UTC"))
        return conform(out, NEWS, what="sample news")
