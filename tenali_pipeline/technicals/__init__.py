"""Technical-analysis features over cleaned OHLCV, as polars expressions; no Dagster here."""
