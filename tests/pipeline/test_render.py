"""Rendering: document schema, non-empty text, dates no earlier than what a document describes, determinism,
and HTML to text."""

import datetime as dt
import re

import polars as pl
import pytest

from tenali_pipeline.cleaning import clean
from tenali_pipeline.sources.sample import (
    SampleCryptoClient,
    SampleDocumentsClient,
    SampleFilingsClient,
    SampleMacroClient,
    SampleMarketClient,
    SampleNewsClient,
)
from tenali_pipeline.technicals.features import compute_features
from tenali_pipeline.text.render import (
    DOCUMENT_SCHEMA,
    DOMAINS,
    html_to_text,
    money,
    pct,
    render_documents,
    render_filings,
    render_macro,
    render_market,
    render_news,
)
from tenali_pipeline.text.technical import render_technical

D = dt.date


@pytest.fixture(scope="module")
def inputs() -> dict[str, pl.DataFrame]:
    market = clean("market", SampleMarketClient(["AAPL", "IBM", "FB"], start="2011-06-01").fetch()).df
    crypto = clean("crypto", SampleCryptoClient(start="2012-01-01").fetch()).df
    ohlcv = ["open", "high", "low", "close", "volume"]
    features = compute_features(
        pl.concat([
            market.select("date", *ohlcv, "adj_close", "source", instrument="ticker"),
            crypto.select(pl.col("timestamp").dt.date().alias("date"), *ohlcv, adj_close="close", source="source",
                          instrument="symbol"),
        ], how="vertical_relaxed"))
    return {
        "market": market,
        "crypto": crypto,
        "features": features,
        "macro": clean("macro", SampleMacroClient(["GDPC1", "UNRATE", "CPIAUCSL"]).fetch()).df,
        "filings": clean("filings", SampleFilingsClient(["AAPL", "MSFT"], start="2011-01-01").fetch()).df,
        "news": clean("news", SampleNewsClient(["AAPL", "MSFT"], start="2011-01-01").fetch()).df,
        "documents": clean("documents", SampleDocumentsClient(n_documents=40).fetch()).df,
    }


RENDERERS = {
    "market": lambda i: render_market(i["market"]),
    "crypto": lambda i: render_market(i["crypto"], domain="crypto_forex", by="symbol", time="timestamp", unit="coins"),
    "technical": lambda i: render_technical(i["features"], by="instrument"),
    "macro": lambda i: render_macro(i["macro"]),
    "filings": lambda i: render_filings(i["filings"]),
    "news": lambda i: render_news(i["news"]),
    "documents": lambda i: render_documents(i["documents"]),
}


@pytest.fixture(scope="module")
def rendered(inputs) -> dict[str, pl.DataFrame]:
    return {name: make(inputs) for name, make in RENDERERS.items()}


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_schema_and_non_empty_text(rendered, name):
    docs = rendered[name]
    assert dict(docs.schema) == DOCUMENT_SCHEMA
    assert docs.height > 0
    assert docs.null_count().select("doc_id", "domain", "source", "instrument", "date", "text").sum_horizontal().item() == 0
    assert (docs["text"].str.strip_chars().str.len_chars() > 0).all()
    assert docs["doc_id"].n_unique() == docs.height
    assert set(docs["domain"]) <= set(DOMAINS)
    assert docs["source"].str.starts_with("sample:").all()
    for text in docs["text"]:
        assert not re.search(r"\b(None|nan|NaN|inf)\b", text), text
        assert "{" not in text and "}" not in text, text  # no unformatted template field


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_rendering_is_deterministic(inputs, rendered, name):
    assert RENDERERS[name](inputs).equals(rendered[name])


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_empty_input_gives_an_empty_frame_with_the_schema(inputs, name):
    empty = {k: v.clear() for k, v in inputs.items()}
    out = RENDERERS[name](empty)
    assert out.is_empty() and dict(out.schema) == DOCUMENT_SCHEMA


