"""Fundamentals from SEC XBRL: the companyfacts normaliser on the documented shape, point-in-time
correctness (a figure is invisible before its filing date; restatements keep both values), the live
client replayed from 127.0.0.1 with its error paths, the sample twin and the earnings narratives."""

from __future__ import annotations

import datetime as dt
import json
import time

import polars as pl
import pytest

from local_http import LocalServer
from tenali_pipeline.cleaning import clean
from tenali_pipeline.sources.http import MalformedResponse, PartialFetchError, SourceBlocked
from tenali_pipeline.sources.live.xbrl import CONCEPTS, SecXbrlClient, as_of, normalise_companyfacts, statements
from tenali_pipeline.sources.sample.xbrl import SampleXbrlClient
from tenali_pipeline.sources.schema import FUNDAMENTALS
from tenali_pipeline.text.render_fundamentals import render_earnings

D = dt.date
IDENTITY = "Tenali Research data@tenali.example"


def fact(start, end, val, accn, fy, fp, form, filed, frame=None):
    row = {"start": start, "end": end, "val": val, "accn": accn, "fy": fy, "fp": fp, "form": form, "filed": filed}
    if start is None:
        row.pop("start")
    if frame:
        row["frame"] = frame
    return row


# Apple's real figures (FY2019/FY2020 10-Ks and the Q1 FY2021 10-Q), in the companyfacts shape.
K19, K20, Q121 = "0000320193-19-000119", "0000320193-20-000096", "0000320193-21-000010"
APPLE = {
    "cik": 320193, "entityName": "Apple Inc.",
    "facts": {
        "dei": {"EntityCommonStockSharesOutstanding": {"label": "x", "units": {"shares": [
            fact(None, "2020-10-16", 17001802000, K20, 2020, "FY", "10-K", "2020-10-30")]}}},
        "us-gaap": {
            "NetIncomeLoss": {"label": "Net Income (Loss) Attributable to Parent", "description": "...", "units": {"USD": [
                fact("2018-09-30", "2019-09-28", 55256000000, K19, 2019, "FY", "10-K", "2019-10-31", "CY2019"),
                fact("2018-09-30", "2019-09-28", 55256000000, K20, 2020, "FY", "10-K", "2020-10-30"),
                fact("2019-09-29", "2020-09-26", 57411000000, K20, 2020, "FY", "10-K", "2020-10-30", "CY2020"),
                fact("2019-09-29", "2019-12-28", 22236000000, Q121, 2021, "Q1", "10-Q", "2021-01-28", "CY2019Q4"),
                fact("2020-09-27", "2020-12-26", 28755000000, Q121, 2021, "Q1", "10-Q", "2021-01-28", "CY2020Q4"),
            ]}},
            "RevenueFromContractWithCustomerExcludingAssessedTax": {"label": "Revenue", "units": {"USD": [
                fact("2018-09-30", "2019-09-28", 260174000000, K20, 2020, "FY", "10-K", "2020-10-30"),
                fact("2019-09-29", "2020-09-26", 274515000000, K20, 2020, "FY", "10-K", "2020-10-30"),
            ]}},
            "SalesRevenueNet": {"label": "Revenue (old concept)", "units": {"USD": [
                fact("2018-09-30", "2019-09-28", 260174000000, K19, 2019, "FY", "10-K", "2019-10-31"),
            ]}},
            "EarningsPerShareDiluted": {"label": "EPS", "units": {"USD/shares": [
                fact("2019-09-29", "2020-09-26", 3.28, K20, 2020, "FY", "10-K", "2020-10-30"),
            ]}},
            "Assets": {"label": "Assets", "units": {"USD": [
                fact(None, "2019-09-28", 338516000000, K20, 2020, "FY", "10-K", "2020-10-30"),
                fact(None, "2020-09-26", 323888000000, K20, 2020, "FY", "10-K", "2020-10-30"),
            ]}},
            "NetCashProvidedByUsedInOperatingActivities": {"label": "OCF", "units": {"USD": [
                fact("2019-09-29", "2020-09-26", 80674000000, K20, 2020, "FY", "10-K", "2020-10-30"),
            ]}},
            "AccountsPayableCurrent": {"label": "not mapped", "units": {"USD": [
                fact(None, "2020-09-26", 42296000000, K20, 2020, "FY", "10-K", "2020-10-30")]}},
            "Revenues": {"label": "a 2-month span and a EUR unit, both ignored", "units": {
                "USD": [fact("2020-08-01", "2020-09-26", 1.0, K20, 2020, "FY", "10-K", "2020-10-30")]}},
        },
    },
}


