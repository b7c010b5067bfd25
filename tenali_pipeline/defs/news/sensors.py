"""`new_feed_entries`: launch `raw_news` when a configured feed lists entries not seen before.

Every tick (at most every 15 minutes) makes one conditional GET per feed through the live
`RssNewsClient` (If-None-Match / If-Modified-Since from the cursor), so an unchanged feed costs a
304 and no parsing. The sensor's HTTP cache is its own: it lives in the cursor, not in the lake
state that `raw_news` keeps, so a 304 here never hides entries from the asset.

Cursor (JSON, bounded: at most `MAX_SEEN` ids per configured feed, feeds no longer configured are
dropped)::

    {"v": 1, "feeds": {"<feed url>": {"etag": "...", "modified": "...",
                                      "seen": ["<12 hex of sha1(entry id)>", ...]}}}

`seen` is newest first. A RunRequest is made only when some feed lists an entry whose hash is not
in `seen`; its run_key is a hash of those new ids, so a tick re-evaluated with the same cursor never
launches twice for the same entries. Sample mode, no feeds, or every feed failing: a SkipReason.
"""

from __future__ import annotations

import hashlib
import json

import dagster as dg

from ...resources import SourcesResource
from ..common import polling_sensor

MAX_SEEN = 200  # entry-id hashes kept per feed; feeds list their latest few dozen entries
TIMEOUT_S = 10.0


def _h(value: str) -> str:
    return hashlib.sha1(value.encode("utf-8")).hexdigest()[:12]


def load_cursor(raw: str | None) -> dict:
    try:
        cursor = json.loads(raw) if raw else {}
    except ValueError:
        cursor = {}
    if not isinstance(cursor, dict) or cursor.get("v") != 1 or not isinstance(cursor.get("feeds"), dict):
        return {"v": 1, "feeds": {}}
    # A cursor set by hand in the UI may hold anything: a malformed feed entry is dropped (that feed starts
    # over) rather than failing every tick, or sending a bad ETag every tick.
    feeds = {}
    for url, entry in cursor["feeds"].items():
        if isinstance(entry, dict) and isinstance(entry.get("seen", []), list):
            feeds[url] = {"seen": [h for h in entry.get("seen", []) if isinstance(h, str)],
                          **{k: entry[k] for k in ("etag", "modified") if isinstance(entry.get(k), str)}}
    return {"v": 1, "feeds": feeds}


def evaluate(sources: SourcesResource, cursor_raw: str | None, log=None):
    """(RunRequest or SkipReason, new cursor or None); pure apart from the feed requests."""
    if sources.is_sample:
        return dg.SkipReason("sources are in sample mode: sample news never changes, nothing to poll"), None
    feeds = list(dict.fromkeys(sources.news_feeds))
    if not feeds:
        return dg.SkipReason("no news feeds configured (SourcesResource.news_feeds is empty)"), None

    from ...sources.live.news import RssNewsClient

    cursor = load_cursor(cursor_raw)
    known = {f: v for f, v in cursor["feeds"].items() if f in feeds}
    state = {f: {k: v[k] for k in ("etag", "modified") if v.get(k)} for f, v in known.items()}
    client = RssNewsClient(feeds, timeout=TIMEOUT_S, state=state, attempts=1)
    try:
        frame = client.fetch()
    except Exception as exc:  # every feed failed: never raise from a sensor tick
        return dg.SkipReason(f"every news feed failed: {exc}"), None

    # An entry listed by two feeds is returned once, under whichever feed answered 200 first this tick
    # (the client de-duplicates by id and link): it is new only if no feed has seen it.
    seen_anywhere = {h for v in known.values() for h in (v.get("seen") or [])}
    new_ids: list[str] = []
    out: dict[str, dict] = {}
    for feed in feeds:
        old = known.get(feed, {})
        seen = list(old.get("seen", []))
        if feed in client.errors:
            out[feed] = old if old else {"seen": []}
            continue
        rows = frame.filter(frame["feed"] == feed).sort("published", descending=True).head(MAX_SEEN)
        hashes = [_h(i) for i in rows["entry_id"].to_list()]
        fresh = [h for h in hashes if h not in seen_anywhere]
        new_ids += [f"{feed}\n{h}" for h in fresh]
        now = set(hashes)
        merged = hashes + [h for h in seen if h not in now]
        entry = {"seen": merged[:MAX_SEEN]}
        entry.update(client.state.get(feed) or {k: old[k] for k in ("etag", "modified") if old.get(k)})
        out[feed] = entry
    new_cursor = json.dumps({"v": 1, "feeds": out}, sort_keys=True, separators=(",", ":"))

    errors = "; ".join(f"{f}: {e}" for f, e in client.errors.items())
    if errors and log is not None:
        log.warning(f"news feeds failed this tick: {errors}")
    if not new_ids:
        why = "no new entries in %d feed(s)" % (len(feeds) - len(client.errors))
        return dg.SkipReason(why + (f"; failed: {errors}" if errors else "")), new_cursor
    run_key = "news-" + hashlib.sha1("\n".join(sorted(new_ids)).encode()).hexdigest()[:20]
    changed = sorted({i.split("\n", 1)[0] for i in new_ids})
    tags = {"tenali/trigger": "new_feed_entries", "tenali/new_entries": str(len(new_ids))}
    if log is not None:
        log.info(f"{len(new_ids)} new entries in {', '.join(changed)}")
    return dg.RunRequest(run_key=run_key, tags=tags), new_cursor


def build_new_feed_entries_sensor(
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED,
) -> dg.SensorDefinition:
    return polling_sensor(
        "new_feed_entries", "raw_news", evaluate=evaluate, default_status=default_status,
        description="Polls the configured news feeds (conditional GET, HTTP cache in the cursor) and "
                    "materialises raw_news when one lists entries not seen before.",
    )


new_feed_entries = build_new_feed_entries_sensor()
