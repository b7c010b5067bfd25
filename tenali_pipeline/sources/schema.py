"""Output schemas shared by the sample and live client of every source.

Both clients of a source return a polars DataFrame with exactly these columns and dtypes, so every
stage after ingestion is the same whether the data came from a package, a generator or the network.
`conform` casts and orders a frame to its schema and names any missing column, which is the first
line of defence against a changed upstream response.
"""

from __future__ import annotations

import polars as pl

UTC_DATETIME = pl.Datetime("us", "UTC")

MARKET_PRICES = {
    "ticker": pl.String,
    "date": pl.Date,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "adj_close": pl.Float64,
    "volume": pl.Float64,
    "dividends": pl.Float64,
    "splits": pl.Float64,
    "source": pl.String,
}

MACRO_OBSERVATIONS = {
    "series_id": pl.String,
    "title": pl.String,
    "units": pl.String,
    "frequency": pl.String,
    "date": pl.Date,
    "value": pl.Float64,
    # First day this value was published (FRED "realtime_start"); later stages must only use a
    # value on or after this date.
    "realtime_start": pl.Date,
    "source": pl.String,
}

CRYPTO_OHLCV = {
    "exchange": pl.String,
    "symbol": pl.String,
    "timeframe": pl.String,
    "timestamp": UTC_DATETIME,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Float64,
    "source": pl.String,
}

FILINGS = {
    "cik": pl.String,
    "ticker": pl.String,
    "company": pl.String,
    "form": pl.String,
    "accession": pl.String,
    "filed": pl.Date,
    "period": pl.Date,
    "items": pl.String,
    # The primary document as served (HTML or plain text); section extraction happens later.
    "document": pl.String,
    "document_format": pl.String,
    "source": pl.String,
}

NEWS = {
    "feed": pl.String,
    "entry_id": pl.String,
    "link": pl.String,
    "title": pl.String,
    "summary": pl.String,
    "published": UTC_DATETIME,
    "source": pl.String,
}

DOCUMENTS = {
    "doc_id": pl.String,
    "uri": pl.String,
    "title": pl.String,
    "text": pl.String,
    "date": pl.Date,
    "source": pl.String,
}

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "market": MARKET_PRICES,
    "macro": MACRO_OBSERVATIONS,
    "crypto": CRYPTO_OHLCV,
    "filings": FILINGS,
    "news": NEWS,
    "documents": DOCUMENTS,
}


class SchemaError(ValueError):
    """A source returned data that does not fit its schema."""


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType], *, what: str) -> pl.DataFrame:
    """Select, cast and order `df` to `schema`; raise SchemaError naming missing columns."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{what}: missing column(s) {missing}; got {df.columns}. The upstream response format "
            "may have changed: update the client that produced it."
        )
    return df.select([pl.col(c).cast(t, strict=False).alias(c) for c, t in schema.items()])
