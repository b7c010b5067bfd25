"""Replay a real Yahoo v8 chart response through yfinance and the live market client.

yfinance's URLs are hard-coded https://... so instead of a local server we hand it a
`requests.Session` whose adapter answers by URL (cookie, crumb and chart endpoints) and never
touches the network.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
import requests
from requests.structures import CaseInsensitiveDict

from tenali_pipeline.sources.http import PartialFetchError
from tenali_pipeline.sources.schema import MARKET_PRICES

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
CHART = REALDATA / "yahoo" / "chart-AAPL-2020-08-31-to-2020-11-07.body.json"
WEEKEND_1M = REALDATA / "yahoo" / "chart-AAPL-2025-02-01-to-2025-02-02-includePrePost-false-interval-1m.body.json"

yf = pytest.importorskip("yfinance")
from tenali_pipeline.sources.live.market import YFinanceMarketClient  # noqa: E402


class CannedYahoo(requests.adapters.BaseAdapter):
    """Answers Yahoo URLs from (url prefix, [(status, body), ...]) routes; the last answer repeats."""

    def __init__(self, routes: dict[str, list[tuple[int, bytes]]]):
        super().__init__()
        self.routes = routes
        self.calls: list[str] = []

    def send(self, request, **kwargs):
        self.calls.append(request.url)
        for prefix, answers in self.routes.items():
            if request.url.startswith(prefix):
                status, body = answers.pop(0) if len(answers) > 1 else answers[0]
                break
        else:
            status, body = 404, b"not found"
        resp = requests.Response()
        resp.status_code, resp._content, resp.url, resp.request = status, body, request.url, request
        resp.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
        resp.encoding = "utf-8"
        return resp

    def close(self):
        pass


@pytest.fixture
def yahoo(tmp_path):
    """A session that replays Yahoo, with yfinance's caches isolated in tmp_path."""
    from yfinance.data import YfData

    yf.set_tz_cache_location(str(tmp_path))
    YfData.cache_get.cache_clear()  # responses for past ranges are memoised process-wide

    def make(chart_answers, tz_answers=None):
        # yfinance asks the chart with range=1d for the exchange time zone (cached per process in
        # the tz cache, so later tests may skip it), then the chart with period1/period2.
        session = requests.Session()
        adapter = CannedYahoo(
            {
                "https://fc.yahoo.com": [(404, b"")],
                "https://query1.finance.yahoo.com/v1/test/getcrumb": [(200, b"crumb-abc")],
                "https://query2.finance.yahoo.com/v8/finance/chart/AAPL?range=1d": tz_answers
                or [(200, _chart_body())],
                "https://query2.finance.yahoo.com/v8/finance/chart/": chart_answers,
            }
        )
        session.mount("https://", adapter)
        return session, adapter

    yield make
    YfData.cache_get.cache_clear()


def _chart_body() -> bytes:
    if not CHART.exists():
        pytest.skip(f"real capture {CHART} not present (../shared/realdata is absent)")
    return CHART.read_bytes()


def test_replays_real_aapl_chart_with_split_and_dividend(yahoo):
    session, adapter = yahoo([(200, _chart_body())])
    client = YFinanceMarketClient(["aapl"], start="2020-08-31", end="2020-11-07", session=session)

    df = client.fetch()

    assert df.schema == pl.Schema(MARKET_PRICES)
    assert df.height == 49
    assert df["ticker"].unique().to_list() == ["AAPL"]
    first = df.row(0, named=True)
    assert first["date"] == dt.date(2020, 8, 31)
    assert first["open"] == pytest.approx(127.58000183105469)
    assert first["close"] == pytest.approx(129.0399932861328)
    assert first["adj_close"] == pytest.approx(125.82673645019531)  # Adj Close, not Close
    assert first["volume"] == 225702700.0
    assert first["splits"] == 4.0  # the 4:1 split on 2020-08-31
    last = df.row(-1, named=True)
    assert last["date"] == dt.date(2020, 11, 6) and last["dividends"] == pytest.approx(0.205)
    # Days without a corporate action carry 0.0, never null.
    assert df.filter(pl.col("date") == dt.date(2020, 9, 1))["splits"].to_list() == [0.0]
    assert df["dividends"].null_count() == 0 and df["splits"].null_count() == 0
    assert (df["splits"] != 0).sum() == 1 and (df["dividends"] != 0).sum() == 1
    assert df["source"].unique().to_list() == ["yfinance"]

    chart_calls = [u for u in adapter.calls if "/v8/finance/chart/AAPL" in u]
    assert any("period1=" in u and "events=div" in u for u in chart_calls)
    assert all("crumb=crumb-abc" in u for u in chart_calls)


