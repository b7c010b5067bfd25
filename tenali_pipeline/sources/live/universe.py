"""The tradable universe: equities, ETFs, currencies and crypto from `financedatabase`, filtered by
config, joined with the SEC's ticker <-> CIK map.

Upstream:
- financedatabase (JerBouma/FinanceDatabase) publishes one file per asset class under a base URL
  (GitHub by default): ``equities.parquet`` / ``equities.bz2`` (bz2-compressed CSV), ``etfs``,
  ``currencies``, ``cryptos``. The library downloads them with `requests` (no retry, 60 s timeout),
  caches them as Parquet in ``FINANCEDATABASE_CACHE_DIR`` (its own variable) and re-checks the ETag
  once a day. Its ``base_url`` argument points it anywhere (a mirror, or 127.0.0.1 in tests).
- The SEC ticker map: https://www.sec.gov/files/company_tickers_exchange.json
  (``{"fields": ["cik","name","ticker","exchange"], "data": [[320193,"Apple Inc.","AAPL","Nasdaq"],...]}``);
  the older ``company_tickers.json`` (``{"0": {"cik_str", "ticker", "title"}}``) parses too. The SEC
  wants a User-Agent with a name and email (SEC_EDGAR_IDENTITY) and at most 10 requests per second.

Filters are settings, not lists of names: ``mics`` keeps equities and ETFs listed on those venues
(ISO 10383: XNYS, XNAS, XNSE, XBOM, ...), ``countries`` keeps equities of companies domiciled there,
``quote_currencies`` keeps currency pairs and crypto pairs quoted in those currencies. An empty
filter keeps everything. Delisted rows are kept and marked (``delisted``); history across refreshes
(first_seen, last_seen, renames) is kept by `defs/universe/history.py`.

Raw responses: the SEC ticker map is kept as served in the run's `ResponseArchive` (attached to the
SEC session). financedatabase's files are not: the library downloads them itself with
`requests.get` (no session to hook), keeps them in its own cache and re-checks their ETag once a day,
and they are versioned upstream in the FinanceDatabase repository.
"""

from __future__ import annotations

import logging

import polars as pl
import requests

from ..archive import ResponseArchive
from ..http import SEC_LIMITER, MalformedResponse, SourceBlocked, TransientError, fetch_json, rate_limited_session, retry
from ..schema import UNIVERSE, conform

log = logging.getLogger(__name__)

FINANCEDATABASE_URL = "https://raw.githubusercontent.com/JerBouma/FinanceDatabase/main/compression/"
SEC_TICKERS_URL = "https://www.sec.gov/files/company_tickers_exchange.json"
ASSET_CLASSES = ("equities", "etfs", "currencies", "cryptos")
OFF_SETTING = "TENALI_UNIVERSE_CLASSES (fewer classes) or TENALI_FINANCEDATABASE_URL (a mirror)"

# financedatabase class -> (our asset_class, library class name)
_CLASSES = {"equities": ("equity", "Equities"), "etfs": ("etf", "ETFs"),
            "currencies": ("currency", "Currencies"), "cryptos": ("crypto", "Cryptos")}


class UniverseError(RuntimeError):
    """The universe could not be built (a source unreachable or answering the wrong shape)."""


# --- pure: parsing and building ----------------------------------------------------------------


def parse_sec_tickers(doc) -> pl.DataFrame:
    """The SEC ticker map as (ticker, cik, sec_name, sec_exchange), from either published shape."""
    if isinstance(doc, dict) and "fields" in doc and "data" in doc:
        fields = list(doc["fields"])
        missing = {"cik", "ticker"} - set(fields)
        if missing:
            raise MalformedResponse(f"SEC company_tickers_exchange.json has no {sorted(missing)} field")
        rows = [dict(zip(fields, r)) for r in doc["data"]]
        rows = [{"ticker": r.get("ticker"), "cik": r.get("cik"), "sec_name": r.get("name"),
                 "sec_exchange": r.get("exchange")} for r in rows]
    elif isinstance(doc, dict) and all(isinstance(v, dict) and "cik_str" in v for v in doc.values()):
        rows = [{"ticker": v.get("ticker"), "cik": v["cik_str"], "sec_name": v.get("title"), "sec_exchange": None}
                for v in doc.values()]
    else:
        raise MalformedResponse("SEC ticker map is neither {fields, data} nor {n: {cik_str, ticker, title}}")
    schema = {"ticker": pl.String, "cik": pl.String, "sec_name": pl.String, "sec_exchange": pl.String}
    df = pl.DataFrame([{k: None if v is None else str(v) for k, v in r.items()} for r in rows], schema=schema)
    # A CIK can have several tickers (share classes); a ticker maps to one CIK.
    return (df.filter(pl.col("ticker").is_not_null() & pl.col("cik").str.contains(r"^\d+$"))
              .with_columns(ticker=pl.col("ticker").str.to_uppercase(), cik=pl.col("cik").str.zfill(10))
              .unique("ticker", keep="first", maintain_order=True))


