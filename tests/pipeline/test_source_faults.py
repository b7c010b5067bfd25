"""The raw -> clean factory's fault handling: a source turned off, and one failing item failing alone."""

import dagster as dg
import polars as pl

from tenali_pipeline.defs.crypto import assets as crypto
from tenali_pipeline.defs.market import assets as market
from tenali_pipeline.lake import Lake
from tenali_pipeline.resources import LakeResource, SourcesResource
from tenali_pipeline.sources.http import PartialFetchError
from tenali_pipeline.sources.sample import SampleMarketClient


def _run(module, tmp_path, sources):
    defs = dg.Definitions(assets=module.defs[:2], asset_checks=module.defs[2:],
                          resources={"lake": LakeResource(root=str(tmp_path / "lake")), "sources": sources})
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(raise_on_error=False)


def test_a_source_turned_off_writes_an_empty_table_and_passes_its_checks(tmp_path):
    result = _run(crypto, tmp_path, SourcesResource(sources_off=["crypto"]))
    assert result.success
    clean = Lake(str(tmp_path / "lake")).read_parquet("clean/crypto/crypto_ohlcv.parquet")
    assert clean.is_empty()
    raw_meta = result.asset_materializations_for_node("raw_crypto_ohlcv")[0].metadata
    assert raw_meta["disabled"].value is True
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)


class _OneTickerFails:
    def fetch(self, since=None):
        df = SampleMarketClient().fetch()
        raise PartialFetchError("market prices", {"ZZZZ": "HTTP 404 Not Found: delisted?"},
                                partial=df.filter(pl.col("ticker") == "AAPL"))


class _FlakySources(SourcesResource):
    def market(self, tickers=None, archive=None):
        return _OneTickerFails()


def test_one_failing_ticker_fails_the_step_naming_it_and_keeps_the_others(tmp_path):
    result = _run(market, tmp_path, _FlakySources())
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "ZZZZ" in failure.event_specific_data.error.message and "delisted" in failure.event_specific_data.error.message
    raw = Lake(str(tmp_path / "lake")).read_parquet("raw/market/market_prices/bucket-00-of-01.parquet")
    assert set(raw["ticker"]) == {"AAPL"}  # what succeeded is kept; the clean step did not run
    assert not Lake(str(tmp_path / "lake")).exists("clean/market/market_prices/bucket-00-of-01.parquet")


def test_a_healthy_source_still_needs_rows(tmp_path):
    class Empty(SourcesResource):
        def market(self, tickers=None, archive=None):
            class C:
                def fetch(self, since=None):
                    return SampleMarketClient().fetch().head(0)
            return C()
    result = _run(market, tmp_path, Empty())
    assert not result.success  # the blocking schema check fails an empty table of a source that is on