@pytest.mark.parametrize(("name", "by", "time"), [("market", "ticker", "date"), ("crypto", "symbol", "timestamp")])
def test_monthly_summaries_are_dated_the_last_trading_day_of_the_month(inputs, rendered, name, by, time):
    days = inputs[name].select(pl.col(by).alias("instrument"), pl.col(time).cast(pl.Date).alias("day"))
    last = days.group_by("instrument", pl.col("day").dt.truncate("1mo").alias("month")).agg(last=pl.col("day").max())
    docs = rendered[name].with_columns(month=pl.col("date").dt.truncate("1mo"))
    joined = docs.join(last, on=["instrument", "month"], how="left")
    assert joined["last"].null_count() == 0
    assert (joined["date"] == joined["last"]).all()
    assert docs.height == last.height  # one document per instrument and month


def test_technical_notes_are_dated_the_bar_they_describe(inputs, rendered):
    feats = inputs["features"]
    docs = rendered["technical"]
    for r in docs.sample(20, seed=1).iter_rows(named=True):
        month = feats.filter(pl.col("instrument") == r["instrument"],
                             pl.col("date").dt.truncate("1mo") == r["date"].replace(day=1))
        assert r["date"] == month["date"].max()
        assert f"{r['date']:%B} {r['date'].day}" in r["text"]
        row = month.filter(pl.col("date") == r["date"])
        if row["rsi_14"].item() is not None:
            assert f"{row['rsi_14'].item():.1f}" in r["text"]
    # the analyst notes themselves are tested in test_technical_render.py


def test_economic_notes_are_dated_when_published_never_before_the_period(inputs, rendered):
    obs = inputs["macro"]
    docs = rendered["macro"]
    assert docs.height == obs["date"].n_unique()
    for r in docs.iter_rows(named=True):
        q, year = re.fullmatch(r"US economy Q(\d) (\d{4})", r["title"]).groups()
        start = D(int(year), 3 * int(q) - 2, 1)
        next_quarter = D(start.year + (start.month == 10), start.month + 3 if start.month < 10 else 1, 1)
        period_end = next_quarter - dt.timedelta(days=1)
        assert r["date"] > period_end, (r["title"], r["date"])
        published = obs.filter(pl.col("date") == start)["realtime_start"]
        assert r["date"] == published.max()
        assert f"{r['date']:%B %d, %Y}" in r["text"]


def test_economic_note_uses_the_latest_publication_of_its_series():
    rows = [("A", "Series A", "Index", D(2020, 1, 1), 100.0, D(2020, 4, 30)),
            ("B", "Series B", "Percent", D(2020, 1, 1), 5.0, D(2020, 5, 15)),
            ("A", "Series A", "Index", D(2020, 4, 1), 110.0, D(2020, 7, 30)),
            ("B", "Series B", "Percent", D(2020, 4, 1), 4.5, D(2020, 8, 14))]
    obs = pl.DataFrame(rows, schema=["series_id", "title", "units", "date", "value", "realtime_start"], orient="row")
    obs = obs.with_columns(frequency=pl.lit("Quarterly"), source=pl.lit("test"))
    docs = render_macro(obs).sort("date")
    assert docs["date"].to_list() == [D(2020, 5, 15), D(2020, 8, 14)]
    second = docs["text"][1]
    assert "Series A (A) was 110.00 (Index), +10.0% from the previous period." in second
    assert "Series B (B) was 4.50 (Percent), -0.50 points from the previous period." in second


def test_filings_news_and_documents_dates(inputs, rendered):
    filings = inputs["filings"].sort("accession")
    fdocs = rendered["filings"]
    assert sorted(fdocs["date"].to_list()) == sorted(filings["filed"].to_list())
    assert (filings["filed"] >= filings["period"]).all()
    news = rendered["news"]
    assert sorted(news["date"].to_list()) == sorted(inputs["news"]["published"].dt.date().to_list())
    docs = rendered["documents"]
    assert sorted(docs["date"].to_list()) == sorted(inputs["documents"]["date"].to_list())


