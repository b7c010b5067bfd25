"""On-chain and DeFi metrics from DefiLlama's free public API (no key), daily, full history.

Endpoints and the response shapes this client reads (https://defillama.com/docs/api):

| metric             | scope    | request                                                            | body |
|--------------------|----------|--------------------------------------------------------------------|------|
| tvl                | chain    | api.llama.fi/v2/historicalChainTvl/{chain}                          | ``[{"date": 1609459200, "tvl": 2.1e10}, ...]`` |
| tvl                | protocol | api.llama.fi/protocol/{slug}                                        | ``{"name": ..., "tvl": [{"date": 1609459200, "totalLiquidityUSD": 1.2e9}, ...], ...}`` |
| fees               | chain    | api.llama.fi/overview/fees/{chain}?dataType=dailyFees&...           | ``{"totalDataChart": [[1609459200, 1.5e6], ...], ...}`` |
| dex_volume         | chain    | api.llama.fi/overview/dexs/{chain}?dataType=dailyVolume&...         | same ``totalDataChart`` |
| fees / revenue     | protocol | api.llama.fi/summary/fees/{slug}?dataType=dailyFees / dailyRevenue  | same ``totalDataChart`` |
| stablecoin_supply  | chain    | stablecoins.llama.fi/stablecoincharts/{chain}                       | ``[{"date": "1609459200", "totalCirculatingUSD": {"peggedUSD": 2.9e10, "peggedEUR": ...}}, ...]`` |

Dates are Unix seconds at 00:00 UTC (strings in the stablecoin charts). Every request returns the
whole history, so a run both backfills and brings the table up to date; rows before `start` are
dropped. The charts of daily flows (fees, revenue, DEX volume) often end with today's day so far, a
partial sum that reads as a crash: flows are kept up to yesterday (UTC), and today's comes complete
with the next run. Levels (TVL, stablecoin supply) keep today's point, a true value when read.
Each (metric, entity) is one item: a failure fails that item only (`PartialFetchError` names them
all at the end); a 404 means DefiLlama has no such series for it (a chain without DEX volume) and
is listed in `self.missing`. DefiLlama asks for moderate use: requests are spaced by
a machine-wide limiter (5 per second).

Incremental runs: every request serves a whole history, so the asset asks only the series due for a
refresh (`fetch(only=...)`, by the names `series_names` gives) and replaces their rows; the JSON
bodies are kept in the run's `ResponseArchive` (attached to the session).
"""

from __future__ import annotations

import datetime as dt
import logging

import polars as pl
import requests

from ..archive import ResponseArchive
from ..http import (MalformedResponse, PartialFetchError, RateLimiter, RetriesExhausted, SourceBlocked, fetch_json,
                    home_state_file, rate_limited_session)
from ..schema import DEFI_METRICS, conform

log = logging.getLogger(__name__)

API, STABLECOINS = "https://api.llama.fi", "https://stablecoins.llama.fi"
LIMITER = RateLimiter(5, shared=lambda: home_state_file("defillama"))  # all of the machine's processes
OFF_SETTING = "TENALI_SOURCES_OFF=defillama"
_CHART = {"excludeTotalDataChart": "false", "excludeTotalDataChartBreakdown": "true"}
FLOWS = frozenset({"fees", "revenue", "dex_volume"})  # daily sums; the other metrics are levels


def _day(stamp) -> dt.date:
    return dt.datetime.fromtimestamp(int(float(stamp)), dt.timezone.utc).date()


def parse_chain_tvl(body) -> list[tuple[dt.date, float]]:
    if not isinstance(body, list):
        raise MalformedResponse("historicalChainTvl: expected a list of {date, tvl}")
    try:
        return [(_day(p["date"]), float(p["tvl"])) for p in body]
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedResponse(f"historicalChainTvl: a point lacks or garbles {exc}") from None


