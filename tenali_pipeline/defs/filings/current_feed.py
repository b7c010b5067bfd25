"""`new_edgar_filings` for TENALI_TICKERS=universe: thousands of filers, polled through EDGAR's feed of
current filings rather than one submissions request per company.

Why: the per-company poll (sensors.py) costs one request per CIK per tick; at 10,000 filers that is
17 minutes of the SEC's 10 requests per second, longer than the 15-minute tick. EDGAR's "current
events" Atom feed lists the newest filings of a form across all filers, 100 per page, newest first:
one to a few requests per form per tick, whatever the universe's size.

Each tick reads the feed of each form (`FEED_URL`), page after page until it reaches an accession
seen on the previous tick (at most `MAX_PAGES` pages; a longer gap is logged and the sensor moves on),
keeps the entries whose CIK is an SEC filer of the `universe` asset, and asks for the instrument
buckets that hold them (one RunRequest per bucket, or one for raw_filings when unpartitioned).

A 403 or 429 (`EdgarPollBlocked`) stops the tick at once, as in sensors.py: the SEC blocks the address for
about 10 minutes and every further request extends the block. The filings found before it still count;
each form not read in full keeps its cursor, so the next tick reads what this one missed. Other errors
concern that form only: the tick goes on with the next.

Cursor (JSON): ``{"v": 2, "seen": {"10-K": [accession, ...], ...}}``: the accessions on the first
page of each form at the last tick (at most 100 per form).
"""

import hashlib
import json
import os

import dagster as dg

from ...resources import LakeResource, SourcesResource
from .sensors import EdgarPollBlocked, EdgarPollError, sec_get, sec_session

FEED_URL = ("https://www.sec.gov/cgi-bin/browse-edgar?action=getcurrent&type={form}&company=&dateb=&owner=include"
            "&start={start}&count=100&output=atom")
FORMS = ("10-K", "10-Q", "8-K")
MAX_PAGES = 10


def parse_current_feed(body: bytes) -> list[dict]:
    """[{"accession", "cik", "form", "company", "updated"}] of an EDGAR current-events Atom page, newest first."""
    import feedparser

    parsed = feedparser.parse(body)
    if parsed.bozo and not parsed.entries:
        raise EdgarPollError(f"EDGAR current filings feed is not Atom ({type(parsed.bozo_exception).__name__})")
    out = []
    for e in parsed.entries:
        entry_id = e.get("id", "")
        accession = entry_id.rsplit("accession-number=", 1)[-1] if "accession-number=" in entry_id else ""
        title = e.get("title", "")  # "8-K - Apple Inc. (0000320193) (Filer)"
        cik = ""
        if "(" in title:
            parts = [p.split(")")[0] for p in title.split("(")[1:]]
            cik = next((p for p in parts if p.isdigit()), "")
        tags = e.get("tags") or []
        form = tags[0].get("term", "") if tags else (title.split(" - ", 1)[0].strip() if " - " in title else "")
        company = title.split(" - ", 1)[1].rsplit(" (", 2)[0] if " - " in title else ""
        if accession and cik:
            out.append({"accession": accession, "cik": cik.zfill(10), "form": form, "company": company,
                        "updated": e.get("updated", "")})
    return out


def _page(session, form: str, start: int) -> list[dict]:
    resp = sec_get(session, FEED_URL.format(form=form, start=start), f"EDGAR current {form} filings")
    return parse_current_feed(resp.content)


def load_seen(raw: str | None) -> dict[str, list[str]]:
    """The cursor's accessions per form; {} (every form at its baseline) for a cursor of another sensor
    or version, or one set by hand that is not this shape (a form with a malformed list starts over)."""
    try:
        cursor = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    seen = cursor.get("seen") if isinstance(cursor, dict) and cursor.get("v") == 2 else None
    if not isinstance(seen, dict):
        return {}
    return {form: accs for form, accs in seen.items()
            if isinstance(accs, list) and all(isinstance(a, str) for a in accs)}


