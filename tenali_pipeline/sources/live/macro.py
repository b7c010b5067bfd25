"""Macro series from FRED / ALFRED (St. Louis Fed), through fredapi, point-in-time.

Endpoints (XML, fredapi's default; the API key travels as the `api_key` query parameter):
- {root_url}/series?series_id=ID: title, units, frequency.
- {root_url}/series/observations?series_id=ID&realtime_start=1776-07-04&realtime_end=9999-12-31:
  every vintage of every observation, each with the first day it was published (realtime_start).

Rate limits: FRED allows 120 requests per minute per API key and answers HTTP 429 beyond it.
This client makes two requests per series, spaces every request 0.5 s apart
(`FRED_LIMITER`, shared by the machine's processes), and retries 429 and 5xx with exponential backoff.

fredapi facts this client relies on: it uses urllib (no timeout, no session) in its private
``Fred.__fetch_data``; `_TimedFred` overrides it (name-mangled ``_Fred__fetch_data``) to read with a
timeout and keep every XML body in the run's `ResponseArchive` (URL with the key masked). Every HTTP
error surfaces as a bare `ValueError(<FRED's message>)` raised while handling the urllib HTTPError,
so the status code is recovered from the exception's `__context__`. The HTTPError's URL holds the
API key: errors are re-raised `from None` and messages are passed through `redact`.

Incremental runs: series info carries ``last_updated`` (when FRED last changed the series). `fetch`
takes the rows held so far and the ``last_updated`` seen by the last run: a series whose
``last_updated`` has not changed keeps its rows without asking for observations again (one cheap
metadata request per series per run); a changed one is asked whole (ALFRED's vintages are only
complete when asked from the earliest realtime_start). A failing series fails alone: its old rows
are kept and it is named in the `PartialFetchError` raised at the end.
"""

from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from datetime import date
from http.client import HTTPException
from typing import Literal
from urllib.error import HTTPError, URLError
from urllib.request import urlopen
from xml.etree.ElementTree import ParseError

import polars as pl

from ..archive import ResponseArchive
from ..http import PartialFetchError, RateLimiter, TransientError, home_state_file, redact, retry
from ..schema import MACRO_OBSERVATIONS, conform

log = logging.getLogger(__name__)


# FRED's `limit` for series/observations defaults to, and cannot exceed, 100000 rows.
FRED_ROW_CAP = 100_000

# FRED allows 120 requests per minute per key: every client in the process paces itself to that, so
# a long series list (one metadata request each, even when nothing changed) does not run into 429s.
FRED_LIMITER = RateLimiter(2, shared=lambda: home_state_file("fred"))  # 120/min per key, all processes


class FredError(RuntimeError):
    """FRED refused a request for a reason retrying will not fix."""


def _timed_fred(api_key: str, *, timeout: float, archive: ResponseArchive | None,
                limiter: RateLimiter | None = None):
    """A `fredapi.Fred` whose requests time out and are kept in `archive` (built lazily: fredapi is optional)."""
    from fredapi import Fred

    class _TimedFred(Fred):
        def _Fred__fetch_data(self, url):  # replaces fredapi's private urllib call (no timeout there)
            url += "&api_key=" + self.api_key
            (limiter or FRED_LIMITER).wait()
            try:
                with urlopen(url, timeout=timeout) as response:
                    body = response.read()
                    self._keep(url, response.status, body, response.headers.get("Content-Type", ""))
                root = ET.fromstring(body)
            except HTTPError as exc:
                body = exc.read()
                self._keep(url, exc.code, body, exc.headers.get("Content-Type", "") if exc.headers else "")
                root = ET.fromstring(body)
                raise ValueError(root.get("message"))  # as fredapi does: `_classify` reads the HTTPError context
            return root

        def _keep(self, url: str, status: int, body: bytes, content_type: str) -> None:
            if archive is not None:  # the key is masked in the URL; never in a body, but make sure
                archive.record(url, status, body.replace(self.api_key.encode(), b"***"), content_type=content_type)

    return _TimedFred(api_key=api_key)


