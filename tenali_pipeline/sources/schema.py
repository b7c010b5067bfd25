"""Output schemas shared by the sample and live client of every source.

Both clients of a source return a polars DataFrame with exactly these columns and dtypes, so every
stage after ingestion is the same whether the data came from a package, a generator or the network.
`conform` casts and orders a frame to its schema and names any missing column, which is the first
line of defence against a changed upstream response.
"""

from __future__ import annotations

import polars as pl

from .india_schema import INDIA_SCHEMAS
from .us_ipo_schema import US_IPO_SCHEMAS

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
    # 8-K press releases and other EX-99 exhibits as served: a JSON list of {"type", "description", "filename",
    # "format", "document", "truncated"}; null when none was kept (other forms, older tables).
    "exhibits": pl.String,
}

NEWS = {
    "feed": pl.String,
    "entry_id": pl.String,
    "link": pl.String,
    "title": pl.String,
    "summary": pl.String,
    "published": UTC_DATETIME,
    "source": pl.String,
    "article": pl.String,  # the linked page's text (TENALI_NEWS_ARTICLES), null when not fetched
}

DOCUMENTS = {
    "doc_id": pl.String,
    "uri": pl.String,
    "title": pl.String,
    "text": pl.String,
    "date": pl.Date,
    "source": pl.String,
}

# The tradable universe, one row per instrument as listed by the symbol database in one snapshot;
# `universe` (defs/universe) keeps these across refreshes with first_seen/last_seen/status.
UNIVERSE = {
    "symbol": pl.String,  # Yahoo-style symbol: AAPL, BRK-B, RELIANCE.NS, EURUSD=X, BTC-USD
    "asset_class": pl.String,  # equity | etf | currency | crypto
    "name": pl.String,
    "exchange": pl.String,
    "mic": pl.String,  # ISO 10383 market identifier of the listing venue (XNYS, XNAS, XNSE, ...)
    "country": pl.String,  # the company's country (domicile), not the listing's
    "sector": pl.String,
    "industry_group": pl.String,
    "industry": pl.String,
    "currency": pl.String,
    "market_cap": pl.String,  # size class as published: Mega Cap ... Nano Cap
    "isin": pl.String,
    "cik": pl.String,  # SEC Central Index Key, 10 digits, from the SEC ticker map; null if not an SEC filer
    "delisted": pl.Boolean,  # as the symbol database marks it
    "source": pl.String,
}

# SEC XBRL facts (companyfacts), one row per reported figure per filing: restatements keep both
# values (same period, different accession). `filed` is the day the figure became public.
FUNDAMENTALS = {
    "cik": pl.String,
    "ticker": pl.String,
    "company": pl.String,
    "statement": pl.String,  # income | balance | cashflow
    "item": pl.String,  # our name (revenue, net_income, ...); see sources/live/xbrl.py CONCEPTS
    "concept": pl.String,  # us-gaap concept it came from
    "unit": pl.String,  # USD, USD/shares, shares
    "period_start": pl.Date,  # null for balance-sheet instants
    "period_end": pl.Date,
    "period_type": pl.String,  # FY (a year), Q (a quarter), YTD (6 or 9 months), I (instant)
    "fiscal_year": pl.Int32,  # of the filing that reported it (companyfacts `fy`)
    "fiscal_period": pl.String,  # FY, Q1, Q2, Q3 of that filing (companyfacts `fp`)
    "form": pl.String,
    "filed": pl.Date,
    "accession": pl.String,
    "value": pl.Float64,
    "source": pl.String,
}

# DefiLlama daily metrics, long format: one row per metric, scope, entity and day.
DEFI_METRICS = {
    "metric": pl.String,  # tvl | fees | revenue | dex_volume | stablecoin_supply
    "scope": pl.String,  # chain | protocol | all
    "entity": pl.String,  # Ethereum, aave, ... ("all" for the whole market)
    "date": pl.Date,
    "value": pl.Float64,  # USD
    "source": pl.String,
}