def evaluate_universe(sources, cursor_raw: str | None, companies: dict[str, str], log=None, env=None,
                      buckets: int = 1):
    """(RunRequest(s) or SkipReason, new cursor or None) for the universe's filers (`companies`:
    symbol -> CIK); pure apart from the SEC requests."""
    env = os.environ if env is None else env
    if sources.is_sample:
        return dg.SkipReason("sources are in sample mode: sample filings never change, nothing to poll"), None
    identity = (env.get("SEC_EDGAR_IDENTITY") or "").strip()
    if not identity:
        return dg.SkipReason("SEC_EDGAR_IDENTITY is not set: the SEC requires a User-Agent naming you "
                             "('Your Name you@example.com'); set it to poll EDGAR"), None
    if not companies:
        return dg.SkipReason("the universe holds no SEC filers yet: materialise `universe` first"), None
    seen = load_seen(cursor_raw)
    session = sec_session(identity)
    symbol_of = {cik: symbol for symbol, cik in companies.items()}
    new, first_pages, errors = [], {}, []
    blocked: EdgarPollBlocked | None = None  # a 403/429: no request starts after it
    unread: list[str] = []
    for form in FORMS:
        known = set(seen.get(form, []))
        baseline = form not in seen  # the first tick of this form; an empty list is an empty first page
        if blocked is None:  # after a block no request starts: the forms left keep their cursors
            try:
                for page in range(MAX_PAGES):
                    entries = _page(session, form, page * 100)
                    if page == 0:
                        first_pages[form] = [e["accession"] for e in entries]
                    fresh = [e for e in entries if e["accession"] not in known]
                    new += [e for e in fresh if e["form"] == form and e["cik"] in symbol_of]
                    if baseline or len(fresh) < len(entries) or len(entries) < 100:
                        break  # reached last tick's filings (or the first tick: one page is the baseline)
                else:
                    if log is not None:
                        log.warning(f"more than {MAX_PAGES * 100} new {form} filings since the last tick: older "
                                    "ones are left to the end-of-day run")
            except EdgarPollBlocked as exc:
                blocked = exc
            except EdgarPollError as exc:
                errors.append(str(exc))
            else:
                continue
        if blocked is not None:
            unread.append(form)
        first_pages.pop(form, None)  # a form not read in full: its cursor as it was
        if form in seen:  # unchanged; a form never read stays absent, so its first read is the baseline
            first_pages[form] = seen[form]
    new_cursor = json.dumps({"v": 2, "seen": first_pages}, sort_keys=True, separators=(",", ":"))
    if blocked is not None:  # first: it is the cause of everything not read, and it names the fix
        errors.insert(0, f"{blocked}; no further SEC requests this tick (each would extend the block): "
                         f"{', '.join(unread)} read next tick")
    if errors and log is not None:
        log.warning("EDGAR feed failed in part: " + "; ".join(errors))
    if not new:
        why = f"EDGAR feed failed: {'; '.join(errors)}" if errors else f"no new {'/'.join(FORMS)} filings by universe filers"
        return dg.SkipReason(why), new_cursor
    run_key = "edgar-" + hashlib.sha1("\n".join(sorted(e["accession"] for e in new)).encode()).hexdigest()[:20]
    if log is not None:
        log.info("new filings: " + ", ".join(f"{symbol_of[e['cik']]} {e['form']} {e['accession']}" for e in new[:50]))
    tags = {"tenali/trigger": "new_edgar_filings", "tenali/new_filings": str(len(new))}
    if buckets <= 1:
        return dg.RunRequest(run_key=run_key, tags=tags), new_cursor
    from ...buckets import Bucket, bucket_of

    keys = sorted({Bucket(bucket_of(symbol_of[e["cik"]], buckets), buckets).key for e in new})
    return [dg.RunRequest(run_key=f"{run_key}-{k}", partition_key=k, tags=tags) for k in keys], new_cursor


def build_universe_sensor(default_status: dg.DefaultSensorStatus, buckets: int) -> dg.SensorDefinition:
    from ..universe.history import UNIVERSE_KEY, cik_map

    @dg.sensor(name="new_edgar_filings", target=dg.AssetSelection.assets("raw_filings"), minimum_interval_seconds=900,
               default_status=default_status,
               description="Reads EDGAR's current-filings feed (10-K, 10-Q, 8-K) and materialises the raw_filings "
                           "buckets of universe filers that filed.")
    def new_edgar_filings(context: dg.SensorEvaluationContext, sources: SourcesResource, lake: LakeResource):
        store = lake.lake()
        companies = cik_map(store.read_parquet(UNIVERSE_KEY)) if store.exists(UNIVERSE_KEY) else {}
        result, cursor = evaluate_universe(sources, context.cursor, companies, context.log, buckets=buckets)
        if cursor is not None and cursor != context.cursor:
            context.update_cursor(cursor)
        return result

    return new_edgar_filings
