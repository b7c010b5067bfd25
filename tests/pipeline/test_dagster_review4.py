"""The Dagster layer met as a user meets it: a source turned off after months of collection, the demo run
on a lake that holds live data, and run config out of range (sensor cursors: test_sensors.py)."""

from __future__ import annotations

import dagster as dg
import pytest

from tenali_pipeline.defs.centralbank import assets as centralbank
from tenali_pipeline.lake import Lake
from tenali_pipeline.resources import LakeResource, SourcesResource


def _materialise(module_defs, root, sources, instance=None):
    defs = dg.Definitions(assets=module_defs[:2], asset_checks=module_defs[2:],
                          resources={"lake": LakeResource(root=str(root)), "sources": sources})
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(raise_on_error=False, instance=instance)


def test_turning_a_source_off_keeps_the_history_it_collected(tmp_path):
    """TENALI_SOURCES_OFF is what a refusing site's error tells the user to set: it must not replace the raw
    table held (a feed lists only its latest items, so what earlier runs kept cannot be fetched again)."""
    lake = Lake(str(tmp_path))
    assert _materialise(centralbank.defs, tmp_path, SourcesResource()).success
    held = lake.read_parquet("raw/centralbank/central_bank.parquet")
    assert held.height

    off = _materialise(centralbank.defs, tmp_path, SourcesResource(sources_off=["centralbank"]))
    assert off.success and all(c.passed for c in off.get_asset_check_evaluations())
    meta = off.asset_materializations_for_node("raw_central_bank")[0].metadata
    assert meta["disabled"].value is True and meta["dagster/row_count"].value == held.height
    assert lake.read_parquet("raw/centralbank/central_bank.parquet").equals(held)  # nothing lost
    assert lake.read_parquet("clean/centralbank/central_bank.parquet").is_empty()  # the graph builds without it

    # back on: the next run starts from the history held
    assert _materialise(centralbank.defs, tmp_path, SourcesResource()).success
    assert lake.read_parquet("raw/centralbank/central_bank.parquet").height == held.height
    assert lake.read_parquet("clean/centralbank/central_bank.parquet").height > 0