def test_normalises_the_documented_shape():
    df = normalise_companyfacts(APPLE, ticker="AAPL")
    assert dict(df.schema) == FUNDAMENTALS
    assert set(df["item"]) == {"net_income", "revenue", "eps_diluted", "assets", "operating_cash_flow"}
    ni = df.filter(pl.col("item") == "net_income", pl.col("period_end") == D(2020, 9, 26)).row(0, named=True)
    assert (ni["value"], ni["accession"], ni["filed"], ni["period_type"], ni["statement"]) == (
        57411000000.0, K20, D(2020, 10, 30), "FY", "income")
    assert ni["cik"] == "0000320193" and ni["company"] == "Apple Inc." and ni["fiscal_period"] == "FY"
    quarter = df.filter(pl.col("item") == "net_income", pl.col("period_end") == D(2020, 12, 26))
    assert quarter["period_type"].item() == "Q"
    assets = df.filter(pl.col("item") == "assets")
    assert assets["period_type"].unique().to_list() == ["I"] and assets["period_start"].is_null().all()
    assert df.filter(pl.col("concept") == "Revenues").is_empty()  # a 2-month span is no statement period
    assert clean("fundamentals", df).dropped["duplicate_key"] == 0
    # every item named in the table maps to a statement of the three
    assert {st for _, st, _, _ in CONCEPTS} == {"income", "balance", "cashflow"}


@pytest.mark.parametrize("doc, what", [
    ({"cik": 1}, "not a companyfacts JSON"),
    ({"cik": 1, "facts": {"us-gaap": {"NetIncomeLoss": {"label": "x"}}}}, "no 'units'"),
    ({"cik": 1, "facts": {"us-gaap": {"Assets": {"units": {"USD": [{"end": "2020-01-01", "val": 1}]}}}}}, "lacks or garbles"),
])
def test_malformed_documents_raise(doc, what):
    with pytest.raises(MalformedResponse, match=what):
        normalise_companyfacts(doc)


def test_a_figure_is_invisible_before_its_filing_date():
    df = normalise_companyfacts(APPLE, ticker="AAPL")
    fy20 = lambda day: as_of(df, day).filter(pl.col("item") == "net_income", pl.col("period_end") == D(2020, 9, 26))  # noqa: E731
    assert fy20(D(2020, 10, 29)).is_empty()  # the day before the 10-K
    assert fy20(D(2020, 10, 30))["value"].item() == 57411000000.0
    # FY2019 revenue: first filed under SalesRevenueNet, re-reported a year later under the new concept
    rev19 = lambda day: as_of(df, day).filter(pl.col("item") == "revenue", pl.col("period_end") == D(2019, 9, 28))  # noqa: E731
    assert rev19(D(2019, 10, 30)).is_empty()
    assert rev19(D(2019, 10, 31))["concept"].item() == "SalesRevenueNet"
    assert rev19(D(2021, 1, 1))["concept"].item() == "RevenueFromContractWithCustomerExcludingAssessedTax"


