"""Review 5, data correctness: a DeFi month in progress is a month to date, not a month's total (and
DefiLlama's partial current day is not stored); NSE's IPO list is merged into the rows held, not swapped
for them."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import urlsplit

import polars as pl
import requests

from local_http import LocalServer
from tenali_pipeline.sources.live import india
from tenali_pipeline.sources.live.defillama import DefiLlamaClient
from tenali_pipeline.sources.live.india import NseClient
from tenali_pipeline.text.render_fundamentals import render_defi

D = dt.date


def _metrics(rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["metric", "scope", "entity", "date", "value", "source"], orient="row")


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


# ---- DeFi: the data's current month --------------------------------------------------------------
def test_defi_month_in_progress_is_a_month_to_date_not_a_monthly_total():
    days = _days(D(2024, 2, 1), D(2024, 3, 12))  # collected on March 12
    metrics = _metrics([(m, "chain", "Xchain", d, v, "test") for d in days
                        for m, v in (("fees", 1e6), ("dex_volume", 2e8), ("tvl", 5e9))])
    notes = {r["title"]: r["text"] for r in render_defi(metrics).iter_rows(named=True)}
    march = notes["Xchain on-chain activity in March 2024"]
    assert "in March 2024 through March 12 (DefiLlama)" in march, march
    assert "Fees for the month to date (12 days through March 12) totalled $12.0 million" in march, march
    assert "DEX volume for the month to date (12 days through March 12) totalled $2.40 billion" in march, march
    assert "a daily average +0.0% on the previous month's" in march and "totalled $12.0 million over" not in march
    # a month that is over reads as before: its total, over its days
    feb = notes["Xchain on-chain activity in February 2024"]
    assert "Fees totalled $29.0 million over 29 days." in feb and "month to date" not in feb, feb
    assert "in February 2024 (DefiLlama)" in feb and "ended the month at $5.00 billion" in feb, feb


def test_defi_month_over_with_a_missing_last_day_is_not_a_month_to_date():
    # DefiLlama skipped January 31, but February has data: January is over, its days are compared per day
    days = [d for d in _days(D(2024, 1, 1), D(2024, 2, 29)) if d != D(2024, 1, 31)]
    metrics = _metrics([("fees", "chain", "Xchain", d, 1e6, "test") for d in days])
    notes = {r["title"]: r["text"] for r in render_defi(metrics).iter_rows(named=True)}
    jan = notes["Xchain on-chain activity in January 2024"]
    assert "month to date" not in jan and "through" not in jan and "Fees totalled $30.0 million over 30 days" in jan, jan


def test_defi_first_month_says_where_the_data_starts():
    metrics = _metrics([("fees", "protocol", "aave", d, 1e6, "test") for d in _days(D(2024, 1, 15), D(2024, 2, 29))])
    notes = {r["title"]: r["text"] for r in render_defi(metrics).iter_rows(named=True)}
    jan = notes["aave on-chain activity in January 2024"]
    assert "the aave protocol in January 2024 from January 15 (DefiLlama)" in jan, jan
    assert "Fees totalled $17.0 million over 17 days" in jan and "month to date" not in jan, jan


class _Llama:
    """DefiLlama replayed on 127.0.0.1: path -> JSON body."""

    def __init__(self, routes):
        self.routes = routes
        self.http = LocalServer(lambda req: (200, {"Content-Type": "application/json"},
                                             json.dumps(self.routes[urlsplit(req.path).path]).encode())
                                if urlsplit(req.path).path in self.routes else (404, {}, b"{}"))

    def close(self):
        self.http.close()


def test_defillama_does_not_keep_todays_partial_day_of_flows():
    """Fetched at 09:00 UTC on January 3: DefiLlama's January 3 fees cover nine hours (a fake crash);
    the day's TVL and stablecoin supply are levels, true when read, and stay."""
    stamps = [1704067200 + 86400 * i for i in range(3)]  # January 1-3, 00:00 UTC
    chart = {"totalDataChart": [[t, v] for t, v in zip(stamps, [1e6, 1e6, 3.75e5])]}
    server = _Llama({"/v2/historicalChainTvl/Ethereum": [{"date": t, "tvl": 5e10} for t in stamps],
                     "/overview/fees/Ethereum": chart, "/overview/dexs/Ethereum": chart,
                     "/stablecoincharts/Ethereum": [{"date": str(t), "totalCirculatingUSD": {"peggedUSD": 7e10}}
                                                    for t in stamps],
                     "/protocol/aave": {"tvl": [{"date": t, "totalLiquidityUSD": 1e10} for t in stamps]},
                     "/summary/fees/aave": chart})
    try:
        df = DefiLlamaClient(["Ethereum"], ["aave"], api=server.http.base, stablecoins=server.http.base,
                             session=requests.Session(), base_delay=0.01, today=D(2024, 1, 3)).fetch()
    finally:
        server.close()
    last = dict(df.group_by("metric", "scope").agg(pl.col("date").max()).select(
        pl.concat_str("scope", "metric", separator=" "), "date").iter_rows())
    assert last == {"chain fees": D(2024, 1, 2), "chain dex_volume": D(2024, 1, 2), "protocol fees": D(2024, 1, 2),
                    "protocol revenue": D(2024, 1, 2), "chain tvl": D(2024, 1, 3), "protocol tvl": D(2024, 1, 3),
                    "chain stablecoin_supply": D(2024, 1, 3)}, last
    assert 3.75e5 not in df.filter(pl.col("metric") != "tvl")["value"].to_list()


