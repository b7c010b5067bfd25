"""Documents from the Indian-exchange sources and IPO listing performance.

- Announcement digests (news_filings domain): one document per company and IST day, listing that
  day's announcements to the exchange in time order (subject, the exchange's summary, the time in
  IST). Dated on the IST day, which is never earlier than the UTC day the text became public.
- IPO listing notes (market domain): one per listed issue, from `ipo.listing_performance`: issue
  price and band, the listing session, and the first-day, first-week and first-month returns that
  exist. Dated on the last session it describes, so a note never speaks of a day after its date.
  Any market: the currency symbol is the row's ``currency`` if the table has one, else by
  exchange (rupees for NSE/BSE, dollars otherwise).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from ..sources.live.india import IST
from .render import _doc, _frame, _pick

_CURRENCY = {"INR": "₹", "USD": "$", "EUR": "€", "GBP": "£"}


def _day(d: dt.date) -> str:
    return f"{d.day} {d:%B %Y}"


def _amount(x: float, sym: str) -> str:
    return f"{sym}{x:,.2f}"


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


# ---- announcements -----------------------------------------------------------------------------------
_ANN_OPEN = [
    "On {day}, {company} ({exchange}: {symbol}) made {n} to the exchange.",
    "{company} ({exchange}: {symbol}) filed {n} with the {exchange} on {day}.",
    "Exchange filings by {company} ({exchange}: {symbol}) on {day}: {n}.",
]


def render_announcements(ann: pl.DataFrame) -> pl.DataFrame:
    """One digest per symbol and IST day of INDIA_ANNOUNCEMENTS."""
    if ann.is_empty():
        return _frame([])
    df = ann.with_columns(_local=pl.col("published").dt.convert_time_zone("Asia/Kolkata")).with_columns(
        _day=pl.col("_local").dt.date()).sort("exchange", "symbol", "_local", "ann_id")
    rows = []
    for (exchange, symbol, day), g in df.group_by(["exchange", "symbol", "_day"], maintain_order=True):
        items = g.to_dicts()
        company = next((r["company"] for r in items if r["company"]), symbol)
        n = len(items)
        head = _pick(_ANN_OPEN, exchange, symbol, day).format(
            day=_day(day), company=company, exchange=exchange, symbol=symbol,
            n="one announcement" if n == 1 else f"{n} announcements")
        lines = []
        for r in items:
            at = r["published"].astimezone(IST)
            line = f"{at:%H:%M} IST, {r['subject']}"
            text = (r["text"] or "").strip()
            lines.append(f"- {line}: {text}" if text else f"- {line}.")
        subjects = ", ".join(dict.fromkeys(r["subject"] for r in items))
        rows.append(_doc("news_filings", items[0]["source"], symbol, day, f"{symbol} exchange filings {day}: {subjects}",
                         head + "\n" + "\n".join(lines)))
    return _frame(rows)


# ---- IPO listing performance -----------------------------------------------------------------------
_IPO_OPEN = [
    "{company} ({where}) listed on {listing} after an initial public offering priced at {price}{band}.",
    "Shares of {company} began trading on {listing} ({where}); the IPO had been priced at {price}{band}.",
    "{company} came to market on {listing} ({where}) with an issue price of {price}{band}.",
]
_IPO_DAY1_OPEN = [
    "The stock opened at {open} ({open_ret} against the issue price) and closed its first session at {close} ({close_ret}).",
    "It opened at {open}, {open_ret} from the issue price, and ended the listing day at {close}, {close_ret}.",
]
_IPO_DAY1 = [
    "It closed its first session at {close}, {close_ret} against the issue price.",
    "The listing day ended at {close} ({close_ret} from the issue price).",
]
_IPO_WEEK = [
    "After five sessions, on {date}, it stood at {close}, {ret} from the issue price.",
    "By the fifth session ({date}) the close was {close} ({ret} against the issue price).",
]
_IPO_MONTH = [
    "A month in (21 sessions, to {date}) it closed at {close}, a return of {ret} on the issue price.",
    "After its first month of trading, on {date}, the stock was at {close} ({ret} from the issue price).",
]


def _currency(r: dict) -> str:
    if r.get("currency"):
        return _CURRENCY.get(str(r["currency"]).upper(), f"{r['currency']} ")
    return "₹" if str(r.get("exchange") or "").upper() in ("NSE", "BSE") else "$"


def _size(r: dict, sym: str) -> str | None:
    if r.get("issue_size_inr"):
        amount = r["issue_size_inr"]
        return f"The issue raised {sym}{amount / 1e7:,.1f} crore" if sym == "₹" else f"The issue raised {sym}{amount:,.0f}"
    if r.get("issue_size_shares"):
        return f"The offer was for {r['issue_size_shares']:,.0f} shares"
    return None


def render_ipo_performance(perf: pl.DataFrame, *, ticker: str = "symbol", domain: str = "market") -> pl.DataFrame:
    """One note per issue with at least its listing session in `perf` (from `ipo.listing_performance`)."""
    rows = []
    for r in perf.filter(pl.col("first_date").is_not_null()).sort("first_date", ticker).iter_rows(named=True):
        sym, t = _currency(r), r[ticker]
        exchange = r.get("exchange")
        where = f"{exchange}: {t}" if exchange else t
        low, high = r.get("price_band_low"), r.get("price_band_high")
        band = f" (price band {_amount(low, sym)} to {_amount(high, sym)})" if low and high and low != high else ""
        f = dict(company=r.get("company") or t, where=where, listing=_day(r["first_date"]),
                 price=_amount(r["issue_price"], sym), band=band)
        parts = [_pick(_IPO_OPEN, t, r["listing_date"]).format(**f)]
        size = _size(r, sym)
        if size or r.get("security_type") == "SME":
            board = " on the SME platform" if r.get("security_type") == "SME" else ""
            parts.append(f"{size}{board}." if size else f"It listed{board}.")
        if r["listing_open"] is not None:
            parts.append(_pick(_IPO_DAY1_OPEN, t, "d1").format(
                open=_amount(r["listing_open"], sym), open_ret=_pct(r["open_return"]),
                close=_amount(r["listing_close"], sym), close_ret=_pct(r["day1_return"])))
        else:
            parts.append(_pick(_IPO_DAY1, t, "d1").format(close=_amount(r["listing_close"], sym),
                                                          close_ret=_pct(r["day1_return"])))
        last = r["first_date"]
        for key, options in (("week1", _IPO_WEEK), ("month1", _IPO_MONTH)):
            if r[f"{key}_date"] is not None:
                last = r[f"{key}_date"]
                parts.append(_pick(options, t, key).format(date=_day(last), close=_amount(r[f"{key}_close"], sym),
                                                           ret=_pct(r[f"{key}_return"])))
        rows.append(_doc(domain, r.get("source") or "", t, last, f"{t} IPO listing performance", " ".join(parts)))
    return _frame(rows)