def test_turning_a_bucketed_source_off_keeps_each_bucket(tmp_path):
    from tenali_pipeline.defs.market import assets as market

    defs = market.build(buckets=2)
    lake = Lake(str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    job = dg.Definitions(assets=defs[:2], asset_checks=defs[2:],
                         resources={"lake": LakeResource(root=str(tmp_path)), "sources": SourcesResource()}
                         ).resolve_implicit_global_asset_job_def()
    for key in ("00", "01"):
        assert job.execute_in_process(partition_key=key, instance=instance).success
    before = {k: lake.read_parquet(k) for k in lake.list("raw/market/market_prices") if k.endswith(".parquet")}
    assert sum(df.height for df in before.values())

    off = dg.Definitions(assets=defs[:2], asset_checks=defs[2:],
                         resources={"lake": LakeResource(root=str(tmp_path)),
                                    "sources": SourcesResource(sources_off=["market"])}
                         ).resolve_implicit_global_asset_job_def()
    assert off.execute_in_process(partition_key="01", instance=instance).success
    for key, df in before.items():
        assert lake.read_parquet(key).equals(df), key
    assert lake.read_parquet("clean/market/market_prices/bucket-01-of-02.parquet").is_empty()


def test_the_universe_keeps_its_statuses_while_its_source_is_off(tmp_path):
    """An empty snapshot (the source turned off) says nothing about delistings: every instrument used to
    become "missing", and TENALI_TICKERS=universe then found no listed equity to collect."""
    from tenali_pipeline.defs.market.assets import market_tickers
    from tenali_pipeline.defs.universe import assets as universe

    lake = Lake(str(tmp_path))
    everything = [*universe.snapshot_defs, universe.universe, universe.universe_history_is_consistent]
    instance = dg.DagsterInstance.ephemeral()
    for sources in (SourcesResource(), SourcesResource(sources_off=["universe"])):
        result = dg.materialize(everything, instance=instance, raise_on_error=False,
                                resources={"lake": LakeResource(root=str(tmp_path)), "sources": sources})
        assert result.success
        table = lake.read_parquet("universe/universe.parquet")
        if not sources.sources_off:
            before = table
    assert table.equals(before) and "missing" not in set(table["status"])
    assert market_tickers(lake)


def _step_error(result) -> str:
    return next(e for e in result.all_events if e.is_step_failure).event_specific_data.error.to_string()


def test_run_config_out_of_range_names_the_field(tmp_path):
    """per_kind 0 failed as "move TENALI_VAL_START" (an empty question set), a negative one inside numpy;
    distillation steps 0 as "phases is empty" after the teacher was downloaded. Now the field is named
    before anything is read."""
    from tenali_pipeline.defs.posttraining import stages
    from tenali_pipeline.defs.posttraining.assets import grounded_instructions

    resources = {"lake": LakeResource(root=str(tmp_path))}
    for per_kind in (0, -3):
        result = dg.materialize([grounded_instructions], resources=resources, raise_on_error=False,
                                run_config={"ops": {"grounded_instructions": {"config": {"per_kind": per_kind}}}})
        error = _step_error(result)
        assert "per_kind" in error and "greater than or equal to 1" in error, error[-800:]
    with pytest.raises(ValueError, match="steps"):
        stages.DistillSettings(steps=0)
    with pytest.raises(ValueError, match="student_layers"):
        stages.DistillSettings(student_layers=-1)


def test_turning_a_daily_source_off_keeps_its_days(tmp_path):
    import datetime as dt

    from tenali_pipeline.defs.onchain import assets as onchain

    defs = onchain.coingecko_assets(daily_from="2012-01-01")
    lake = Lake(str(tmp_path))
    instance = dg.DagsterInstance.ephemeral()
    tags = {"dagster/asset_partition_range_start": "2012-06-01", "dagster/asset_partition_range_end": "2012-06-05"}

    def job(sources):
        return dg.Definitions(assets=defs[:2], asset_checks=defs[2:],
                              resources={"lake": LakeResource(root=str(tmp_path)), "sources": sources}
                              ).resolve_implicit_global_asset_job_def()

    assert job(SourcesResource()).execute_in_process(instance=instance, tags=tags).success
    day = "raw/coingecko/coin_markets/2012-06-03.parquet"
    held = lake.read_parquet(day)
    assert held.height
    assert job(SourcesResource(sources_off=["coingecko"])).execute_in_process(instance=instance, tags=tags).success
    assert lake.read_parquet(day).equals(held)
    assert lake.read_parquet(day.replace("raw/", "clean/")).is_empty()
    assert dt.date(2012, 6, 3) == held["date"].max()


def test_a_sample_run_never_replaces_live_rows(tmp_path):
    """demo and local share $TENALI_HOME/lake by default: `tenali demo` after live collection replaced every
    live raw table with sample rows. Now the sample run stops, naming the fix; the live rows stay."""
    from tenali_pipeline.defs.documents import assets as documents

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "note.md").write_text("# Rates\n\nThe committee held rates at 5.25% in July 2023.\n")
    lake = Lake(str(tmp_path / "lake"))
    live = SourcesResource(mode="live", documents_root=str(folder))
    assert _materialise(documents.defs, tmp_path / "lake", live).success
    held = lake.read_parquet("raw/documents/documents.parquet")
    assert held.height == 1

    result = _materialise(documents.defs, tmp_path / "lake", SourcesResource())
    assert not result.success
    error = _step_error(result)
    assert "1 live rows" in error and "TENALI_LAKE_ROOT" in error
    assert lake.read_parquet("raw/documents/documents.parquet").equals(held)


def test_new_rows_counts_only_rows_of_the_run_s_mode(tmp_path):
    """After the demo, the first live run reported new_rows = live rows - sample rows (negative)."""
    from tenali_pipeline.defs.documents import assets as documents

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "note.md").write_text("# Rates\n\nThe committee held rates at 5.25% in July 2023.\n")
    assert _materialise(documents.defs, tmp_path / "lake", SourcesResource()).success
    result = _materialise(documents.defs, tmp_path / "lake", SourcesResource(mode="live", documents_root=str(folder)))
    assert result.success
    assert result.asset_materializations_for_node("raw_documents")[0].metadata["new_rows"].value == 1


def test_a_live_run_right_after_the_demo_asks_for_every_ticker(tmp_path):
    """The sample run's check times were the live run's: within TENALI_REFRESH_HOURS of the demo, a live
    run on the same lake asked for no ticker and wrote an empty table (its sample rows dropped)."""
    import polars as pl

    from tenali_pipeline.defs.market import assets as market
    from tenali_pipeline.sources.sample import SampleMarketClient

    asked = []

    class LiveMarket(SourcesResource):
        def market(self, tickers=None, archive=None):
            class Client:
                def fetch(self, since=None):
                    asked.extend(since)
                    rows = SampleMarketClient().fetch().filter(pl.col("ticker").is_in(list(since)))
                    return rows.with_columns(source=pl.lit("yfinance"))
            return Client()

    assert _materialise(market.defs, tmp_path, SourcesResource(tickers=["AAPL", "MSFT"])).success
    result = _materialise(market.defs, tmp_path, LiveMarket(mode="live", tickers=["AAPL", "MSFT"]))
    assert result.success
    assert sorted(asked) == ["AAPL", "MSFT"]
    raw = Lake(str(tmp_path)).read_parquet("raw/market/market_prices/bucket-00-of-01.parquet")
    assert raw.height and set(raw["source"]) == {"yfinance"}
