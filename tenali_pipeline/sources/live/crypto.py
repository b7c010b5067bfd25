"""OHLCV candles from a crypto exchange through ccxt (any exchange ccxt supports).

Endpoints: the exchange's market list first (ccxt loads markets before any fetch; on Binance
GET /api/v3/exchangeInfo), then its candle endpoint page by page (Binance GET /api/v3/klines,
at most 1000 candles a page; Kraken /0/public/OHLC, 720).

Rate limits: ccxt's own limiter (`enableRateLimit=True`, always on here) spaces requests by the
exchange's `rateLimit` and endpoint weights (Binance: 6000 weight/minute per IP). HTTP 429/418
surface as RateLimitExceeded or DDoSProtection (Binance raises the latter for 429), timeouts
as RequestTimeout: all retried with backoff, honouring Retry-After. ExchangeNotAvailable is
ccxt's class for 400/403/404/451 *and* 5xx: 5xx is retried, the rest is a clear error
(Binance answers 451 to some regions).

Pagination: from `since`, ask for the exchange's maximum page, advance `since` past the last
candle returned, stop on an empty page, at `limit` candles, or once caught up with the present.
Only closed candles are kept (the one still forming is dropped).

Incremental runs: `fetch(since={symbol: start})` asks each symbol from its own start (the asset
passes the last stored candle minus one bar, so the last candle is re-read and the merge keeps one
row per timestamp). A failing symbol fails alone: it is named in the `PartialFetchError` raised at
the end, which carries the other symbols' candles. Raw responses: the exchange's `session` (a
`requests.Session` in sync ccxt) records every JSON body into the run's `ResponseArchive`; ccxt
sends API keys in headers, which the archive never keeps. Funding-rate history is not collected
(the OHLCV schema has no place for it).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import date, datetime, timezone

import polars as pl

from ..archive import ResponseArchive
from ..http import PartialFetchError, TransientError, retry, retry_after_seconds
from ..schema import CRYPTO_OHLCV, conform

log = logging.getLogger(__name__)

_FALLBACK_PAGE = 500
_STATUS = re.compile(r"^\S+ [A-Z]+ \S+ (\d{3}) ")


class ExchangeUnavailableError(RuntimeError):
    """The exchange refused us for a reason retrying will not fix (region block, maintenance)."""


def _to_ms(since: int | str | date | datetime | None) -> int | None:
    if since is None or isinstance(since, int):
        return since
    if isinstance(since, str):
        since = datetime.fromisoformat(since)
    if not isinstance(since, datetime):
        since = datetime(since.year, since.month, since.day)
    if since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    return int(since.timestamp() * 1000)


class CcxtCryptoClient:
    """Closed `timeframe` candles for `symbols` (ccxt unified, e.g. "BTC/USDT") from `since`."""

    def __init__(
        self,
        exchange_id: str,
        symbols: list[str],
        timeframe: str = "1d",
        since: int | str | date | datetime | None = None,
        limit: int | None = None,
        exchange=None,
        *,
        attempts: int = 5,
        base_delay: float = 1.0,
        archive: ResponseArchive | None = None,
    ):
        if exchange is None:
            import ccxt

            if exchange_id not in ccxt.exchanges:
                raise ValueError(f"unknown ccxt exchange {exchange_id!r}: pick one of ccxt.exchanges")
            exchange = getattr(ccxt, exchange_id)({"enableRateLimit": True})
        exchange.enableRateLimit = True
        if archive is not None:
            archive.attach(exchange.session)
        self.exchange = exchange
        self.exchange_id = exchange_id
        self.symbols = list(symbols)
        self.timeframe = timeframe
        self.since = _to_ms(since)
        self.limit = limit
        self.attempts, self.base_delay = attempts, base_delay

    def fetch(self, since: dict[str, int | str | date | datetime | None] | None = None) -> pl.DataFrame:
        """Closed candles of every symbol in `since` (default: all, from the configured start), each
        from its own start (None: the configured one). One failing symbol fails alone."""
        since = {s: None for s in self.symbols} if since is None else since
        wanted = [s for s in self.symbols if s in since]
        if not wanted:
            return pl.DataFrame(schema=CRYPTO_OHLCV)
        self._call(self.exchange.load_markets, what=f"{self.exchange_id} markets")
        frames, failures = [pl.DataFrame(schema=CRYPTO_OHLCV)], {}
        for symbol in wanted:
            try:
                if symbol not in self.exchange.markets:
                    raise ValueError(
                        f"{self.exchange_id} does not list {symbol!r}: use a unified symbol such as "
                        f"'BTC/USDT' (see exchange.symbols)"
                    )
                start = _to_ms(since[symbol]) if since[symbol] is not None else self.since
                frames.append(conform(self._fetch_symbol(symbol, start), CRYPTO_OHLCV, what=f"{self.exchange_id} OHLCV"))
            except Exception as exc:  # noqa: BLE001 - named in the PartialFetchError, never swallowed
                log.warning("%s %s failed: %s", self.exchange_id, symbol, exc)
                failures[symbol] = f"{type(exc).__name__}: {exc}"
        df = pl.concat(frames)
        if failures:
            raise PartialFetchError(f"{self.exchange_id} OHLCV", failures, partial=df)
        return df

    def bar_ms(self) -> int:
        """The length of one candle of `timeframe`, in milliseconds."""
        return int(self.exchange.parse_timeframe(self.timeframe) * 1000)

    def page_size(self, symbol: str) -> int:
        """The exchange's maximum candles per request for this market (ccxt `features`)."""
        market = self.exchange.market(symbol)
        features = (getattr(self.exchange, "features", None) or {}).get(market.get("type")) or {}
        if market.get("type") in ("swap", "future"):
            features = features.get("linear" if market.get("linear") else "inverse") or {}
        return int(((features or {}).get("fetchOHLCV") or {}).get("limit") or _FALLBACK_PAGE)

    def _fetch_symbol(self, symbol: str, since: int | None) -> pl.DataFrame:
        ex, page = self.exchange, self.page_size(symbol)
        step = ex.parse_timeframe(self.timeframe) * 1000
        what = f"{self.exchange_id} {symbol} {self.timeframe} candles"
        candles: list[list] = []
        if since is None:  # just the most recent page
            newest = min(self.limit or page, page)
            candles = self._call(lambda: self._page(ex.fetch_ohlcv(symbol, self.timeframe, None, newest), what), what=what)
        else:
            cursor = since
            while self.limit is None or len(candles) < self.limit:
                want = page if self.limit is None else min(page, self.limit - len(candles))
                batch = self._call(lambda: self._page(ex.fetch_ohlcv(symbol, self.timeframe, cursor, want), what),
                                   what=what)
                batch = [c for c in batch if c[0] >= cursor]
                if not batch:
                    break
                candles.extend(batch)
                cursor = batch[-1][0] + step
                if cursor + step > ex.milliseconds():  # the next candle has not closed yet
                    break
        now = ex.milliseconds()
        rows = {c[0]: c for c in candles if c[0] + step <= now}  # closed only, de-duplicated
        ordered = [rows[t] for t in sorted(rows)][: self.limit]
        return pl.DataFrame(
            {
                "timestamp": [r[0] for r in ordered],
                **{k: [r[i] for r in ordered] for i, k in enumerate(("open", "high", "low", "close", "volume"), 1)},
            },
            schema={"timestamp": pl.Int64, **{k: pl.Float64 for k in ("open", "high", "low", "close", "volume")}},
        ).with_columns(
            pl.from_epoch("timestamp", time_unit="ms").dt.replace_time_zone("UTC"),
            exchange=pl.lit(self.exchange_id),
            symbol=pl.lit(symbol),
            timeframe=pl.lit(self.timeframe),
            source=pl.lit("ccxt"),
        )

    def _page(self, batch: list, what: str) -> list:
        """`batch`, unless it is empty because the body was not JSON: ccxt turns an HTML error page or a
        cut-off body served with 200 into an empty list, which would read as "no more candles"."""
        raw = getattr(self.exchange, "last_http_response", None)
        if not batch and raw:
            try:
                json.loads(raw)
            except ValueError:
                raise TransientError(f"{what}: {self.exchange_id} answered a body that is not JSON (an error page "
                                     f"or a cut-off answer): {raw[:120]!r}") from None
        return batch

    def _call(self, fn, *, what: str):
        import ccxt

        def attempt():
            try:
                return fn()
            except ccxt.OnMaintenance as exc:
                raise ExchangeUnavailableError(f"{self.exchange_id} is under maintenance: retry later ({exc})") from exc
            except ccxt.ExchangeNotAvailable as exc:
                match = _STATUS.match(str(exc))
                status = int(match.group(1)) if match else None
                if status is None or status >= 500:
                    raise TransientError(f"{what}: exchange unavailable ({str(exc)[:200]})") from exc
                hint = (
                    "the exchange blocks requests from this region (HTTP 451/403): use another "
                    "exchange (e.g. kraken, coinbase, okx; binanceus inside the US)"
                    if status in (403, 451)
                    else "check the symbol, timeframe and the exchange URLs"
                )
                raise ExchangeUnavailableError(f"{what}: HTTP {status} from {self.exchange_id}; {hint}") from exc
            except ccxt.NetworkError as exc:  # RateLimitExceeded, DDoSProtection, RequestTimeout, ...
                headers = getattr(self.exchange, "last_response_headers", None) or {}
                retry_after = headers.get("Retry-After") or headers.get("retry-after")
                raise TransientError(
                    f"{what}: {type(exc).__name__} ({str(exc)[:200]})",
                    retry_after=retry_after_seconds(retry_after),
                ) from exc

        return retry(attempt, attempts=self.attempts, base_delay=self.base_delay, what=what)
