"""Render cleaned sources into training documents.

Every document is stamped with its domain, source, instrument and ``date``: the last day it
describes, or the day it became public if that is later (a GDP figure is dated when it was
published, not the quarter it measures). The temporal split relies on that stamp. Phrasing varies by
a hash of the document's key, so the same data always gives the same text, and numbers are
formatted one way everywhere (``$1,234.56``, ``+1.2%``; a price in its quote currency, ``price``).
A month the data does not cover to its end (the current one) is described up to its last bar, never
as having ended (``month_coverage``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
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


# Quote currencies written as a sign before the amount (dollar stablecoins are dollars); any other
# quote (BTC, ETH, CHF, ...) is written as its code after the amount: "0.05234 BTC".
_SIGNS = {"USD": "$", "USDT": "$", "USDC": "$", "BUSD": "$", "FDUSD": "$", "TUSD": "$", "USDP": "$", "DAI": "$",
          "INR": "₹", "EUR": "€", "GBP": "£", "JPY": "¥"}
# Quotes recognised after a dash (Yahoo's "BTC-EUR"): a share class such as "BRK-B" is not a currency.
_DASH_QUOTES = set(_SIGNS) | {"BTC", "ETH", "BNB", "CAD", "AUD", "CHF", "HKD", "SGD", "KRW"}
# Yahoo ticker suffixes of the default universe's venues that do not quote in dollars (XNSE, XBOM).
_SUFFIX_CURRENCY = {"NS": "INR", "BO": "INR"}


def quote_currency(instrument: str) -> str:
    """The currency an instrument's prices are in, read from its name: the quote of a pair (ccxt's
    "ETH/BTC" or "BTC/USDT:USDT", Yahoo's "BTC-EUR"), rupees for NSE/BSE tickers ("RELIANCE.NS"),
    else dollars. Why: "$0.05" for ETH/BTC or "$2,950.10" for an Indian share states a wrong fact."""
    s = str(instrument).upper()
    if "/" in s:
        return s.split("/", 1)[1].split(":", 1)[0] or "USD"
    _, dash, quote = s.rpartition("-")
    if dash and quote in _DASH_QUOTES:
        return quote
    _, dot, suffix = s.rpartition(".")
    return _SUFFIX_CURRENCY.get(suffix, "USD") if dot else "USD"


def price(x: float, currency: str = "USD") -> str:
    """A price in ``currency``: "$1,234.56", "₹2,950.10", "0.05234 BTC"; below 1, four significant
    digits, so a $0.0000123 coin is not "$0.00" and a range is not "$0.05 to $0.05" (sign kept)."""
    sign, a = ("-" if x < 0 else ""), abs(x)
    digits = 2 if a >= 1 or a == 0 or not math.isfinite(a) else 3 - math.floor(math.log10(a))
    mark = _SIGNS.get(currency)
    return f"{sign}{mark}{a:,.{digits}f}" if mark else f"{sign}{a:,.{digits}f} {currency}"


def month_coverage(monthly: pl.DataFrame, by: str, *, month: str, first: str, last: str, weekend: str,
                   lookahead: bool = True) -> pl.DataFrame:
    """Add ``started`` and ``ended``: whether an instrument-month's bars run from the month's first session
    to its last. A month followed by data ended (a month before data started); otherwise it ended only if
    its last bar is the month's last session: the last calendar day for an instrument that trades at
    weekends (``weekend``), else the last weekday. Why: the data's current month is not over, and a note
    must not say the price "ended the month" there. Holidays are unknown, so a month whose last weekday
    is a holiday reads as unfinished, which only makes the text say "through <its last day>". With
    ``lookahead=False`` later data is not consulted (a causal note must read the same when rendered on its date)."""
    m = pl.col(month)
    end = m.dt.month_end()
    last_session = pl.when(pl.col(weekend)).then(end).otherwise(
        end - pl.duration(days=(end.dt.weekday() - 5).clip(lower_bound=0)))
    first_session = pl.when(pl.col(weekend) | (m.dt.weekday() <= 5)).then(m).otherwise(
        m + pl.duration(days=8 - m.dt.weekday()))
    return monthly.sort(by, month).with_columns(
        ended=(pl.col(month).shift(-1).over(by).is_not_null() & lookahead) | (pl.col(last) >= last_session),
        started=pl.col(month).shift(1).over(by).is_not_null() | (pl.col(first) <= first_session))


def span(month_name: str, first: dt.date, last: dt.date, started: bool, ended: bool) -> str:
    """'in March 2020', or what part of it the bars cover: 'in March 2020 through March 13'."""
    out = f"in {month_name}"
    if not started:
        out += f" from {first:%B} {first.day}"
    if not ended:
        out += f" through {last:%B} {last.day}"
    return out


def _doc(domain, source, instrument, date, title, text) -> dict:
    key = f"{domain}|{source}|{instrument}|{date}|{title}"
    return dict(doc_id=hashlib.sha1(key.encode()).hexdigest(), domain=domain, source=source,
                instrument=instrument, date=date, title=title, text=text)


def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=DOCUMENT_SCHEMA) if rows else pl.DataFrame(schema=DOCUMENT_SCHEMA)


# ---- market: one summary per instrument and month ---------------------------------------------
_MARKET_OPEN = [
    "{t} {verb} {chg} in {month}, closing at {close} after opening the month at {open}.",
    "In {month}, {t} {verb} {chg} to close at {close}; it had opened the month at {open}.",
    "{t} ended {month} at {close}, a monthly change of {ret}; it opened the month at {open}.",
]
# A month the bars do not cover end to end (the data's current month, or its first): what they cover.
_MARKET_PART = [
    "{t} {verb} {chg} {span}, closing at {close} on {last} after {opened}.",
    "{Span}, {t} {verb} {chg} to {close} on {last}; it {opened2}.",
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
    """Monthly summaries per instrument from daily OHLCV (stocks, or crypto with ``by='symbol'``).

    The monthly change is close to close (the previous month's last close to this month's, from
    ``adj_close`` where present, so dividends and splits are in it); an instrument's first month in
    the data runs from its first open. Prices are quoted as traded on the month's last day: where a
    split inside the month shows in the raw prices (the ``adj_close / close`` ratio jumps by the
    ``splits`` ratio that day), the earlier bars' open, high and low are divided by it and their
    volume multiplied, so a month never puts pre-split and post-split prices side by side. Data whose
    raw prices are already split-adjusted (Yahoo's) has no such jump and is left as it is.
    """
    if prices.is_empty():
        return _frame([])
    df = prices.with_columns(pl.col(time).cast(pl.Date).alias("_day")).sort(by, "_day")
    adj = "adj_close" if "adj_close" in df.columns else "close"
    df = df.with_columns(ret=(pl.col(adj) / pl.col(adj).shift(1) - 1).over(by), month=pl.col("_day").dt.truncate("1mo"),
                         _weekend=(pl.col("_day").dt.weekday() >= 6).any().over(by))
    if "splits" in df.columns and adj == "adj_close":
        ratio = pl.col("adj_close") / pl.col("close")
        jump = (ratio / ratio.shift(1)).over(by)
        split = pl.col("splits").fill_null(0.0).fill_nan(0.0)
        step = pl.when((split > 0) & (split != 1) & ((jump / split - 1).abs() < 0.05)).then(split).otherwise(1.0)
        df = df.with_columns(_cum=step.cum_prod().over(by))
        df = df.with_columns(_scale=pl.col("_cum") / pl.col("_cum").last().over(by, "month"))
    else:
        df = df.with_columns(_scale=pl.lit(1.0))
    # the first bar of an instrument has no previous close: its month starts from its open
    step_ret = pl.col("ret").fill_null(pl.col("close") / pl.col("open") - 1)
    monthly = df.group_by(by, "month").agg(
        open=(pl.col("open") * pl.col("_scale")).first(), close=pl.col("close").last(),
        high=(pl.col("high") * pl.col("_scale")).max(), low=(pl.col("low") * pl.col("_scale")).min(),
        vol=(pl.col("volume") / pl.col("_scale")).mean(), days=pl.len(), last_day=pl.col("_day").max(),
        first_day=pl.col("_day").min(), weekend=pl.col("_weekend").first(),
        mret=(step_ret + 1).product() - 1,
        best=pl.col("ret").max(), worst=pl.col("ret").min(),
        best_day=pl.col("_day").get(pl.col("ret").arg_max()),
        worst_day=pl.col("_day").get(pl.col("ret").arg_min()),
        source=pl.col("source").first(),
    )
    monthly = month_coverage(monthly, by, month="month", first="first_day", last="last_day", weekend="weekend")
    rows = []
    for r in monthly.iter_rows(named=True):
        t, m = r[by], r["month"]
        cur = quote_currency(t)
        first = f"{r['first_day']:%B} {r['first_day'].day}"
        f = dict(t=t, month=f"{m:%B %Y}", verb="rose" if r["mret"] >= 0 else "fell", ret=pct(r["mret"]),
                 chg=f"{abs(r['mret']) * 100:.1f}%", unit=unit,
                 open=price(r["open"], cur), close=price(r["close"], cur), low=price(r["low"], cur),
                 high=price(r["high"], cur), days=r["days"], vol=f"{r['vol']:,.0f}")
        if r["started"] and r["ended"]:
            opening = _pick(_MARKET_OPEN, t, m).format(**f)
        else:
            sp = span(f["month"], r["first_day"], r["last_day"], r["started"], r["ended"])
            opened = (f"opening the month at {f['open']}" if r["started"] else f"opening at {f['open']} on {first}")
            opening = _pick(_MARKET_PART, t, m).format(
                **f, span=sp, Span=sp[0].upper() + sp[1:], last=f"{r['last_day']:%B} {r['last_day'].day}",
                opened=opened, opened2=opened.replace("opening", "opened"))
        parts = [opening, _pick(_MARKET_RANGE, t, m).format(**f)]
        if r["best"] is not None and r["days"] > 2:
            # "largest daily gain" only for a rise and "largest loss" only for a fall; else best and worst day
            signs_fit = r["best"] > 0 and r["worst"] < 0
            parts.append((_pick(_MARKET_EXTREMES, t, m) if signs_fit else _MARKET_EXTREMES[0]).format(
                best_day=f"{r['best_day']:%B %d}", best=pct(r["best"]), worst_day=f"{r['worst_day']:%B %d}", worst=pct(r["worst"])))
        rows.append(_doc(domain, r["source"], t, r["last_day"], f"{t} in {m:%B %Y}", " ".join(parts)))
    return _frame(rows)


# ---- economic: one release note per observation period and frequency --------------------------
def _macro_period(day, freq: str) -> str:
    """The period an observation dated ``day`` measures, by FRED's frequency name (FRED dates an
    observation by the start of its month, quarter or year, a weekly one by the week's last day)."""
    if freq.startswith("q"):
        return f"Q{(day.month - 1) // 3 + 1} {day.year}"
    if freq.startswith("a"):
        return f"{day.year}"
    if freq.startswith("semi") or freq == "sa":
        return f"H{(day.month - 1) // 6 + 1} {day.year}"
    if freq.startswith(("bi", "bw")):
        return f"the two weeks ending {day:%B} {day.day}, {day.year}"
    if freq.startswith("w"):
        return f"the week ending {day:%B} {day.day}, {day.year}"
    if freq.startswith("d"):
        return f"{day:%B} {day.day}, {day.year}"
    return f"{day:%B %Y}"


def render_macro(obs: pl.DataFrame) -> pl.DataFrame:
    """A note per observation date and frequency listing each series' level and change, dated when
    published. Series of different frequencies sharing a date (monthly CPI and quarterly GDP both
    dated January 1) measure different periods, so they get separate notes, each labelled with its own
    period (a daily series gets one note per day, not one per day all titled with the month)."""
    if obs.is_empty():
        return _frame([])
    df = obs.sort("series_id", "date").with_columns(prev=pl.col("value").shift(1).over("series_id"))
    # "A year earlier" by calendar, so monthly, quarterly and daily series all compare like with like.
    # February 28 and 29 of a leap year both land on February 28 a year later: keep the 28th, one line per date.
    year_ago = (obs.sort("date").select("series_id", date=pl.col("date").dt.offset_by("1y"), prev_year="value")
                .unique(["series_id", "date"], keep="first", maintain_order=True))
    df = df.join(year_ago, on=["series_id", "date"], how="left")
    df = df.with_columns(_freq=pl.col("frequency").fill_null("").str.to_lowercase())
    rows = []
    for (day, freq), g in df.group_by(["date", "_freq"], maintain_order=True):
        lines = []
        for r in g.sort("series_id").iter_rows(named=True):
            line = f"{r['title']} ({r['series_id']}) was {r['value']:,.2f} ({r['units']})"
            # A percentage change only between two positive levels: from -100 to -50 is a rise, not "-50%".
            if r["prev"] is not None and r["prev"] > 0 and r["value"] > 0 and "Percent" not in r["units"]:
                line += f", {pct(r['value'] / r['prev'] - 1)} from the previous period"
                if r["prev_year"] is not None and r["prev_year"] > 0:
                    line += f" and {pct(r['value'] / r['prev_year'] - 1)} from a year earlier"
            elif r["prev"] is not None:
                unit = " points" if "Percent" in r["units"] else ""
                line += f", {r['value'] - r['prev']:+,.2f}{unit} from the previous period"
            lines.append(line + ".")
        published = g["realtime_start"].max()
        period = _macro_period(day, freq)
        intro = _pick([f"US economic data for {period}, as first published on {published:%B %d, %Y}:",
                       f"Macroeconomic release for {period} (published {published:%B %d, %Y}):"], day)
        rows.append(_doc("economic", g["source"][0], "US", published, f"US economy {period}", intro + "\n" + "\n".join(lines)))
    return _frame(rows)


# ---- filings: section-aware plain text from the primary document (see filings.py) ----------------
def html_to_text(html: str) -> str:
    """Visible text of an HTML document, one line per block and per table row (cells space-separated)."""
    return _filings.html_to_text(html, cell_separator=" ")


def _exhibits(row: dict) -> list[dict]:
    """The row's `exhibits` JSON list; [] when null or absent (tables written before the column)."""
    value = row.get("exhibits")
    if not value:
        return []
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"filing {row.get('accession')}: `exhibits` is not the JSON list the EDGAR parser writes "
                         f"({exc}); the raw filings table was written by something else: fix or drop that row") from exc


def render_filings(filings: pl.DataFrame) -> pl.DataFrame:
    """One document per filing: a header line, then each item under its heading (``Item 1A. Risk Factors``), then an
    8-K's exhibits (its press release) under theirs (``Exhibit 99.1``)."""
    rows = []
    for r in filings.iter_rows(named=True):
        header = f"{r['company']} (CIK {r['cik']}) filed a Form {r['form']} on {r['filed']:%B %d, %Y}"
        if r["period"] is not None:
            # An 8-K's "period of report" is the date of the event it reports, not the end of a period.
            header += (f" reporting an event of {r['period']:%B %d, %Y}" if _filings.base_form(r["form"]) == "8-K"
                       else f" for the period ended {r['period']:%B %d, %Y}")
        text = _filings.filing_to_text(r["document"], r["form"], header=header + ".",
                                       document_format=r["document_format"], exhibits=_exhibits(r))
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