def _col(df: pl.DataFrame, name: str) -> pl.Expr:
    return pl.col(name).cast(pl.String) if name in df.columns else pl.lit(None, dtype=pl.String)


def _normalise_class(df: pl.DataFrame, cls: str) -> pl.DataFrame:
    """One financedatabase frame (its own columns; symbol first) in our column names."""
    asset_class = _CLASSES[cls][0]
    symbol = df.columns[0]
    delisted = (pl.col("delisted").cast(pl.String).str.to_lowercase().is_in(["true", "1"])
                if "delisted" in df.columns else pl.lit(False))
    currency = _col(df, "quote_currency") if cls == "currencies" else _col(df, "currency")
    return df.select(
        symbol=pl.col(symbol).cast(pl.String), asset_class=pl.lit(asset_class), name=_col(df, "name"),
        exchange=_col(df, "exchange"), mic=_col(df, "mic"), country=_col(df, "country"),
        sector=_col(df, "sector") if cls == "equities" else _col(df, "category_group"),
        industry_group=_col(df, "industry_group") if cls == "equities" else _col(df, "category"),
        industry=_col(df, "industry") if cls == "equities" else _col(df, "family"),
        currency=currency, market_cap=_col(df, "market_cap"), isin=_col(df, "isin"),
        base=_col(df, "base_currency") if cls == "currencies" else _col(df, "cryptocurrency"),
        delisted=delisted.fill_null(False),
    )


def filter_class(df: pl.DataFrame, cls: str, *, mics=(), countries=(), quote_currencies=()) -> pl.DataFrame:
    """Apply the configured filters to one normalised class (empty filter = keep all)."""
    def among(col: str, values) -> pl.Expr:
        return pl.col(col).str.to_lowercase().is_in([v.lower() for v in values])

    if cls in ("equities", "etfs") and mics:
        df = df.filter(among("mic", mics))
    if cls == "equities" and countries:
        df = df.filter(among("country", countries))
    if cls == "cryptos" and quote_currencies:
        df = df.filter(among("currency", quote_currencies))
    if cls == "currencies" and quote_currencies:
        df = df.filter(among("currency", quote_currencies) | among("base", quote_currencies))
    return df


def build_universe(frames: dict[str, pl.DataFrame], sec_tickers: pl.DataFrame | None, *, mics=(), countries=(),
                   quote_currencies=(), source: str) -> pl.DataFrame:
    """Filter each financedatabase class, stack them, and attach the SEC CIK to US-listed equities
    and ETFs by ticker (SEC tickers use '-' for share classes, as financedatabase does: BRK-B)."""
    parts = []
    for cls, raw in frames.items():
        if cls not in _CLASSES:
            raise ValueError(f"unknown asset class {cls!r}: choose from {', '.join(ASSET_CLASSES)}")
        if raw.is_empty():
            continue
        parts.append(filter_class(_normalise_class(raw, cls), cls, mics=mics, countries=countries,
                                  quote_currencies=quote_currencies).drop("base"))
    if not parts:
        return pl.DataFrame(schema=UNIVERSE)
    df = pl.concat(parts, how="vertical_relaxed").filter(pl.col("symbol").is_not_null())
    if sec_tickers is not None and not sec_tickers.is_empty():
        sec = sec_tickers.select(pl.col("ticker").alias("_t"), pl.col("cik").alias("_cik"))
        df = (df.with_columns(_t=pl.when(pl.col("asset_class").is_in(["equity", "etf"]) & ~pl.col("symbol").str.contains(r"[.=]"))
                               .then(pl.col("symbol").str.to_uppercase()))
                .join(sec, on="_t", how="left").rename({"_cik": "cik"}).drop("_t"))
    else:
        df = df.with_columns(cik=pl.lit(None, dtype=pl.String))
    df = df.with_columns(source=pl.lit(source))
    return conform(df, UNIVERSE, what="universe").unique(["asset_class", "symbol"], keep="first", maintain_order=True)