def test_rate_limit_is_retried_then_succeeds(yahoo):
    too_many = (429, b"Too Many Requests")
    # 429 twice (yfinance retries once itself with the other cookie strategy), then OK.
    session, adapter = yahoo([too_many, too_many, (200, _chart_body())])
    client = YFinanceMarketClient(["AAPL"], "2020-08-31", "2020-11-07", session=session, base_delay=0.01)

    df = client.fetch()

    assert df.height == 49
    assert sum("/v8/finance/chart/" in u for u in adapter.calls) >= 3


def test_rate_limit_that_persists_names_the_ticker(yahoo):
    session, _ = yahoo([(429, b"Too Many Requests")])
    client = YFinanceMarketClient(["AAPL"], "2020-08-31", "2020-11-07", session=session, attempts=2, base_delay=0.01)

    # one failing ticker fails alone, named with its cause (the others' rows ride on the error)
    with pytest.raises(PartialFetchError, match=r"AAPL: RetriesExhausted: Yahoo chart for AAPL") as err:
        client.fetch()
    assert err.value.partial.is_empty()


def test_unknown_ticker_is_a_clear_error(yahoo):
    body = json.dumps(
        {"chart": {"result": None, "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"}}}
    ).encode()
    session, _ = yahoo([(404, body)], tz_answers=[(404, body)])
    client = YFinanceMarketClient(["NOPE"], "2020-08-31", "2020-11-07", session=session)

    with pytest.raises(PartialFetchError, match=r"NOPE: ValueError: .*check the ticker symbol"):
        client.fetch()


def test_window_without_bars_gives_empty_frame(yahoo):
    if not WEEKEND_1M.exists():
        pytest.skip(f"real capture {WEEKEND_1M} not present")
    # Real response for a weekend: meta but no timestamps and an empty quote.
    session, _ = yahoo([(200, WEEKEND_1M.read_bytes())])
    client = YFinanceMarketClient(["AAPL"], "2025-02-01", "2025-02-02", session=session)

    df = client.fetch()

    assert df.height == 0 and df.schema == pl.Schema(MARKET_PRICES)


def test_html_error_page_is_retried_not_memoised(yahoo):
    # A 502 HTML page for a past range: yfinance memoises it; the client must clear that and ask again.
    # yfinance itself retries once (other cookie strategy), so the first attempt sees two 502s.
    bad_gateway = (502, b"<html><body>Bad Gateway</body></html>")
    session, adapter = yahoo([bad_gateway, bad_gateway, (200, _chart_body())])
    client = YFinanceMarketClient(["AAPL"], "2020-08-31", "2020-11-07", session=session, base_delay=0.01)

    assert client.fetch().height == 49
    assert sum("period1=" in u for u in adapter.calls) == 3


