"""`new_edgar_filings`: launch `raw_filings` when a configured company files a new 10-K, 10-Q or 8-K.

Every tick (at most every 15 minutes) reads companies' submissions JSON (`SUBMISSIONS_URL`, one small
request per CIK) with the SEC_EDGAR_IDENTITY User-Agent, through the machine-wide 10/s `SEC_LIMITER`
(shared by processes through $TENALI_HOME). Tickers are turned into CIKs once, from `TICKERS_URL`, and
the answer is kept in the cursor; a ticker given as digits is taken as a CIK.

A tick spends at most `BUDGET_S` seconds starting requests: Dagster fails an evaluation that outlives
its gRPC timeout (DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS, 60 s by default) and then keeps the old cursor,
so a list of several hundred tickers (hundreds of requests at 10/s or less, the limiter being shared
with raw_filings and the XBRL assets) would start over at the first CIK every tick and never reach
the last ones. Instead CIKs are polled round-robin: a tick starts at the cursor's `next`, stops
starting requests once the budget is spent (a request under way may take TIMEOUT_S more), and saves
where it stopped, so every CIK is polled within ceil(CIKs / CIKs polled per tick) ticks.

Cursor (JSON, bounded by the number of configured tickers; tickers and CIKs no longer configured
are dropped)::

    {"v": 1, "ciks": {"AAPL": "0000320193", "NOPE": ""},          # "" = not in the SEC's list
     "latest": {"0000320193": {"acc": "0000320193-25-000079", "form": "10-K",
                               "at": "2025-10-31T06:01:26.000Z"}},
     "next": "0000789019"}                      # only after a tick that did not reach every CIK

`next` is the first CIK the last tick did not poll; a cursor without it, or whose `next` is no longer
configured (or is not a CIK), starts at the first configured CIK. `latest` is the newest filing of
interest per CIK (the SEC lists `filings.recent` newest first). A CIK "has something new" when its
newest accession differs from the cursor's and was not accepted earlier than it. The run_key hashes
the new (CIK, accession) pairs. Never raises: sample mode, a missing SEC_EDGAR_IDENTITY, HTTP errors
all end in a SkipReason that names the cause; companies that could be read still count, and a failed
CIK is asked again on its next turn.

A 403 or 429 (`EdgarPollBlocked`) stops the tick at once: the SEC's fair-access policy answers a refused
User-Agent or a rate over 10/s with a block of about 10 minutes, and every further request made
during it is refused too and extends it. So the tick starts no more requests, keeps what it learned
from the CIKs read before, and saves `next` = the refused CIK (polled first next tick). Other errors
(a timeout, a 5xx, one bad body) concern that CIK only: the tick goes on with the others.

`TICKERS_URL` and `SUBMISSIONS_URL` are module constants so tests can point them at 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import dagster as dg

from ...resources import SourcesResource
from ..common import polling_sensor

TICKERS_URL = "https://www.sec.gov/files/company_tickers.json"
SUBMISSIONS_URL = "https://data.sec.gov/submissions/CIK{cik}.json"
FORMS = ("10-K", "10-Q", "8-K")
TIMEOUT_S = 10.0
IDENTITY_VAR = "SEC_EDGAR_IDENTITY"
# Seconds a tick may spend starting requests: under Dagster's 60 s sensor timeout with room for the
# request under way (TIMEOUT_S) and the sensor's own start-up.
BUDGET_S = 40.0


class EdgarPollError(Exception):
    """A poll of EDGAR failed (network, HTTP status, a body that is not JSON or Atom): the tick skips, naming it."""


class EdgarPollBlocked(EdgarPollError):
    """The SEC answered 403 or 429: every further request extends its block, so the tick stops asking."""


def load_cursor(raw: str | None) -> dict:
    try:
        cursor = json.loads(raw) if raw else {}
    except ValueError:
        cursor = {}
    if (not isinstance(cursor, dict) or cursor.get("v") != 1 or not isinstance(cursor.get("ciks"), dict)
            or not isinstance(cursor.get("latest"), dict)):
        return {"v": 1, "ciks": {}, "latest": {}}
    # A cursor set by hand in the UI may hold anything: malformed entries are dropped (looked up or polled
    # afresh) rather than failing every tick or polling a CIK that is not one.
    ciks = {t: c for t, c in cursor["ciks"].items() if isinstance(c, str) and (c == "" or c.isdigit())}
    latest = {c: v for c, v in cursor["latest"].items()
              if isinstance(v, dict) and all(isinstance(v.get(k), str) for k in ("acc", "form", "at"))}
    out = {"v": 1, "ciks": ciks, "latest": latest}
    if isinstance(cursor.get("next"), str) and cursor["next"].isdigit():
        out["next"] = cursor["next"]
    return out


def sec_session(identity: str):
    from ...sources.http import SEC_LIMITER, rate_limited_session

    session = rate_limited_session(SEC_LIMITER)
    session.headers["User-Agent"] = identity
    return session


def sec_get(session, url: str, what: str):
    """GET `url` from the SEC; `EdgarPollError` naming `what` and the cause on any failure."""
    import requests

    try:
        resp = session.get(url, timeout=TIMEOUT_S)
    except requests.RequestException as exc:  # not only ConnectionError/Timeout: a broken body, redirects, ...
        raise EdgarPollError(f"{what}: could not read {url} ({type(exc).__name__})") from exc
    if resp.status_code == 403:
        raise EdgarPollBlocked(f"{what}: SEC answered HTTP 403 Forbidden: it refuses this User-Agent or blocks this "
                           f"address for a while (about 10 minutes) after too many requests; set {IDENTITY_VAR} to "
                           "'Name email@domain' (a real contact) and keep other SEC clients on this address under "
                           "10 requests/s")
    if resp.status_code == 429:
        raise EdgarPollBlocked(f"{what}: SEC answered HTTP 429 Too Many Requests: over the SEC's rate limit (10 "
                           "requests/s from this address, other SEC clients included); polling resumes next tick")
    if resp.status_code >= 400:
        raise EdgarPollError(f"{what}: SEC answered HTTP {resp.status_code} {resp.reason}")
    return resp


def _get_json(session, url: str, what: str):
    resp = sec_get(session, url, what)
    try:
        return resp.json()
    except ValueError as exc:
        raise EdgarPollError(f"{what}: {url} did not return JSON") from exc


def newest_of_interest(submissions: dict, forms=FORMS) -> dict | None:
    """{"acc", "form", "at"} of the newest filing in `forms` in a submissions JSON, or None."""
    recent = (submissions.get("filings") or {}).get("recent") or {}
    accs, kinds = recent.get("accessionNumber") or [], recent.get("form") or []
    accepted = recent.get("acceptanceDateTime") or []
    best = None
    for i, (acc, form) in enumerate(zip(accs, kinds)):
        if form not in forms:
            continue
        at = accepted[i] if i < len(accepted) else ""
        # Newest first in the SEC's order; a later acceptance time further down wins (ISO strings sort).
        if best is None or (at or "") > best["at"]:
            best = {"acc": acc, "form": form, "at": at or ""}
    return best


def _is_newer(new: dict, old: dict | None) -> bool:
    if not old:
        return True
    if new["acc"] == old.get("acc"):
        return False
    return not (new["at"] and old.get("at") and new["at"] < old["at"])


def evaluate(sources: SourcesResource, cursor_raw: str | None, log=None, env=None, buckets: int = 1,
             budget_s: float | None = None, clock=time.monotonic):
    """(RunRequest(s) or SkipReason, new cursor or None); pure apart from the SEC requests.

    With `buckets` > 1 (TENALI_INSTRUMENT_BUCKETS), one RunRequest per bucket that holds a company
    with a new filing, for that partition of raw_filings only. No request starts once `budget_s`
    (default BUDGET_S) seconds of `clock` have passed since the call: the rest wait for the next tick."""
    env = os.environ if env is None else env
    budget_s = BUDGET_S if budget_s is None else budget_s
    started = clock()
    if sources.is_sample:
        return dg.SkipReason("sources are in sample mode: sample filings never change, nothing to poll"), None
    identity = (env.get(IDENTITY_VAR) or "").strip()
    if not identity:
        return dg.SkipReason(f"{IDENTITY_VAR} is not set: the SEC requires a User-Agent naming you "
                             "('Your Name you@example.com'); set it to poll EDGAR"), None
    from ...sources.live.filings import parse_identity

    try:
        parse_identity(identity)
    except ValueError as exc:
        return dg.SkipReason(str(exc)), None
    companies = list(dict.fromkeys(str(t).strip().upper() for t in sources.tickers if str(t).strip()))
    if not companies:
        return dg.SkipReason("no tickers configured (SourcesResource.tickers is empty)"), None

    cursor = load_cursor(cursor_raw)
    ciks = {t: c for t, c in cursor["ciks"].items() if t in companies}
    session = sec_session(identity)
    errors: list[str] = []
    blocked: EdgarPollBlocked | None = None  # a 403/429: no request starts after it

    for t in companies:
        if t.isdigit():
            ciks[t] = t.zfill(10)
    missing = [t for t in companies if t not in ciks]
    if missing:
        try:
            listing = _get_json(session, TICKERS_URL, "SEC ticker list")
            by_ticker = {str(v.get("ticker", "")).upper(): str(v.get("cik_str", "")).zfill(10)
                         for v in (listing.values() if isinstance(listing, dict) else listing)}
            for t in missing:
                ciks[t] = by_ticker.get(t, "")
                if not ciks[t] and log is not None:
                    log.warning(f"ticker {t} is not in the SEC's ticker list; it will not be polled")
        except EdgarPollBlocked as exc:
            blocked = exc
        except EdgarPollError as exc:
            errors.append(str(exc))

    wanted = list(dict.fromkeys(c for t in companies if (c := ciks.get(t))))
    latest = {c: v for c, v in cursor["latest"].items() if c in wanted}
    new: list[tuple[str, dict]] = []
    # round-robin from where the last tick stopped; the first CIK when that one is gone or unknown
    first = wanted.index(cursor["next"]) if cursor.get("next") in wanted else 0
    turn = wanted[first:] + wanted[:first]
    polled = 0
    for cik in turn:
        if blocked is not None or clock() - started >= budget_s:
            break
        try:
            data = _get_json(session, SUBMISSIONS_URL.format(cik=cik), f"SEC submissions of CIK {cik}")
        except EdgarPollBlocked as exc:
            blocked = exc  # this CIK was not read: it stays `next`, first in line next tick
            break
        except EdgarPollError as exc:
            polled += 1
            errors.append(str(exc))
            continue
        polled += 1
        top = newest_of_interest(data)
        if top is None:
            continue
        if _is_newer(top, latest.get(cik)):
            new.append((cik, top))
            latest[cik] = top
    state = {"v": 1, "ciks": ciks, "latest": latest}
    partial = ""
    if polled < len(turn):
        state["next"] = turn[polled]
        within = "before the SEC refused a request" if blocked is not None else f"within the {budget_s:g} s tick budget"
        partial = f"polled {polled} of {len(turn)} CIKs {within}; the rest next tick, from CIK {turn[polled]}"
        if log is not None:
            log.info(partial)
    new_cursor = json.dumps(state, sort_keys=True, separators=(",", ":"))

    if blocked is not None:  # first: it is the cause of everything not polled, and it names the fix
        errors.insert(0, f"{blocked}; no further SEC requests this tick (each would extend the block)")
    failed = "; ".join(errors)
    if failed and log is not None:
        log.warning(f"EDGAR polling failed in part: {failed}")
    if not new:
        if failed:
            return dg.SkipReason(f"EDGAR poll failed: {failed}" + (f" ({partial})" if partial else "")), new_cursor
        if partial:
            return dg.SkipReason(f"no new {'/'.join(FORMS)} filings; {partial}"), new_cursor
        return dg.SkipReason(f"no new {'/'.join(FORMS)} filings for {len(wanted)} CIK(s)"), new_cursor
    run_key = "edgar-" + hashlib.sha1("\n".join(sorted(f"{c}:{v['acc']}" for c, v in new)).encode()).hexdigest()[:20]
    if log is not None:
        log.info("new filings: " + ", ".join(f"CIK {c} {v['form']} {v['acc']}" for c, v in new))
    tags = {"tenali/trigger": "new_edgar_filings", "tenali/new_filings": str(len(new))}
    if buckets <= 1:
        return dg.RunRequest(run_key=run_key, tags=tags), new_cursor
    from ...buckets import Bucket, bucket_of

    # every configured ticker of a CIK (GOOG and GOOGL, or a ticker and its CIK as digits): raw_filings
    # buckets by ticker, so each of them holds the company's filings
    tickers_of: dict[str, list[str]] = {}
    for t, c in ciks.items():
        if c:
            tickers_of.setdefault(c, []).append(t)
    keys = sorted({Bucket(bucket_of(t, buckets), buckets).key for c, _ in new for t in tickers_of.get(c, [c])})
    return [dg.RunRequest(run_key=f"{run_key}-{k}", partition_key=k, tags=tags) for k in keys], new_cursor


def build_new_edgar_filings_sensor(
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED, buckets: int = 1, universe: bool = False,
) -> dg.SensorDefinition:
    """The per-company poll for a ticker list; EDGAR's current-filings feed for TENALI_TICKERS=universe
    (current_feed.py: one request per form and page instead of one per company)."""
    if universe:
        from .current_feed import build_universe_sensor

        return build_universe_sensor(default_status, buckets)
    return polling_sensor(
        "new_edgar_filings", "raw_filings", default_status=default_status,
        evaluate=lambda sources, cursor, log: evaluate(sources, cursor, log, buckets=buckets),
        description="Polls SEC submissions JSON of the configured tickers and materialises raw_filings "
                    "when one has a newer 10-K, 10-Q or 8-K.",
    )


new_edgar_filings = build_new_edgar_filings_sensor()
