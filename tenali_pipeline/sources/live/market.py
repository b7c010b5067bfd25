"""Daily OHLCV with dividends and splits from Yahoo Finance, through yfinance.

Endpoints (all hard-coded inside yfinance 1.7):
- https://fc.yahoo.com and https://query1.finance.yahoo.com/v1/test/getcrumb (cookie and crumb,
  once per process; yfinance falls back to guce/consent.yahoo.com in the EU),
- https://query2.finance.yahoo.com/v8/finance/chart/{ticker}: once with range=1d to learn the
  exchange time zone (cached on disk by yfinance), then with period1/period2/events=div,splits.

Rate limits: Yahoo publishes none; in practice a few hundred chart requests per minute from one IP
before HTTP 429, which yfinance raises as YFRateLimitError and we retry with backoff.

yfinance facts this client relies on:
- It talks through curl_cffi by default, which HTTP mocks cannot intercept. Pass a
  `requests.Session` (tests mount an adapter on one) or set YF_DISABLE_CURL_CFFI=1 before import.
  Its data layer is a process-wide singleton: a session passed here is used by every later
  yfinance call in the process.
- By default it logs errors and returns an empty frame. We switch `yf.config.debug.hide_exceptions`
  off for the duration of a fetch so failures are raised, and restore it afterwards.
- Responses for date ranges in the past are memoised in-process (`YfData.cache_get`, an LRU),
  error pages included: the memo is cleared before a retry.
- The time zone of each ticker is cached on disk (~/.cache/py-yfinance, `yf.set_cache_location`).
"""

from __future__ import annotations

import json
import logging
import threading
from contextlib import contextmanager
from datetime import date

import polars as pl
import requests

from ..archive import ResponseArchive, recording_curl_session
from ..http import PartialFetchError, TransientError, retry
from ..schema import MARKET_PRICES, conform

log = logging.getLogger(__name__)

_NETWORK_ERRORS: tuple[type[BaseException], ...] = (requests.ConnectionError, requests.Timeout)
_HTTP_ERRORS: tuple[type[BaseException], ...] = (requests.HTTPError,)
try:  # yfinance's default transport
    from curl_cffi.requests import exceptions as _curl_exc

    _NETWORK_ERRORS += (_curl_exc.ConnectionError, _curl_exc.Timeout)
    _HTTP_ERRORS += (_curl_exc.HTTPError,)
except ImportError:  # pragma: no cover
    pass

_CONFIG_LOCK = threading.Lock()


@contextmanager
def _raise_yfinance_errors():
    import yfinance as yf

    with _CONFIG_LOCK:
        previous = yf.config.debug.hide_exceptions
        yf.config.debug.hide_exceptions = False
        try:
            yield
        finally:
            yf.config.debug.hide_exceptions = previous


def as_traded(df: pl.DataFrame) -> pl.DataFrame:
    """One ticker's split-adjusted bars (Yahoo's) as traded: each day's open/high/low/close times the
    ratios of the splits after it (a 4:1 split makes the days before it 4x the adjusted price), its
    volume divided by them. Yahoo split-adjusts dividends too (AAPL's $0.82 of 2020-08-07 reads 0.205):
    they get the same factor, so a row's dividend is per share of that day, like its close. A split's
    own day is already in post-split shares. `adj_close` stays as
    Yahoo gives it (adjusted for splits and dividends), so adj_close / close is the full adjustment,
    as in the sample data."""
    ratio = pl.when(pl.col("splits") > 0).then(pl.col("splits")).otherwise(1.0)
    later = ratio.shift(-1, fill_value=1.0).reverse().cum_prod().reverse()  # product over the days after
    df = df.sort("date")
    per_share = [c for c in ("open", "high", "low", "close", "dividends") if c in df.columns]
    return df.with_columns([(pl.col(c) * later).alias(c) for c in per_share]
                           + [(pl.col("volume") / later).alias("volume")])


