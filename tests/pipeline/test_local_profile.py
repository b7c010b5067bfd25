"""Issue 3's "Done when", tried as a new user would: the `local` profile, every live client on its real
library, the network replaced by replays on 127.0.0.1 (replay_all.py).

- one materialisation (the `ingest_sources` job, each bucket of `ingest_instruments`, the replayed days
  of `ingest_onchain` as one backfill run, then every clean asset and `universe`) fills every source,
  its raw responses kept beside the Parquet;
- a second one asks the replays for nothing new (only the cheap requests listed in `ALLOWED`) and
  changes no table (the daily on-chain sources are not run again: their next run is the next day's);
- a ticker that keeps failing, with the refresh interval forced to 0, fails only its bucket's
  partition of `raw_market_prices`, named in the message; the other bucket lands and no row is lost;
- the schedules and sensors are in the definitions, running by default.

The phases build on each other (module-scoped fixtures, in file order); each is checked by its own
test, so that one failing check does not hide the others. No training is run. About 40 s on 2 cores;
`unshare -rn sh -c 'ip link set lo up && .venv/bin/pytest tests/pipeline/test_local_profile.py'` runs it
with no network at all.
"""

from __future__ import annotations

import datetime as dt
import gzip
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import polars as pl
import pytest

from replay_all import FRED_KEY, SEC_IDENTITY, Replays
from tenali_pipeline.buckets import Bucket, bucket_keys, bucket_of
from tenali_pipeline.defs.common import read_clean
from tenali_pipeline.defs.universe import assets as universe_assets
from tenali_pipeline.definitions import build_definitions
from tenali_pipeline.lake import Lake
from tenali_pipeline.settings import load_settings
from tenali_pipeline.sources.archive import read_archive

pytest.importorskip("yfinance")
pytest.importorskip("sec_edgar_downloader")

BUCKETS = 2
# The days the DefiLlama and CoinGecko replays serve: one backfill run of ingest_onchain
ONCHAIN_DAYS = {"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-03"}
# (source, name) of every source's clean table: read through `read_clean` as downstream assets do
CLEAN_TABLES = [("market", "market_prices"), ("macro", "macro_series"), ("crypto", "crypto_ohlcv"),
                ("filings", "filings"), ("news", "news"), ("documents", "documents"),
                ("universe", "universe_snapshot"), ("fundamentals", "fundamentals"), ("defillama", "defi_metrics"),
                ("coingecko", "coin_markets"), ("centralbank", "central_bank"),
                ("india_announcements", "india_announcements"), ("india_bhavcopy", "india_bhavcopy"),
                ("india_ipos", "india_ipos"), ("us_ipos", "us_ipos")]
# Sources whose responses are kept under raw/<source>/responses/. Not documents (files are their own
# record) nor fundamentals (each companyfacts document is kept whole under raw/fundamentals/companyfacts/).
ARCHIVED = [s for s, _ in CLEAN_TABLES if s not in ("documents", "fundamentals")]
# What a second run may still ask, because the source needs it to know that nothing is new.
ALLOWED = {
    "news": lambda path, status: status == 304,  # each feed asked conditionally (its ETag)
    "fred": lambda path, status: urlsplit(path).path == "/fred/series",  # series info: FRED's last_updated
    # a new client reads each host's robots.txt once; the feeds are asked conditionally
    "fed": lambda path, status: path == "/robots.txt" or status == 304,
    "ecb": lambda path, status: path == "/robots.txt" or status == 304,
    "rbi": lambda path, status: path == "/robots.txt" or status == 304,
}
# Every upstream replayed (replay_all.Replays.log)
UPSTREAMS = ["yahoo", "fred", "binance", "sec", "news", "fed", "ecb", "rbi", "financedatabase", "defillama",
             "coingecko", "nse", "bse", "edgar_index"]
FAILING, HEALTHY = "MSFT", "AAPL"
CHART = "https://query2.finance.yahoo.com/v8/finance/chart/"


def step_failures(result) -> dict[str, str]:
    return {e.step_key: e.event_specific_data.error.message for e in result.all_events if e.is_step_failure}