class FredMacroClient:
    """Observations of `series_ids` with the date each value was first published.

    Vintages: FRED's plain `get_series` returns today's revised values stamped with today's
    realtime_start, and fredapi's `get_series_first_release` drops the realtime_start column, so
    neither keeps the publication date. We call `get_series_all_releases` (ALFRED, every vintage)
    and, with `vintages="first"`, keep per observation date the first vintage that has a value:
    the number as it was first known, with the day it became known. `vintages="all"` keeps every
    revision (several rows per date). Caveat: for observations older than ALFRED's archive of a
    series, the first vintage is the archive's start, later than the true release: conservative,
    never look-ahead. fredapi's all-releases call takes no observation_start, so `start` filters
    after download, and it does not page: a history past FRED's 100000-row cap is an error.
    """

    def __init__(
        self,
        series_ids: list[str],
        api_key: str | None,
        start: str | date | None = None,
        root_url: str | None = None,
        *,
        vintages: Literal["first", "all"] = "first",
        attempts: int = 5,
        base_delay: float = 2.0,
        timeout: float = 60.0,
        archive: ResponseArchive | None = None,
        limiter: RateLimiter | None = None,
    ):
        # A key pasted with a space or read from a file with its newline: urllib refuses whitespace in
        # a URL (InvalidURL, which would read as a broken connection and be retried), so drop it here.
        api_key = (api_key or os.environ.get("FRED_API_KEY") or "").strip()
        if not api_key:
            raise ValueError(
                "FRED API key missing: set FRED_API_KEY (a free key is issued at "
                "https://fred.stlouisfed.org/docs/api/api_key.html) or use the sample macro source"
            )
        if vintages not in ("first", "all"):
            raise ValueError(f"vintages must be 'first' or 'all', not {vintages!r}")
        self.series_ids = list(series_ids)
        self.start = date.fromisoformat(str(start)) if start else None
        self.vintages = vintages
        self.attempts, self.base_delay = attempts, base_delay
        self.timeout, self.archive = timeout, archive
        self.limiter = limiter  # None: the process-wide FRED_LIMITER (120 requests per minute)
        self._api_key = api_key
        self._root_url = root_url
        # series id -> FRED's last_updated, as of this client's last fetch (persist it with the rows)
        self.last_updated: dict[str, str] = {}
        self.unchanged: list[str] = []  # series whose observations were not asked again

    def __repr__(self) -> str:  # never show the key
        return f"FredMacroClient(series_ids={self.series_ids!r}, start={self.start!r}, root_url={self._root_url!r})"

    def fetch(self, previous: pl.DataFrame | None = None, last_updated: dict[str, str] | None = None) -> pl.DataFrame:
        """Observations of every series; with `previous` (the rows held) and `last_updated` (as the
        last run saw it), a series FRED has not updated since keeps its rows unasked.

        One failing series fails alone: the `PartialFetchError` raised at the end names it and
        carries the other series' rows and its own old rows. `self.last_updated` is the state to keep.
        """
        fred = _timed_fred(self._api_key, timeout=self.timeout, archive=self.archive, limiter=self.limiter)
        if self._root_url:
            fred.root_url = self._root_url.rstrip("/")
        known = dict(last_updated or {})
        held = previous if previous is not None and previous.height else None
        what = "FRED observations"
        self.last_updated, self.unchanged = {}, []
        parts, failures = [pl.DataFrame(schema=MACRO_OBSERVATIONS)], {}
        for series_id in self.series_ids:
            old = held.filter(pl.col("series_id") == series_id) if held is not None else None
            if old is not None and self.start:
                old = old.filter(pl.col("date") >= self.start)
            try:
                info = self._call(series_id, "series info", lambda: fred.get_series_info(series_id))
                stamp = info.get("last_updated")
                stamp = str(stamp) if stamp is not None and str(stamp) else None
                if stamp and known.get(series_id) == stamp and old is not None and old.height:
                    self.unchanged.append(series_id)
                    parts.append(conform(old, MACRO_OBSERVATIONS, what=what))
                else:
                    parts.append(conform(self._fetch_series(fred, series_id, info), MACRO_OBSERVATIONS, what=what))
                if stamp:
                    self.last_updated[series_id] = stamp
            except Exception as exc:  # noqa: BLE001 - named in the PartialFetchError, never swallowed
                message = redact(f"{type(exc).__name__}: {exc}", self._api_key)
                log.warning("FRED series %s failed: %s", series_id, message)
                failures[series_id] = message
                if series_id in known:  # its rows are the old ones: so is what we know of them
                    self.last_updated[series_id] = known[series_id]
                if old is not None and old.height:
                    parts.append(conform(old, MACRO_OBSERVATIONS, what=what))
        if self.unchanged:
            log.info("FRED has not updated %d series since the last run: %s", len(self.unchanged), ", ".join(self.unchanged))
        df = pl.concat(parts)
        if failures:
            raise PartialFetchError("FRED series", failures, partial=df)
        return df

    def _fetch_series(self, fred, series_id: str, info) -> pl.DataFrame:
        import pandas as pd

        releases = self._call(series_id, "observations", lambda: fred.get_series_all_releases(series_id))
        if releases.empty:
            return pl.DataFrame(schema=MACRO_OBSERVATIONS)
        if len(releases) >= FRED_ROW_CAP:
            raise FredError(
                f"FRED returned {len(releases)} rows for {series_id}, its per-request cap: the vintage "
                "history is truncated (fredapi does not page). Split the series by realtime window."
            )
        df = pl.DataFrame(
            {
                "date": [ts.date() for ts in releases["date"]],
                "realtime_start": [ts.date() for ts in releases["realtime_start"]],
                # FRED's "." (missing) arrives as NaN, or as NaT under pandas 3 (fredapi builds an
                # object frame by transposing, which turns a NaN beside datetimes into NaT): null.
                "value": [None if pd.isna(v) else float(v) for v in releases["value"]],
            },
            schema_overrides={"value": pl.Float64},
        )
        if self.start:
            df = df.filter(pl.col("date") >= self.start)
        if self.vintages == "first":
            df = (
                df.sort("date", pl.col("value").is_null(), "realtime_start")
                .unique("date", keep="first", maintain_order=True)
            )
        return df.sort("date", "realtime_start").with_columns(
            series_id=pl.lit(series_id),
            title=pl.lit(info.get("title")),
            units=pl.lit(info.get("units")),
            frequency=pl.lit(info.get("frequency")),
            source=pl.lit("fred"),
        )

    def _call(self, series_id: str, what: str, fn):
        def attempt():
            try:
                return fn()
            except (ValueError, ParseError) as exc:
                raise self._classify(series_id, what, exc) from None
            except URLError as exc:  # connection refused, DNS, TLS: fredapi only catches HTTPError
                reason = redact(str(exc.reason), self._api_key)
                raise TransientError(f"could not reach FRED ({reason}) for {what} of {series_id}") from None
            except TimeoutError:  # the read timed out (the connect timeout arrives as a URLError)
                raise TransientError(f"FRED did not answer within {self.timeout:g}s for {what} of {series_id}") from None
            except (HTTPException, ConnectionError) as exc:  # cut off mid-body (IncompleteRead), reset while reading
                reason = redact(f"{type(exc).__name__}: {exc}", self._api_key)
                raise TransientError(f"FRED broke off its answer ({reason}) for {what} of {series_id}") from None

        return retry(attempt, attempts=self.attempts, base_delay=self.base_delay, what=f"FRED {what} for {series_id}")

    def _classify(self, series_id: str, what: str, exc: Exception) -> Exception:
        http = exc.__context__ if isinstance(exc.__context__, HTTPError) else None
        code = http.code if http is not None else None
        message = redact(str(exc), self._api_key) or (http.reason if http is not None else "no message")
        if code == 429 or "too many requests" in message.lower():
            return TransientError(f"FRED rate limit (HTTP 429) on {what} of {series_id}: {message}")
        if code is not None and code >= 500:
            return TransientError(f"FRED returned HTTP {code} on {what} of {series_id}: {message}")
        if code is None:
            return FredError(f"FRED response for {what} of {series_id} is not usable: {message}")
        if "api_key" in message.lower():
            hint = "check FRED_API_KEY (32 lower-case alphanumeric characters, registered at fred.stlouisfed.org)"
        elif code == 400:
            hint = "check the series id"
        else:
            hint = "check the series id and the FRED root URL"
        return FredError(f"FRED returned HTTP {code} ({message}) for {what} of series {series_id}: {hint}")
