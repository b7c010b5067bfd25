"""TENALI_ONCHAIN_DAILY: DefiLlama and CoinGecko partitioned by day (tenali_pipeline/days.py), with their own
job, a daily schedule for the last days, and a backfill of any range as one run. Sample clients; the
live clients' daily runs are replayed in tests/sources/test_onchain.py."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import polars as pl
import pytest

from tenali_pipeline.cleaning import clean
from tenali_pipeline.definitions import build_definitions
from tenali_pipeline.defs.common import read_clean
from tenali_pipeline.defs.onchain import assets as onchain
from tenali_pipeline.lake import Lake
from tenali_pipeline.settings import load_settings
from tenali_pipeline.sources.sample.coingecko import SampleCoinGeckoClient
from tenali_pipeline.sources.sample.defillama import SampleDefiLlamaClient

FIRST, LAST = dt.date(2012, 6, 1), dt.date(2012, 6, 10)
RANGE = {"dagster/asset_partition_range_start": str(FIRST), "dagster/asset_partition_range_end": str(LAST)}


@pytest.fixture(scope="module")
def daily(tmp_path_factory):
    home = tmp_path_factory.mktemp("daily")
    settings = load_settings({"TENALI_HOME": str(home), "TENALI_ONCHAIN_DAILY": "1", "TENALI_START_DATE": "2012-01-01"})
    defs = build_definitions(settings)
    return settings, defs, dg.DagsterInstance.ephemeral()


def test_the_daily_profile_setting():
    assert load_settings({"TENALI_PROFILE": "local"}).onchain_daily
    assert not load_settings({}).onchain_daily  # the demo stays one unpartitioned run
    assert not load_settings({"TENALI_PROFILE": "local", "TENALI_ONCHAIN_DAILY": "0"}).onchain_daily


def test_the_daily_assets_have_their_own_job_and_schedule(daily):
    _, defs, _ = daily
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    for name in onchain.ASSETS:
        part = graph.get(dg.AssetKey(name)).partitions_def
        assert isinstance(part, dg.DailyPartitionsDefinition) and part.start.date() == dt.date(2012, 1, 1), name
    job = lambda name: {k.path[-1] for k in defs.resolve_job_def(name).asset_layer.executable_asset_keys}  # noqa: E731
    assert job("ingest_onchain") == set(onchain.ASSETS)
    assert not job("ingest_sources") & set(onchain.ASSETS)
    assert not job("everything") & set(onchain.ASSETS)  # Dagster refuses two partitions definitions in one job
    assert "onchain_documents" in job("everything")  # what reads their days stays in the whole graph
    schedule = defs.resolve_schedule_def("daily_onchain")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED  # the demo profile: listed, stopped
    with dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 12, 2, 1, 0, tzinfo=dt.timezone.utc),
                                   repository_def=defs.get_repository_def()) as ctx:
        [request] = schedule.evaluate_tick(ctx).run_requests
    assert request.partition_key_range == dg.PartitionKeyRange("2026-11-29", "2026-12-01")  # the last 3 complete days


def test_a_backfill_runs_once_and_writes_each_day(daily):
    settings, defs, instance = daily
    result = defs.resolve_job_def("ingest_onchain").execute_in_process(instance=instance, tags=RANGE)
    assert result.success
    assert len(instance.get_runs()) == 1
    days = [str(FIRST + dt.timedelta(days=i)) for i in range(10)]
    for name in onchain.ASSETS:
        assert sorted(instance.get_materialized_partitions(dg.AssetKey(name))) == days, name
    lake = Lake(settings.lake_root)
    assert [k.rsplit("/", 1)[1] for k in lake.list("clean/coingecko/coin_markets")] == [f"{d}.parquet" for d in days]
    in_range = pl.col("date").is_between(FIRST, LAST)
    for (source, name), sample in {("defillama", "defi_metrics"): SampleDefiLlamaClient().fetch(),
                                   ("coingecko", "coin_markets"): SampleCoinGeckoClient().fetch()}.items():
        want = clean(source, sample.filter(in_range)).df
        got = read_clean(lake, source, name)  # what the documents asset reads: every day held
        assert got.height == want.height > 0
        assert got.sort(got.columns).equals(want.sort(want.columns)), name
    # downstream (unpartitioned) reads every day held
    docs = defs.resolve_job_def("everything").execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("onchain_documents")])
    assert docs.success
    notes = lake.read_parquet("documents/onchain_documents.parquet") if lake.exists("documents/onchain_documents.parquet") else None
    assert notes is not None and notes.height > 0 and notes["date"].max() <= LAST


def test_rerunning_a_day_rewrites_only_that_day(daily):
    settings, defs, instance = daily
    lake = Lake(settings.lake_root)
    before = {k: lake.read_parquet(k) for k in lake.list("raw/defillama/defi_metrics")}
    lake.write_parquet("raw/defillama/defi_metrics/2012-06-03.parquet", before[
        "raw/defillama/defi_metrics/2012-06-03.parquet"].head(1))  # damaged by hand
    result = defs.resolve_job_def("ingest_onchain").execute_in_process(instance=instance, partition_key="2012-06-03")
    assert result.success
    after = {k: lake.read_parquet(k) for k in lake.list("raw/defillama/defi_metrics")}
    assert sorted(after) == sorted(before) and all(after[k].equals(before[k]) for k in before)


def test_switching_the_layout_keeps_one_clean_table(daily):
    """TENALI_ONCHAIN_DAILY turned off on a lake with days: the single clean file replaces the clean days
    (both derive from raw, which stays), so `read_clean` reads one or the other, never a stale one."""
    settings, _, instance = daily
    lake = Lake(settings.lake_root)
    days_before = lake.list("raw/coingecko/coin_markets")
    plain = build_definitions(load_settings({"TENALI_HOME": str(settings.home), "TENALI_ONCHAIN_DAILY": "0"}))
    result = plain.resolve_job_def("everything").execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("raw_coin_markets"), dg.AssetKey("clean_coin_markets")])
    assert result.success
    assert lake.list("clean/coingecko/coin_markets") == [] and lake.list("raw/coingecko/coin_markets") == days_before
    assert read_clean(lake, "coingecko", "coin_markets").height == SampleCoinGeckoClient().fetch().height
    # and back: the days replace the single file
    again = build_definitions(settings).resolve_job_def("ingest_onchain").execute_in_process(
        instance=instance, partition_key="2012-06-05")
    assert again.success and not lake.exists("clean/coingecko/coin_markets.parquet")
    assert set(read_clean(lake, "coingecko", "coin_markets")["date"]) == {dt.date(2012, 6, 5)}


def test_cleaning_days_whose_raw_is_missing_names_them(daily):
    _, defs, instance = daily
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("clean_defi_metrics")], raise_on_error=False,
        tags={"dagster/asset_partition_range_start": "2012-06-09", "dagster/asset_partition_range_end": "2012-06-12"})
    assert not result.success
    [message] = [e.event_specific_data.error.message for e in result.all_events if e.is_step_failure]
    assert "raw_defi_metrics has not been materialised for 2 day(s) of 2012-06-09..2012-06-12" in message


def test_the_documents_follow_once_every_day_is_held(tmp_path):
    """The automation sensor's `eager` condition: `onchain_documents` (unpartitioned, so the corpus too)
    waits while a day since TENALI_START_DATE is missing, as it waits for every instrument bucket."""
    settings = load_settings({"TENALI_HOME": str(tmp_path), "TENALI_ONCHAIN_DAILY": "1",
                              "TENALI_START_DATE": "2012-06-01"})
    defs, instance = build_definitions(settings), dg.DagsterInstance.ephemeral()
    now = dt.datetime(2012, 6, 11, 2, 0, tzinfo=dt.timezone.utc)  # the last complete day: 2012-06-10
    docs = dg.AssetKey("onchain_documents")

    def backfill(first: str, last: str) -> None:
        tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
        assert defs.resolve_job_def("ingest_onchain").execute_in_process(instance=instance, tags=tags).success

    ticks = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=now)
    backfill("2012-06-05", "2012-06-10")
    ticks = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=ticks.cursor, evaluation_time=now)
    assert ticks.get_num_requested(docs) == 0  # 2012-06-01 to 06-04 missing
    backfill("2012-06-01", "2012-06-04")
    ticks = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=ticks.cursor, evaluation_time=now)
    assert ticks.get_num_requested(docs) == 1
