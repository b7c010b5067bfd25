"""Cleaning rules for every source: types, keys, duplicates and impossible values.

Each ``clean_*`` function takes a raw frame in its source schema and returns the cleaned frame plus
counts of what it dropped and why, which the assets report as metadata. Re-running on the same input
gives the same output (sorted by the key), so cleaned Parquet is stable across materialisations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from .sources.india_schema import INDIA_KEYS, INDIA_REQUIRED
from .sources.us_ipo_schema import US_IPO_KEYS, US_IPO_REQUIRED
from .sources.schema import SCHEMAS, conform


@dataclass
class Cleaned:
    df: pl.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)


# The key that identifies one observation of each source; duplicates on it keep the last row.
KEYS = {
    "market": ["ticker", "date"],
    "macro": ["series_id", "date", "realtime_start"],
    "crypto": ["exchange", "symbol", "timeframe", "timestamp"],
    "filings": ["accession"],
    "news": ["entry_id"],
    "documents": ["doc_id"],
    "universe": ["asset_class", "symbol"],
    "fundamentals": ["cik", "concept", "unit", "period_start", "period_end", "accession"],
    "defillama": ["metric", "scope", "entity", "date"],
    "coingecko": ["coin_id", "date"],
    "centralbank": ["doc_id"],
    **INDIA_KEYS,
    **US_IPO_KEYS,
}

# Columns that must never be null after cleaning (checked again by the asset checks).
REQUIRED = {
    "market": ["ticker", "date", "open", "high", "low", "close", "volume"],
    "macro": ["series_id", "date", "value", "realtime_start"],
    "crypto": ["symbol", "timestamp", "open", "high", "low", "close", "volume"],
    "filings": ["cik", "form", "accession", "filed", "document"],
    "news": ["entry_id", "title", "published"],
    "documents": ["doc_id", "text", "date"],
    "universe": ["symbol", "asset_class"],
    "fundamentals": ["cik", "item", "concept", "unit", "period_end", "filed", "accession", "value"],
    "defillama": ["metric", "scope", "entity", "date", "value"],
    "coingecko": ["coin_id", "date", "price_usd"],
    "centralbank": ["doc_id", "bank", "doc_type", "title", "link", "published", "text"],
    **INDIA_REQUIRED,
    **US_IPO_REQUIRED,
}

_BAD_OHLC = (
    # NaN / inf first: polars orders NaN above every number, so a NaN bar passes every comparison below
    ~pl.all_horizontal([pl.col(c).is_finite() for c in ("open", "high", "low", "close", "volume")])
    | (pl.col("low") > pl.col("high"))
    | (pl.col("open") <= 0) | (pl.col("close") <= 0) | (pl.col("low") <= 0)
    | (pl.col("open") > pl.col("high") * 1.0001) | (pl.col("open") < pl.col("low") * 0.9999)
    | (pl.col("close") > pl.col("high") * 1.0001) | (pl.col("close") < pl.col("low") * 0.9999)
    | (pl.col("volume") < 0)
)

_EXTRA_RULES = {
    "market": [("impossible_ohlc", _BAD_OHLC)],
    "crypto": [("impossible_ohlc", _BAD_OHLC)],
    "documents": [("empty_text", pl.col("text").str.strip_chars().str.len_chars() == 0)],
    "filings": [("empty_document", pl.col("document").str.strip_chars().str.len_chars() == 0)],
    "fundamentals": [("non_finite_value", ~pl.col("value").is_finite())],
    "defillama": [("non_finite_value", ~pl.col("value").is_finite()), ("negative_value", pl.col("value") < 0)],
    "coingecko": [("non_positive_price", ~(pl.col("price_usd") > 0) | ~pl.col("price_usd").is_finite())],
    "india_bhavcopy": [("impossible_ohlc", _BAD_OHLC)],
    "india_ipos": [("non_positive_price", pl.col("issue_price") <= 0)],
    "us_ipos": [("non_positive_price", pl.col("offer_price") <= 0)],
    "centralbank": [
        ("empty_text", pl.col("text").str.strip_chars().str.len_chars() == 0),
        # a decision whose parts contradict each other cannot come from the parser: a damaged row
        ("inconsistent_decision",
         (~pl.col("decision").is_in(["cut", "hike", "hold", "set"]) & pl.col("decision").is_not_null())
         | ((pl.col("decision") == "cut") & (pl.col("change_bps") >= 0))
         | ((pl.col("decision") == "hike") & (pl.col("change_bps") <= 0))
         | ((pl.col("decision") == "hold") & (pl.col("change_bps") != 0))
         | (pl.col("rate_low") > pl.col("rate_high"))),
    ],
}


def clean(source: str, raw: pl.DataFrame) -> Cleaned:
    """Conform `raw` to the source schema, drop nulls in required columns, impossible rows and
    duplicate keys, and sort by the key."""
    df = conform(raw, SCHEMAS[source], what=f"raw {source}")
    dropped: dict[str, int] = {}

    def drop(reason: str, bad: pl.Expr) -> None:
        nonlocal df
        mask = df.select(bad.fill_null(False).alias("bad"))["bad"]
        n = int(mask.sum())
        if n:
            df = df.filter(~mask)
        dropped[reason] = n

    drop("null_required", pl.any_horizontal([pl.col(c).is_null() for c in REQUIRED[source]]))
    if source == "macro":
        drop("non_finite_value", ~pl.col("value").is_finite())
    for reason, expr in _EXTRA_RULES.get(source, []):
        drop(reason, expr)
    before = df.height
    df = df.unique(subset=KEYS[source], keep="last", maintain_order=True).sort(KEYS[source])
    dropped["duplicate_key"] = before - df.height
    return Cleaned(df, dropped)


def null_counts(df: pl.DataFrame, columns: list[str]) -> dict[str, int]:
    counts = df.select([pl.col(c).null_count() for c in columns]).row(0)
    return {c: int(n) for c, n in zip(columns, counts) if n}


def schema_mismatches(df: pl.DataFrame, source: str) -> list[str]:
    expected = SCHEMAS[source]
    problems = [f"missing {c}" for c in expected if c not in df.columns]
    problems += [f"{c}: {df.schema[c]} != {t}" for c, t in expected.items() if c in df.columns and df.schema[c] != t]
    return problems