def test_restatements_keep_both_values():
    doc = json.loads(json.dumps(APPLE))
    doc["facts"]["us-gaap"]["NetIncomeLoss"]["units"]["USD"][1]["val"] = 55000000000  # FY2020 10-K restates FY2019
    df = normalise_companyfacts(doc, ticker="AAPL")
    both = df.filter(pl.col("item") == "net_income", pl.col("period_end") == D(2019, 9, 28)).sort("filed")
    assert both["value"].to_list() == [55256000000.0, 55000000000.0]
    pick = lambda day: as_of(df, day).filter(pl.col("item") == "net_income", pl.col("period_end") == D(2019, 9, 28))["value"].item()  # noqa: E731
    assert pick(D(2020, 10, 29)) == 55256000000.0 and pick(D(2020, 10, 30)) == 55000000000.0
    wide = statements(df, D(2020, 12, 31))
    assert wide["income"].filter(pl.col("period_end") == D(2019, 9, 28), pl.col("period_type") == "FY")["net_income"].item() == 55000000000.0
    assert set(wide) == {"income", "balance", "cashflow"} and wide["balance"]["assets"].to_list() == [338516000000.0, 323888000000.0]


class FakeDataSec:
    """data.sec.gov on 127.0.0.1: `answers[cik]` is a list of (status, body) served in turn (last repeats)."""

    def __init__(self, answers):
        self.answers, self.hits = answers, []
        self.http = LocalServer(self._respond)

    def _respond(self, req):
        self.hits.append((time.monotonic(), req.path, req.headers.get("User-Agent", "")))
        cik = req.path.rsplit("CIK", 1)[-1].removesuffix(".json")
        queue = self.answers.get(cik, [(404, b'{"message": "Not Found"}')])
        status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        return status, {"Content-Type": "application/json"}, body


def test_live_client_replayed_one_bad_company_fails_alone(monkeypatch):
    from tenali_pipeline.sources import http
    from tenali_pipeline.sources.live import xbrl

    # the process-wide SEC limiter's rate, on a frozen clock that records the waits: every request's wait is
    # owed in full, so the spacing is checked exactly, not by when a loaded machine got the requests out
    assert xbrl.SEC_LIMITER is http.SEC_LIMITER
    waits: list[float] = []
    monkeypatch.setattr(xbrl, "SEC_LIMITER", http.RateLimiter(1 / http.SEC_LIMITER.interval, clock=lambda: 100.0,
                                                              sleep=waits.append))
    good = json.dumps(APPLE).encode()
    other = json.dumps({**APPLE, "cik": 789019, "entityName": "MICROSOFT CORP"}).encode()
    fake = FakeDataSec({"0000320193": [(503, b"busy"), (200, good)],  # a transient fault, then the document
                        "0000789019": [(200, other)],
                        "0001111111": [(200, b'{"cik": 1111111}')],  # malformed: no facts
                        })
    kept = {}
    try:
        client = SecXbrlClient({"AAPL": "320193", "MSFT": "0000789019", "BAD": "1111111", "NEW": "2222222"},
                               identity=IDENTITY, base_url=fake.http.base, base_delay=0.01,
                               on_raw=lambda cik, body: kept.__setitem__(cik, body))
        with pytest.raises(PartialFetchError, match=r"BAD \(CIK 0001111111\).*companyfacts") as e:
            client.fetch()
    finally:
        fake.http.close()
    partial = e.value.partial
    assert set(partial["ticker"]) == {"AAPL", "MSFT"} and list(e.value.failures) == ["BAD (CIK 0001111111)"]
    assert client.missing == ["NEW"]  # a 404: the SEC has no XBRL facts for it, not a failure
    assert set(kept) == {"0000320193", "0000789019"} and json.loads(kept["0000320193"])["entityName"] == "Apple Inc."
    assert all(ua == IDENTITY for _, _, ua in fake.hits)
    assert fake.hits[0][1] == "/api/xbrl/companyfacts/CIK0000320193.json"
    # the process-wide SEC limiter: at most 10 requests per second, retries included
    assert http.SEC_LIMITER.interval == pytest.approx(0.1)
    assert waits == pytest.approx([0.1 * k for k in range(1, len(fake.hits))])


def test_403_stops_the_fetch_naming_the_site_and_the_setting():
    fake = FakeDataSec({"0000320193": [(403, b"<html>Request Rate Threshold Exceeded</html>")]})
    try:
        client = SecXbrlClient({"AAPL": "320193", "MSFT": "789019"}, identity=IDENTITY, base_url=fake.http.base, base_delay=0.01)
        with pytest.raises(SourceBlocked, match=r"SEC \(data.sec.gov\).*TENALI_SOURCES_OFF=fundamentals"):
            client.fetch()
    finally:
        fake.http.close()
    assert len(fake.hits) == 1  # no second company hammered after a 403
    with pytest.raises(ValueError, match="SEC_EDGAR_IDENTITY"):
        SecXbrlClient({"AAPL": "320193"}, identity="no email")


