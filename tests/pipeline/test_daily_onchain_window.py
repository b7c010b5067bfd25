"""`daily_onchain` asks for the last `ONCHAIN_DAYS` complete days as one run over a partition range, so that
DefiLlama's revision of a day already held replaces it. The live DefiLlama and CoinGecko clients answer from
the replays of tests/sources/test_onchain.py (replay_all.load_test_module)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest
import requests

from replay_all import load_test_module
from tenali_pipeline.definitions import build_definitions
from tenali_pipeline.defs.common import read_clean
from tenali_pipeline.defs.onchain import assets as onchain
from tenali_pipeline.defs.schedules import ONCHAIN_DAYS
from tenali_pipeline.lake import Lake
from tenali_pipeline.resources import SourcesResource, build_resources
from tenali_pipeline.settings import load_settings

UTC = dt.timezone.utc
START = "2024-01-01"  # TENALI_START_DATE: the first partition, and the first day the replays serve
replayed = load_test_module("test_onchain")


def _tick(defs: dg.Definitions, when: dt.datetime):
    with dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def()) as ctx:
        return defs.resolve_schedule_def("daily_onchain").evaluate_tick(ctx)


def _range(data) -> tuple[str, str]:
    [request] = data.run_requests
    assert request.partition_key is None  # a range, in the run's tags
    return request.partition_key_range.start, request.partition_key_range.end


def test_each_tick_asks_the_last_complete_days_as_one_run(tmp_path):
    settings = load_settings({"TENALI_HOME": str(tmp_path), "TENALI_ONCHAIN_DAILY": "1", "TENALI_START_DATE": START})
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    for name in onchain.ASSETS:  # what lets the range run as one run, as a backfill does
        assert graph.get(dg.AssetKey(name)).backfill_policy == dg.BackfillPolicy.single_run(), name
    assert ONCHAIN_DAYS == 3
    ten = _tick(defs, dt.datetime(2024, 1, 10, 1, 0, tzinfo=UTC))
    assert _range(ten) == ("2024-01-07", "2024-01-09")  # yesterday and the two before
    eleven = _tick(defs, dt.datetime(2024, 1, 11, 1, 0, tzinfo=UTC))
    assert _range(eleven) == ("2024-01-08", "2024-01-10")
    assert ten.run_requests[0].run_key != eleven.run_requests[0].run_key  # one run per scheduled day
    assert eleven.run_requests[0].tags["dagster/schedule_name"] == "daily_onchain"
    # clipped to the partitions' start; nothing before the first day is complete
    assert _range(_tick(defs, dt.datetime(2024, 1, 3, 1, 0, tzinfo=UTC))) == ("2024-01-01", "2024-01-02")
    first = _tick(defs, dt.datetime(2024, 1, 1, 1, 0, tzinfo=UTC))
    assert not first.run_requests and "No complete day yet" in first.skip_message


@pytest.fixture
def server():
    routes = {path: [answers[-1]] for path, answers in replayed.LLAMA.items()}  # without the 429 served first
    routes.update({
        "/coins/bitcoin/market_chart/range": [(200, replayed._market_chart([40000, 42000, 41000, 41500],
                                                                           [8e11, 8.4e11, 8.2e11, 8.3e11]))],
        "/coins/bitcoin": [(200, {"id": "bitcoin", "symbol": "btc", "market_data": {"max_supply": 21000000.0}})],
    })
    server = replayed.Server(routes)
    yield server
    server.close()


def _replayed_sources(settings, server) -> SourcesResource:
    """The profile's sources with the live DefiLlama and CoinGecko clients pointed at `server`."""
    from tenali_pipeline.sources.live.coingecko import CoinGeckoClient
    from tenali_pipeline.sources.live.defillama import DefiLlamaClient

    class Replayed(SourcesResource):
        def defillama(self, chains=None, protocols=None, archive=None):
            return DefiLlamaClient(self.defillama_chains, self.defillama_protocols, start=self.start_date,
                                   api=server.http.base, stablecoins=server.http.base, base_delay=0.01,
                                   session=requests.Session(), archive=archive)

        def coingecko(self, coins=None, archive=None, end=None):
            return CoinGeckoClient(self.coingecko_coins, start=self.start_date, end=end, api=server.http.base,
                                   base_delay=0.01, session=requests.Session(), archive=archive)

    base = build_resources(settings)["sources"]
    fields = {name: getattr(base, name) for name in SourcesResource.model_fields}
    return Replayed(**{**fields, "mode": "live", "defillama_chains": ["Ethereum"], "defillama_protocols": ["aave"],
                       "coingecko_coins": ["bitcoin"]})


def test_a_revised_day_already_held_is_replaced_by_the_next_tick(tmp_path, server):
    settings = load_settings({"TENALI_HOME": str(tmp_path), "TENALI_ONCHAIN_DAILY": "1", "TENALI_START_DATE": START})
    defs = build_definitions(settings, sources=_replayed_sources(settings, server))
    instance, lake = dg.DagsterInstance.ephemeral(), Lake(settings.lake_root)
    job = defs.resolve_job_def("ingest_onchain")

    def run_tick(when: dt.datetime) -> list[str]:
        [request] = _tick(defs, when).run_requests
        asked = len(server.requests)
        result = job.execute_in_process(instance=instance, tags=request.tags, raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_step_failure]
        return [path for path, _, _ in server.requests[asked:]]

    def fees(day: dt.date, table: pl.DataFrame) -> float:
        return table.filter((pl.col("metric") == "fees") & (pl.col("scope") == "chain") & (pl.col("date") == day))[
            "value"].item()

    held = dt.date(2024, 1, 2)
    first = run_tick(dt.datetime(2024, 1, 3, 1, 0, tzinfo=UTC))  # 2024-01-01..02
    day_file = f"raw/defillama/defi_metrics/{held}.parquet"
    assert fees(held, lake.read_parquet(day_file)) == 2e6
    # DefiLlama revises yesterday's fees; the next day's tick asks for it again
    server.routes["/overview/fees/Ethereum"] = [(200, replayed._chart([1e6, 2.5e6, 3e6]))]
    second = run_tick(dt.datetime(2024, 1, 4, 1, 0, tzinfo=UTC))  # 2024-01-01..03

    assert fees(held, lake.read_parquet(day_file)) == 2.5e6
    assert fees(held, read_clean(lake, "defillama", "defi_metrics")) == 2.5e6  # what the documents read
    assert [k.rsplit("/", 1)[1] for k in lake.list("raw/defillama/defi_metrics")] == [
        "2024-01-01.parquet", "2024-01-02.parquet", "2024-01-03.parquet"]
    assert len(instance.get_runs()) == 2  # one run per tick, whatever its days
    for name in onchain.ASSETS:
        assert sorted(instance.get_materialized_partitions(dg.AssetKey(name))) == [
            "2024-01-01", "2024-01-02", "2024-01-03"], name
    # no request more for more days: each of the 7 DefiLlama series whole, CoinGecko's range and coin once
    assert sorted(second) == sorted(first) and len(second) == 7 + 2
