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
import os
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
    "TENALI_TICKERS": ("comma-separated equity tickers for the market and filings sources", "AAPL,MSFT,IBM,GOOG,FB"),
    "TENALI_FRED_SERIES": ("comma-separated FRED series ids", "GDPC1,CPIAUCSL,UNRATE,FEDFUNDS,DGS10,M1SL"),
    "TENALI_CRYPTO_EXCHANGE": ("ccxt exchange id", "kraken"),
    "TENALI_CRYPTO_SYMBOLS": ("comma-separated ccxt symbols", "BTC/USD,ETH/USD"),
    "TENALI_NEWS_FEEDS": ("comma-separated RSS/Atom feed URLs", "SEC press releases, Federal Reserve press releases"),
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
    "TENALI_LAUNCHER": ("local | k8s", "local for demo and local, k8s for prod"),
    "FRED_API_KEY": ("FRED API key (secret; live macro source)", ""),
    "SEC_EDGAR_IDENTITY": ("'Name email@example.com' sent to SEC as User-Agent (live filings)", ""),
    "DAGSTER_HOME": ("Dagster instance folder (set by the tenali command for demo)", "$TENALI_HOME/dagster"),
}

DEFAULT_FEEDS = (
    "https://www.sec.gov/news/pressreleases.rss",
    "https://www.federalreserve.gov/feeds/press_all.xml",
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

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.home / "dagster")


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build Settings from `env` (default: os.environ), applying the profile's defaults."""
    env = dict(os.environ if env is None else env)
    get = lambda name: env.get(name, "").strip()  # noqa: E731

    profile = get("TENALI_PROFILE") or "demo"
    if profile not in PROFILES:
        raise SettingsError(f"TENALI_PROFILE={profile!r} is not one of {', '.join(PROFILES)}.")
    demo = profile == "demo"
    home = Path(get("TENALI_HOME") or "var").expanduser().absolute()

    def integer(name: str, default: int) -> int:
        raw = get(name)
        if not raw:
            return default
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} must be an integer.") from None

    def number(name: str, default: float) -> float:
        raw = get(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} must be a number.") from None
        if not 0 <= value <= 1:
            raise SettingsError(f"{name}={raw!r} must be between 0 and 1.")
        return value

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
    if launcher not in ("local", "k8s"):
        raise SettingsError(f"TENALI_LAUNCHER={launcher!r} must be 'local' or 'k8s'.")

    base = Settings()
    return Settings(
        profile=profile,
        home=home,
        lake_root=lake_root,
        s3_endpoint_url=get("TENALI_S3_ENDPOINT_URL"),
        sources=sources,
        tickers=_csv(get("TENALI_TICKERS")) or base.tickers,
        fred_series=_csv(get("TENALI_FRED_SERIES")) or base.fred_series,
        crypto_exchange=get("TENALI_CRYPTO_EXCHANGE") or base.crypto_exchange,
        crypto_symbols=_csv(get("TENALI_CRYPTO_SYMBOLS")) or base.crypto_symbols,
        news_feeds=_csv(get("TENALI_NEWS_FEEDS")) or base.news_feeds,
        documents_root=get("TENALI_DOCUMENTS_ROOT") or str(home / "documents"),
        start_date=date("TENALI_START_DATE") or base.start_date,
        val_start=date("TENALI_VAL_START"),
        near_dup_threshold=number("TENALI_NEAR_DUP", 0.8),
        mix=flag("TENALI_MIX", True),
        vocab_size=integer("TENALI_VOCAB_SIZE", 4096 if demo else 50_000),
        shard_tokens=integer("TENALI_SHARD_TOKENS", (1 << 20) if demo else 100_000_000),
        model=get("TENALI_MODEL") or ("demo" if demo else "51m"),
        train_steps=integer("TENALI_TRAIN_STEPS", 300 if demo else 20_000),
        train_nproc=integer("TENALI_TRAIN_NPROC", 0),
        launcher=launcher,
    )
