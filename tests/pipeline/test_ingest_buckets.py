"""Partitions at scale: per-instrument sources in buckets, incremental runs, faults that stay in their bucket.

Run through Dagster with the sample clients (and, for the archive, yfinance itself replaying Yahoo):
every bucket materialised, then a second run that asks the source for nothing, a fault in one bucket
that fails only that partition, and a source that re-based its history being fetched whole again.
"""

from __future__ import annotations

import datetime as dt
import gzip

import dagster as dg
import polars as pl
import pytest

from tenali_pipeline.buckets import Bucket, bucket_keys, bucket_of, read_bucketed
from tenali_pipeline.defs.common import read_clean
from tenali_pipeline.defs.market import assets as market
from tenali_pipeline.lake import Lake
from tenali_pipeline.resources import LakeResource, SourcesResource
from tenali_pipeline.sources.archive import ResponseArchive, mask_url, read_archive
from tenali_pipeline.sources.http import PartialFetchError
from tenali_pipeline.sources.incremental import merge_updates, plan_updates
from tenali_pipeline.sources.sample import SampleMarketClient

TICKERS = ["AAPL", "MSFT", "IBM", "GOOG", "FB"]
BUCKETS = 4


def test_buckets_are_stable_and_cover_every_ticker_once():
    assert bucket_keys(4) == ["00", "01", "02", "03"] and bucket_keys(120)[-1] == "119"
    # sha1-based: the same bucket on every machine and Python version (no PYTHONHASHSEED)
    assert [bucket_of(t, 32) for t in ("AAPL", "aapl ", "MSFT")] == [bucket_of("AAPL", 32)] * 2 + [bucket_of("MSFT", 32)]
    buckets = [Bucket(i, BUCKETS) for i in range(BUCKETS)]
    assert sorted(t for b in buckets for t in b.select(TICKERS)) == sorted(TICKERS)
    assert Bucket.whole().select(TICKERS) == TICKERS
    assert Bucket(7, 32).file("raw/market/x") == "raw/market/x/bucket-07-of-32.parquet"
    with pytest.raises(ValueError, match="not one of the 4 buckets"):
        Bucket.from_key("04", 4)


def test_plan_asks_only_for_what_is_new_and_merge_never_duplicates():
    now = dt.datetime(2026, 1, 10, 22, tzinfo=dt.timezone.utc)
    prev = pl.DataFrame({"ticker": ["A", "A", "B"], "date": [dt.date(2026, 1, 8), dt.date(2026, 1, 9), dt.date(2026, 1, 9)],
                         "adj_close": [1.0, 2.0, 3.0]})
    due = plan_updates(prev, ["A", "B", "C"], key="ticker", time_column="date", now=now,
                       checked={"B": (now - dt.timedelta(hours=1)).isoformat()}, min_interval=dt.timedelta(hours=6))
    assert due == {"A": dt.date(2026, 1, 2), "C": None}  # B was checked an hour ago; C is new
    fetched = pl.DataFrame({"ticker": ["A", "A"], "date": [dt.date(2026, 1, 9), dt.date(2026, 1, 12)],
                            "adj_close": [2.0, 2.5]})
    merged, changed = merge_updates(prev, fetched, key="ticker", time_column="date", compare=("adj_close",))
    assert merged.height == 4 and changed == []
    assert merged.filter(pl.col("ticker") == "A")["date"].to_list() == [dt.date(2026, 1, d) for d in (8, 9, 12)]
    rebased = fetched.with_columns(pl.col("adj_close") * 0.98)  # a dividend re-based the history
    assert merge_updates(prev, rebased, key="ticker", time_column="date", compare=("adj_close",))[1] == ["A"]


