"""On-chain and DeFi: DefiLlama and CoinGecko clients replayed from 127.0.0.1 on their documented
response shapes (including 404s, malformed bodies, 429 and 403), the sample twins and their notes."""

from __future__ import annotations

import datetime as dt
import gzip
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


# --- through Dagster: raw JSON kept without the key, a second run asks nothing, one failing item ---


def _materialize(tmp_path, module_defs, sources):
    import dagster as dg

    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import LakeResource

    result = dg.materialize(module_defs[:1], raise_on_error=False,
                            resources={"lake": LakeResource(root=str(tmp_path / "lake")), "sources": sources})
    lake = Lake(str(tmp_path / "lake"))
    keys = [k for k in lake.list("raw") if k.endswith(".parquet") and "/responses/" not in k]
    return result, (lake.read_parquet(keys[0]) if keys else None), lake


def _failure(result) -> str:
    return next(e for e in result.all_events if e.is_step_failure).event_specific_data.error.message


def _llama_sources(server, chains, protocols=()):
    from tenali_pipeline.resources import SourcesResource

    class Replayed(SourcesResource):
        def defillama(self, chains=None, protocols=None, archive=None):
            return DefiLlamaClient(self.defillama_chains if chains is None else chains,
                                   self.defillama_protocols if protocols is None else protocols, start="2024-01-02", api=server.http.base,
                                   stablecoins=server.http.base, base_delay=0.01, session=requests.Session(),
                                   archive=archive)

    return Replayed(mode="live", defillama_chains=list(chains), defillama_protocols=list(protocols))


def test_defillama_asset_keeps_json_and_a_second_run_asks_nothing(tmp_path):
    from tenali_pipeline.defs.onchain import assets as onchain
    from tenali_pipeline.sources.archive import read_archive

    routes = {k: list(v) for k, v in LLAMA.items()}  # (an earlier test may have served LLAMA's 429 already)
    routes["/v2/historicalChainTvl/Ethereum"] = [(429, b"slow down"), LLAMA["/v2/historicalChainTvl/Ethereum"][-1]]
    routes["/overview/dexs/Ethereum"] = [(404, {"message": "no dex volume"})]  # remembered as missing
    server = Server(routes)
    try:
        sources = _llama_sources(server, ["Ethereum"], ["aave"])
        first, table, lake = _materialize(tmp_path, onchain.defillama_defs, sources)
        asked = len(server.requests)
        second, again, _ = _materialize(tmp_path, onchain.defillama_defs, sources)
        after_second = len(server.requests)
        # a chain added to the configuration: only its series are asked; one of them is malformed
        third, partial, _ = _materialize(tmp_path, onchain.defillama_defs,
                                         _llama_sources(server, ["Ethereum", "Brokenchain"], ["aave"]))
        third_paths = [p for p, _, _ in server.requests[after_second:]]
    finally:
        server.close()

    assert first.success and dict(table.schema) == DEFI_METRICS
    assert set(table["metric"]) == {"tvl", "fees", "stablecoin_supply", "revenue"} and table["date"].min() == D(2024, 1, 2)
    assert asked == 8  # 6 series (one after a 429, retried) + the 404
    [kept] = [k for k in lake.list("raw/defillama/responses") if k.endswith(f"-{first.run_id[:8]}.jsonl.gz")]
    records = read_archive(lake.read_bytes(kept))
    assert len(records) == asked and {r["status"] for r in records} == {200, 404, 429}
    tvl = next(r for r in records if r["url"].endswith("/v2/historicalChainTvl/Ethereum") and r["status"] == 200)
    assert json.loads(tvl["body"]) == LLAMA["/v2/historicalChainTvl/Ethereum"][-1][1]

    assert second.success and after_second == asked  # nothing asked: neither the series nor the 404
    assert again.equals(table)

    assert not third.success
    failure = _failure(third)
    assert "chain Brokenchain tvl" in failure and "expected a list" in failure and "Ethereum" not in failure
    assert all("Brokenchain" in p for p in third_paths) and len(third_paths) == 4
    assert partial.filter(pl.col("entity") != "Brokenchain").sort(partial.columns).equals(table.sort(table.columns))