def same_rows(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """The same columns and the same rows, in any order (a rewrite may sort differently)."""
    if a.schema != b.schema or a.height != b.height:
        return False
    keys = [c for c, t in a.schema.items() if not t.is_nested()]
    return a.sort(keys, nulls_last=True).equals(b.sort(keys, nulls_last=True))


@dataclass
class World:
    replays: Replays
    settings: object
    defs: dg.Definitions
    instance: dg.DagsterInstance
    lake: Lake

    def source_keys(self, defs: dg.Definitions | None = None) -> tuple[list[dg.AssetKey], set[dg.AssetKey]]:
        """Every raw_*, clean_* and `universe` asset, and those of them partitioned into buckets."""
        graph = (defs or self.defs).resolve_asset_graph()
        keys = sorted((k for k in graph.get_all_asset_keys()
                       if k.path[-1].startswith(("raw_", "clean_")) or k.path[-1] == "universe"), key=str)
        return keys, {k for k in keys if isinstance(graph.get(k).partitions_def, dg.StaticPartitionsDefinition)}

    def materialise_sources(self, onchain: bool) -> dict[str, dg.ExecuteInProcessResult]:
        """What a user (or the schedules and the automation sensor) runs: `ingest_sources`, the clean
        assets and `universe`, then each bucket of `ingest_instruments` and its clean assets; `onchain`:
        the replayed days of `ingest_onchain` (raw and clean) as one backfill run."""
        keys, partitioned = self.source_keys()
        everything = self.defs.resolve_implicit_global_asset_job_def()
        run = dict(instance=self.instance, raise_on_error=False)
        results = {"ingest_sources": self.defs.resolve_job_def("ingest_sources").execute_in_process(**run)}
        if onchain:
            results["ingest_onchain"] = self.defs.resolve_job_def("ingest_onchain").execute_in_process(
                tags=ONCHAIN_DAYS, **run)
        daily = {dg.AssetKey(n) for n in ("clean_defi_metrics", "clean_coin_markets")}
        results["clean"] = everything.execute_in_process(
            asset_selection=[k for k in keys if k not in partitioned | daily and not k.path[-1].startswith("raw_")],
            **run)
        for key in bucket_keys(BUCKETS):
            results[f"ingest_instruments {key}"] = self.defs.resolve_job_def("ingest_instruments").execute_in_process(
                partition_key=key, **run)
            results[f"clean {key}"] = everything.execute_in_process(
                asset_selection=[k for k in partitioned if k.path[-1].startswith("clean_")], partition_key=key, **run)
        return results

    def tables(self) -> dict[str, pl.DataFrame]:
        """Every Parquet table under raw/, clean/ and universe/ (not the response archives)."""
        keys = [k for prefix in ("raw", "clean", "universe") for k in self.lake.list(prefix)
                if k.endswith(".parquet") and "/responses/" not in k]
        return {k: self.lake.read_parquet(k) for k in keys}

    def raw_market(self) -> pl.DataFrame:
        return pl.concat([self.lake.read_parquet(Bucket(i, BUCKETS).file("raw/market/market_prices"))
                          for i in range(BUCKETS)])


@dataclass
class Phase:
    results: dict[str, dg.ExecuteInProcessResult]
    asked: dict[str, list]  # requests answered during the phase, by upstream
    tables: dict[str, pl.DataFrame]


def _asked_since(before: dict, after: dict) -> dict:
    return {name: after[name][len(before.get(name, [])):] for name in after}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local_profile")
    with pytest.MonkeyPatch.context() as mp:
        # `universe` dates each snapshot it folds in (last_seen) today: the second phase, run past midnight,
        # would change that table. The replays pin every other date (their windows; refresh is in hours).
        day, merge = dt.date.today(), universe_assets.merge_snapshot
        mp.setattr(universe_assets, "merge_snapshot", lambda previous, snapshot, as_of: merge(previous, snapshot, day))
        replays = Replays(tmp, mp)
        try:
            settings = load_settings(replays.env(tmp / "home"))
            defs = build_definitions(settings, sources=replays.sources(settings))
            yield World(replays, settings, defs, dg.DagsterInstance.ephemeral(), Lake(settings.lake_root))
        finally:
            replays.close()


@pytest.fixture(scope="module")
def first(world) -> Phase:
    results = world.materialise_sources(onchain=True)
    return Phase(results, world.replays.log(), world.tables())


@pytest.fixture(scope="module")
def second(world, first) -> Phase:
    before = world.replays.log()
    results = world.materialise_sources(onchain=False)
    return Phase(results, _asked_since(before, world.replays.log()), world.tables())


@pytest.fixture(scope="module")
def fault(world, second) -> Phase:
    """MSFT's chart answers 502 forever; every ticker is due (refresh_hours=0); each bucket is run."""
    world.replays.yahoo.routes[CHART + FAILING] = [(502, b"<html><body>Bad Gateway</body></html>")]
    forced = build_definitions(world.settings, sources=world.replays.sources(world.settings, refresh_hours=0.0))
    job = forced.resolve_job_def("ingest_instruments")
    before = world.replays.log()
    results = {key: job.execute_in_process(partition_key=key, instance=world.instance, raise_on_error=False)
               for key in bucket_keys(BUCKETS)}
    return Phase(results, _asked_since(before, world.replays.log()), world.tables())


def test_the_local_profile_takes_live_clients_and_bucketed_instruments(world):
    assert world.settings.profile == "local" and world.settings.sources == "live"
    assert world.settings.instrument_buckets == BUCKETS
    assert Path(world.settings.lake_root).is_relative_to(world.replays.tmp)
    assert world.defs.resources["sources"].mode == "live"
    assert {bucket_of(FAILING, BUCKETS), bucket_of(HEALTHY, BUCKETS)} == {0, 1}  # one ticker in each bucket


def test_one_materialisation_fills_every_source(world, first):
    assert {stage: step_failures(r) for stage, r in first.results.items() if not r.success} == {}
    failed_checks = [f"{c.asset_key.to_user_string()}:{c.check_name}" for r in first.results.values()
                     for c in r.get_asset_check_evaluations() if not c.passed]
    assert failed_checks == []
    # every source of the graph is covered here (a new source needs its replay in replay_all.py)
    keys, _ = world.source_keys()
    assert {k.path[-1] for k in keys if k.path[-1].startswith("clean_")} == {f"clean_{n}" for _, n in CLEAN_TABLES}
    tables = {name: read_clean(world.lake, source, name) for source, name in CLEAN_TABLES}
    assert [name for name, df in tables.items() if df.is_empty()] == []
    sample = [name for name, df in tables.items()
              if "source" in df.columns and df["source"].str.starts_with("sample:").any()]
    assert sample == []  # live clients only
    assert set(tables["market_prices"]["ticker"]) == {FAILING, HEALTHY}
    assert set(tables["filings"]["ticker"]) == {FAILING, HEALTHY}
    assert set(tables["fundamentals"]["ticker"]) == {FAILING, HEALTHY}
    assert world.lake.read_parquet("universe/universe.parquet").height > 0
    assert [name for name, log in first.asked.items() if not log] == []  # every replay was asked


def test_raw_responses_are_kept_beside_the_parquet_without_secrets(world, first):
    kept = {}
    for source in ARCHIVED:
        files = [k for k in world.lake.list(f"raw/{source}/responses") if k.endswith(".jsonl.gz")]
        kept[source] = sum(len(read_archive(world.lake.read_bytes(k))) for k in files)
        for key in files:
            text = gzip.decompress(world.lake.read_bytes(key))
            assert FRED_KEY.encode() not in text and SEC_IDENTITY.encode() not in text, key
    assert [source for source, n in kept.items() if n == 0] == []
    for cik in ("0000320193", "0000789019"):  # AAPL, MSFT
        assert world.lake.exists(f"raw/fundamentals/companyfacts/CIK{cik}.json"), cik


def test_a_second_materialisation_succeeds_with_only_the_cheap_requests_allowed(second):
    assert {stage: step_failures(r) for stage, r in second.results.items() if not r.success} == {}
    assert sorted(second.asked) == sorted(UPSTREAMS)
    assert [s for _, s in second.asked["news"]] == [304, 304]  # both feeds unchanged
    assert sorted(p.split("&")[0] for p, _ in second.asked["fred"]) == [
        "/fred/series?series_id=FEDFUNDS", "/fred/series?series_id=GDP"]  # no observations asked again


# The daily on-chain sources are not run again in the second phase (their next run is the next day's,
# which asks for that day), so "nothing new" would hold for them without testing anything.
@pytest.mark.parametrize("upstream", [u for u in UPSTREAMS if u not in ("defillama", "coingecko")])
def test_a_second_materialisation_asks_the_source_for_nothing_new(second, upstream):
    allowed = ALLOWED.get(upstream, lambda path, status: False)
    unexpected = [(path, status) for path, status in second.asked[upstream] if not allowed(path, status)]
    assert unexpected == [], f"{upstream} was asked again within the refresh interval:\n" + "\n".join(
        f"  {path} -> {status}" for path, status in unexpected)


def test_a_second_materialisation_changes_no_table(first, second):
    assert sorted(second.tables) == sorted(first.tables)
    assert [key for key, df in second.tables.items() if not same_rows(df, first.tables[key])] == []


def test_a_failing_ticker_fails_only_its_bucket_and_loses_no_rows(world, second, fault):
    failing = Bucket(bucket_of(FAILING, BUCKETS), BUCKETS).key
    healthy = Bucket(bucket_of(HEALTHY, BUCKETS), BUCKETS).key
    assert fault.results[healthy].success, step_failures(fault.results[healthy])
    assert not fault.results[failing].success
    failures = step_failures(fault.results[failing])
    assert list(failures) == ["raw_market_prices"]  # filings and fundamentals of that bucket landed
    message = failures["raw_market_prices"]
    # names the ticker, the source and that retrying did not help; the bucket; not the ticker that landed
    assert f"{FAILING}: RetriesExhausted: Yahoo chart for {FAILING} still failing" in message, message
    assert f"bucket {failing}" in message and f"{HEALTHY}:" not in message, message
    # the refresh was forced: both tickers were asked again (MSFT through every retry)
    charts = [url for url, _ in fault.asked["yahoo"] if url.startswith(CHART)]
    assert any(f"/{HEALTHY}?" in u for u in charts) and sum(f"/{FAILING}?" in u for u in charts) >= 2
    # no row lost: MSFT keeps what it had, AAPL's history is as before (re-fetched rows replace equal ones)
    before = pl.concat([second.tables[Bucket(i, BUCKETS).file("raw/market/market_prices")] for i in range(BUCKETS)])
    after = world.raw_market()
    for ticker in (FAILING, HEALTHY):
        assert same_rows(after.filter(pl.col("ticker") == ticker), before.filter(pl.col("ticker") == ticker)), ticker


def test_schedules_and_sensors_are_listed_and_run_by_themselves(world):
    defs = world.defs
    dg.Definitions.validate_loadable(defs)
    assert {s.name: s.default_status for s in defs.schedules} == {
        "end_of_day_ingestion": dg.DefaultScheduleStatus.RUNNING,
        "end_of_day_instruments": dg.DefaultScheduleStatus.RUNNING, "daily_onchain": dg.DefaultScheduleStatus.RUNNING}
    assert {s.name: s.default_status for s in defs.sensors} == {
        "new_edgar_filings": dg.DefaultSensorStatus.RUNNING, "new_feed_entries": dg.DefaultSensorStatus.RUNNING,
        "follow_inputs": dg.DefaultSensorStatus.RUNNING}
    # the schedules cover every source: one run of the plain ones, one run per bucket of the instruments,
    # one run a day of the on-chain ones
    keys, partitioned = world.source_keys()
    onchain = {dg.AssetKey("raw_defi_metrics"), dg.AssetKey("raw_coin_markets")}
    plain_raw = {k for k in keys if k.path[-1].startswith("raw_") and k not in partitioned | onchain}
    assert set(defs.resolve_job_def("ingest_sources").asset_layer.selected_asset_keys) == plain_raw
    assert set(defs.resolve_job_def("ingest_instruments").asset_layer.selected_asset_keys) == {
        k for k in partitioned if k.path[-1].startswith("raw_")}
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 12, 1, 17, 30),
                                        repository_def=defs.get_repository_def())
    requests = defs.resolve_schedule_def("end_of_day_instruments").evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == bucket_keys(BUCKETS)
    assert {k for k in defs.resolve_job_def("ingest_onchain").asset_layer.selected_asset_keys
            if k.path[-1].startswith("raw_")} == onchain