def test_filing_text_is_plain_with_item_headings_on_their_own_lines(rendered):
    for text in rendered["filings"]["text"]:
        assert "<" not in text and ">" not in text
        lines = text.splitlines()
        assert re.match(r".+ \(CIK \d{10}\) filed a Form (10-K|10-Q|8-K) on ", lines[0])
        assert any(re.fullmatch(r"(Part I+\. )?Item \d+[A-Z]?(\.\d+)?\. .+", line) for line in lines), lines
        assert "for the period ended" not in lines[0] or lines[0].endswith(".")


def test_market_summary_numbers():
    days = [D(2020, 3, 2), D(2020, 3, 3), D(2020, 3, 4), D(2020, 3, 31)]
    prices = pl.DataFrame({"ticker": "XYZ", "date": days, "open": [10.0, 11.0, 12.0, 11.0],
                           "high": [11.5, 12.5, 12.8, 12.0], "low": [9.5, 10.5, 11.0, 10.0],
                           "close": [11.0, 12.0, 11.0, 11.5], "adj_close": [11.0, 12.0, 11.0, 11.5],
                           "volume": [1000.0, 2000.0, 3000.0, 2000.0], "source": "test"})
    doc = render_market(prices).row(0, named=True)
    assert doc["date"] == D(2020, 3, 31) and doc["title"] == "XYZ in March 2020"
    text = doc["text"]
    for figure in (money(10.0), money(11.5), money(9.5), money(12.8), "2,000 shares"):
        assert figure in text, figure
    assert re.search(r"\b4 (sessions|trading days)", text)
    assert "15.0%" in text  # the instrument's first month in the data: from its first open, 10.0 -> 11.5
    assert f"March 03 ({pct(12 / 11 - 1)})" in text  # best day
    assert f"March 04 ({pct(11 / 12 - 1)})" in text  # worst day


@pytest.mark.parametrize(("x", "want"), [(1234.5, "$1,234.50"), (0.004, "$0.00"), (1e6, "$1,000,000.00")])
def test_money(x, want):
    assert money(x) == want


def test_pct():
    assert pct(0.0123) == "+1.2%" and pct(-0.05) == "-5.0%" and pct(0) == "+0.0%"


def test_html_to_text():
    html = """<html><head><title>Page Title</title><style>p { color: red }</style>
    <script>var secret = 1;</script></head><body>
    <h1>Annual Report</h1><p>Net sales rose &amp; margins   widened.<br>Second&nbsp;line.</p>
    <ix:header><ix:hidden>dei:Hidden</ix:hidden></ix:header>
    <h2>Item 7. Management&#39;s Discussion</h2><div>Revenue <b>grew</b> 5%.</div>
    <table><tr><td>Cash</td><td>$1.2bn</td></tr></table>


    <p>End.</p></body></html>"""
    text = html_to_text(html)
    lines = text.splitlines()
    assert "Page Title" not in text and "secret" not in text and "color" not in text and "dei:Hidden" not in text
    assert "Annual Report" in lines
    assert "Item 7. Management's Discussion" in lines
    assert "Net sales rose & margins widened." in lines
    assert "Second line." in lines
    assert "Revenue grew 5%." in lines
    assert "Cash $1.2bn" in lines  # table cells stay apart
    assert "End." in lines
    assert "\n\n\n" not in text
    assert text == text.strip()
    assert lines[0] == "Annual Report"


def test_html_table_rows_are_lines_and_cells_are_separated():
    html = ("<table><tr><th>Item</th><th>2012</th><th>2011</th></tr>"
            "<tr><td>Net sales</td><td>$1,234</td><td>$1,100</td></tr></table>")
    assert [line for line in html_to_text(html).splitlines() if line] == ["Item 2012 2011", "Net sales $1,234 $1,100"]


def test_html_to_text_is_case_insensitive_and_tolerates_unclosed_tags():
    assert html_to_text("<SCRIPT>x = 1</SCRIPT><STYLE>b {}</STYLE><P>a</P><p>b") == "a\n\nb"
    assert html_to_text("<H3>Heading</H3>body text") == "Heading\nbody text"