def _gecko_sources(server):
    import os

    from tenali_pipeline.resources import SourcesResource

    class Replayed(SourcesResource):
        def coingecko(self, coins=None, archive=None):
            return CoinGeckoClient(self.coingecko_coins if coins is None else coins, start="2024-01-01", end=D(2024, 1, 4), api=server.http.base,
                                   api_key=os.environ.get("COINGECKO_API_KEY"), session=requests.Session(),
                                   base_delay=0.01, archive=archive)

    return Replayed(mode="live", coingecko_coins=["bitcoin", "oldcoin"])


def test_coingecko_asset_keeps_json_without_the_key_and_fails_one_coin_alone(tmp_path, monkeypatch):
    from tenali_pipeline.defs.onchain import assets as onchain

    monkeypatch.setenv("COINGECKO_API_KEY", "CG-SECRET-KEY")
    routes = {
        "/coins/bitcoin/market_chart/range": [(200, _market_chart([40000, 42000, 41000, 41500], [8e11, 8.4e11, 8.2e11, 8.3e11]))],
        "/coins/bitcoin": [(200, {"id": "bitcoin", "symbol": "btc", "market_data": {"max_supply": 21000000.0}})],
        "/coins/oldcoin/market_chart/range": [(401, {"error": {"status": {"error_code": 10012}}})],
    }
    server = Server(routes)
    try:
        first, raw, lake = _materialize(tmp_path, onchain.coingecko_defs, _gecko_sources(server))
        asked = [p for p, _, _ in server.requests]
        second, again, _ = _materialize(tmp_path, onchain.coingecko_defs, _gecko_sources(server))
        asked_again = [p for p, _, _ in server.requests[len(asked):]]
    finally:
        server.close()

    assert not first.success
    failure = _failure(first)
    assert "oldcoin" in failure and "401" in failure and "bitcoin:" not in failure and "CG-SECRET-KEY" not in failure
    assert set(raw["coin_id"]) == {"bitcoin"} and raw.height == 3
    [kept] = [k for k in lake.list("raw/coingecko/responses") if k.endswith(f"-{first.run_id[:8]}.jsonl.gz")]
    data = gzip.decompress(lake.read_bytes(kept))
    assert b"CG-SECRET-KEY" not in data and b"market_caps" in data and b"10012" in data

    # the coin that landed is not asked again within refresh_hours; the failed one is, and the table stays
    assert asked_again == ["/coins/oldcoin/market_chart/range"]
    assert not second.success and again.equals(raw)


def test_coingecko_incremental_range_stays_daily():
    import calendar

    server = Server({"/coins/bitcoin/market_chart/range": [(200, _market_chart([1, 2, 3, 4], [1e9, 2e9, 3e9, 4e9]))],
                     "/coins/bitcoin": [(200, {"id": "bitcoin", "symbol": "btc", "market_data": {"max_supply": 21e6}})]})
    try:
        client = CoinGeckoClient(["bitcoin", "ethereum"], start="2023-01-01", end=D(2024, 6, 1), api=server.http.base,
                                 session=requests.Session(), base_delay=0.01)
        client.fetch(since={"bitcoin": D(2024, 5, 25)})  # ethereum not due: not asked
    finally:
        server.close()
    ranges = [q for p, q, _ in server.requests if p.endswith("/range")]
    # asked from 92 days before the end, not from 2024-05-25: CoinGecko answers hourly within 90 days
    assert len(ranges) == 1 and int(ranges[0]["from"][0]) == calendar.timegm(D(2024, 3, 1).timetuple())
    assert all("ethereum" not in p for p, _, _ in server.requests)


# --- daily partitions (TENALI_ONCHAIN_DAILY): a range in one run, one file per day, a failing series keeps its rows ---


def _materialize_days(tmp_path, module_defs, sources, first: str, last: str):
    import dagster as dg

    from tenali_pipeline.resources import LakeResource

    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    return dg.materialize(module_defs[:1], raise_on_error=False, tags=tags,
                          resources={"lake": LakeResource(root=str(tmp_path / "lake")), "sources": sources})


