"""The code location: every stage's assets and checks, resources from the profile, the demo job.

``dagster dev -w workspace.yaml``, ``dg`` and the tests all load ``defs`` from here.
"""

from __future__ import annotations

import dagster as dg

from .defs.centralbank import assets as centralbank
from .defs.corpus import assets as corpus
from .defs.crypto import assets as crypto
from .defs.documents import assets as documents
from .defs.evaluation import assets as evaluation
from .defs.features import assets as features
from .defs.filings import assets as filings
from .defs.fundamentals import assets as fundamentals
from .defs.india import assets as india
from .defs.us_ipos import assets as us_ipos
from .defs.macro import assets as macro
from .defs.market import assets as market
from .defs.news import assets as news
from .defs.onchain import assets as onchain
from .defs.posttraining import assets as posttraining
from .defs.posttraining import stages as posttraining_stages
from .defs.shards import assets as shards
from .defs.tokenizer import assets as tokenizer
from .defs.training import assets as training
from .defs.release import assets as release
from .defs.universe import assets as universe
from .defs.schedules import build_schedules_and_sensors
from .resources import build_resources
from .settings import Settings, load_settings

STAGES = [market, macro, crypto, filings, news, documents, universe, fundamentals, onchain, centralbank, india, us_ipos, features, corpus, tokenizer, shards, training, evaluation, posttraining, posttraining_stages, release]


def everything_job(daily: bool = False) -> dg.UnresolvedAssetJobDefinition:
    """The whole graph, sources to evaluation: what `tenali demo` runs. With TENALI_ONCHAIN_DAILY the
    daily on-chain assets are left to `ingest_onchain` (Dagster refuses a job whose assets carry two
    partitions definitions, and the instrument buckets are one)."""
    selection = dg.AssetSelection.all()
    if daily:
        selection = selection - dg.AssetSelection.assets(*onchain.ASSETS)
    return dg.define_asset_job(
        "everything", selection=selection,
        description="Materialise the whole graph: sources, corpus, tokenizer, shards, pretraining, evaluation."
                    + (" The daily on-chain sources are in ingest_onchain." if daily else ""))


def build_definitions(settings: Settings | None = None, **resource_overrides) -> dg.Definitions:
    """Definitions for `settings` (default: from the environment); tests override resources."""
    settings = settings or load_settings()
    # Modules are scanned for assets and checks, including the lists built by the source factory;
    # an object imported into several modules is loaded once.
    assets = dg.load_assets_from_modules(STAGES)
    checks = dg.load_asset_checks_from_modules(STAGES)
    if settings.tickers_from_universe or settings.instrument_buckets > 1:
        # TENALI_TICKERS=universe: market and filings read the universe; TENALI_INSTRUMENT_BUCKETS > 1:
        # the per-instrument sources are partitioned into buckets
        assets, checks = market.rebuild_instrument_sources(assets, checks, buckets=settings.instrument_buckets,
                                                           universe=settings.tickers_from_universe)
    if settings.onchain_daily:  # TENALI_ONCHAIN_DAILY: DefiLlama and CoinGecko partitioned by day
        assets, checks = onchain.rebuild_daily(assets, checks, start=settings.start_date)
    schedules, sensors, jobs = build_schedules_and_sensors(settings.profile, settings.instrument_buckets,
                                                           universe=settings.tickers_from_universe,
                                                           daily=settings.onchain_daily)
    return dg.Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[everything_job(settings.onchain_daily), *jobs],
        schedules=schedules,
        sensors=sensors,
        resources={**build_resources(settings), **resource_overrides},
    )


defs = build_definitions()
