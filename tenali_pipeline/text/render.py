"""Render cleaned sources into training documents.

Every document is stamped with its domain, source, instrument and ``date``: the last day it
describes, or the day it became public if that is later (a GDP figure is dated when it was
published, not the quarter it measures). The temporal split relies on that stamp. Phrasing varies by
a hash of the document's key, so the same data always gives the same text, and numbers are
formatted one way everywhere (``$1,234.56``, ``+1.2%``).
"""

from __future__ import annotations

import hashlib
import zlib

import polars as pl

from . import filings as _filings

DOCUMENT_SCHEMA = {
    "doc_id": pl.String,
    "domain": pl.String,
    "source": pl.String,
    "instrument": pl.String,
    "date": pl.Date,
    "title": pl.String,
    "text": pl.String,
}

# The seed's six domains; the mix weights in corpus.py refer to these names.
DOMAINS = ("market", "economic", "news_filings", "technical", "educational", "crypto_forex")


def _pick(options: list[str], *key) -> str:
    return options[zlib.crc32("|".join(map(str, key)).encode()) % len(options)]


def money(x: float) -> str:
    return f"${x:,.2f}"


def pct(x: float) -> str:
    return f"{x * 100:+.1f}%"


def _doc(domain, source, instrument, date, title, text) -> dict:
    key = f"{domain}|{source}|{instrument}|{date}|{title}"
    return dict(doc_id=hashlib.sha1(key.encode()).hexdigest(), domain=domain, source=source,
                instrument=instrument, date=date, title=title, text=text)


def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=DOCUMENT_SCHEMA) if rows else pl.DataFrame(schema=DOCUMENT_SCHEMA)


# ---- market: one summary per instrument and month ---------------------------------------------
_MARKET_OPEN = [
    "{t} {verb} {chg} in {month}, closing at {close} after opening the month at {open}.",
    "In {month}, {t} {verb} {chg}, from {open} to {close}.",
    "{t} ended {month} at {close}, a monthly change of {ret} from its {open} open.",
]
_MARKET_RANGE = [
    "It traded between {low} and {high} over {days} sessions, with average daily volume of {vol} {unit}.",
    "Across {days} trading days the range was {low} to {high}; on average {vol} {unit} changed hands each day.",
]
_MARKET_EXTREMES = [
    "The best day was {best_day} ({best}); the worst was {worst_day} ({worst}).",
    "Its largest daily gain came on {best_day} ({best}) and its largest loss on {worst_day} ({worst}).",
]


def render_market(prices: pl.DataFrame, *, domain: str = "market", by: str = "ticker", time: str = "date",
                  unit: str = "shares") -> pl.DataFrame:
    """Monthly summaries per instrument from daily OHLCV (stocks, or crypto with ``by='symbol'``)."""
    if prices.is_empty():
        return _frame([])
    df = prices.with_columns(pl.col(time).cast(pl.Date).alias("_day")).sort(by, "_day")
    adj = "adj_close" if "adj_close" in df.columns else "close"
    df = df.with_columns(ret=(pl.col(adj) / pl.col(adj).shift(1) - 1).over(by), month=pl.col("_day").dt.truncate("1mo"))
    monthly = df.group_by(by, "month").agg(
        open=pl.col("open").first(), close=pl.col("close").last(), high=pl.col("high").max(),
        low=pl.col("low").min(), vol=pl.col("volume").mean(), days=pl.len(), last_day=pl.col("_day").max(),
        mret=(pl.col("ret").fill_null(0) + 1).product() - 1,
        best=pl.col("ret").max(), worst=pl.col("ret").min(),
        best_day=pl.col("_day").sort_by(pl.col("ret").fill_null(0)).last(),
        worst_day=pl.col("_day").sort_by(pl.col("ret").fill_null(0)).first(),
        source=pl.col("source").first(),
    ).sort(by, "month")
    rows = []
    for r in monthly.iter_rows(named=True):
        t, m = r[by], r["month"]
        f = dict(t=t, month=f"{m:%B %Y}", verb="rose" if r["mret"] >= 0 else "fell", ret=pct(r["mret"]),
                 chg=f"{abs(r['mret']) * 100:.1f}%", unit=unit,
                 open=money(r["open"]), close=money(r["close"]), low=money(r["low"]), high=money(r["high"]),
                 days=r["days"], vol=f"{r['vol']:,.0f}")
        parts = [_pick(_MARKET_OPEN, t, m).format(**f), _pick(_MARKET_RANGE, t, m).format(**f)]
        if r["best"] is not None and r["days"] > 2:
            parts.append(_pick(_MARKET_EXTREMES, t, m).format(
                best_day=f"{r['best_day']:%B %d}", best=pct(r["best"]), worst_day=f"{r['worst_day']:%B %d}", worst=pct(r["worst"])))
        rows.append(_doc(domain, r["source"], t, r["last_day"], f"{t} in {m:%B %Y}", " ".join(parts)))
    return _frame(rows)