def test_daily_defillama_writes_each_day_and_a_failing_series_keeps_its_rows(tmp_path):
    from tenali_pipeline.days import read_days
    from tenali_pipeline.defs.onchain import assets as onchain
    from tenali_pipeline.lake import Lake

    daily = onchain.defillama_assets(daily_from="2024-01-01")
    routes = {k: [v[-1]] for k, v in LLAMA.items()}
    server = Server(routes)
    try:
        sources = _llama_sources(server, ["Ethereum"], ["aave"])
        first = _materialize_days(tmp_path, daily, sources, "2024-01-02", "2024-01-03")
        asked = len(server.requests)
        # the chain's TVL now fails, after retries; the other series answer with new values
        routes["/v2/historicalChainTvl/Ethereum"] = [(502, b"<html>Bad Gateway</html>")]
        routes["/summary/fees/aave"] = [(200, _chart([7e5, 8e5, 9e5]))]
        second = _materialize_days(tmp_path, daily, sources, "2024-01-03", "2024-01-03")
    finally:
        server.close()

    lake = Lake(str(tmp_path / "lake"))
    assert first.success, _failure(first)
    assert [k.rsplit("/", 1)[1] for k in lake.list("raw/defillama/defi_metrics")] == ["2024-01-02.parquet",
                                                                                      "2024-01-03.parquet"]
    assert asked == 7  # each of the 7 series once for the two days
    day2 = lake.read_parquet("raw/defillama/defi_metrics/2024-01-02.parquet")
    assert set(day2["date"]) == {D(2024, 1, 2)} and day2.height == 7
    assert first.asset_materializations_for_node("raw_defi_metrics")[0].metadata["days"].value == "2024-01-02..2024-01-03"

    assert not second.success
    failure = _failure(second)
    assert "chain Ethereum tvl" in failure and "2024-01-03" in failure and "aave" not in failure
    day3 = read_days(lake, "raw/defillama/defi_metrics", DEFI_METRICS, D(2024, 1, 3), D(2024, 1, 3))
    got = {(m, e): v for m, e, v in day3.select("metric", "entity", "value").iter_rows()}
    assert got[("tvl", "Ethereum")] == 5e10 + 2  # kept from the first run
    assert got[("revenue", "aave")] == 9e5  # replaced by the new answer
    assert day3.height == 7 and lake.read_parquet("raw/defillama/defi_metrics/2024-01-02.parquet").equals(day2)


def test_daily_coingecko_asks_a_daily_range_ending_after_the_last_day(tmp_path):
    import calendar

    from tenali_pipeline.defs.onchain import assets as onchain
    from tenali_pipeline.lake import Lake

    routes = {
        "/coins/bitcoin/market_chart/range": [(200, _market_chart([40000, 42000, 41000, 41500], [8e11, 8.4e11, 8.2e11, 8.3e11]))],
        "/coins/bitcoin": [(200, {"id": "bitcoin", "symbol": "btc", "market_data": {"max_supply": 21000000.0}})],
    }
    server = Server(routes)

    from tenali_pipeline.resources import SourcesResource

    class Replayed(SourcesResource):
        def coingecko(self, coins=None, archive=None, end=None):
            return CoinGeckoClient(coins or self.coingecko_coins, start="2023-06-01", end=end, api=server.http.base,
                                   session=requests.Session(), base_delay=0.01, archive=archive)

    try:
        result = _materialize_days(tmp_path, onchain.coingecko_assets(daily_from="2023-06-01"),
                                   Replayed(mode="live", coingecko_coins=["bitcoin"]), "2024-01-02", "2024-01-02")
    finally:
        server.close()
    assert result.success, _failure(result)
    [q] = [q for p, q, _ in server.requests if p.endswith("/range")]
    # from 92 days before the end (daily points), to the end of the partition's day
    assert int(q["to"][0]) == calendar.timegm(D(2024, 1, 3).timetuple())
    assert int(q["from"][0]) == calendar.timegm((D(2024, 1, 3) - dt.timedelta(days=92)).timetuple())
    lake = Lake(str(tmp_path / "lake"))
    assert lake.list("raw/coingecko/coin_markets") == ["raw/coingecko/coin_markets/2024-01-02.parquet"]
    day = lake.read_parquet("raw/coingecko/coin_markets/2024-01-02.parquet")
    assert day["date"].to_list() == [D(2024, 1, 2)] and day["price_usd"].item() == 42000