@pytest.fixture(scope="module")
def sample() -> pl.DataFrame:
    return SampleXbrlClient().fetch()


def test_sample_twin_is_companyfacts_shaped_deterministic_and_clean(sample):
    assert dict(sample.schema) == FUNDAMENTALS and (sample["source"] == "sample:generated").all()
    assert sample.equals(SampleXbrlClient().fetch())
    assert sum(clean("fundamentals", sample).dropped.values()) == 0
    fy = sample.filter(pl.col("period_type") == "FY", pl.col("item") == "revenue").group_by("ticker").agg(
        pl.col("period_end").n_unique())
    assert fy["period_end"].min() >= 10  # ten fiscal years (plus comparatives) per company
    assert set(sample.filter(pl.col("item") == "revenue")["concept"]) == {
        "SalesRevenueNet", "Revenues", "RevenueFromContractWithCustomerExcludingAssessedTax"}
    assert (sample["filed"] >= sample["period_end"]).all()


def test_earnings_narratives_use_only_point_in_time_figures(sample):
    docs = render_earnings(sample)
    assert docs.height == 5 * 40 and (docs["domain"] == "market").all()
    ibm = docs.filter(pl.col("instrument") == "IBM", pl.col("title").str.contains("10-K fiscal year ended 20(09|10)"))
    before, after = ibm.sort("date")["text"].to_list()
    ni09 = sample.filter(pl.col("ticker") == "IBM", pl.col("item") == "net_income", pl.col("period_type") == "FY",
                         pl.col("period_end") == D(2009, 12, 31)).sort("filed")["value"].to_list()
    original, restated = ni09[0], ni09[1]
    assert restated != original
    fmt = lambda v: f"${v / 1e9:,.2f} billion"  # noqa: E731
    assert f"Net income was {fmt(original)}" in before and fmt(restated) not in before  # the restatement was not yet known
    assert f"from {fmt(restated)} a year earlier (restated from {fmt(original)} as first reported)" in after
    # every narrative is dated on its filing day and is not earlier than any period it reports
    filed = sample.group_by("ticker", "accession").agg(pl.col("filed").min())
    assert set(docs["date"]) <= set(filed["filed"])


def test_16_week_quarters_and_24_week_halves_are_kept():
    # Kroger's fiscal Q1 is 16 weeks (2023-01-29..2023-05-20, 112 days); PepsiCo's first half is 24 weeks
    # (2023-01-01..2023-06-17, 168 days) and its Q4 17 weeks in a 53-week year (119 days). Dropping them
    # loses a quarter of every year for these filers.
    doc = {"cik": 56873, "entityName": "Kroger-like", "facts": {"us-gaap": {"NetIncomeLoss": {"label": "NI", "units": {
        "USD": [fact("2023-01-29", "2023-05-20", 962000000, "0000056873-23-000020", 2023, "Q1", "10-Q", "2023-06-23"),
                fact("2023-01-01", "2023-06-17", 3480000000, "0000077476-23-000040", 2023, "Q2", "10-Q", "2023-07-13"),
                fact("2022-09-04", "2022-12-31", 518000000, "0000077476-23-000007", 2022, "FY", "10-K", "2023-02-09"),
                fact("2022-01-30", "2022-11-05", 1500000000, "0000056873-22-000040", 2022, "Q3", "10-Q", "2022-12-09")]}}}}}
    df = normalise_companyfacts(doc, ticker="KR")
    got = {(r["period_start"], r["period_type"]) for r in df.iter_rows(named=True)}
    assert got == {(D(2023, 1, 29), "Q"), (D(2023, 1, 1), "YTD"), (D(2022, 9, 4), "Q"), (D(2022, 1, 30), "YTD")}
