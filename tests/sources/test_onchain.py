"""On-chain and DeFi: DefiLlama and CoinGecko clients replayed from 127.0.0.1 on their documented
response shapes (including 404s, malformed bodies, 429 and 403), the sample twins and their notes."""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import parse_qs, urlsplit

import polars as pl
import pytest
import requests

from local_http import LocalServer
from tenali_pipeline.cleaning import clean
from tenali_pipeline.sources.http import PartialFetchError, SourceBlocked
from tenali_pipeline.sources.live.coingecko import CoinGeckoClient
from tenali_pipeline.sources.live.defillama import DefiLlamaClient
from tenali_pipeline.sources.sample.coingecko import SampleCoinGeckoClient
from tenali_pipeline.sources.sample.defillama import SampleDefiLlamaClient
from tenali_pipeline.sources.schema import COIN_MARKETS, DEFI_METRICS
from tenali_pipeline.text.render_fundamentals import render_coins, render_defi

D = dt.date
T0 = 1704067200  # 2024-01-01 00:00 UTC
DAYS = [T0 + 86400 * i for i in range(3)]


class Server:
    """Routes path -> list of (status, body) served in turn (the last repeats); records the requests."""

    def __init__(self, routes):
        self.routes, self.requests = routes, []
        self.http = LocalServer(self._respond)

    def _respond(self, req):
        url = urlsplit(req.path)
        self.requests.append((url.path, parse_qs(url.query), dict(req.headers)))
        queue = self.routes.get(url.path, [(404, {"message": "not found"})])
        status, body = queue.pop(0) if len(queue) > 1 else queue[0]
        return status, {"Content-Type": "application/json"}, body if isinstance(body, bytes) else json.dumps(body).encode()

    def close(self):
        self.http.close()


def _chart(values):
    return {"totalDataChart": [[t, v] for t, v in zip(DAYS, values)], "name": "x"}


LLAMA = {
    "/v2/historicalChainTvl/Ethereum": [(429, b"slow down"), (200, [{"date": t, "tvl": 5e10 + i} for i, t in enumerate(DAYS)])],
    "/overview/fees/Ethereum": [(200, _chart([1e6, 2e6, 3e6]))],
    "/overview/dexs/Ethereum": [(200, _chart([1e9, 2e9, 3e9]))],
    "/stablecoincharts/Ethereum": [(200, [{"date": str(t), "totalCirculatingUSD": {"peggedUSD": 7e10, "peggedEUR": 1e8}}
                                          for t in DAYS])],
    "/protocol/aave": [(200, {"name": "Aave", "tvl": [{"date": t, "totalLiquidityUSD": 1e10} for t in DAYS]})],
    "/summary/fees/aave": [(200, _chart([4e5, 5e5, 6e5]))],
    "/v2/historicalChainTvl/Brokenchain": [(200, {"unexpected": "shape"})],
}


def test_defillama_replay_with_a_bad_series_and_a_missing_one():
    server = Server(dict(LLAMA))
    try:
        client = DefiLlamaClient(["Ethereum", "Brokenchain"], ["aave"], start="2024-01-02", api=server.http.base,
                                 stablecoins=server.http.base, base_delay=0.01)
        with pytest.raises(PartialFetchError, match=r"chain Brokenchain tvl: historicalChainTvl: expected a list") as e:
            client.fetch()
    finally:
        server.close()
    df = e.value.partial
    assert dict(df.schema) == DEFI_METRICS and df["date"].min() == D(2024, 1, 2)  # rows before start dropped
    got = {(m, s, n): v for m, s, n, d, v in df.filter(pl.col("date") == D(2024, 1, 3)).select(
        "metric", "scope", "entity", "date", "value").iter_rows()}
    assert got[("tvl", "chain", "Ethereum")] == 5e10 + 2  # after one 429, retried
    assert got[("stablecoin_supply", "chain", "Ethereum")] == 7e10 + 1e8  # every peg summed, in USD
    assert got[("dex_volume", "chain", "Ethereum")] == 3e9 and got[("revenue", "protocol", "aave")] == 6e5
    # DefiLlama has no fees for Brokenchain (404): listed as missing, not a failure
    assert "chain Brokenchain fees" in client.missing and list(e.value.failures) == ["chain Brokenchain tvl"]
    fees = [q for p, q, _ in server.requests if p == "/overview/fees/Ethereum"][0]
    assert fees["dataType"] == ["dailyFees"] and fees["excludeTotalDataChart"] == ["false"]
    assert sum(clean("defillama", df).dropped.values()) == 0


def test_defillama_bot_wall_names_the_setting():
    server = Server({"/v2/historicalChainTvl/Ethereum": [(200, b"<html><title>Just a moment...</title> cloudflare</html>")]})
    try:
        with pytest.raises(SourceBlocked, match="DefiLlama.*TENALI_SOURCES_OFF=defillama"):
            DefiLlamaClient(["Ethereum"], api=server.http.base, stablecoins=server.http.base, base_delay=0.01).fetch()
    finally:
        server.close()


