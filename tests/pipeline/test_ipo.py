"""IPO listing performance (tenali_pipeline/ipo.py) against returns computed here by hand, point in
time; and the listing notes rendered from it."""

from __future__ import annotations

import datetime as dt
import re

import polars as pl
import pytest

from tenali_pipeline.ipo import PERFORMANCE_COLUMNS, bhavcopy_prices, listing_performance
from tenali_pipeline.sources.sample.india import SampleIndiaClient
from tenali_pipeline.text.render_india import render_ipo_performance

D = dt.date


def _weekdays(start: dt.date, n: int) -> list[dt.date]:
    out, d = [], start
    while len(out) < n:
        if d.weekday() < 5:
            out.append(d)
        d += dt.timedelta(days=1)
    return out


def _prices(ticker: str, days: list[dt.date], closes: list[float], opens: list[float] | None = None) -> pl.DataFrame:
    return pl.DataFrame({"ticker": ticker, "date": days, "close": closes,
                         **({"open": opens} if opens is not None else {})})


LISTINGS = pl.DataFrame({
    "ticker": ["NEWCO", "LATE", "UNCOVERED", "PENDING", "NOPRICE"],
    "company": ["New Co Inc.", "Late Corp.", "Uncovered Ltd", "Pending Ltd", "No Price Ltd"],
    "listing_date": [D(2024, 3, 1), D(2024, 3, 25), D(2024, 1, 10), None, D(2024, 2, 1)],
    "issue_price": [20.0, 50.0, 10.0, 12.0, None],
    "exchange": ["NYSE", "NASDAQ", "NYSE", "NYSE", "NYSE"],
})


def _us_prices() -> pl.DataFrame:
    newco_days = _weekdays(D(2024, 3, 1), 30)
    late_days = _weekdays(D(2024, 3, 25), 8)
    return pl.concat([
        _prices("NEWCO", [D(2024, 2, 28)] + newco_days, [99.0] + [20.0 + i for i in range(30)]),  # a stray bar before listing
        _prices("LATE", late_days, [55.0 - i for i in range(8)]),
        _prices("UNCOVERED", _weekdays(D(2024, 2, 20), 25), [15.0] * 25),  # the table starts six weeks after listing
    ])


def test_returns_against_the_issue_price_by_session_count():
    perf = listing_performance(LISTINGS, _us_prices(), ticker="ticker")
    assert perf["ticker"].to_list() == ["NEWCO", "LATE", "UNCOVERED"]  # not yet listed / unpriced: no row
    assert set(PERFORMANCE_COLUMNS) <= set(perf.columns) and {"company", "exchange"} <= set(perf.columns)
    rows = {r["ticker"]: r for r in perf.iter_rows(named=True)}
    newco_days = _weekdays(D(2024, 3, 1), 30)
    n = rows["NEWCO"]
    # listing day = session 1 (the bar before the listing date is ignored), week = session 5, month = session 21
    assert (n["first_date"], n["listing_close"]) == (D(2024, 3, 1), 20.0) and n["day1_return"] == pytest.approx(0.0)
    assert (n["week1_date"], n["week1_close"]) == (newco_days[4], 24.0)
    assert n["week1_return"] == pytest.approx(24.0 / 20.0 - 1)
    assert (n["month1_date"], n["month1_close"]) == (newco_days[20], 40.0)
    assert n["month1_return"] == pytest.approx(1.0) and n["sessions"] == 30
    assert n["listing_open"] is None and n["open_return"] is None  # this table has no opens
    late = rows["LATE"]
    assert late["day1_return"] == pytest.approx(0.1) and late["week1_return"] == pytest.approx(51 / 50 - 1)
    assert late["month1_date"] is None and late["month1_return"] is None  # only 8 sessions so far
    unc = rows["UNCOVERED"]
    assert unc["first_date"] is None and unc["day1_return"] is None and unc["sessions"] == 0


def test_point_in_time_as_of():
    prices = _us_prices()
    newco_days = _weekdays(D(2024, 3, 1), 30)
    early = listing_performance(LISTINGS, prices, ticker="ticker", as_of=newco_days[3])
    assert early["ticker"].to_list() == ["NEWCO", "UNCOVERED"]  # LATE had not listed yet
    row = early.row(0, named=True)
    assert row["day1_return"] == pytest.approx(0.0) and row["week1_return"] is None and row["sessions"] == 4
    at_week = listing_performance(LISTINGS, prices, ticker="ticker", as_of=newco_days[4]).row(0, named=True)
    assert at_week["week1_date"] == newco_days[4] and at_week["month1_return"] is None