# --- live client ---------------------------------------------------------------------------------


class FinanceDatabaseUniverseClient:
    """Snapshot of the configured universe from financedatabase plus the SEC ticker map."""

    def __init__(self, classes=ASSET_CLASSES, *, mics=(), countries=(), quote_currencies=(),
                 base_url: str = FINANCEDATABASE_URL, sec_url: str = SEC_TICKERS_URL, identity: str | None = None,
                 session: requests.Session | None = None, attempts: int = 4, base_delay: float = 2.0,
                 archive: ResponseArchive | None = None):
        unknown = [c for c in classes if c not in _CLASSES]
        if unknown:
            raise ValueError(f"unknown asset class(es) {unknown} in TENALI_UNIVERSE_CLASSES: "
                             f"choose from {', '.join(ASSET_CLASSES)}")
        self.classes = tuple(classes)
        self.mics, self.countries, self.quote_currencies = tuple(mics), tuple(countries), tuple(quote_currencies)
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.sec_url, self.identity = sec_url, identity
        self.session = session
        self.archive = archive
        self.attempts, self.base_delay = attempts, base_delay

    def fetch(self) -> pl.DataFrame:
        frames = {cls: self._load_class(cls) for cls in self.classes}
        sec = self._sec_tickers() if {"equities", "etfs"} & set(self.classes) else None
        df = build_universe(frames, sec, mics=self.mics, countries=self.countries,
                            quote_currencies=self.quote_currencies, source="financedatabase+sec")
        if df.is_empty():
            raise UniverseError(
                f"the universe filters kept no instrument (classes {self.classes}, MICs {self.mics}, countries "
                f"{self.countries}, quote currencies {self.quote_currencies}): check TENALI_UNIVERSE_MICS, "
                "TENALI_UNIVERSE_COUNTRIES and TENALI_UNIVERSE_QUOTE_CURRENCIES")
        return df

    def _load_class(self, cls: str) -> pl.DataFrame:
        import financedatabase as fd

        def attempt() -> pl.DataFrame:
            try:
                db = getattr(fd, _CLASSES[cls][1])(base_url=self.base_url)
                return db.get_lazy_frame(exclude_delisted=False).collect()
            except ValueError as exc:  # financedatabase wraps RequestException in ValueError
                cause = exc.__cause__
                status = getattr(getattr(cause, "response", None), "status_code", None)
                if status == 403:
                    raise SourceBlocked(f"financedatabase ({self.base_url}) refused {cls} (HTTP 403): "
                                        f"point it elsewhere or leave {cls} out with {OFF_SETTING}") from exc
                if isinstance(cause, (requests.ConnectionError, requests.Timeout)) or status in (429, 500, 502, 503, 504):
                    raise TransientError(f"financedatabase {cls} from {self.base_url}: {cause}") from exc
                raise UniverseError(f"financedatabase could not load {cls} from {self.base_url}: {exc}") from exc

        return retry(attempt, attempts=self.attempts, base_delay=self.base_delay, what=f"financedatabase {cls}")

    def _sec_tickers(self) -> pl.DataFrame:
        from .filings import parse_identity

        name, email = parse_identity(self.identity)
        session = self.session or rate_limited_session(SEC_LIMITER)
        if self.archive is not None:
            self.archive.attach(session)
        doc = fetch_json(session, self.sec_url, site="SEC (www.sec.gov)",
                         off_setting="SEC_EDGAR_IDENTITY (a real name and email; the SEC blocks anonymous tools) or "
                                     "TENALI_UNIVERSE_CLASSES=currencies,cryptos",
                         headers={"User-Agent": f"{name} {email}"}, attempts=self.attempts, base_delay=self.base_delay)
        return parse_sec_tickers(doc)