def test_archive_masks_secrets_and_round_trips_bodies():
    assert mask_url("https://api.x/fred/series?series_id=GDP&api_key=abc123") == \
        "https://api.x/fred/series?series_id=GDP&api_key=***"
    archive = ResponseArchive()
    archive.record("https://h/a?token=s3cret", 200, b'{"x": 1}', content_type="application/json")
    archive.record("https://h/b", 200, b"\x89PNG\x00\xff")
    data = archive.to_bytes()
    assert b"s3cret" not in gzip.decompress(data)
    records = read_archive(data)
    assert records[0]["body"] == '{"x": 1}' and records[1]["body"] == b"\x89PNG\x00\xff"


class CountingSources(SourcesResource):
    """The sample market client, counting what each run asks for; `fail` tickers raise like a 404."""

    def market(self, tickers=None, archive=None):
        return _Counting(tickers, self.fail_tickers, self.rebase)

    fail_tickers: list[str] = []
    rebase: bool = False


ASKED: list[dict] = []


class _Counting:
    def __init__(self, tickers, fail, rebase):
        self.tickers, self.fail, self.rebase = tickers, fail, rebase

    def fetch(self, since):
        ASKED.append(dict(since))
        df = SampleMarketClient([t for t in self.tickers if t not in self.fail]).fetch(since)
        if self.rebase:
            df = df.with_columns(pl.col("adj_close") * 0.97)
        failed = {t: "ValueError: Yahoo has no chart for it: delisted?" for t in self.tickers if t in self.fail}
        if failed:
            raise PartialFetchError("Yahoo market prices", failed, partial=df)
        return df


def _defs(tmp_path, sources):
    made = market.build(buckets=BUCKETS)
    return dg.Definitions(assets=made[:2], asset_checks=made[2:],
                          resources={"lake": LakeResource(root=str(tmp_path / "lake")), "sources": sources})


def _materialise(defs, instance, key):
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False)