def test_gap_tolerance_for_a_listing_date_before_the_first_session():
    # a US IPO's "listing date" from its pricing (424B4) is often the day before the first trade
    listings = pl.DataFrame({"symbol": ["X"], "listing_date": [D(2024, 3, 7)], "issue_price": [10.0]})
    prices = _prices("X", _weekdays(D(2024, 3, 8), 3), [11.0, 12.0, 13.0], opens=[12.5, 11.5, 12.5])
    row = listing_performance(listings, prices).row(0, named=True)
    assert row["first_date"] == D(2024, 3, 8) and row["open_return"] == pytest.approx(0.25)
    assert row["day1_return"] == pytest.approx(0.1)
    assert listing_performance(listings, prices, max_gap_days=0).row(0, named=True)["first_date"] is None


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"missing column\(s\) \['issue_price', 'prices.close'\]"):
        listing_performance(pl.DataFrame({"symbol": ["X"], "listing_date": [D(2024, 1, 1)]}),
                            pl.DataFrame({"ticker": ["X"], "date": [D(2024, 1, 1)]}))


def test_bhavcopy_prices_merge_series_and_prefer_eq():
    bhav = pl.DataFrame({
        "symbol": ["NEW", "NEW", "NEW", "NEW"], "series": ["BE", "BE", "EQ", "EQ"],
        "date": [D(2024, 1, 1), D(2024, 1, 2), D(2024, 1, 2), D(2024, 1, 3)],
        "open": [1.0, 2.0, 2.1, 3.0], "high": [1.0, 2.0, 2.1, 3.0], "low": [1.0, 2.0, 2.1, 3.0],
        "close": [1.0, 2.0, 2.1, 3.0], "volume": [1.0, 2.0, 3.0, 4.0]})
    out = bhavcopy_prices(bhav)
    assert out.columns == ["ticker", "date", "open", "high", "low", "close", "volume"]
    assert out["close"].to_list() == [1.0, 2.1, 3.0]


def test_sample_ipos_against_the_sample_bhavcopy():
    client = SampleIndiaClient()
    ipos, bhav = client.ipos(), client.bhavcopy()
    perf = listing_performance(ipos, bhavcopy_prices(bhav))
    assert perf["symbol"].to_list() == ["MOCKPOWER", "TESTFOODS", "LATEINFRA"]  # the withdrawn one never listed
    for r in perf.iter_rows(named=True):
        bars = sorted((d, o, c) for s, d, o, c in bhav.select("symbol", "date", "open", "close").iter_rows()
                      if s == r["symbol"] and d >= r["listing_date"])
        price = r["issue_price"]
        assert r["first_date"] == bars[0][0] == r["listing_date"]
        assert r["open_return"] == pytest.approx(bars[0][1] / price - 1)
        assert r["day1_return"] == pytest.approx(bars[0][2] / price - 1)
        assert r["week1_return"] == pytest.approx(bars[4][2] / price - 1)
        if len(bars) >= 21:
            assert r["month1_date"] == bars[20][0] and r["month1_return"] == pytest.approx(bars[20][2] / price - 1)
        else:
            assert r["month1_return"] is None
    assert perf.filter(pl.col("symbol") == "LATEINFRA")["month1_return"].is_null().all()

    notes = render_ipo_performance(perf)
    assert (notes["domain"] == "market").all() and notes.height == 3
    for r, note in zip(perf.iter_rows(named=True), notes.iter_rows(named=True)):
        assert note["instrument"] == r["symbol"] and note["source"] == "sample:generated"
        assert note["date"] == (r["month1_date"] or r["week1_date"] or r["first_date"])  # the last session described
        text = note["text"]
        assert f"₹{r['issue_price']:,.2f}" in text and f"₹{r['listing_close']:,.2f}" in text
        assert f"{r['day1_return'] * 100:+.1f}%" in text and f"{r['week1_return'] * 100:+.1f}%" in text
        assert ("month" in text) == (r["month1_return"] is not None)
        # no date later than the note's own is mentioned
        for day, month, year in re.findall(r"(\d{1,2}) (January|February|March|April|May|June|July|August|September|"
                                           r"October|November|December) (\d{4})", text):
            assert dt.datetime.strptime(f"{day} {month} {year}", "%d %B %Y").date() <= note["date"]


def test_us_notes_use_dollars():
    notes = render_ipo_performance(listing_performance(LISTINGS, _us_prices(), ticker="ticker"), ticker="ticker")
    assert notes["instrument"].to_list() == ["NEWCO", "LATE"]  # UNCOVERED has no listing session
    assert "$20.00" in notes["text"][0] and "₹" not in notes["text"][0] and "(NYSE: NEWCO)" in notes["text"][0]