# ---- NSE IPOs: a fetch lists what NSE lists now ----------------------------------------------------
def _issue(symbol, name, start, end, listing="-", price="-", band="Rs.100 to Rs.110"):
    return {"symbol": symbol, "companyName": name, "securityType": "EQ", "ipoStartDate": start, "ipoEndDate": end,
            "listingDate": listing, "issuePrice": price, "priceRange": band}


class _Nse:
    """nseindia.com replayed: the home page sets the cookie; past issues answer the next body in turn."""

    def __init__(self, bodies):
        self.bodies, self.asked = list(bodies), 0
        self.http = LocalServer(self._respond)

    def _respond(self, req):
        if urlsplit(req.path).path == "/":
            return 200, {"Content-Type": "text/html", "Set-Cookie": "nsit=v1; Path=/"}, b"<html><title>NSE</title></html>"
        body = self.bodies[min(self.asked, len(self.bodies) - 1)]
        self.asked += 1
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def client(self, archive=None):
        return NseClient("2024-01-01", "2024-01-02", base_url=self.http.base, archives_url=self.http.base,
                         session=india.per_host_session(1000.0), base_delay=0.01, archive=archive)

    def close(self):
        self.http.close()


def test_a_later_ipo_list_keeps_the_issues_it_no_longer_shows(tmp_path):
    """NSE's list moves on: the second fetch no longer shows OLDCO, shows BIGCO now listed and a new issue.
    OLDCO stays in the lake, BIGCO is one row with its listing, NEWCO is added."""
    import dagster as dg

    from tenali_pipeline.defs.india import assets as india_assets
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import LakeResource, SourcesResource

    first = [_issue("OLDCO", "Old Company Limited", "02-MAR-2021", "04-MAR-2021", "10-MAR-2021", "   250", "Rs.240 to Rs.250"),
             _issue("BIGCO", "Big Company Limited", "09-DEC-2024", "11-DEC-2024")]
    second = [_issue("BIGCO", "Big Company Limited", "09-DEC-2024", "11-DEC-2024", "16-DEC-2024", "   110"),
              _issue("NEWCO", "New Company Limited", "06-JAN-2025", "08-JAN-2025")]
    server = _Nse([first, second])

    class Replayed(SourcesResource):
        def india(self, start=None, archive=None, exchange="NSE"):
            return server.client(archive=archive)

    resources = {"lake": LakeResource(root=str(tmp_path / "lake")), "sources": Replayed(mode="live", refresh_hours=0)}
    raw = [india_assets.ipo_defs[0]]  # raw_india_ipos
    try:
        assert dg.materialize(raw, resources=resources).success
        assert dg.materialize(raw, resources=resources).success
    finally:
        server.close()
    assert server.asked == 2
    table = Lake(str(tmp_path / "lake")).read_parquet("raw/india_ipos/india_ipos.parquet")
    rows = {r["symbol"]: r for r in table.iter_rows(named=True)}
    assert sorted(table["symbol"].to_list()) == ["BIGCO", "NEWCO", "OLDCO"], table
    assert rows["OLDCO"]["issue_price"] == 250.0 and rows["OLDCO"]["listing_date"] == D(2021, 3, 10)
    assert (rows["BIGCO"]["status"], rows["BIGCO"]["listing_date"], rows["BIGCO"]["issue_price"]) == \
        ("listed", D(2024, 12, 16), 110.0)