class YFinanceMarketClient:
    """Daily OHLCV, Adj Close, dividends and splits for `tickers` in [start, end).

    Yahoo's open/high/low/close and volume are adjusted for splits (not for dividends; `adj_close`
    is adjusted for both), even with ``auto_adjust=False``: a price before a later split is not the
    price that traded that day. `as_traded` undoes that with the splits the answer lists, so `close`
    is the traded price, as in the sample twin (Quandl WIKI), which the renderers, the technical notes,
    the IPO notes and the grounded questions assume (a note dated before a split quoting adjusted
    prices would also reveal the split). The pipeline asks up to today (end=None), so every split
    Yahoo adjusted for is in the answer; with an `end` in the past, splits after it are not undone.
    """

    def __init__(
        self,
        tickers: list[str],
        start: str | date,
        end: str | date,
        session: requests.Session | None = None,
        *,
        attempts: int = 4,
        base_delay: float = 2.0,
        archive: ResponseArchive | None = None,
    ):
        self.tickers = [t.strip().upper() for t in tickers]
        self.start, self.end = str(start), (str(end) if end else None)
        if archive is not None:  # keep Yahoo's raw chart JSON (sources/archive.py)
            session = archive.attach(session) if session is not None else recording_curl_session(archive)
        self.session = session
        self.attempts, self.base_delay = attempts, base_delay

    def fetch(self, since: dict[str, date | None] | None = None) -> pl.DataFrame:
        """Every ticker from `since[ticker]` (default: from `start`); one failing ticker fails alone.

        A ticker that fails (unknown, delisted, still rate limited after the retries) is named in the
        `PartialFetchError` raised at the end, which carries the other tickers' rows.
        """
        what = "yfinance market prices"
        since = since if since is not None else {t: None for t in self.tickers}
        parts, failures = [pl.DataFrame(schema=MARKET_PRICES)], {}
        for ticker in self.tickers:
            if ticker not in since:
                continue
            try:
                parts.append(conform(self._fetch_one(ticker, since[ticker]), MARKET_PRICES, what=what))
            except Exception as exc:  # noqa: BLE001 - named in the PartialFetchError, never swallowed
                log.warning("Yahoo prices for %s failed: %s", ticker, exc)
                failures[ticker] = f"{type(exc).__name__}: {exc}"
        df = pl.concat(parts)
        if failures:
            raise PartialFetchError("Yahoo market prices", failures, partial=df)
        return df

    def _fetch_one(self, ticker: str, start: date | None = None) -> pl.DataFrame:
        start = str(start) if start else self.start
        history = retry(
            lambda: self._history(ticker, start),
            attempts=self.attempts,
            base_delay=self.base_delay,
            what=f"Yahoo chart for {ticker}",
        )
        if history.empty:
            log.warning("Yahoo returned no prices for %s in [%s, %s)", ticker, start, self.end)
            return pl.DataFrame(schema=MARKET_PRICES)
        pdf = history.reset_index()
        return pl.DataFrame(
            {
                "ticker": ticker,
                # The index is midnight in the exchange's time zone: its calendar date is the bar's.
                "date": [ts.date() for ts in pdf[pdf.columns[0]]],
                "open": pdf["Open"].to_numpy(),
                "high": pdf["High"].to_numpy(),
                "low": pdf["Low"].to_numpy(),
                "close": pdf["Close"].to_numpy(),
                "adj_close": pdf["Adj Close"].to_numpy(),
                "volume": pdf["Volume"].to_numpy().astype("float64"),
                "dividends": pdf["Dividends"].to_numpy() if "Dividends" in pdf else 0.0,
                "splits": pdf["Stock Splits"].to_numpy() if "Stock Splits" in pdf else 0.0,
                "source": "yfinance",
            }
        ).with_columns(pl.col("dividends", "splits").cast(pl.Float64).fill_null(0.0).fill_nan(0.0)).pipe(as_traded)

    def _history(self, ticker: str, start: str):
        try:
            return self._history_once(ticker, start)
        except TransientError:
            # yfinance memoises responses for past ranges, error pages included: forget them so
            # the retry really asks Yahoo again.
            from yfinance.data import YfData

            YfData.cache_get.cache_clear()
            raise

    def _history_once(self, ticker: str, start: str):
        import yfinance as yf
        from yfinance.exceptions import YFDataException, YFPricesMissingError, YFRateLimitError, YFTzMissingError

        try:
            with _raise_yfinance_errors():
                return yf.Ticker(ticker, session=self.session).history(
                    start=start, end=self.end, interval="1d", auto_adjust=False, actions=True
                )
        except YFRateLimitError as exc:
            raise TransientError(f"Yahoo rate limited the chart request for {ticker} (HTTP 429)") from exc
        except _NETWORK_ERRORS as exc:
            raise TransientError(f"network error fetching Yahoo chart for {ticker}: {exc}") from exc
        except (json.JSONDecodeError, YFDataException) as exc:  # an HTML error page, "Will be right back"
            raise TransientError(f"Yahoo sent no chart data for {ticker} ({type(exc).__name__}: {exc})") from exc
        except _HTTP_ERRORS as exc:
            # When the chart has no time zone, yfinance asks quoteSummary, which raises on HTTP errors.
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status == 429 or (status is not None and status >= 500):
                raise TransientError(f"Yahoo answered HTTP {status} for {ticker}") from exc
            if status != 404:
                raise RuntimeError(f"Yahoo answered HTTP {status} for {ticker}: {exc}") from exc
            raise self._unknown(ticker, exc) from exc
        except YFTzMissingError as exc:
            raise self._unknown(ticker, exc) from exc
        except YFPricesMissingError as exc:
            # No bars in the window (weekend, before listing). Yahoo's own reason, when it gave one,
            # is in the message; its status code is not exposed, so a 5xx with a JSON body lands here too.
            log.warning("%s", exc)
            import pandas as pd

            return pd.DataFrame()

    @staticmethod
    def _unknown(ticker: str, exc: Exception) -> ValueError:
        return ValueError(
            f"Yahoo has no chart for {ticker!r} ({type(exc).__name__}): check the ticker symbol "
            "(Yahoo spelling, e.g. BRK-B, ^GSPC) or whether it is delisted"
        )