def parse_protocol_tvl(body) -> list[tuple[dt.date, float]]:
    if not isinstance(body, dict) or not isinstance(body.get("tvl"), list):
        raise MalformedResponse("protocol: expected an object with a 'tvl' list of {date, totalLiquidityUSD}")
    try:
        return [(_day(p["date"]), float(p["totalLiquidityUSD"])) for p in body["tvl"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedResponse(f"protocol tvl: a point lacks or garbles {exc}") from None


def parse_total_chart(body) -> list[tuple[dt.date, float]]:
    if not isinstance(body, dict) or not isinstance(body.get("totalDataChart"), list):
        raise MalformedResponse("fees/dexs: expected an object with a 'totalDataChart' list of [date, value]")
    try:
        return [(_day(t), float(v)) for t, v in body["totalDataChart"]]
    except (TypeError, ValueError) as exc:
        raise MalformedResponse(f"fees/dexs: a point of totalDataChart is not [date, value] ({exc})") from None


def parse_stablecoin_chart(body) -> list[tuple[dt.date, float]]:
    if not isinstance(body, list):
        raise MalformedResponse("stablecoincharts: expected a list of {date, totalCirculatingUSD}")
    try:
        return [(_day(p["date"]), float(sum((p.get("totalCirculatingUSD") or {}).values()))) for p in body]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedResponse(f"stablecoincharts: a point lacks or garbles {exc}") from None


def to_frame(series: dict[tuple[str, str, str], list[tuple[dt.date, float]]], source: str,
             start: dt.date | None = None, today: dt.date | None = None) -> pl.DataFrame:
    """{(metric, scope, entity): [(date, value)]} -> DEFI_METRICS rows (one per day: the last wins).
    With `today`, flows dated today or later are left out: that day is not over."""
    rows = [{"metric": m, "scope": s, "entity": e, "date": d, "value": v, "source": source}
            for (m, s, e), points in series.items() for d, v in points
            if (start is None or d >= start) and (today is None or m not in FLOWS or d < today)]
    if not rows:
        return pl.DataFrame(schema=DEFI_METRICS)
    df = conform(pl.DataFrame(rows, schema=DEFI_METRICS), DEFI_METRICS, what="DefiLlama metrics")
    return df.unique(["metric", "scope", "entity", "date"], keep="last", maintain_order=True).sort(
        "metric", "scope", "entity", "date")


class DefiLlamaClient:
    def __init__(self, chains=("Ethereum",), protocols=(), *, start: str | dt.date | None = None, api: str = API,
                 stablecoins: str = STABLECOINS, session: requests.Session | None = None, attempts: int = 4,
                 base_delay: float = 1.0, archive: ResponseArchive | None = None, today: dt.date | None = None):
        self.chains, self.protocols = list(chains), list(protocols)
        self.start = dt.date.fromisoformat(str(start)) if start else None
        self.today = today  # the UTC day in progress (flows of it are partial); None: the clock's, at fetch time
        self.api, self.stablecoins = api.rstrip("/"), stablecoins.rstrip("/")
        self.session = session or rate_limited_session(LIMITER)
        if archive is not None:
            archive.attach(self.session)
        self.attempts, self.base_delay = attempts, base_delay
        self.missing: list[str] = []

    def requests(self) -> list[tuple[tuple[str, str, str], str, dict | None, object]]:
        """(metric, scope, entity), URL, query parameters, parser: every series to fetch."""
        out = []
        for c in self.chains:
            out += [(("tvl", "chain", c), f"{self.api}/v2/historicalChainTvl/{c}", None, parse_chain_tvl),
                    (("fees", "chain", c), f"{self.api}/overview/fees/{c}", {**_CHART, "dataType": "dailyFees"}, parse_total_chart),
                    (("dex_volume", "chain", c), f"{self.api}/overview/dexs/{c}", {**_CHART, "dataType": "dailyVolume"}, parse_total_chart),
                    (("stablecoin_supply", "chain", c), f"{self.stablecoins}/stablecoincharts/{c}", None, parse_stablecoin_chart)]
        for p in self.protocols:
            out += [(("tvl", "protocol", p), f"{self.api}/protocol/{p}", None, parse_protocol_tvl),
                    (("fees", "protocol", p), f"{self.api}/summary/fees/{p}", {"dataType": "dailyFees"}, parse_total_chart),
                    (("revenue", "protocol", p), f"{self.api}/summary/fees/{p}", {"dataType": "dailyRevenue"}, parse_total_chart)]
        return out

    @staticmethod
    def series_name(metric: str, scope: str, entity: str) -> str:
        """How a series is named in failures, `missing` and `only`: "chain Ethereum tvl"."""
        return f"{scope} {entity} {metric}"

    def series_names(self) -> list[str]:
        return [self.series_name(*key) for key, *_ in self.requests()]

    def fetch(self, only: set[str] | None = None) -> pl.DataFrame:
        """Every series (or those named in `only`); one failing series fails alone."""
        series, failures = {}, {}
        self.missing = []
        for key, url, params, parse in self.requests():
            name = self.series_name(*key)
            if only is not None and name not in only:
                continue
            try:
                body = fetch_json(self.session, url, params=params, site="DefiLlama", off_setting=OFF_SETTING,
                                  attempts=self.attempts, base_delay=self.base_delay)
                series[key] = parse(body)
            except SourceBlocked:
                raise
            except requests.HTTPError as exc:
                if exc.response is not None and exc.response.status_code in (400, 404):
                    log.info("DefiLlama has no %s", name)
                    self.missing.append(name)
                else:
                    failures[name] = str(exc)
            except (RetriesExhausted, MalformedResponse) as exc:
                failures[name] = str(exc)
        df = to_frame(series, "defillama", self.start, self.today or dt.datetime.now(dt.timezone.utc).date())
        if failures:
            raise PartialFetchError("DefiLlama", failures, partial=df)
        return df
