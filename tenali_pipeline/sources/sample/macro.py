"""US quarterly macro series 1959Q1-2009Q3 from ``statsmodels.datasets.macrodata`` (public domain).

Columns are mapped to the FRED series that measure the same thing, so the sample and the live
fredapi client produce the same series ids. The dataset has no vintages; ``realtime_start`` is set
to one month after the quarter ends, when the Bureau of Economic Analysis publishes its advance
estimate, so that later stages practise using only what was published at the time.
"""

from __future__ import annotations

import polars as pl

from ..schema import MACRO_OBSERVATIONS, conform

SOURCE = "sample:statsmodels.macrodata"

# column -> (FRED-like series id, title, units)
SERIES = {
    "realgdp": ("GDPC1", "Real Gross Domestic Product", "Billions of Chained 2005 Dollars, SAAR"),
    "realcons": ("PCECC96", "Real Personal Consumption Expenditures", "Billions of Chained 2005 Dollars, SAAR"),
    "realinv": ("GPDIC1", "Real Gross Private Domestic Investment", "Billions of Chained 2005 Dollars, SAAR"),
    "realdpi": ("DSPIC96", "Real Disposable Personal Income", "Billions of Chained 2005 Dollars, SAAR"),
    "cpi": ("CPIAUCSL", "Consumer Price Index for All Urban Consumers", "Index 1982-1984=100, SA"),
    "m1": ("M1SL", "M1 Money Stock", "Billions of Dollars, SA"),
    "tbilrate": ("TB3MS", "3-Month Treasury Bill Secondary Market Rate", "Percent"),
    "unemp": ("UNRATE", "Unemployment Rate", "Percent, SA"),
    "infl": ("INFL", "CPI Inflation, annualised log change", "Percent"),
}


class SampleMacroClient:
    def __init__(self, series_ids: tuple[str, ...] | list[str] | None = None):
        self.series_ids = set(series_ids) if series_ids else None

    def fetch(self) -> pl.DataFrame:
        from statsmodels.datasets import macrodata

        data = pl.from_pandas(macrodata.load_pandas().data)
        quarter_start = pl.date(pl.col("year").cast(pl.Int32), (pl.col("quarter").cast(pl.Int32) - 1) * 3 + 1, 1)
        frames = []
        for column, (series_id, title, units) in SERIES.items():
            if self.series_ids and series_id not in self.series_ids:
                continue
            frames.append(
                data.select(
                    series_id=pl.lit(series_id),
                    title=pl.lit(title),
                    units=pl.lit(units),
                    frequency=pl.lit("Quarterly"),
                    date=quarter_start,
                    value=pl.col(column).cast(pl.Float64),
                    # quarter end (+3 months) plus one month for the advance estimate
                    realtime_start=quarter_start.dt.offset_by("4mo"),
                    source=pl.lit(SOURCE),
                )
            )
        if not frames:
            return conform(pl.DataFrame(schema=MACRO_OBSERVATIONS), MACRO_OBSERVATIONS, what="sample macro")
        return conform(pl.concat(frames), MACRO_OBSERVATIONS, what="sample macro")