def test_every_bucket_then_a_second_run_that_fetches_nothing(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    defs = _defs(tmp_path, CountingSources(tickers=TICKERS))
    lake = Lake(str(tmp_path / "lake"))
    ASKED.clear()
    for key in bucket_keys(BUCKETS):
        assert _materialise(defs, instance, key).success
    asked_first = {t: d for s in ASKED for t, d in s.items()}
    assert asked_first == {t: None for t in TICKERS}  # every ticker once, its whole history
    prices = read_clean(lake, "market", "market_prices")
    assert sorted(prices["ticker"].unique()) == sorted(TICKERS)
    assert prices.height == SampleMarketClient(TICKERS).fetch().height
    for key in bucket_keys(BUCKETS):  # each bucket file holds exactly its own tickers
        part = lake.read_parquet(Bucket.from_key(key, BUCKETS).file("clean/market/market_prices"))
        assert all(bucket_of(t, BUCKETS) == int(key) for t in part["ticker"].unique())

    ASKED.clear()
    for key in bucket_keys(BUCKETS):
        result = _materialise(defs, instance, key)
        assert result.success
        meta = result.asset_materializations_for_node("raw_market_prices")[0].metadata
        assert meta["new_rows"].value == 0
    assert ASKED == []  # checked minutes ago: nothing asked of the source
    assert read_clean(lake, "market", "market_prices").equals(prices)

    # Once the check interval has passed, each ticker is asked only from a week before its last bar.
    ASKED.clear()
    later = _defs(tmp_path, CountingSources(tickers=TICKERS, refresh_hours=0))
    for key in bucket_keys(BUCKETS):
        assert _materialise(later, instance, key).success
    last = prices.group_by("ticker").agg(pl.col("date").max())
    expected = {t: d - dt.timedelta(days=7) for t, d in last.iter_rows()}
    assert {t: d for s in ASKED for t, d in s.items()} == expected
    assert read_clean(lake, "market", "market_prices").equals(prices)  # no duplicates


def test_a_fault_in_one_bucket_fails_only_that_partition_and_keeps_its_rows(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    lake = Lake(str(tmp_path / "lake"))
    for key in bucket_keys(BUCKETS):
        assert _materialise(_defs(tmp_path, CountingSources(tickers=TICKERS)), instance, key).success
    before = read_clean(lake, "market", "market_prices")
    bad = "IBM"
    flaky = _defs(tmp_path, CountingSources(tickers=TICKERS, refresh_hours=0, fail_tickers=[bad]))
    outcomes = {key: _materialise(flaky, instance, key) for key in bucket_keys(BUCKETS)}
    bad_key = Bucket(bucket_of(bad, BUCKETS), BUCKETS).key
    assert {k: r.success for k, r in outcomes.items()} == {k: k != bad_key for k in bucket_keys(BUCKETS)}
    failure = next(e for e in outcomes[bad_key].all_events if e.is_step_failure)
    message = failure.event_specific_data.error.message
    assert bad in message and "delisted" in message and f"bucket {bad_key} of {BUCKETS}" in message
    raw = lake.read_parquet(Bucket.from_key(bad_key, BUCKETS).file("raw/market/market_prices"))
    assert raw.filter(pl.col("ticker") == bad).height == before.filter(pl.col("ticker") == bad).height  # nothing lost


def test_a_rebased_history_is_fetched_whole_again(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    lake = Lake(str(tmp_path / "lake"))
    for key in bucket_keys(BUCKETS):
        assert _materialise(_defs(tmp_path, CountingSources(tickers=TICKERS)), instance, key).success
    ASKED.clear()
    rebased = _defs(tmp_path, CountingSources(tickers=TICKERS, refresh_hours=0, rebase=True))
    for key in bucket_keys(BUCKETS):
        assert _materialise(rebased, instance, key).success
    whole = [t for s in ASKED for t, d in s.items() if d is None]
    assert sorted(whole) == sorted(TICKERS)  # the overlap showed new adj_close: every history again
    expected = SampleMarketClient(TICKERS).fetch()["adj_close"].sum() * 0.97
    assert read_clean(lake, "market", "market_prices")["adj_close"].sum() == pytest.approx(expected)


def test_readers_name_missing_buckets_and_ignore_another_count(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    instance = dg.DagsterInstance.ephemeral()
    defs = _defs(tmp_path, CountingSources(tickers=TICKERS))
    assert _materialise(defs, instance, "00").success
    with pytest.raises(FileNotFoundError, match=r"3 of 4 buckets not materialised yet \(01, 02, 03\)"):
        read_bucketed(lake, "clean/market/market_prices", asset="clean_market_prices")
    # A file left by another bucket count is not read.
    lake.write_parquet("clean/market/market_prices/bucket-00-of-01.parquet", SampleMarketClient(TICKERS).fetch())
    for key in bucket_keys(BUCKETS)[1:]:
        assert _materialise(defs, instance, key).success
    assert read_clean(lake, "market", "market_prices").height == SampleMarketClient(TICKERS).fetch().height


def test_buckets_written_before_a_column_was_added_read_with_it_null(tmp_path):
    """A new schema column (filings' exhibits) reaches the buckets one materialisation at a time: until every
    bucket is rebuilt, the readers see old and new files side by side."""
    from tenali_pipeline.buckets import MANIFEST

    lake = Lake(str(tmp_path / "lake"))
    lake.write_json(f"clean/x/{MANIFEST}", {"count": 2})
    new = pl.DataFrame({"cik": ["1"], "exhibits": ['[{"type": "EX-99.1"}]']})
    lake.write_parquet("clean/x/bucket-00-of-02.parquet", new)
    lake.write_parquet("clean/x/bucket-01-of-02.parquet", pl.DataFrame({"cik": ["2"]}))
    df = read_bucketed(lake, "clean/x", asset="clean_x").sort("cik")
    assert df.to_dicts() == [{"cik": "1", "exhibits": '[{"type": "EX-99.1"}]'}, {"cik": "2", "exhibits": None}]


def test_changing_the_bucket_count_rebuckets_instead_of_refetching(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    one = market.build(buckets=1)
    resources = {"lake": LakeResource(root=str(tmp_path / "lake")), "sources": CountingSources(tickers=TICKERS)}
    assert dg.materialize(one[:2], resources=resources, instance=instance).success
    ASKED.clear()
    for key in bucket_keys(BUCKETS):
        assert _materialise(_defs(tmp_path, CountingSources(tickers=TICKERS)), instance, key).success
    # seeded from the old files: each ticker asked only from its last bar, not its whole history
    assert all(d is not None for s in ASKED for d in s.values()) and ASKED



def test_the_local_profile_partitions_the_instrument_sources_and_schedules_every_bucket():
    from tenali_pipeline.definitions import build_definitions
    from tenali_pipeline.settings import load_settings

    defs = build_definitions(load_settings({"TENALI_PROFILE": "local", "TENALI_TICKERS": "universe"}))
    graph = defs.resolve_asset_graph()
    partitioned = {k.to_user_string(): type(graph.get(k).partitions_def).__name__
                   for k in graph.get_all_asset_keys() if graph.get(k).partitions_def}
    assert partitioned == {
        **{f"{stage}_{name}": "StaticPartitionsDefinition" for stage in ("raw", "clean")
           for name in ("market_prices", "filings", "fundamentals")},
        # the on-chain sources are partitioned by day instead (TENALI_ONCHAIN_DAILY, test_onchain_daily.py)
        **{f"{stage}_{name}": "DailyPartitionsDefinition" for stage in ("raw", "clean")
           for name in ("defi_metrics", "coin_markets")}}
    keys = graph.get(dg.AssetKey("raw_market_prices")).partitions_def.get_partition_keys()
    assert len(keys) == 32  # the count is fixed, however many tickers the universe holds
    assert dg.AssetKey("universe") in graph.get(dg.AssetKey("raw_market_prices")).parent_keys
    schedule = defs.resolve_schedule_def("end_of_day_instruments")
    ctx = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 12, 1, 17, 30),
                                    repository_def=defs.get_repository_def())
    requests = schedule.evaluate_tick(ctx).run_requests
    assert [r.partition_key for r in requests] == keys and len({r.run_key for r in requests}) == 32
    assert defs.resolve_job_def("ingest_instruments").partitions_def is not None
    unpartitioned = defs.resolve_job_def("ingest_sources")
    assert unpartitioned.partitions_def is None


def test_a_whole_history_source_keeps_a_failed_item_s_rows_whatever_its_failure_is_called():
    """SEC companyfacts answers whole histories; its client names a failure "AAPL (CIK ...)", not "AAPL"."""
    import logging
    from types import SimpleNamespace

    from tenali_pipeline.defs.common import update_incrementally

    held = pl.DataFrame({"ticker": ["AAPL", "IBM"], "filed": [dt.date(2024, 1, 1)] * 2, "value": [1.0, 2.0]})
    run = SimpleNamespace(previous=held, log=logging.getLogger("t"), read_state=lambda: {}, bucket=None,
                          sources=SimpleNamespace(refresh_hours=6.0), new_state=None,
                          context=SimpleNamespace(asset_key=dg.AssetKey("raw_fundamentals")))

    def fetch(since):
        fresh = pl.DataFrame({"ticker": ["IBM"], "filed": [dt.date(2024, 4, 1)], "value": [3.0]})
        raise PartialFetchError("SEC XBRL company facts", {"AAPL (CIK 0000320193)": "HTTP 500"}, partial=fresh)

    with pytest.raises(PartialFetchError) as err:
        update_incrementally(run, ["AAPL", "IBM"], key="ticker", time_column="filed", schema=dict(held.schema),
                             fetch=fetch, whole=True)
    table = err.value.partial
    assert table.filter(pl.col("ticker") == "AAPL")["value"].to_list() == [1.0]  # kept
    assert table.filter(pl.col("ticker") == "IBM")["value"].to_list() == [3.0]  # replaced whole
