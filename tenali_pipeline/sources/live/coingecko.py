"""Coin supply and market cap (tokenomics) from CoinGecko's public API, daily, with history backfill.

Endpoints (https://docs.coingecko.com/v3.0.1/reference/coins-id-market-chart-range):
- ``/coins/{id}/market_chart/range?vs_currency=usd&from=<unix s>&to=<unix s>`` ->
  ``{"prices": [[ms, price], ...], "market_caps": [[ms, cap], ...], "total_volumes": [[ms, vol], ...]}``;
  over more than 90 days the points are daily at 00:00 UTC (the last may be the current minute);
- ``/coins/{id}?localization=false&tickers=false&market_data=true&community_data=false&developer_data=false``
  -> ``{"id", "symbol", "name", "market_data": {"max_supply", "total_supply", "circulating_supply", ...}}``.

History supply is not served, so ``circulating_supply`` is the one the market cap implies (cap /
price, as CoinGecko computes the cap; a cap of 0, CoinGecko's answer for a day it knows no supply
of, is stored as unknown); ``max_supply`` is the protocol's cap (null when uncapped).
A demo key (COINGECKO_API_KEY, header ``x-cg-demo-api-key``) raises the rate limit; without one the
public API allows a few calls per minute (spaced across the machine's processes, see `PUBLIC_LIMITER`)
and only the last 365 days of history (it answers 401, error 10012, beyond that: start later with
TENALI_START_DATE or use a key). A failing coin fails alone (`PartialFetchError` at the end names each).

Incremental runs: `fetch(since={coin: first day})` asks each coin only from that day. Every request
(a first run from a recent TENALI_START_DATE too) reaches at least `DAILY_DAYS` back from its end, and
rows before the start date are dropped: CoinGecko picks the granularity from the range (hourly up to
90 days, daily at 00:00 UTC beyond), and a merged history must be daily throughout. The
JSON bodies are kept in the run's `ResponseArchive` (attached to the session); the key travels in a
header, which the archive never keeps.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import time

import polars as pl
import requests

from ..archive import ResponseArchive
from ..http import (MalformedResponse, PartialFetchError, RateLimiter, RetriesExhausted, SourceBlocked, fetch_json,
                    home_state_file, rate_limited_session)
from ..schema import COIN_MARKETS, conform

log = logging.getLogger(__name__)

API = "https://api.coingecko.com/api/v3"
# ~12 and 30 calls per minute, per IP / per key: shared by every process of the machine through TENALI_HOME
PUBLIC_LIMITER = RateLimiter(0.2, shared=lambda: home_state_file("coingecko-public"))
KEY_LIMITER = RateLimiter(0.5, shared=lambda: home_state_file("coingecko-key"))
OFF_SETTING = "TENALI_SOURCES_OFF=coingecko"
DAILY_DAYS = 92  # a range starting further back than 90 days from now is served daily


def parse_market_chart(body) -> pl.DataFrame:
    """market_chart(/range) -> one row per UTC day (the day's last point): date, price, cap, volume."""
    if not isinstance(body, dict) or not all(isinstance(body.get(k), list) for k in ("prices", "market_caps", "total_volumes")):
        raise MalformedResponse("market_chart: expected an object with 'prices', 'market_caps' and 'total_volumes' lists")

    def series(name: str, col: str) -> pl.DataFrame:
        try:
            pts = [(int(t), None if v is None else float(v)) for t, v in body[name]]
        except (TypeError, ValueError) as exc:
            raise MalformedResponse(f"market_chart: a point of {name} is not [ms, value] ({exc})") from None
        df = pl.DataFrame(pts, schema={"ms": pl.Int64, col: pl.Float64}, orient="row")
        return (df.with_columns(date=pl.from_epoch("ms", time_unit="ms").dt.date()).sort("ms")
                .group_by("date").agg(pl.col(col).last()))

    out = series("prices", "price_usd")
    for name, col in (("market_caps", "market_cap_usd"), ("total_volumes", "volume_usd")):
        out = out.join(series(name, col), on="date", how="left")
    # CoinGecko answers a cap of 0 for days it knows no supply of: unknown, not a worthless coin
    return out.with_columns(pl.col("market_cap_usd").replace(0.0, None)).sort("date")


class CoinGeckoClient:
    def __init__(self, coins=("bitcoin",), *, start: str | dt.date | None = None, end: dt.date | None = None,
                 api_key: str | None = None, api: str = API, session: requests.Session | None = None,
                 attempts: int = 4, base_delay: float = 5.0, archive: ResponseArchive | None = None):
        self.coins = list(coins)
        self.start = dt.date.fromisoformat(str(start)) if start else dt.date.today() - dt.timedelta(days=364)
        self.end = end
        self.api_key, self.api = api_key, api.rstrip("/")
        self.session = session or rate_limited_session(KEY_LIMITER if api_key else PUBLIC_LIMITER)
        if archive is not None:
            archive.attach(self.session)
        self.attempts, self.base_delay = attempts, base_delay

    def _get(self, path: str, params: dict):
        headers = {"x-cg-demo-api-key": self.api_key} if self.api_key else None
        return fetch_json(self.session, f"{self.api}{path}", params=params, headers=headers, site="CoinGecko",
                          off_setting=OFF_SETTING, attempts=self.attempts, base_delay=self.base_delay,
                          secrets=(self.api_key,))

    def coin(self, coin: str, since: dt.date | None = None) -> pl.DataFrame:
        """Daily rows of `coin` from `since` (None: from `start`), asked at least `DAILY_DAYS` back even
        when `start` is later (a shorter range is served hourly: a day's last point would be its 23:00
        price, not the 00:00 UTC one); rows before `start` are dropped."""
        end = self.end or dt.date.today()
        first = min(self.start if since is None else max(self.start, since), end - dt.timedelta(days=DAILY_DAYS))
        t0 = calendar.timegm(first.timetuple())
        t1 = int(time.time()) if self.end is None else calendar.timegm(self.end.timetuple())
        chart = parse_market_chart(self._get(f"/coins/{coin}/market_chart/range",
                                             {"vs_currency": "usd", "from": t0, "to": t1}))
        chart = chart.filter(pl.col("date") >= self.start)
        info = self._get(f"/coins/{coin}", {"localization": "false", "tickers": "false", "market_data": "true",
                                            "community_data": "false", "developer_data": "false", "sparkline": "false"})
        if not isinstance(info, dict) or not isinstance(info.get("market_data"), dict):
            raise MalformedResponse(f"coins/{coin}: expected an object with 'market_data'")
        max_supply = info["market_data"].get("max_supply")
        return chart.with_columns(
            coin_id=pl.lit(coin), symbol=pl.lit((info.get("symbol") or coin).upper()),
            circulating_supply=pl.when(pl.col("price_usd") > 0).then(pl.col("market_cap_usd") / pl.col("price_usd")),
            max_supply=pl.lit(None if max_supply is None else float(max_supply), dtype=pl.Float64),
            source=pl.lit("coingecko"))

    def fetch(self, since: dict[str, dt.date | None] | None = None) -> pl.DataFrame:
        """Every coin (or those in `since`, each from its day); one failing coin fails alone."""
        frames, failures = [], {}
        for coin in self.coins:
            if since is not None and coin not in since:
                continue
            try:
                frames.append(self.coin(coin, since.get(coin) if since else None))
            except SourceBlocked:
                raise
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                hint = (" (the public API serves only the last 365 days: set TENALI_START_DATE later or "
                        "COINGECKO_API_KEY)" if status == 401 else " (unknown coin id?)" if status == 404 else "")
                failures[coin] = f"{exc}{hint}"
            except (RetriesExhausted, MalformedResponse) as exc:
                failures[coin] = str(exc)
        df = conform(pl.concat(frames, how="diagonal"), COIN_MARKETS, what="CoinGecko") if frames else pl.DataFrame(schema=COIN_MARKETS)
        if failures:
            raise PartialFetchError("CoinGecko", failures, partial=df)
        return df
