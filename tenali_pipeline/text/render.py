"""Render cleaned sources into training documents.

Every document is stamped with its domain, source, instrument and ``date``: the last day it
describes, or the day it became public if that is later (a GDP figure is dated when it was
published, not the quarter it measures). The temporal split relies on that stamp. Phrasing varies by
a hash of the document's key, so the same data always gives the same text, and numbers are
formatted one way everywhere (``$1,234.56``, ``+1.2%``).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from html.parser import HTMLParser

import polars as pl

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


# ---- technical analysis: the indicator state at each month's last bar --------------------------
def render_technical(features: pl.DataFrame, *, by: str = "ticker", time: str = "date", domain: str = "technical") -> pl.DataFrame:
    if features.is_empty():
        return _frame([])
    df = features.with_columns(pl.col(time).cast(pl.Date).alias("_day")).sort(by, "_day").with_columns(
        month=pl.col("_day").dt.truncate("1mo"),
        cross=pl.when((pl.col("sma_50") > pl.col("sma_200")) & (pl.col("sma_50").shift(1) <= pl.col("sma_200").shift(1)))
        .then(pl.lit("golden")).when((pl.col("sma_50") < pl.col("sma_200")) & (pl.col("sma_50").shift(1) >= pl.col("sma_200").shift(1)))
        .then(pl.lit("death")).over(by),
    )
    crosses = df.filter(pl.col("cross").is_not_null()).group_by(by, "month").agg(pl.col("cross"), pl.col("_day").alias("cross_days"))
    last = df.group_by(by, "month").agg(pl.all().sort_by("_day").last()).join(crosses, on=[by, "month"], how="left")
    rows = []
    price = "adj_close" if "adj_close" in features.columns else "close"
    for r in last.sort(by, "month").iter_rows(named=True):
        if r["rsi_14"] is None or r["sma_50"] is None:
            continue
        t, day = r[by], r["_day"]
        rsi_v = r["rsi_14"]
        rsi_txt = "overbought" if rsi_v > 70 else "oversold" if rsi_v < 30 else "neutral"
        parts = [f"Technical picture for {t} at the close of {day:%B %d, %Y}:",
                 f"the 14-day RSI stood at {rsi_v:.1f}, a {rsi_txt} reading;",
                 f"MACD was {r['macd']:+.2f} against a signal line of {r['macd_signal']:+.2f}, "
                 f"so momentum was {'positive' if r['macd_hist'] > 0 else 'negative'}."]
        px = r[price]
        parts.append(f"The price ({money(px)}, adjusted) was {'above' if px > r['sma_50'] else 'below'} its 50-day average of {money(r['sma_50'])}")
        if r["sma_200"] is not None:
            parts[-1] += f" and {'above' if px > r['sma_200'] else 'below'} its 200-day average of {money(r['sma_200'])}."
        else:
            parts[-1] += "."
        if r["bb_upper"] is not None:
            pos = (px - r["bb_lower"]) / (r["bb_upper"] - r["bb_lower"]) if r["bb_upper"] != r["bb_lower"] else 0.5
            parts.append(f"It sat {pos * 100:.0f}% of the way up its Bollinger Bands ({money(r['bb_lower'])} to {money(r['bb_upper'])}).")
        if r["realised_vol_20"] is not None:
            parts.append(f"Twenty-day realised volatility was {r['realised_vol_20'] * 100:.1f}% annualised.")
        for kind, d in zip(r["cross"] or [], r["cross_days"] or []):
            parts.append(f"A {kind} cross formed on {d:%B %d}, when the 50-day average crossed "
                         f"{'above' if kind == 'golden' else 'below'} the 200-day average.")
        rows.append(_doc(domain, r["source"], t, day, f"{t} technicals {day:%Y-%m}", " ".join(parts)))
    return _frame(rows)


# ---- filings: section-aware plain text from the primary document --------------------------------
class _TextExtractor(HTMLParser):
    BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table"}
    SKIP = {"script", "style", "title", "ix:header"}
    CELL = {"td", "th"}  # table cells: a space between them, or "Net sales$1,234" runs together

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")
        elif tag in self.CELL:
            self.parts.append(" ")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    text = "".join(parser.parts)
    lines = [re.sub(r"[ \t\xa0]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def render_filings(filings: pl.DataFrame) -> pl.DataFrame:
    rows = []
    for r in filings.iter_rows(named=True):
        body = html_to_text(r["document"]) if r["document_format"] == "html" else r["document"].strip()
        header = f"{r['company']} (CIK {r['cik']}) filed a Form {r['form']} on {r['filed']:%B %d, %Y}"
        if r["period"] is not None:
            header += f" for the period ended {r['period']:%B %d, %Y}"
        rows.append(_doc("news_filings", r["source"], r["ticker"] or r["cik"], r["filed"],
                         f"{r['ticker'] or r['cik']} {r['form']} {r['filed']}", header + ".\n\n" + body))
    return _frame(rows)


def render_news(news: pl.DataFrame) -> pl.DataFrame:
    rows = [
        _doc("news_filings", r["source"], r["feed"], r["published"].date(), r["title"],
             f"{r['title']}\n{r['published']:%B %d, %Y %H:%M} UTC\n\n{r['summary'] or ''}".strip())
        for r in news.iter_rows(named=True)
    ]
    return _frame(rows)


def render_documents(docs: pl.DataFrame) -> pl.DataFrame:
    rows = [_doc("educational", r["source"], r["uri"], r["date"], r["title"] or r["uri"], r["text"].strip())
            for r in docs.iter_rows(named=True)]
    return _frame(rows)
