"""Output schemas of the Indian-exchange sources (NSE; BSE later), shared by the live client
(`sources/live/india.py`) and its sample twin (`sources/sample/india.py`).

Kept beside `schema.py` rather than in it so that the source can be wired in one reviewed edit:
`SCHEMAS` there gains the three entries of `INDIA_SCHEMAS`, and `cleaning.py` the keys and required
columns below (`INDIA_KEYS`, `INDIA_REQUIRED`).
"""

from __future__ import annotations

import polars as pl

# The same dtype as schema.UTC_DATETIME, defined here so that schema.py can import this module.
UTC_DATETIME = pl.Datetime("us", "UTC")

# Corporate announcements as the exchange disseminated them, one row per announcement.
INDIA_ANNOUNCEMENTS = {
    "ann_id": pl.String,  # "NSE:<seq_id>" (or a sha1 of symbol, time and subject when NSE gives no seq_id); "BSE:<NEWSID>"
    "exchange": pl.String,  # NSE | BSE
    "symbol": pl.String,  # NSE trading symbol (RELIANCE, TCS); for BSE rows the BSE scrip code (500325)
    "company": pl.String,  # sm_name
    "isin": pl.String,  # sm_isin; null for BSE rows
    "industry": pl.String,  # smIndustry; null for BSE rows
    "subject": pl.String,  # desc: "Outcome of Board Meeting", "Financial Result Updates", ...
    "text": pl.String,  # attchmntText: the exchange's one-paragraph summary
    "attachment": pl.String,  # attchmntFile: URL of the filed PDF / XML
    "published": UTC_DATETIME,  # an_dt (IST) in UTC: when the company filed it
    "disseminated": UTC_DATETIME,  # exchdisstime (IST) in UTC: when the exchange broadcast it; may be null
    "source": pl.String,
}

# Daily bhavcopy (end-of-day prices) of the cash market, one row per symbol, series and trading day.
INDIA_BHAVCOPY = {
    "exchange": pl.String,
    "symbol": pl.String,
    "series": pl.String,  # EQ (rolling), BE/BZ (trade-for-trade), SM/ST (SME), ...
    "isin": pl.String,  # null in the pre-UDiFF "sec_bhavdata_full" files
    "date": pl.Date,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "last": pl.Float64,
    "prev_close": pl.Float64,
    "volume": pl.Float64,  # shares traded
    "turnover": pl.Float64,  # INR (sec_bhavdata_full's lakhs converted)
    "trades": pl.Float64,  # number of trades
    "source": pl.String,
}

# Past public issues (IPOs) as the exchange lists them, one row per issue.
INDIA_IPOS = {
    "exchange": pl.String,
    "symbol": pl.String,
    "company": pl.String,  # without NSE's "-Issue Withdrawn" style suffix (that goes to status)
    "security_type": pl.String,  # EQ (main board) | SME
    "issue_start": pl.Date,
    "issue_end": pl.Date,
    "listing_date": pl.Date,  # null until listed (NSE shows "-")
    "issue_price": pl.Float64,  # final price in INR; null until fixed
    "price_band_low": pl.Float64,
    "price_band_high": pl.Float64,
    "issue_size_shares": pl.Float64,  # where the exchange states it as a share count
    "issue_size_inr": pl.Float64,  # where it states an amount ("Rs 1,200 Cr" -> 1.2e10)
    "status": pl.String,  # listed | closed | withdrawn | postponed | ...
    "source": pl.String,
}

INDIA_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "india_announcements": INDIA_ANNOUNCEMENTS,
    "india_bhavcopy": INDIA_BHAVCOPY,
    "india_ipos": INDIA_IPOS,
}

# For cleaning.py: the key of one observation, and the columns that must never be null.
INDIA_KEYS = {
    "india_announcements": ["ann_id"],
    "india_bhavcopy": ["exchange", "symbol", "series", "date"],
    "india_ipos": ["exchange", "symbol", "issue_start"],
}
INDIA_REQUIRED = {
    "india_announcements": ["ann_id", "exchange", "symbol", "subject", "published"],
    "india_bhavcopy": ["exchange", "symbol", "series", "date", "open", "high", "low", "close", "volume"],
    "india_ipos": ["exchange", "symbol", "company", "security_type", "status"],
}
