"""Indian exchanges: NSE and BSE corporate announcements (results included), NSE's daily bhavcopy
prices and past IPOs (live: NSE's JSON and archive endpoints with its cookie handshake,
`sources/live/india.py`, and BSE's announcement API, `sources/live/bse.py`; sample: generated
exchange-format responses run through the same parsers, `sources/sample/india.py`).

Unpartitioned: the exchanges serve announcements by date window and the bhavcopy as one file per
trading day for every symbol, so a run asks only for the days after those already held (a week of
overlap catches late corrections) instead of per-symbol requests. Announcements come from NSE, then
BSE, each from a week before its own newest row held; one exchange failing (a bot wall, a bad window)
keeps the other's rows and fails the run naming it. BSE rows carry the BSE scrip code as symbol.
IPOs: NSE's list of past issues (no date parameters) is merged into the rows held, one row per issue.
``TENALI_SOURCES_OFF=india`` turns all three tables (both exchanges) off, e.g. when a bot wall refuses
this machine.
"""

import datetime as dt

import polars as pl
import requests

from ...sources.http import PartialFetchError
from ...sources.incremental import upsert
from ...sources.india_schema import INDIA_KEYS
from ..common import source_assets, unless_recently_checked

OVERLAP = dt.timedelta(days=7)


EXCHANGES = ("NSE", "BSE")  # announcement sources, asked in this order


def _start_after(held: pl.DataFrame | None, time_column: str) -> dt.date | None:
    """A week before the newest row of `held`; None (from TENALI_START_DATE) when nothing is held."""
    if held is None or not held.height:
        return None
    last = held[time_column].max()
    return (last.date() if isinstance(last, dt.datetime) else last) - OVERLAP


def _since_last(run, time_column: str, key: list[str], fetch, what: str = "NSE") -> pl.DataFrame:
    """`fetch(start)` from a week before the newest row held (None: from TENALI_START_DATE), merged
    into the rows held before that day; fetched rows win on the same key."""
    start = _start_after(run.previous, time_column)
    run.log.info(f"asking from {start or run.sources.start_date}")
    try:
        return upsert(run.previous, fetch(start), key)
    except PartialFetchError as exc:
        raise PartialFetchError(what, exc.failures, partial=upsert(run.previous, exc.partial, key)) from exc


def _announcements(run) -> pl.DataFrame:
    """NSE's then BSE's announcements, each exchange from a week before its own newest row held (so an
    exchange added later starts from TENALI_START_DATE). A failing window, or a whole exchange refusing
    this client, fails only itself: the rows of the rest are kept and `PartialFetchError` names it."""
    frames, failures = [], {}
    for exchange in EXCHANGES:
        held = run.previous.filter(pl.col("exchange") == exchange) if run.previous is not None else None
        start = _start_after(held, "published")
        run.log.info(f"{exchange}: asking from {start or run.sources.start_date}")
        try:
            frames.append(run.sources.india(start, archive=run.archive, exchange=exchange).announcements())
        except PartialFetchError as exc:
            failures.update({f"{exchange} {k}": v for k, v in exc.failures.items()})
            if exc.partial is not None:
                frames.append(exc.partial)
        except (RuntimeError, ValueError, OSError, requests.RequestException) as exc:  # SourceBlocked, retries spent
            run.log.warning(f"{exchange} announcements failed: {exc}")
            failures[exchange] = str(exc)
    new = pl.concat(frames, how="vertical_relaxed") if frames else None
    table = upsert(run.previous, new, ["ann_id"])
    if failures:
        raise PartialFetchError("Indian exchange announcements", failures, partial=table)
    return table


announcement_defs = source_assets(
    "india_announcements", name="india_announcements", group="india", time_column="published",
    fetch=unless_recently_checked(_announcements),
    description="NSE and BSE corporate announcements (board outcomes, results, disclosures) with the exchange's "
                "summary; BSE rows carry the BSE scrip code as symbol.",
)
bhavcopy_defs = source_assets(
    "india_bhavcopy", name="india_bhavcopy", group="india", time_column="date",
    fetch=unless_recently_checked(lambda run: _since_last(run, "date", ["exchange", "symbol", "series", "date"],
                                                lambda start: run.sources.india(start, archive=run.archive).bhavcopy())),
    description="NSE daily bhavcopy: end-of-day OHLC, volume, turnover and trades per symbol and series.",
)


def _ipos(run) -> pl.DataFrame:
    """NSE's past issues merged into those held: NSE lists the issues it shows now (how far back is its
    choice), and the raw table is written whole, so an issue it no longer lists must stay. An issue
    listed again replaces its row (closed -> listed, its price and listing day), one row per issue."""
    return upsert(run.previous, run.sources.india(archive=run.archive).ipos(), INDIA_KEYS["india_ipos"],
                  sort=["issue_start", "symbol"])


ipo_defs = source_assets(
    "india_ipos", name="india_ipos", group="india", time_column="listing_date",
    fetch=unless_recently_checked(_ipos),
    description="NSE past public issues: issue price, price band, size, dates and status (main board and SME).",
)
