"""The code location loads the way `dagster dev`, `dg` and the tests load it."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from tenali_pipeline.definitions import build_definitions, defs
from tenali_pipeline.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]

STAGE_ASSETS = {
    "raw_market_prices", "clean_market_prices", "raw_macro_series", "clean_macro_series", "raw_crypto_ohlcv",
    "clean_crypto_ohlcv", "raw_filings", "clean_filings", "raw_news", "clean_news", "raw_documents",
    "clean_documents", "technical_features", "market_documents", "economic_documents", "crypto_documents",
    "technical_documents", "filing_documents", "news_documents", "educational_documents", "corpus", "tokenizer",
    "token_shards", "pretrain_checkpoint", "pretrain_evaluation", "grounded_instructions",
    # universe, fundamentals (SEC XBRL) and on-chain sources with their documents
    "raw_universe_snapshot", "clean_universe_snapshot", "universe", "raw_fundamentals", "clean_fundamentals",
    "raw_defi_metrics", "clean_defi_metrics", "raw_coin_markets", "clean_coin_markets", "earnings_documents",
    "onchain_documents",
    "raw_central_bank", "clean_central_bank", "central_bank_documents",  # central-bank communications
    # Indian exchanges (NSE) and IPO listing performance
    "raw_india_announcements", "clean_india_announcements", "raw_india_bhavcopy", "clean_india_bhavcopy",
    "raw_india_ipos", "clean_india_ipos", "india_announcement_documents", "ipo_documents",
    "raw_us_ipos", "clean_us_ipos", "us_ipo_documents",  # US IPOs from EDGAR prospectuses
    "model_release",  # releases (HF export + model card), served by `tenali serve`
    # post-training stages, each with its evaluation
    "distilled_checkpoint", "sft_checkpoint", "dpo_checkpoint", "distill_evaluation", "sft_evaluation", "dpo_evaluation",
}


def test_definitions_load_and_graph_is_complete():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == STAGE_ASSETS
    # lineage: evaluation depends, through the chain, on every raw source
    upstream = graph.get(dg.AssetKey("pretrain_evaluation"))
    seen, todo = set(), [upstream.key]
    while todo:
        key = todo.pop()
        seen.add(key.to_user_string())
        todo += list(graph.get(key).parent_keys)
    assert {k for k in STAGE_ASSETS if k.startswith("raw_")} <= seen


def test_live_profile_loads_without_secrets(tmp_path):
    live = build_definitions(load_settings({"TENALI_PROFILE": "local", "TENALI_HOME": str(tmp_path)}))
    dg.Definitions.validate_loadable(live)


def test_dagster_cli_validates_the_workspace(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "TENALI_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_variables_that_are_set_reach_resources_as_env_vars(tmp_path, monkeypatch):
    from tenali_pipeline.resources import CorpusResource, LakeResource, build_resources

    monkeypatch.setenv("TENALI_LAKE_ROOT", str(tmp_path / "from-env"))
    monkeypatch.setenv("TENALI_VOCAB_SIZE", "512")
    resources = build_resources(load_settings())
    assert isinstance(resources["lake"].root, dg.EnvVar)  # the UI shows where it comes from
    assert type(resources["corpus_settings"].vocab_size).__name__ == "IntEnvVar"
    assert not isinstance(resources["training"].model, dg.EnvVar)  # unset: the profile's default

    seen = {}

    @dg.asset
    def probe(lake: LakeResource, corpus_settings: CorpusResource) -> None:
        seen["root"], seen["vocab"] = lake.root, corpus_settings.vocab_size

    assert dg.materialize([probe], resources=resources).success
    assert seen == {"root": str(tmp_path / "from-env"), "vocab": 512}


def test_local_profile_runs_live_clients_and_names_missing_keys(tmp_path):
    """The local profile wires the live clients: a folder of documents is ingested, and a live
    source without its key fails that asset alone with a message naming the variable."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "note.md").write_text("# Duration\n\nDuration measures how sensitive a bond's price is to rates.\n")
    settings = load_settings({"TENALI_PROFILE": "local", "TENALI_HOME": str(tmp_path),
                              "TENALI_DOCUMENTS_ROOT": str(docs)})
    live = build_definitions(settings)
    job = live.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(asset_selection=[dg.AssetKey("raw_documents"), dg.AssetKey("clean_documents")],
                                    instance=dg.DagsterInstance.ephemeral())
    assert result.success
    from tenali_pipeline.lake import Lake

    df = Lake(settings.lake_root).read_parquet("clean/documents/documents.parquet")
    assert df["title"].to_list() == ["Duration"] and not df["source"][0].startswith("sample:")

    failed = job.execute_in_process(asset_selection=[dg.AssetKey("raw_macro_series")],
                                    instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert not failed.success
    errors = [e.step_failure_data.error for e in failed.all_events if e.is_step_failure]
    assert "FRED_API_KEY" in str(errors[0].to_string())


def test_schedule_and_automation_keep_ingestion_current(tmp_path):
    """The end-of-day schedule collects the sources; the automation sensor's conditions then ask for
    the clean table whose raw input changed, and nothing downstream of the tokenizer."""
    demo = build_definitions(load_settings({"TENALI_HOME": str(tmp_path)}))
    local = build_definitions(load_settings({"TENALI_PROFILE": "local", "TENALI_HOME": str(tmp_path)}))
    schedule = local.resolve_schedule_def("end_of_day_ingestion")
    assert schedule.cron_schedule == "30 17 * * 1-5" and schedule.execution_timezone == "America/New_York"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert demo.resolve_schedule_def("end_of_day_ingestion").default_status == dg.DefaultScheduleStatus.STOPPED
    assert local.resolve_sensor_def("follow_inputs").default_status == dg.DefaultSensorStatus.RUNNING

    instance = dg.DagsterInstance.ephemeral()
    first = dg.evaluate_automation_conditions(defs=demo, instance=instance)
    job = demo.resolve_job_def("ingest_sources")
    assert job.execute_in_process(asset_selection=[dg.AssetKey("raw_market_prices")], instance=instance).success
    after = dg.evaluate_automation_conditions(defs=demo, instance=instance, cursor=first.cursor)
    assert after.get_num_requested(dg.AssetKey("clean_market_prices")) == 1
    assert after.get_num_requested(dg.AssetKey("clean_macro_series")) == 0  # its raw input did not change
    for key in ("tokenizer", "token_shards", "pretrain_checkpoint", "pretrain_evaluation"):
        assert after.get_num_requested(dg.AssetKey(key)) == 0


def test_ingest_job_collects_every_raw_source():
    job = defs.resolve_job_def("ingest_sources")
    raw = {k for k in STAGE_ASSETS if k.startswith("raw_")}
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == raw


def test_tickers_from_the_universe_drive_market_and_filings(tmp_path, monkeypatch):
    """TENALI_TICKERS=universe: raw_market_prices and raw_filings depend on `universe` and take its
    listed equities and ETFs / its SEC filers; the explicit list stays the default."""
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import SourcesResource

    assert not load_settings({}).tickers_from_universe
    env = {"TENALI_HOME": str(tmp_path), "TENALI_TICKERS": "universe", "TENALI_UNIVERSE_MICS": "XNYS,XNSE"}
    settings = load_settings(env)
    assert settings.tickers_from_universe
    uni = build_definitions(settings)
    graph = uni.resolve_asset_graph()
    for key in ("raw_market_prices", "raw_filings"):
        assert dg.AssetKey("universe") in graph.get(dg.AssetKey(key)).parent_keys
        assert dg.AssetKey("universe") not in defs.resolve_asset_graph().get(dg.AssetKey(key)).parent_keys
    job = uni.resolve_implicit_global_asset_job_def()
    # before the universe exists the error says what to materialise
    early = job.execute_in_process(asset_selection=[dg.AssetKey("raw_market_prices")],
                                   instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert "materialise raw_universe_snapshot" in [e for e in early.all_events if e.is_step_failure][0] \
        .step_failure_data.error.to_string()
    keys = ["raw_universe_snapshot", "clean_universe_snapshot", "universe", "raw_market_prices", "raw_filings"]
    assert job.execute_in_process(asset_selection=[dg.AssetKey(k) for k in keys],
                                  instance=dg.DagsterInstance.ephemeral()).success
    lake = Lake(settings.lake_root)
    # the sample universe on XNYS and XNSE: IBM (the sample market has no prices for RELIANCE.NS, TCS.NS)
    assert set(lake.read_parquet("raw/market/market_prices/bucket-00-of-01.parquet")["ticker"]) == {"IBM"}
    filings = lake.read_parquet("raw/filings/filings/bucket-00-of-01.parquet")
    assert set(filings["ticker"]) == {"IBM"} and filings.height > 0

    # live: the market client gets the universe's tickers, EDGAR is asked by CIK
    monkeypatch.setenv("SEC_EDGAR_IDENTITY", "Tenali Research data@tenali.example")
    live = SourcesResource(mode="live", tickers_from_universe=True)
    assert live.market(["IBM", "SPY"]).tickers == ["IBM", "SPY"]
    assert live.filings(tmp_path, {"IBM": "0000051143", "YHOO": "0001011006"}).companies == ["0000051143", "0001011006"]
    assert live.market().tickers == ["AAPL", "MSFT", "IBM", "GOOG", "FB"]  # no list given: the configured one
