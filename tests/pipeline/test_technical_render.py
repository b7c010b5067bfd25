"""Analyst notes from technical features: causal, in point-in-time prices, deterministic but varied, with the
events and their dates."""

import datetime as dt
import re

import polars as pl
import pytest

from tenali_pipeline.sources.sample import SampleMarketClient
from tenali_pipeline.technicals.features import compute_features
from tenali_pipeline.text.render import DOCUMENT_SCHEMA, money
from tenali_pipeline.text.technical import render_technical

RAW = ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume", "source"]


@pytest.fixture(scope="module")
def raw() -> pl.DataFrame:
    return SampleMarketClient(["AAPL", "IBM", "FB"], start="2003-06-01", end="2013-01-01").fetch().select(RAW)


@pytest.fixture(scope="module")
def features(raw) -> pl.DataFrame:
    return compute_features(raw, instrument_col="ticker")


@pytest.fixture(scope="module")
def notes(features) -> pl.DataFrame:
    return render_technical(features, by="ticker")


def test_one_note_per_instrument_month_dated_its_last_bar(features, notes):
    assert dict(notes.schema) == DOCUMENT_SCHEMA
    assert (notes["domain"] == "technical").all() and notes["doc_id"].n_unique() == notes.height
    last = features.group_by("ticker", pl.col("date").dt.truncate("1mo").alias("m")).agg(last=pl.col("date").max())
    assert notes.height == last.height
    joined = notes.join(last, left_on=["instrument", "date"], right_on=["ticker", "last"], how="left")
    assert joined["m"].null_count() == 0
    for r in notes.iter_rows(named=True):
        assert r["title"] == f"{r['instrument']} technical analysis, {r['date']:%B %Y}"
        assert not re.search(r"\b(None|nan|NaN|inf)\b|[{}]", r["text"]), r["text"]


def test_a_note_only_uses_bars_up_to_its_date(raw, notes):
    """Render from data cut at a month end: every note up to that date is identical to the full render."""
    for cutoff in (dt.date(2005, 2, 28), dt.date(2008, 9, 30), dt.date(2012, 5, 31)):
        cut = render_technical(raw.filter(pl.col("date") <= cutoff), by="ticker")
        assert cut["date"].max() == cutoff
        want = notes.filter(pl.col("date") <= cutoff)
        assert cut.sort("doc_id").equals(want.sort("doc_id")), cutoff


def test_prices_are_quoted_as_they_traded_then(raw, features, notes):
    """AAPL split 2:1 in February 2005: the January 2005 note quotes the pre-split close, and re-basing
    adj_close (as a later split or dividend would) changes no note."""
    jan = notes.filter((pl.col("instrument") == "AAPL") & (pl.col("date") == dt.date(2005, 1, 31)))["text"].item()
    bar = raw.filter((pl.col("ticker") == "AAPL") & (pl.col("date") == dt.date(2005, 1, 31)))
    assert money(bar["close"].item()) in jan
    assert money(bar["adj_close"].item()) not in jan
    rebased = raw.with_columns(adj_close=pl.col("adj_close") * pl.when(pl.col("ticker") == "IBM").then(0.25).otherwise(3.0))
    again = render_technical(rebased, by="ticker")
    assert again["text"].to_list() == notes["text"].to_list()


def test_numbers_are_formatted_one_way(notes):
    text = " ".join(notes["text"].to_list())
    for amount in re.findall(r"\$[\d,.]+", text):
        # cents from $1 up; four significant digits below (render.price), so a sub-cent price is not "$0.00"
        assert re.fullmatch(r"\$(\d{1,3}(,\d{3})*\.\d{2}|0\.0*[1-9]\d{3})", amount.rstrip(".,")), amount
    assert re.search(r"[+-]\d+\.\d%", text)


def test_phrasing_varies_but_is_deterministic(features, notes):
    openings = {" ".join(t.split()[:2]) for t in notes["text"]}
    assert len(openings) >= 4
    assert render_technical(features, by="ticker").equals(notes)


def test_events_are_named_with_their_dates(features, notes):
    brk = features.filter(pl.col("choch") == 1).row(3, named=True)
    note = notes.filter((pl.col("instrument") == brk["ticker"]) &
                        (pl.col("date").dt.truncate("1mo") == brk["date"].replace(day=1)))["text"].item()
    d = brk["date"]
    assert f"On {d:%B} {d.day} a bullish change of character" in note
    assert money(brk["structure_level"]) in note and "order block" in note
    pat = features.filter(pl.col("cdl_morning_star")).row(0, named=True)
    note = notes.filter((pl.col("instrument") == pat["ticker"]) &
                        (pl.col("date").dt.truncate("1mo") == pat["date"].replace(day=1)))["text"].item()
    assert f"a morning star on {pat['date']:%B} {pat['date'].day}" in note
    for phrase in ("fair value gap", "swing high", "RSI", "MACD", "Bollinger", "liquidity", "swept"):
        assert notes["text"].str.contains(phrase).any(), phrase


def test_raw_ohlcv_is_accepted_and_bad_input_is_named(raw, notes):
    assert render_technical(raw, by="ticker").equals(notes)
    assert render_technical(raw.clear(), by="ticker").is_empty()
    with pytest.raises(ValueError, match="missing high, low"):
        render_technical(raw.drop("high", "low"), by="ticker")