def _market_chart(prices, caps):
    ms = [t * 1000 for t in DAYS] + [DAYS[-1] * 1000 + 3_600_000]  # CoinGecko's last point: "now", same day
    return {"prices": [[t, p] for t, p in zip(ms, prices)], "market_caps": [[t, c] for t, c in zip(ms, caps)],
            "total_volumes": [[t, 1e9] for t in ms]}


def test_coingecko_replay_supply_key_and_errors():
    routes = {
        "/coins/bitcoin/market_chart/range": [(200, _market_chart([40000, 42000, 41000, 41500], [8e11, 8.4e11, 8.2e11, 8.3e11]))],
        "/coins/bitcoin": [(200, {"id": "bitcoin", "symbol": "btc", "market_data": {"max_supply": 21000000.0}})],
        "/coins/oldcoin/market_chart/range": [(401, {"error": {"status": {"error_code": 10012}}})],
        "/coins/nocap/market_chart/range": [(200, _market_chart([1, 1, 1, 1], [5e6, 5e6, 5e6, 6e6]))],
        "/coins/nocap": [(200, {"id": "nocap", "symbol": "ncp", "market_data": {"max_supply": None}})],
    }
    server = Server(routes)
    try:
        client = CoinGeckoClient(["bitcoin", "oldcoin", "nocap"], start="2024-01-01", end=D(2024, 1, 4),
                                 api_key="SECRET-KEY", api=server.http.base, session=requests.Session(), base_delay=0.01)
        with pytest.raises(PartialFetchError, match=r"oldcoin: .*401.*TENALI_START_DATE.*COINGECKO_API_KEY") as e:
            client.fetch()
    finally:
        server.close()
    assert "SECRET-KEY" not in str(e.value)
    df = e.value.partial
    assert dict(df.schema) == COIN_MARKETS and df.height == 6
    btc = df.filter(pl.col("coin_id") == "bitcoin").sort("date")
    assert btc["date"].to_list() == [D(2024, 1, 1), D(2024, 1, 2), D(2024, 1, 3)]
    assert btc["price_usd"][-1] == 41500  # the day's last point wins
    assert btc["circulating_supply"][0] == pytest.approx(8e11 / 40000)
    assert (btc["max_supply"] == 21e6).all() and btc["symbol"][0] == "BTC"
    assert df.filter(pl.col("coin_id") == "nocap")["max_supply"].is_null().all()
    assert all(h.get("x-cg-demo-api-key") == "SECRET-KEY" for _, _, h in server.requests)
    q = [q for p, q, _ in server.requests if p.endswith("/range")][0]
    assert q["vs_currency"] == ["usd"] and int(q["to"][0]) > int(q["from"][0])


def test_coingecko_403_names_the_setting():
    server = Server({"/coins/bitcoin/market_chart/range": [(403, b"Forbidden")]})
    try:
        with pytest.raises(SourceBlocked, match="CoinGecko.*TENALI_SOURCES_OFF=coingecko"):
            CoinGeckoClient(["bitcoin"], api=server.http.base, session=requests.Session(), base_delay=0.01).fetch()
    finally:
        server.close()


def test_sample_twins_and_their_notes():
    defi, coins = SampleDefiLlamaClient().fetch(), SampleCoinGeckoClient().fetch()
    assert defi.equals(SampleDefiLlamaClient().fetch()) and coins.equals(SampleCoinGeckoClient().fetch())
    assert dict(defi.schema) == DEFI_METRICS and dict(coins.schema) == COIN_MARKETS
    assert set(defi["metric"]) == {"tvl", "fees", "revenue", "dex_volume", "stablecoin_supply"}
    assert sum(clean("defillama", defi).dropped.values()) == 0 and sum(clean("coingecko", coins).dropped.values()) == 0
    capped = coins.filter(pl.col("coin_id") == "samplecoin")
    assert (capped["circulating_supply"] <= capped["max_supply"] * (1 + 1e-9)).all()
    notes = pl.concat([render_defi(defi), render_coins(coins)])
    assert (notes["domain"] == "crypto_forex").all() and notes["doc_id"].is_unique().all()
    assert notes["date"].max() < D(2013, 3, 1)  # within the demo's date range
    jan = render_defi(defi).filter(pl.col("title") == "Samplechain on-chain activity in February 2010")["text"].item()
    feb = defi.filter(pl.col("entity") == "Samplechain", pl.col("metric") == "fees",
                      pl.col("date").dt.month() == 2, pl.col("date").dt.year() == 2010)["value"].sum()
    assert f"Fees totalled ${feb / 1e6:,.1f} million over 28 days" in jan