# ---- economic: one release note per quarter (or month) with every series known by then ---------
def render_macro(obs: pl.DataFrame) -> pl.DataFrame:
    """A note per observation date listing each series' level and change, dated when published."""
    if obs.is_empty():
        return _frame([])
    df = obs.sort("series_id", "date").with_columns(prev=pl.col("value").shift(1).over("series_id"))
    # "A year earlier" by calendar, so monthly, quarterly and daily series all compare like with like.
    year_ago = obs.select("series_id", date=pl.col("date").dt.offset_by("1y"), prev_year="value")
    df = df.join(year_ago, on=["series_id", "date"], how="left")
    rows = []
    for (day,), g in df.group_by(["date"], maintain_order=True):
        lines = []
        for r in g.sort("series_id").iter_rows(named=True):
            line = f"{r['title']} ({r['series_id']}) was {r['value']:,.2f} ({r['units']})"
            if r["prev"] not in (None, 0) and "Percent" not in r["units"]:
                line += f", {pct(r['value'] / r['prev'] - 1)} from the previous period"
                if r["prev_year"] not in (None, 0):
                    line += f" and {pct(r['value'] / r['prev_year'] - 1)} from a year earlier"
            elif r["prev"] is not None:
                line += f", {r['value'] - r['prev']:+.2f} points from the previous period"
            lines.append(line + ".")
        published = g["realtime_start"].max()
        freq = g["frequency"][0].lower()
        period = f"Q{(day.month - 1) // 3 + 1} {day.year}" if freq.startswith("q") else f"{day:%B %Y}"
        intro = _pick([f"US economic data for {period}, as first published on {published:%B %d, %Y}:",
                       f"Macroeconomic release for {period} (published {published:%B %d, %Y}):"], day)
        rows.append(_doc("economic", g["source"][0], "US", published, f"US economy {period}", intro + "\n" + "\n".join(lines)))
    return _frame(rows)


# ---- filings: section-aware plain text from the primary document (see filings.py) ----------------
def html_to_text(html: str) -> str:
    """Visible text of an HTML document, one line per block and per table row (cells space-separated)."""
    return _filings.html_to_text(html, cell_separator=" ")


def render_filings(filings: pl.DataFrame) -> pl.DataFrame:
    """One document per filing: a header line, then each item under its heading (``Item 1A. Risk Factors``)."""
    rows = []
    for r in filings.iter_rows(named=True):
        header = f"{r['company']} (CIK {r['cik']}) filed a Form {r['form']} on {r['filed']:%B %d, %Y}"
        if r["period"] is not None:
            header += f" for the period ended {r['period']:%B %d, %Y}"
        text = _filings.filing_to_text(r["document"], r["form"], header=header + ".",
                                       document_format=r["document_format"])
        rows.append(_doc("news_filings", r["source"], r["ticker"] or r["cik"], r["filed"],
                         f"{r['ticker'] or r['cik']} {r['form']} {r['filed']}", text))
    return _frame(rows)


def render_news(news: pl.DataFrame) -> pl.DataFrame:
    """One document per entry: headline, time, and the full article text when it was fetched
    (TENALI_NEWS_ARTICLES), else the feed's summary (the article starts where a teaser stops)."""
    rows = []
    for r in news.iter_rows(named=True):
        body = r.get("article") or r["summary"] or ""
        rows.append(_doc("news_filings", r["source"], r["feed"], r["published"].date(), r["title"],
                         f"{r['title']}\n{r['published']:%B %d, %Y %H:%M} UTC\n\n{body}".strip()))
    return _frame(rows)


def render_documents(docs: pl.DataFrame) -> pl.DataFrame:
    rows = [_doc("educational", r["source"], r["uri"], r["date"], r["title"] or r["uri"], r["text"].strip())
            for r in docs.iter_rows(named=True)]
    return _frame(rows)


def __getattr__(name: str):
    # render_technical moved to text/technical.py (analyst notes from technicals.compute_features); imported
    # lazily because technical.py builds on the helpers above.
    if name == "render_technical":
        from .technical import render_technical

        return render_technical
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
