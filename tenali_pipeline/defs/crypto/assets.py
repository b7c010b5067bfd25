"""Crypto: exchange OHLCV (ccxt live; generated sample)."""

from ..common import source_assets

defs = source_assets(
    "crypto", name="crypto_ohlcv", group="crypto", time_column="timestamp",
    fetch=lambda sources, lake, context: sources.crypto().fetch(),
    description="Daily OHLCV per exchange symbol.",
)