# CoinGecko daily market data per coin (tokenomics): price, market cap, volume and the supply
# they imply (market cap / price); max_supply is the protocol's cap where it has one.
COIN_MARKETS = {
    "coin_id": pl.String,
    "symbol": pl.String,
    "date": pl.Date,
    "price_usd": pl.Float64,
    "market_cap_usd": pl.Float64,
    "volume_usd": pl.Float64,
    "circulating_supply": pl.Float64,
    "max_supply": pl.Float64,
    "source": pl.String,
}

# Central-bank communications (statements, minutes, press releases), one row per page, with the
# policy-rate decision where the text states it (sources/live/centralbank.py `parse_decision`).
CENTRAL_BANK = {
    "doc_id": pl.String,  # sha1 of bank and link
    "bank": pl.String,  # fed | ecb | rbi (sample: made-up banks)
    "institution": pl.String,  # Federal Reserve, European Central Bank, Reserve Bank of India
    "doc_type": pl.String,  # statement | minutes | speech | press_release
    "title": pl.String,
    "link": pl.String,
    "published": UTC_DATETIME,  # the feed's pubDate: when it became public
    "text": pl.String,  # the page's main text, paragraphs separated by blank lines
    "decision": pl.String,  # cut | hike | hold | set; null when none is stated
    "change_bps": pl.Float64,  # signed; null when the text gives only the new level
    "rate_low": pl.Float64,  # new rate in percent (the bottom of a target range)
    "rate_high": pl.Float64,  # equal to rate_low for a single rate
    "rate_name": pl.String,  # federal funds rate target range, deposit facility rate, policy repo rate, ...
    "feed": pl.String,
    "source": pl.String,
}

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "market": MARKET_PRICES,
    "macro": MACRO_OBSERVATIONS,
    "crypto": CRYPTO_OHLCV,
    "filings": FILINGS,
    "news": NEWS,
    "documents": DOCUMENTS,
    "universe": UNIVERSE,
    "fundamentals": FUNDAMENTALS,
    "defillama": DEFI_METRICS,
    "coingecko": COIN_MARKETS,
    "centralbank": CENTRAL_BANK,
    **INDIA_SCHEMAS,  # india_announcements, india_bhavcopy, india_ipos (india_schema.py)
    **US_IPO_SCHEMAS,  # us_ipos (us_ipo_schema.py)
}


# Columns added to a schema after tables were written with it: `conform` reads one absent from a frame (an
# older Parquet file, a row built before it existed) as null instead of refusing the frame.
ADDED_LATER: dict[str, tuple[str, ...]] = {"filings": ("exhibits",)}


class SchemaError(ValueError):
    """A source returned data that does not fit its schema."""


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType], *, what: str) -> pl.DataFrame:
    """Select, cast and order `df` to `schema`; raise SchemaError naming missing columns (those in
    `ADDED_LATER` come back null)."""
    later = {c for name, cols in ADDED_LATER.items() if SCHEMAS.get(name) is schema for c in cols}
    if later - set(df.columns):
        df = df.with_columns(pl.lit(None, dtype=schema[c]).alias(c) for c in sorted(later - set(df.columns)))
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{what}: missing column(s) {missing}; got {df.columns}. The upstream response format "
            "may have changed: update the client that produced it."
        )
    numeric_times = [c for c, t in schema.items() if isinstance(t, (pl.Datetime, pl.Date))
                     and df.schema[c].is_numeric() and df[c].null_count() < df.height]
    if numeric_times:
        raise SchemaError(
            f"{what}: column(s) {numeric_times} hold numbers where {', '.join(str(schema[c]) for c in numeric_times)} "
            "is expected; a number has no unit: convert epoch values with pl.from_epoch(..., time_unit=...) first."
        )
    return df.select([_cast(c, df.schema[c], t).alias(c) for c, t in schema.items()])


def _cast(column: str, have: pl.DataType, want: pl.DataType) -> pl.Expr:
    """`column` as `want`; a value that does not convert becomes null (the cleaning counts those)."""
    col = pl.col(column)
    if want == pl.Date and isinstance(have, pl.Datetime) and have.time_zone:
        return col.dt.date()  # the calendar day where it was stamped (a cast would take the UTC day)
    if want == pl.Date and have == pl.String:
        return col.str.to_date("%Y-%m-%d", strict=False)  # polars 2 no longer casts strings to dates
    return col.cast(want, strict=False)