def test_the_asset_keeps_yahoo_s_raw_responses_next_to_the_parquet(yahoo, tmp_path):
    """Through Dagster: the live client's chart JSON lands in raw/market/responses/ as sent."""
    import dagster as dg

    from tenali_pipeline.defs.market import assets as market
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import LakeResource, SourcesResource
    from tenali_pipeline.sources.archive import read_archive

    session, _ = yahoo([(200, _chart_body())])

    class Replayed(SourcesResource):
        def market(self, tickers=None, archive=None):
            return YFinanceMarketClient(tickers, start="2020-08-31", end="2020-11-07", session=session, archive=archive)

    made = market.build(buckets=1)
    result = dg.materialize(made[:2], resources={"lake": LakeResource(root=str(tmp_path / "lake")),
                                                 "sources": Replayed(mode="live", tickers=["AAPL"])})
    assert result.success
    lake = Lake(str(tmp_path / "lake"))
    kept = [k for k in lake.list("raw/market/responses") if k.endswith(".jsonl.gz")]
    assert len(kept) == 1
    records = read_archive(lake.read_bytes(kept[0]))
    charts = [r for r in records if "/v8/finance/chart/AAPL" in r["url"] and "period1" in r["url"]]
    assert charts and json.loads(charts[0]["body"]) == json.loads(_chart_body())
    assert all("crumb-abc" not in r["url"] or "crumb=" in r["url"] for r in records)
    meta = result.asset_materializations_for_node("raw_market_prices")[0].metadata
    assert meta["responses_kept"].value == len(records) and meta["dagster/row_count"].value == 49


def test_split_adjusted_bars_are_turned_back_into_traded_prices():
    """Yahoo quotes the days before a split in post-split shares; the stored close is the price that
    traded (the sample's convention, which the documents assume): 4x before a 4:1 split, volume / 4."""
    from tenali_pipeline.sources.live.market import as_traded

    days = [dt.date(2020, 8, d) for d in (27, 28, 31)] + [dt.date(2020, 9, 1)]
    yahoo = pl.DataFrame({"date": days, "open": [125.0, 126.0, 127.6, 132.8], "high": [126.0] * 4,
                          "low": [124.0] * 4, "close": [125.0, 124.8, 129.0, 134.2],
                          "adj_close": [121.9, 121.7, 125.8, 130.9], "volume": [4e8, 3.6e8, 2.26e8, 1.5e8],
                          "splits": [0.0, 0.0, 4.0, 0.0]})
    out = as_traded(yahoo.reverse())  # in any order
    assert out["date"].to_list() == days
    assert out["close"].to_list() == pytest.approx([500.0, 499.2, 129.0, 134.2])  # AAPL closed at $499.23
    assert out["volume"].to_list() == pytest.approx([1e8, 9e7, 2.26e8, 1.5e8])
    assert out["adj_close"].to_list() == yahoo["adj_close"].to_list()
    # two splits: the days before both carry both ratios
    two = as_traded(yahoo.with_columns(splits=pl.Series([0.0, 2.0, 4.0, 0.0])))
    assert two["close"].to_list() == pytest.approx([1000.0, 499.2, 129.0, 134.2])


def test_a_dividend_before_a_split_is_per_traded_share_like_the_close():
    """Yahoo split-adjusts dividends as it does prices (AAPL paid $0.82 on 2020-08-07, 3 weeks before its
    4:1 split; Yahoo lists 0.205): the stored row must pair the traded close with the paid dividend."""
    from tenali_pipeline.sources.live.market import as_traded

    yahoo = pl.DataFrame({"date": [dt.date(2020, 8, 7), dt.date(2020, 8, 31), dt.date(2020, 11, 6)],
                          "open": [113.2, 127.6, 118.3], "high": [113.7, 131.0, 119.2], "low": [110.3, 126.0, 116.1],
                          "close": [111.1, 129.0, 118.7], "adj_close": [109.4, 127.1, 118.7],
                          "volume": [1.98e8, 2.26e8, 1.27e8], "dividends": [0.205, 0.0, 0.205],
                          "splits": [0.0, 4.0, 0.0]})
    out = as_traded(yahoo)
    assert out["dividends"].to_list() == pytest.approx([0.82, 0.0, 0.205])
    assert out["close"][0] == pytest.approx(444.4)  # and the close it was paid on, as traded
