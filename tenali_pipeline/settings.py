"""Profiles and settings, read from environment variables in one place.

``TENALI_PROFILE`` picks a profile; every other variable overrides one setting of it. The table in
the README ("Profiles and environment variables") lists them all; keep it in step with `VARIABLES`.

- ``demo`` (default): sample sources shipped with installed packages or generated
  deterministically, a lake in ``$TENALI_HOME/lake``, a sqlite Dagster instance in
  ``$TENALI_HOME/dagster``, a tiny model trained on the CPU by a local ``torchrun``.
- ``local``: live sources, a local lake, the local launcher.
- ``prod``: live sources, an ``s3://`` lake, a Postgres Dagster instance (``infra/dagster.prod.yaml``),
  a cluster launcher.

Secrets (API keys, database passwords) are never read here: resources take them through
``dg.EnvVar`` so they are resolved at launch and never written into run config or metadata.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

PROFILES = ("demo", "local", "prod")

# name -> (meaning, default) ; defaults that depend on the profile say so.
VARIABLES: dict[str, tuple[str, str]] = {
    "TENALI_PROFILE": ("demo | local | prod", "demo"),
    "TENALI_HOME": ("folder for the demo lake and Dagster instance", "./var"),
    "TENALI_LAKE_ROOT": ("lake root: a folder or s3://bucket/prefix (required for prod)", "$TENALI_HOME/lake"),
    "TENALI_S3_ENDPOINT_URL": ("S3-compatible endpoint (MinIO, moto); empty for AWS", ""),
    "TENALI_SOURCES": ("sample | live", "sample for demo, live otherwise"),
    "TENALI_TICKERS": ("comma-separated equity tickers for the market and filings sources, or 'universe' to take "
                       "them from the universe asset", "AAPL,MSFT,IBM,GOOG,FB"),
    "TENALI_FRED_SERIES": ("comma-separated FRED series ids", "GDPC1,CPIAUCSL,UNRATE,FEDFUNDS,DGS10,M1SL"),
    "TENALI_CRYPTO_EXCHANGE": ("ccxt exchange id", "kraken"),
    "TENALI_CRYPTO_SYMBOLS": ("comma-separated ccxt symbols", "BTC/USD,ETH/USD"),
    "TENALI_NEWS_FEEDS": ("comma-separated RSS/Atom feed URLs", "SEC press releases, Federal Reserve press releases"),
    "TENALI_NEWS_ARTICLES": ("comma-separated feed hosts (or 'all') whose entries with a short summary get their "
                             "linked article fetched politely (robots.txt honoured; check each publisher's terms, "
                             "docs/sources.md)", "empty: off"),
    "TENALI_DOCUMENTS_ROOT": ("folder or s3:// prefix of .txt/.md/.html documents", "$TENALI_HOME/documents"),
    "TENALI_START_DATE": ("first date to collect (live sources)", "2015-01-01"),
    "TENALI_VAL_START": ("first date of the validation window (temporal split)", "latest 10% of dates"),
    "TENALI_NEAR_DUP": ("near-duplicate threshold (MinHash Jaccard), 0 turns it off", "0.8"),
    "TENALI_MIX": ("1 mixes the training split to the seed's domain weights, 0 keeps it as is", "1"),
    "TENALI_VOCAB_SIZE": ("tokenizer vocabulary size", "4096 for demo, 50000 otherwise"),
    "TENALI_SHARD_TOKENS": ("tokens per shard", "1048576 for demo, 100000000 otherwise"),
    "TENALI_MODEL": ("model preset (tenali_model.config.MODEL_PRESETS)", "demo for demo, 51m otherwise"),
    "TENALI_TRAIN_STEPS": ("optimizer steps of pretraining", "300 for demo, 20000 otherwise"),
    "TENALI_TRAIN_NPROC": ("torchrun processes per node (0 = one per GPU, else 1 on CPU)", "0"),
    "TENALI_LAUNCHER": ("local | k8s | ecs: where training runs", "local for demo and local, k8s for prod"),
    "TENALI_TRAIN_FROM": ("latest: continue from the latest checkpoint when new shards landed | scratch", "latest"),
    "TENALI_TRAINING_RETRY_DELAY": ("seconds before a failed training step's one retry (a crash or a lost node, not the "
                                    "trainer's refusal of its config)", "60"),
    "TENALI_TRAIN_CONFIG": ("JSON object of pretraining settings replacing the model's recipe (tenali_model/recipes.py), "
                            "e.g. {\"lr\": 2e-4, \"compile\": false}", "{}: the recipe"),
    "TENALI_BASE_MODEL": ("Hugging Face Llama-family model folder or s3:// prefix to continue pretraining "
                          "(its own tokenizer replaces the trained one)", "none: train from scratch"),
    "TENALI_TRAINER_IMAGE": ("trainer image for k8s and ecs (infra/docker/trainer.Dockerfile)", ""),
    "TENALI_GPUS_PER_NODE": ("GPUs per training node (k8s, ecs)", "8"),
    "TENALI_NODES": ("training nodes (k8s; more than 1 launches an indexed Job)", "1"),
    "TENALI_SHARED_MOUNT": ("shared volume mount path, the same in the run worker and trainers (k8s, ecs)", ""),
    "TENALI_PIPES_BUCKET": ("S3 bucket for Dagster Pipes context and messages (k8s, ecs)", "the lake's bucket"),
    "TENALI_PIPES_PREFIX": ("key prefix for Pipes objects in that bucket", "pipes"),
    "TENALI_K8S_NAMESPACE": ("namespace of the trainer pods", "default"),
    "TENALI_K8S_NODE_SELECTOR": ("node selector of the trainer pods, a JSON object", "{}"),
    "TENALI_K8S_TOLERATIONS": ("tolerations of the trainer pods, a JSON list", "[]"),
    "TENALI_K8S_SHARED_PVC": ("ReadWriteMany PersistentVolumeClaim mounted at TENALI_SHARED_MOUNT", ""),
    "TENALI_K8S_SERVICE_ACCOUNT": ("service account of the trainer pods (IAM role for S3)", ""),
    "TENALI_K8S_ENV_SECRET": ("Secret whose keys become the trainers' environment", ""),
    "TENALI_K8S_CPU": ("CPU request per trainer pod", ""),
    "TENALI_K8S_MEMORY": ("memory request and limit per trainer pod", ""),
    "TENALI_K8S_SHM_SIZE": ("size of the memory-backed /dev/shm", "64Gi"),
    "TENALI_K8S_SCHEDULE_TIMEOUT": ("seconds a multi-node trainer pod may stay unschedulable before the step fails "
                                    "with the scheduler's reason; 0 waits", "1800"),
    "TENALI_ECS_CLUSTER": ("ECS cluster with GPU EC2 instances (ecs)", ""),
    "TENALI_ECS_CAPACITY_PROVIDER": ("capacity provider of the GPU instances", "launch type EC2"),
    "TENALI_ECS_SUBNETS": ("comma-separated subnets (awsvpc networking)", "bridge networking"),
    "TENALI_ECS_SECURITY_GROUPS": ("comma-separated security groups (awsvpc networking)", ""),
    "TENALI_ECS_EXECUTION_ROLE": ("task execution role ARN (image pull, logs)", ""),
    "TENALI_ECS_TASK_ROLE": ("task role ARN (S3 for Pipes)", ""),
    "TENALI_ECS_LOG_GROUP": ("CloudWatch log group of the trainer", "/tenali/trainer"),
    "TENALI_ECS_EFS_ID": ("EFS file system mounted at TENALI_SHARED_MOUNT", ""),
    "TENALI_MLFLOW_TRACKING_URI": ("MLflow tracking URI: every training stage is logged as a run (tracking.py)", "off"),
    "TENALI_MLFLOW_EXPERIMENT": ("MLflow experiment of those runs", "tenali"),
    "TENALI_WANDB_PROJECT": ("Weights & Biases project: every training stage is also a W&B run (tracking.py); "
                             "the key only from WANDB_API_KEY", "off"),
    "TENALI_WANDB_ENTITY": ("W&B entity (team or user) of those runs", "the API key's default"),
    "TENALI_WANDB_MODE": ("online | offline (runs written under TENALI_WANDB_DIR for a later `wandb sync`)", "online"),
    "TENALI_WANDB_DIR": ("folder for W&B run files", "the working directory"),
    "TENALI_UNIVERSE_CLASSES": ("financedatabase classes in the universe: equities, etfs, currencies, cryptos",
                                "equities,etfs,currencies,cryptos"),
    "TENALI_UNIVERSE_MICS": ("ISO 10383 venues whose equities and ETFs are in the universe (empty: every venue)",
                             "XNYS,XNAS,XASE,ARCX,BATS,XNSE,XBOM"),
    "TENALI_UNIVERSE_COUNTRIES": ("countries of domicile of the universe's equities (empty: any)", ""),
    "TENALI_UNIVERSE_QUOTE_CURRENCIES": ("quote currencies of the universe's currency and crypto pairs", "USD,INR"),
    "TENALI_FINANCEDATABASE_URL": ("base URL of the financedatabase files (a mirror)",
                                   "https://raw.githubusercontent.com/JerBouma/FinanceDatabase/main/compression/"),
    "TENALI_SOURCES_OFF": ("sources to skip (a site refusing access), e.g. fundamentals,defillama,coingecko", ""),
    "TENALI_DEFILLAMA_CHAINS": ("DefiLlama chains: TVL, fees, DEX volume, stablecoin supply", "Ethereum,Solana"),
    "TENALI_DEFILLAMA_PROTOCOLS": ("DefiLlama protocol slugs: TVL, fees, revenue", "aave,uniswap,lido"),
    "TENALI_COINGECKO_COINS": ("CoinGecko coin ids: price, market cap, supply", "bitcoin,ethereum"),
    "TENALI_CENTRAL_BANK_FEEDS": ("central-bank RSS feeds as comma-separated bank=url pairs",
                                  "fed, ecb and rbi press-release feeds"),
    "TENALI_CENTRAL_BANK_DELAY": ("seconds between requests to one central-bank host (robots.txt Crawl-delay if longer)",
                                  "1"),
    "TENALI_INSTRUMENT_BUCKETS": ("partitions of the per-instrument sources (market prices, filings, fundamentals); "
                                  "1 leaves them unpartitioned (tenali_pipeline/buckets.py)", "1 for demo, 32 otherwise"),
    "TENALI_ONCHAIN_DAILY": ("1: DefiLlama and CoinGecko partitioned by day from TENALI_START_DATE, with their own "
                             "job (ingest_onchain), daily schedule and backfills (tenali_pipeline/days.py)",
                             "0 in demo, 1 otherwise"),
    "TENALI_REFRESH_HOURS": ("an instrument checked less than this many hours ago is not asked again", "6"),
    "COINGECKO_API_KEY": ("CoinGecko demo API key (secret; optional, raises the rate limit)", ""),
    "FRED_API_KEY": ("FRED API key (secret; live macro source)", ""),
    "SEC_EDGAR_IDENTITY": ("'Name email@example.com' sent to SEC as User-Agent (live filings)", ""),
    "DAGSTER_HOME": ("Dagster instance folder (set by the tenali command for demo)", "$TENALI_HOME/dagster"),
}

# Read by the cluster launchers (tenali_pipeline/launchers), passed on in Settings.cluster.
CLUSTER_VARIABLES = tuple(n for n in VARIABLES if n.split("_")[1:2] in (["K8S"], ["ECS"]) or n in (
    "TENALI_TRAINER_IMAGE", "TENALI_GPUS_PER_NODE", "TENALI_NODES", "TENALI_SHARED_MOUNT", "TENALI_PIPES_BUCKET",
    "TENALI_PIPES_PREFIX"))

DEFAULT_FEEDS = (
    "https://www.sec.gov/news/pressreleases.rss",
    "https://www.federalreserve.gov/feeds/press_all.xml",
)


DEFAULT_CENTRAL_BANK_FEEDS = (
    "fed=https://www.federalreserve.gov/feeds/press_monetary.xml",
    "ecb=https://www.ecb.europa.eu/rss/press.html",
    "rbi=https://www.rbi.org.in/pressreleases_rss.xml",
)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@dataclass(frozen=True)
class Settings:
    profile: str = "demo"
    home: Path = field(default_factory=lambda: Path("var").absolute())
    lake_root: str = ""
    s3_endpoint_url: str = ""
    sources: str = "sample"
    tickers: tuple[str, ...] = ("AAPL", "MSFT", "IBM", "GOOG", "FB")
    fred_series: tuple[str, ...] = ("GDPC1", "CPIAUCSL", "UNRATE", "FEDFUNDS", "DGS10", "M1SL")
    crypto_exchange: str = "kraken"
    crypto_symbols: tuple[str, ...] = ("BTC/USD", "ETH/USD")
    news_feeds: tuple[str, ...] = DEFAULT_FEEDS
    news_articles: tuple[str, ...] = ()  # TENALI_NEWS_ARTICLES: feed hosts, or ("all",); () = off
    documents_root: str = ""
    start_date: str = "2015-01-01"
    val_start: str = ""
    near_dup_threshold: float = 0.8
    mix: bool = True
    vocab_size: int = 4096
    shard_tokens: int = 1 << 20
    model: str = "demo"
    train_steps: int = 300
    train_nproc: int = 0
    launcher: str = "local"
    universe_classes: tuple[str, ...] = ("equities", "etfs", "currencies", "cryptos")
    universe_mics: tuple[str, ...] = ("XNYS", "XNAS", "XASE", "ARCX", "BATS", "XNSE", "XBOM")
    universe_countries: tuple[str, ...] = ()
    universe_quote_currencies: tuple[str, ...] = ("USD", "INR")
    financedatabase_url: str = "https://raw.githubusercontent.com/JerBouma/FinanceDatabase/main/compression/"
    sources_off: tuple[str, ...] = ()
    defillama_chains: tuple[str, ...] = ("Ethereum", "Solana")
    defillama_protocols: tuple[str, ...] = ("aave", "uniswap", "lido")
    coingecko_coins: tuple[str, ...] = ("bitcoin", "ethereum")
    # TENALI_TICKERS=universe: the market and filings assets read their tickers from the universe asset
    tickers_from_universe: bool = False
    central_bank_feeds: tuple[str, ...] = DEFAULT_CENTRAL_BANK_FEEDS
    central_bank_delay: float = 1.0
    instrument_buckets: int = 1
    onchain_daily: bool = False
    refresh_hours: float = 6.0
    training_retry_delay: float = 60.0  # TENALI_TRAINING_RETRY_DELAY: read where the training assets are defined
    train_from: str = "latest"
    train_config: dict = field(default_factory=dict)  # TENALI_TRAIN_CONFIG: TrainingResource fields
    base_model: str = ""  # TENALI_BASE_MODEL: a Hugging Face base to continue pretraining (defs/tokenizer, training)
    # TENALI_* settings of the cluster launchers (CLUSTER_VARIABLES) that are set, read by launchers/.
    cluster: dict[str, str] = field(default_factory=dict)

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster")


def training_retry_delay(env: dict[str, str] | None = None) -> float:
    """Seconds a failed training step waits before its retry (TENALI_TRAINING_RETRY_DELAY).

    A retry that starts at once meets what failed the first attempt: the spot capacity just reclaimed,
    the node still draining, the GPU still held by the killed process. Dagster fixes a step's
    RetryPolicy when its asset is defined, so the training modules read this at import (settings.py
    alone also reads it into Settings, for `tenali info`)."""
    return _number(os.environ if env is None else env, "TENALI_TRAINING_RETRY_DELAY", Settings.training_retry_delay,
                   high=None)


def _number(env, name: str, default: float, high: float | None = 1.0) -> float:
    """`name` in `env` as a float in [0, high] (no upper bound when `high` is None); `default` when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} must be a number.") from None
    if not math.isfinite(value) or value < 0 or (high is not None and value > high):
        raise SettingsError(f"{name}={raw!r} must be " + (f"between 0 and {high:g}." if high is not None
                                                           else "a number not below 0."))
    return value


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build Settings from `env` (default: os.environ), applying the profile's defaults."""
    env = dict(os.environ if env is None else env)
    get = lambda name: env.get(name, "").strip()  # noqa: E731

    profile = get("TENALI_PROFILE") or "demo"
    if profile not in PROFILES:
        raise SettingsError(f"TENALI_PROFILE={profile!r} is not one of {', '.join(PROFILES)}.")
    demo = profile == "demo"
    home = Path(get("TENALI_HOME") or "var").expanduser().absolute()

    def integer(name: str, default: int, low: int | None = None) -> int:
        raw = get(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} must be an integer.") from None
        if low is not None and value < low:
            raise SettingsError(f"{name}={raw!r} must be at least {low}.")
        return value

    def number(name: str, default: float, high: float | None = 1.0) -> float:
        return _number(env, name, default, high)

    def flag(name: str, default: bool) -> bool:
        raw = get(name).lower()
        if not raw:
            return default
        if raw not in ("0", "1", "true", "false", "yes", "no"):
            raise SettingsError(f"{name}={raw!r} must be 1 or 0.")
        return raw in ("1", "true", "yes")

    def date(name: str) -> str:
        raw = get(name)
        if raw:
            try:
                # YYYY-MM-DD only: fromisoformat also takes 20150101 and 2015-W01-1, which the sources
                # and resources would get as typed
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
                    raise ValueError(raw)
                dt.date.fromisoformat(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} must be a date such as 2015-01-01.") from None
        return raw

    lake_root = get("TENALI_LAKE_ROOT") or ("" if profile == "prod" else str(home / "lake"))
    if profile == "prod" and not lake_root.startswith("s3://"):
        raise SettingsError(
            "The prod profile keeps its lake on S3: set TENALI_LAKE_ROOT=s3://bucket/prefix "
            "(or use TENALI_PROFILE=local for a local folder)."
        )
    sources = get("TENALI_SOURCES") or ("sample" if demo else "live")
    if sources not in ("sample", "live"):
        raise SettingsError(f"TENALI_SOURCES={sources!r} must be 'sample' or 'live'.")
    launcher = get("TENALI_LAUNCHER") or ("k8s" if profile == "prod" else "local")
    if launcher not in ("local", "k8s", "ecs"):
        raise SettingsError(f"TENALI_LAUNCHER={launcher!r} must be 'local', 'k8s' or 'ecs'.")
    train_from = get("TENALI_TRAIN_FROM") or "latest"
    if train_from not in ("latest", "scratch"):
        raise SettingsError(f"TENALI_TRAIN_FROM={train_from!r} must be 'latest' or 'scratch'.")
    try:
        train_config = json.loads(get("TENALI_TRAIN_CONFIG") or "{}")
    except json.JSONDecodeError as e:
        raise SettingsError(f"TENALI_TRAIN_CONFIG must be JSON: {e}") from None
    if not isinstance(train_config, dict):
        raise SettingsError(f"TENALI_TRAIN_CONFIG must be a JSON object, got {get('TENALI_TRAIN_CONFIG')!r}.")
    cluster = {name: get(name) for name in CLUSTER_VARIABLES if get(name)}
    for name in ("TENALI_GPUS_PER_NODE", "TENALI_NODES"):
        if integer(name, 1) < 1:
            raise SettingsError(f"{name}={get(name)!r} must be at least 1.")
    from tenali_model.config import MODEL_PRESETS

    if get("TENALI_MODEL") and get("TENALI_MODEL") not in MODEL_PRESETS:  # else the pretraining step, minutes in
        raise SettingsError(f"TENALI_MODEL={get('TENALI_MODEL')!r} is not a model preset: choose from "
                            f"{', '.join(MODEL_PRESETS)}.")
    try:
        if not float(get("TENALI_K8S_SCHEDULE_TIMEOUT") or "1800") >= 0:  # NaN too
            raise ValueError
    except ValueError:
        raise SettingsError(f"TENALI_K8S_SCHEDULE_TIMEOUT={get('TENALI_K8S_SCHEDULE_TIMEOUT')!r} must be a number "
                            "of seconds, 0 or more.") from None
    for name, kind in (("TENALI_K8S_NODE_SELECTOR", dict), ("TENALI_K8S_TOLERATIONS", list)):
        try:
            value = json.loads(get(name) or ("{}" if kind is dict else "[]"))
        except json.JSONDecodeError as e:
            raise SettingsError(f"{name} must be JSON: {e}") from None
        if not isinstance(value, kind):
            raise SettingsError(f"{name} must be a JSON {'object' if kind is dict else 'list'}, "
                                f"got {get(name)!r}.")

    universe_classes = _csv(get("TENALI_UNIVERSE_CLASSES")) or Settings.universe_classes
    unknown = set(universe_classes) - {"equities", "etfs", "currencies", "cryptos"}
    if unknown:
        raise SettingsError(f"TENALI_UNIVERSE_CLASSES has {sorted(unknown)}: choose from equities, etfs, currencies, cryptos.")
    sources_off = _csv(get("TENALI_SOURCES_OFF").lower())
    from .sources.schema import SCHEMAS

    known = set(SCHEMAS) | {s.split("_")[0] for s in SCHEMAS}  # "india" turns off every india_* table
    unknown = set(sources_off) - known
    if unknown:
        raise SettingsError(f"TENALI_SOURCES_OFF has {sorted(unknown)}: it can turn off {', '.join(sorted(known))}.")

    tickers_raw = _csv(get("TENALI_TICKERS"))
    tickers_from_universe = [t.lower() for t in tickers_raw] == ["universe"]
    if not tickers_from_universe:
        # Yahoo and SEC symbols are upper case (the market client upper-cases what it asks for, so a
        # lower-case ticker would never match the rows it holds)
        tickers_raw = tuple(t.upper() for t in tickers_raw)
        for ticker in tickers_raw:
            if ticker == "UNIVERSE" or not re.fullmatch(r"[A-Z0-9^][A-Z0-9.=^&_/-]*", ticker):
                raise SettingsError(f"TENALI_TICKERS entry {ticker!r} is not a ticker: give comma-separated "
                                    "symbols such as AAPL,BRK-B,RELIANCE.NS, or 'universe' alone.")
    central_bank_feeds = _csv(get("TENALI_CENTRAL_BANK_FEEDS")) or Settings.central_bank_feeds
    for pair in central_bank_feeds:  # the client's parse_feeds says the same; no network code imported here
        bank, _, url = pair.partition("=")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", bank.strip()) or not url.strip().startswith(("http://", "https://")):
            raise SettingsError(f"TENALI_CENTRAL_BANK_FEEDS entry {pair!r} must be bank=url with a lowercase bank id, "
                                "e.g. fed=https://www.federalreserve.gov/feeds/press_monetary.xml")
    try:
        central_bank_delay = float(get("TENALI_CENTRAL_BANK_DELAY") or 1.0)
    except ValueError:
        raise SettingsError(f"TENALI_CENTRAL_BANK_DELAY={get('TENALI_CENTRAL_BANK_DELAY')!r} must be a number of "
                            "seconds.") from None
    if not math.isfinite(central_bank_delay) or central_bank_delay < 0:
        raise SettingsError(f"TENALI_CENTRAL_BANK_DELAY={get('TENALI_CENTRAL_BANK_DELAY')!r} must be a number of "
                            "seconds, not negative.")

    news_articles = _csv(get("TENALI_NEWS_ARTICLES").lower())
    # the client's parse_article_hosts says the same; no network code imported here
    if "all" in news_articles and len(news_articles) > 1:
        raise SettingsError(f"TENALI_NEWS_ARTICLES is 'all' or a list of feed hosts, not both: {','.join(news_articles)}")
    for host in news_articles:
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?", host):
            raise SettingsError(f"TENALI_NEWS_ARTICLES entry {host!r} must be a feed's host name such as www.sec.gov "
                                "(no scheme, path or port), or 'all'.")

    buckets = integer("TENALI_INSTRUMENT_BUCKETS", 1 if demo else 32)
    if not 1 <= buckets <= 10_000:
        raise SettingsError(f"TENALI_INSTRUMENT_BUCKETS={buckets} must be between 1 and 10000 (Dagster advises "
                            "staying well under 100,000 partitions per asset).")

    base = Settings()
    return Settings(
        profile=profile,
        home=home,
        lake_root=lake_root,
        s3_endpoint_url=get("TENALI_S3_ENDPOINT_URL"),
        sources=sources,
        tickers=(tickers_raw if not tickers_from_universe else ()) or base.tickers,
        tickers_from_universe=tickers_from_universe,
        central_bank_feeds=central_bank_feeds,
        central_bank_delay=central_bank_delay,
        instrument_buckets=buckets,
        onchain_daily=flag("TENALI_ONCHAIN_DAILY", not demo),
        refresh_hours=number("TENALI_REFRESH_HOURS", 6.0, high=None),
        training_retry_delay=training_retry_delay(env),
        fred_series=_csv(get("TENALI_FRED_SERIES")) or base.fred_series,
        crypto_exchange=get("TENALI_CRYPTO_EXCHANGE") or base.crypto_exchange,
        crypto_symbols=_csv(get("TENALI_CRYPTO_SYMBOLS")) or base.crypto_symbols,
        news_feeds=_csv(get("TENALI_NEWS_FEEDS")) or base.news_feeds,
        news_articles=news_articles,
        documents_root=get("TENALI_DOCUMENTS_ROOT") or str(home / "documents"),
        start_date=date("TENALI_START_DATE") or base.start_date,
        val_start=date("TENALI_VAL_START"),
        near_dup_threshold=number("TENALI_NEAR_DUP", 0.8),
        mix=flag("TENALI_MIX", True),
        vocab_size=integer("TENALI_VOCAB_SIZE", 4096 if demo else 50_000, low=1),
        shard_tokens=integer("TENALI_SHARD_TOKENS", (1 << 20) if demo else 100_000_000, low=1),
        model=get("TENALI_MODEL") or ("demo" if demo else "51m"),
        train_steps=integer("TENALI_TRAIN_STEPS", 300 if demo else 20_000, low=1),
        train_nproc=integer("TENALI_TRAIN_NPROC", 0, low=0),
        launcher=launcher,
        universe_classes=universe_classes,
        universe_mics=_csv(get("TENALI_UNIVERSE_MICS").upper()) or base.universe_mics,
        universe_countries=_csv(get("TENALI_UNIVERSE_COUNTRIES")),
        universe_quote_currencies=_csv(get("TENALI_UNIVERSE_QUOTE_CURRENCIES").upper()) or base.universe_quote_currencies,
        financedatabase_url=get("TENALI_FINANCEDATABASE_URL") or base.financedatabase_url,
        sources_off=sources_off,
        defillama_chains=_csv(get("TENALI_DEFILLAMA_CHAINS")) or base.defillama_chains,
        defillama_protocols=_csv(get("TENALI_DEFILLAMA_PROTOCOLS")) or base.defillama_protocols,
        coingecko_coins=_csv(get("TENALI_COINGECKO_COINS")) or base.coingecko_coins,
        train_from=train_from,
        train_config=train_config,
        base_model=get("TENALI_BASE_MODEL"),
        cluster=cluster,
    )
