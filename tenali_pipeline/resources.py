"""Dagster resources: where data lives, which source clients run, corpus and training settings.

Built from `settings.load_settings()` by `build_resources`. Secrets (``FRED_API_KEY``,
``SEC_EDGAR_IDENTITY``) are not resource fields: the client that needs one reads it from the
environment when it runs, so a missing key fails only the asset that needs it, with a message naming
the variable, and no secret ever lands in run config, logs or metadata.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import dagster as dg

from .lake import Lake
from .settings import Settings


class LakeResource(dg.ConfigurableResource):
    """The lake root: a local folder or ``s3://bucket/prefix``."""

    root: str
    s3_endpoint_url: str = ""
    # Local folder for copies of lake files that a process needs on disk (shards and checkpoints
    # when the lake is on S3); empty = a folder under the system temp directory.
    cache_dir: str = ""

    def lake(self) -> Lake:
        return Lake(self.root, s3_endpoint_url=self.s3_endpoint_url or None, cache_dir=self.cache())

    def cache(self) -> Path:
        return Path(self.cache_dir or Path(tempfile.gettempdir()) / "tenali-cache")


class SourcesResource(dg.ConfigurableResource):
    """Picks the sample or live client of every source and passes it its settings."""

    mode: str = "sample"  # sample | live
    tickers: list[str] = ["AAPL", "MSFT", "IBM", "GOOG", "FB"]
    fred_series: list[str] = ["GDPC1", "CPIAUCSL", "UNRATE", "FEDFUNDS", "DGS10", "M1SL"]
    crypto_exchange: str = "kraken"
    crypto_symbols: list[str] = ["BTC/USD", "ETH/USD"]
    news_feeds: list[str] = []
    # feed hosts (or ["all"]) whose short entries get their linked article fetched; [] = off (TENALI_NEWS_ARTICLES)
    news_articles: list[str] = []
    documents_root: str = ""
    start_date: str = "2015-01-01"
    universe_classes: list[str] = ["equities", "etfs", "currencies", "cryptos"]
    universe_mics: list[str] = ["XNYS", "XNAS", "XASE", "ARCX", "BATS", "XNSE", "XBOM"]
    universe_countries: list[str] = []
    universe_quote_currencies: list[str] = ["USD", "INR"]
    financedatabase_url: str = "https://raw.githubusercontent.com/JerBouma/FinanceDatabase/main/compression/"
    sources_off: list[str] = []
    # a ticker checked less than this many hours ago is not asked again (sources/incremental.py)
    refresh_hours: float = 6.0
    defillama_chains: list[str] = ["Ethereum", "Solana"]
    defillama_protocols: list[str] = ["aave", "uniswap", "lido"]
    coingecko_coins: list[str] = ["bitcoin", "ethereum"]
    # TENALI_TICKERS=universe: market and filings take their tickers / CIKs from the `universe` asset
    tickers_from_universe: bool = False
    central_bank_feeds: list[str] = [
        "fed=https://www.federalreserve.gov/feeds/press_monetary.xml",
        "ecb=https://www.ecb.europa.eu/rss/press.html",
        "rbi=https://www.rbi.org.in/pressreleases_rss.xml",
    ]
    central_bank_delay: float = 1.0  # seconds between requests to one host (robots.txt Crawl-delay if longer)

    @property
    def is_sample(self) -> bool:
        return self.mode == "sample"

    def is_off(self, source: str) -> bool:
        """True when TENALI_SOURCES_OFF names `source` (its assets then write empty tables)."""
        return source in self.sources_off or source.split("_")[0] in self.sources_off  # "india" = india_*

    def universe(self, archive=None):
        """`archive` keeps the SEC ticker map as served (financedatabase caches its own files)."""
        if self.is_sample:
            from .sources.sample.universe import SampleUniverseClient

            return SampleUniverseClient(self.universe_classes, mics=self.universe_mics, countries=self.universe_countries,
                                        quote_currencies=self.universe_quote_currencies)
        from .sources.live.universe import FinanceDatabaseUniverseClient

        return FinanceDatabaseUniverseClient(self.universe_classes, mics=self.universe_mics,
                                             countries=self.universe_countries,
                                             quote_currencies=self.universe_quote_currencies,
                                             base_url=self.financedatabase_url,
                                             identity=os.environ.get("SEC_EDGAR_IDENTITY"), archive=archive)

    def fundamentals(self, companies: dict[str, str], on_raw=None):
        """XBRL company facts for `companies` (symbol -> CIK, from the universe)."""
        if self.is_sample:
            from .sources.sample.xbrl import SampleXbrlClient

            return SampleXbrlClient(list(companies), on_raw=on_raw)
        from .sources.live.xbrl import SecXbrlClient

        return SecXbrlClient(companies, identity=os.environ.get("SEC_EDGAR_IDENTITY"), on_raw=on_raw)

    def defillama(self, chains=None, protocols=None, archive=None):
        """`chains` / `protocols` (those due for a refresh) replace the configured lists when given;
        `archive` keeps the raw JSON."""
        chains = list(chains) if chains is not None else self.defillama_chains
        protocols = list(protocols) if protocols is not None else self.defillama_protocols
        if self.is_sample:
            from .sources.sample.defillama import SampleDefiLlamaClient

            return SampleDefiLlamaClient(chains, protocols)
        from .sources.live.defillama import DefiLlamaClient

        return DefiLlamaClient(chains, protocols, start=self.start_date, archive=archive)

    def coingecko(self, coins=None, archive=None, end=None):
        """`coins` (those due for a refresh) replace the configured list when given; `archive` keeps the raw JSON;
        `end` (a date, excluded) ends the history asked (None: now)."""
        coins = list(coins) if coins is not None else self.coingecko_coins
        if self.is_sample:
            from .sources.sample.coingecko import SampleCoinGeckoClient

            return SampleCoinGeckoClient(coins)
        from .sources.live.coingecko import CoinGeckoClient

        return CoinGeckoClient(coins, start=self.start_date, end=end, api_key=os.environ.get("COINGECKO_API_KEY"),
                               archive=archive)

    def central_bank(self, known=(), state: dict | None = None, archive=None):
        """Central-bank communications; `known` links are not fetched again, `state` holds feed ETags,
        `archive` keeps the feeds, robots.txt and pages as served."""
        if self.is_sample:
            from .sources.sample.centralbank import SampleCentralBankClient

            return SampleCentralBankClient()
        from .sources.live.centralbank import CentralBankClient

        return CentralBankClient(self.central_bank_feeds, known=known, state=state, delay=self.central_bank_delay,
                                 archive=archive)

    def us_ipos(self, archive=None):
        """US IPOs from EDGAR's final prospectuses (424B4 / 424B1) since TENALI_START_DATE."""
        if self.is_sample:
            from .sources.sample.us_ipos import SampleUsIpoClient

            return SampleUsIpoClient()
        from .sources.live.us_ipos import EdgarIpoClient

        return EdgarIpoClient(self.start_date, identity=os.environ.get("SEC_EDGAR_IDENTITY"), archive=archive)

    def india(self, start=None, archive=None, exchange: str = "NSE"):
        """NSE announcements, bhavcopy and IPOs, or (`exchange="BSE"`) BSE announcements, from `start`
        (default TENALI_START_DATE)."""
        exchange = exchange.upper()
        if exchange not in ("NSE", "BSE"):
            raise ValueError(f"Indian exchange {exchange!r}: use NSE or BSE")
        if self.is_sample:
            from .sources.sample.india import SampleBseClient, SampleIndiaClient

            return SampleBseClient() if exchange == "BSE" else SampleIndiaClient()
        if exchange == "BSE":
            from .sources.live.bse import BseClient

            return BseClient(start or self.start_date, archive=archive)
        from .sources.live.india import NseClient

        return NseClient(start or self.start_date, archive=archive)

    def market(self, tickers: list[str] | None = None, archive=None):
        """`tickers` (a bucket's, or the universe's) replace the configured list when given; `archive`
        keeps the raw responses."""
        tickers = list(tickers) if tickers is not None else self.tickers
        if self.is_sample:
            from .sources.sample import SampleMarketClient

            return SampleMarketClient(tickers)
        from .sources.live.market import YFinanceMarketClient

        return YFinanceMarketClient(tickers, start=self.start_date, end=None, archive=archive)

    def macro(self, archive=None):
        """`archive` keeps FRED's XML as served (the key masked)."""
        if self.is_sample:
            from .sources.sample import SampleMacroClient

            return SampleMacroClient()
        from .sources.live.macro import FredMacroClient

        return FredMacroClient(self.fred_series, api_key=os.environ.get("FRED_API_KEY"), start=self.start_date,
                               archive=archive)

    def crypto(self, archive=None):
        """`archive` keeps the exchange's JSON as served."""
        if self.is_sample:
            from .sources.sample import SampleCryptoClient

            return SampleCryptoClient()
        from .sources.live.crypto import CcxtCryptoClient

        return CcxtCryptoClient(self.crypto_exchange, self.crypto_symbols, timeframe="1d", since=self.start_date,
                                archive=archive)

    def filings(self, download_dir: Path, companies: dict[str, str] | None = None, *, archive=None,
                tickers: list[str] | None = None):
        """`companies` (symbol -> CIK, from the universe) replace the configured tickers when given:
        the live client asks EDGAR by CIK, which also reaches delisted and renamed companies. `tickers`
        (a bucket's) replace the configured list; `archive` keeps the full submissions."""
        tickers = list(tickers) if tickers is not None else self.tickers
        if self.is_sample:
            from .sources.sample import SampleFilingsClient

            return SampleFilingsClient(list(companies) if companies is not None else tickers)
        from .sources.live.filings import EdgarFilingsClient

        wanted = list(companies.values()) if companies is not None else tickers
        return EdgarFilingsClient(wanted, identity=os.environ.get("SEC_EDGAR_IDENTITY"), download_dir=download_dir,
                                  after=self.start_date, archive=archive)

    def news(self, state: dict | None = None, archive=None, known_articles: dict[str, str] | None = None,
             skip_articles=()):
        """`state` holds each feed's ETag / Last-Modified; `archive` keeps the feed bodies (and 304s),
        robots.txt and article pages. Articles (`news_articles`): `known_articles` (entry id -> text)
        are reused, never fetched again; `skip_articles` (entry ids) failed for good before."""
        if self.is_sample:
            from .sources.sample import SampleNewsClient

            return SampleNewsClient(self.tickers)
        from .sources.live.news import RssNewsClient

        return RssNewsClient(self.news_feeds, state=state, archive=archive, articles=self.news_articles,
                             known_articles=known_articles, skip_articles=skip_articles)

    def documents(self):
        if self.is_sample:
            from .sources.sample import SampleDocumentsClient

            return SampleDocumentsClient()
        from .sources.live.documents import LocalDocumentsClient

        return LocalDocumentsClient(self.documents_root)


