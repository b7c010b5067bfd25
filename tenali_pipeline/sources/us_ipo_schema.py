"""Output schema of the US IPO source (EDGAR final prospectuses), shared by the live client
(`sources/live/us_ipos.py`) and its sample twin (`sources/sample/us_ipos.py`), and the step that
turns it into the listings `ipo.listing_performance` joins to prices.

Kept beside `schema.py` rather than in it (as `india_schema.py` is) so the source can be wired in
one reviewed edit: `SCHEMAS` there gains `US_IPO_SCHEMAS`, and `cleaning.py` the keys and required
columns below.

Listing date: EDGAR gives the day the 424B4 (or 424B1) was filed, not the first trading day. An
IPO prices in the evening, lists the next morning, and the final prospectus must be filed within
two business days of pricing (Rule 424(b)), so the filing date is the listing day or up to two
trading days after it. `listings` therefore takes the listing date as the filing date, moved back
to the ticker's first bar in `prices` when that first bar falls in the few days before the filing
(the ticker did not trade before it, so that bar is the listing session). Without prices, or when
the table does not start near the filing, the filing date stands and `listing_performance`'s
`max_gap_days` decides whether the table covers the listing at all.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

# One row per final IPO prospectus (424B4 / 424B1) on EDGAR; follow-on offerings are not kept.
US_IPOS = {
    "cik": pl.String,  # the filer's Central Index Key, 10 digits with leading zeros
    "company": pl.String,  # EDGAR's conformed company name
    "accession": pl.String,  # 0001193125-12-240111
    "form": pl.String,  # 424B4 | 424B1
    "filed": pl.Date,  # EDGAR filing date (the listing day or up to two trading days after it)
    "ticker": pl.String,  # proposed symbol from the cover ("under the symbol “FB”"); SPACs: the units'
    "exchange": pl.String,  # Nasdaq | NYSE | NYSE American | NYSE Arca | Cboe; null when not stated
    "offer_price": pl.Float64,  # final public offering price per share / unit / ADS, USD
    "shares_offered": pl.Float64,  # shares (units, ADSs) in the base offering, over-allotment excluded
    "gross_proceeds": pl.Float64,  # "Total" price to public, USD (the base offering)
    "is_spac": pl.Boolean,  # a blank-check company selling units
    "source": pl.String,
}

US_IPO_SCHEMAS: dict[str, dict[str, pl.DataType]] = {"us_ipos": US_IPOS}

# For cleaning.py: the key of one observation, and the columns that must never be null. A prospectus
# may name no ticker (an offering not listed on an exchange): kept, but never joined to prices.
US_IPO_KEYS = {"us_ipos": ["accession"]}
US_IPO_REQUIRED = {"us_ipos": ["cik", "company", "accession", "form", "filed", "offer_price", "is_spac", "source"]}

# How far before the filing date a ticker's first bar may be and still count as its listing session.
LISTING_LOOKBACK_DAYS = 4


def listings(ipos: pl.DataFrame, prices: pl.DataFrame | None = None, *,
             lookback_days: int = LISTING_LOOKBACK_DAYS) -> pl.DataFrame:
    """`US_IPOS` rows as `listing_performance(..., ticker="ticker")` wants them: `issue_price`,
    `listing_date` (see the module docstring) and `issue_size_shares`; one row per company and
    ticker (the earliest filing, should a prospectus be filed twice)."""
    out = (ipos.filter(pl.col("ticker").is_not_null())
           .sort("filed", "accession")
           .unique(["cik", "ticker"], keep="first", maintain_order=True)
           .with_columns(issue_price=pl.col("offer_price"), issue_size_shares=pl.col("shares_offered"),
                         listing_date=pl.col("filed")))
    if prices is not None and prices.height:
        first = prices.group_by("ticker").agg(_first_bar=pl.col("date").min())
        earlier = (pl.col("_first_bar") < pl.col("filed")) & (
            pl.col("_first_bar") >= pl.col("filed") - dt.timedelta(days=lookback_days))
        out = (out.join(first, on="ticker", how="left")
               .with_columns(listing_date=pl.when(earlier).then(pl.col("_first_bar")).otherwise(pl.col("filed")))
               .drop("_first_bar"))
    return out
