"""Market: daily stock prices (yfinance live; bokeh_sampledata sample)."""

from ..common import source_assets

defs = source_assets(
    "market", name="market_prices", group="market", time_column="date",
    fetch=lambda sources, lake, context: sources.market().fetch(),
    description="Daily OHLCV with dividends and splits per ticker.",
)