class CorpusResource(dg.ConfigurableResource):
    """Temporal split, tokenizer and shard sizes."""

    val_start: str = ""  # ISO date; empty = the date from which the latest 10% of documents begin
    vocab_size: int = 50_000
    shard_tokens: int = 100_000_000
    near_dup_threshold: float = 0.8  # Jaccard similarity of word 5-gram MinHash; 0 = off
    mix: bool = True  # mix the training split to the seed's domain weights
    mix_max_repeats: float = 4.0  # no domain is repeated more than this to reach its weight
    # Streaming build (text/stream.py): documents per batch, and per hash bucket (sets the bucket count).
    batch_rows: int = 5_000
    bucket_docs: int = 100_000
    workers: int = 1  # processes for the corpus stages' units (a document table, a hash bucket)
    # A Hugging Face base model (folder or s3:// prefix): the tokenizer stage copies its tokenizer instead of
    # training one, and pretraining continues from its weights (the shard manifest records the base).
    base_model: str = ""


class TrainingResource(dg.ConfigurableResource):
    """What to pretrain and for how long; the launcher decides where.

    A setting left at None is the model's recipe (`tenali_model.recipes`: the demo's values for the
    demo, the seed's for the 7B), so changing TENALI_MODEL changes the context, batch and learning
    rate with it; `resolve` fills them in."""

    model: str = "demo"
    steps: int = 300
    batch_size: Optional[int] = None  # sequences per rank per micro-step
    seq_len: Optional[int] = None
    global_batch_tokens: Optional[int] = None  # tokens per optimizer step; 0 = batch_size x seq_len x ranks
    lr: Optional[float] = None  # peak; cosine decay to a tenth
    warmup_steps: Optional[int] = None
    z_loss: Optional[float] = None
    compile: Optional[bool] = None
    activation_checkpointing: Optional[bool] = None
    eval_every: Optional[int] = None
    eval_batches: int = 20
    ckpt_every: Optional[int] = None
    seed: int = 1337
    # "latest": continue from the latest checkpoint when new shards landed (same tokenizer and model);
    # "scratch": always start fresh (defs/training/assets.py).
    train_from: str = "latest"

    def resolve(self, model) -> dict:
        """TrainConfig fields for pretraining `model` (a ModelConfig; None: this resource's preset):
        each setting given here, else the recipe's; `recipe` names the recipe used. The recipe's seq_len
        is cut to the model's context (an imported base's may be shorter), its batch keeping its
        sequence count."""
        from tenali_model.config import preset
        from tenali_model.recipes import recipe_for

        cfg = preset(self.model) if model is None else model
        name, r = recipe_for(self.model if model is None else model)
        seq_len = self.seq_len or min(r.seq_len, cfg.max_seq_len)  # a given one is checked, not cut
        fields = r.train_config(seq_len)
        fields.update({k: getattr(self, k) for k in fields if getattr(self, k) is not None})
        fields["warmup_steps"] = min(fields["warmup_steps"], self.steps // 5)
        return {"recipe": name, **fields, "min_lr": fields["lr"] / 10, "eval_batches": self.eval_batches,
                "seed": self.seed}


def training_overrides(values: dict) -> dict:
    """TENALI_TRAIN_CONFIG's settings for TrainingResource, checked by name and (strictly) by type
    here, so that a typo stops `tenali` at start-up instead of a training hours later (the resource
    itself would ignore an unknown name and take "yes" for true)."""
    from pydantic import TypeAdapter, ValidationError

    from .settings import SettingsError

    own = {"model": "TENALI_MODEL", "steps": "TENALI_TRAIN_STEPS", "train_from": "TENALI_TRAIN_FROM"}
    fields = TrainingResource.model_fields
    for key, value in values.items():
        if key in own:
            raise SettingsError(f"TENALI_TRAIN_CONFIG sets {key!r}: use {own[key]} for that.")
        if key not in fields:
            raise SettingsError(f"TENALI_TRAIN_CONFIG has {key!r}, which is not a pretraining setting; known: "
                                f"{', '.join(sorted(set(fields) - set(own)))}.")
        try:
            TypeAdapter(fields[key].annotation).validate_python(value, strict=True)
        except ValidationError as e:
            raise SettingsError(f"TENALI_TRAIN_CONFIG {key}={value!r}: {e.errors()[0]['msg']}.") from None
    return dict(values)


def from_env(name: str, value, env=None):
    """``dg.EnvVar(name)`` when the variable is set, else the profile's default `value`.

    With an EnvVar the UI shows which variable a setting comes from and Dagster reads it when a run
    launches; an unset variable keeps the default that `settings.load_settings` chose for the profile.
    """
    env = os.environ if env is None else env
    raw = env.get(name, "")
    if not raw.strip():
        return value
    if raw != str(value):
        # load_settings trimmed or normalised it (" sample " -> "sample"); Dagster would read the raw
        # text at launch, so the validated value goes in instead
        return value
    return dg.EnvVar.int(name) if isinstance(value, int) else dg.EnvVar(name)


def build_resources(settings: Settings, env=None) -> dict:
    from .launchers import build_launcher

    e = lambda name, value: from_env(name, value, env)  # noqa: E731
    return {
        "lake": LakeResource(root=e("TENALI_LAKE_ROOT", settings.lake_root),
                             s3_endpoint_url=e("TENALI_S3_ENDPOINT_URL", settings.s3_endpoint_url),
                             cache_dir=str(settings.home / "cache")),
        "sources": SourcesResource(
            mode=e("TENALI_SOURCES", settings.sources),
            tickers=list(settings.tickers),
            fred_series=list(settings.fred_series),
            crypto_exchange=e("TENALI_CRYPTO_EXCHANGE", settings.crypto_exchange),
            crypto_symbols=list(settings.crypto_symbols),
            news_feeds=list(settings.news_feeds),
            news_articles=list(settings.news_articles),
            documents_root=e("TENALI_DOCUMENTS_ROOT", settings.documents_root),
            start_date=e("TENALI_START_DATE", settings.start_date),
            universe_classes=list(settings.universe_classes),
            universe_mics=list(settings.universe_mics),
            universe_countries=list(settings.universe_countries),
            universe_quote_currencies=list(settings.universe_quote_currencies),
            financedatabase_url=settings.financedatabase_url,
            sources_off=list(settings.sources_off),
            defillama_chains=list(settings.defillama_chains),
            defillama_protocols=list(settings.defillama_protocols),
            coingecko_coins=list(settings.coingecko_coins),
            tickers_from_universe=settings.tickers_from_universe,
            central_bank_feeds=list(settings.central_bank_feeds),
            central_bank_delay=settings.central_bank_delay,
            refresh_hours=settings.refresh_hours,
        ),
        "corpus_settings": CorpusResource(
            val_start=e("TENALI_VAL_START", settings.val_start),
            vocab_size=e("TENALI_VOCAB_SIZE", settings.vocab_size),
            shard_tokens=e("TENALI_SHARD_TOKENS", settings.shard_tokens),
            near_dup_threshold=settings.near_dup_threshold, mix=settings.mix,
            base_model=e("TENALI_BASE_MODEL", settings.base_model)),
        "training": TrainingResource(model=e("TENALI_MODEL", settings.model),
                                     steps=e("TENALI_TRAIN_STEPS", settings.train_steps),
                                     train_from=e("TENALI_TRAIN_FROM", settings.train_from),
                                     **training_overrides(settings.train_config)),
        "launcher": build_launcher(settings),
    }
