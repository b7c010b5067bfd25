"""The new-data sensors, tick after tick, against feeds and an EDGAR stand-in on 127.0.0.1.

`new_feed_entries` (news) and `new_edgar_filings` (filings) are evaluated with
`dg.build_sensor_context(cursor=..., resources=...)`, the cursor of one tick fed to the next, the
way the daemon does it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import sys
from pathlib import Path

import dagster as dg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sources"))
from local_http import LocalServer  # noqa: E402

from tenali_pipeline.defs.filings import sensors as edgar  # noqa: E402
from tenali_pipeline.defs.news import sensors as news  # noqa: E402
from tenali_pipeline.defs.schedules import build_schedules_and_sensors  # noqa: E402
from tenali_pipeline.resources import SourcesResource  # noqa: E402

pytest.importorskip("feedparser")

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
ATOM = REALDATA / "rss" / "sec_edgar_getcurrent_atom_2025-12-12.xml"
AAPL_SUBMISSIONS = REALDATA / "sec" / "CIK0000320193.json"
IDENTITY = "Tenali Tests tests@example.com"


def tick(sensor, cursor, sources):
    ctx = dg.build_sensor_context(cursor=cursor, resources={"sources": sources})
    result = sensor(ctx)
    return result, ctx.cursor


def rss(items: list[tuple[str, str]]) -> bytes:
    body = "".join(
        f"<item><title>{title}</title><link>https://news.example/{guid}</link><guid isPermaLink=\"false\">{guid}</guid>"
        f"<pubDate>Fri, 12 Dec 2025 09:{i % 60:02d}:00 +0000</pubDate></item>"
        for i, (guid, title) in enumerate(items)
    )
    return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Wire</title>'
            f"<link>https://news.example/</link><description>d</description>{body}</channel></rss>").encode()


class Feeds:
    """Paths -> bodies; ETag = hash of the body, 304 on a matching If-None-Match (unless `etags` is off)."""

    def __init__(self, routes: dict[str, bytes], etags: bool = True):
        self.routes, self.etags = routes, etags
        self.hits: list[tuple[str, int]] = []
        self.http = LocalServer(self._respond)

    def url(self, path: str) -> str:
        return self.http.base + path

    def _respond(self, req):
        body = self.routes.get(req.path)
        if body is None:
            self.hits.append((req.path, 404))
            return 404, {"Content-Type": "text/plain"}, b"not found"
        headers = {"Content-Type": "application/rss+xml"}
        if self.etags:
            headers["ETag"] = '"%s"' % hashlib.sha1(body).hexdigest()[:16]
            if req.headers.get("If-None-Match") == headers["ETag"]:
                self.hits.append((req.path, 304))
                return 304, headers, b""
        self.hits.append((req.path, 200))
        return 200, headers, body


@pytest.fixture
def feeds():
    server = Feeds({"/wire.rss": rss([("w-1", "First"), ("w-2", "Second")])})
    yield server
    server.http.close()


def live_news(*urls: str) -> SourcesResource:
    return SourcesResource(mode="live", news_feeds=list(urls))


# --- news --------------------------------------------------------------------------------------


def test_feed_ticks_request_once_per_new_entries(feeds):
    sources = live_news(feeds.url("/wire.rss"))
    first, cursor = tick(news.new_feed_entries, None, sources)
    assert isinstance(first, dg.RunRequest) and first.run_key.startswith("news-")
    state = json.loads(cursor)["feeds"][feeds.url("/wire.rss")]
    assert state["etag"] and len(state["seen"]) == 2

    second, cursor2 = tick(news.new_feed_entries, cursor, sources)
    assert isinstance(second, dg.SkipReason) and "no new entries" in second.skip_message
    assert feeds.hits[-1] == ("/wire.rss", 304)  # conditional GET from the cursor's ETag
    assert cursor2 == cursor

    feeds.routes["/wire.rss"] = rss([("w-3", "Third"), ("w-1", "First"), ("w-2", "Second")])
    third, cursor3 = tick(news.new_feed_entries, cursor2, sources)
    assert isinstance(third, dg.RunRequest) and third.run_key != first.run_key
    # the same tick evaluated twice (same cursor, same feed) asks for the same run: launched once
    again, _ = tick(news.new_feed_entries, cursor2, sources)
    assert again.run_key == third.run_key
    assert isinstance(tick(news.new_feed_entries, cursor3, sources)[0], dg.SkipReason)


def test_feed_without_etag_skips_on_same_ids():
    server = Feeds({"/plain.rss": rss([("p-1", "One")])}, etags=False)
    try:
        sources = live_news(server.url("/plain.rss"))
        first, cursor = tick(news.new_feed_entries, None, sources)
        assert isinstance(first, dg.RunRequest)
        second, _ = tick(news.new_feed_entries, cursor, sources)
        assert isinstance(second, dg.SkipReason)
        assert [s for _, s in server.hits] == [200, 200]
    finally:
        server.http.close()


def test_failing_feeds_never_raise(feeds):
    sources = live_news(feeds.url("/wire.rss"), feeds.url("/gone.rss"))
    first, cursor = tick(news.new_feed_entries, None, sources)
    assert isinstance(first, dg.RunRequest)  # the good feed still counts
    skip, _ = tick(news.new_feed_entries, cursor, sources)
    assert isinstance(skip, dg.SkipReason) and "404" in skip.skip_message
    only_bad, _ = tick(news.new_feed_entries, None, live_news(feeds.url("/gone.rss")))
    assert isinstance(only_bad, dg.SkipReason) and "every news feed failed" in only_bad.skip_message


def test_news_cursor_is_bounded_and_forgets_unconfigured_feeds(feeds):
    many = [(f"m-{i}", f"Story {i}") for i in range(news.MAX_SEEN + 60)]
    feeds.routes["/many.rss"] = rss(many)
    _, cursor = tick(news.new_feed_entries, None, live_news(feeds.url("/many.rss"), feeds.url("/wire.rss")))
    assert len(json.loads(cursor)["feeds"][feeds.url("/many.rss")]["seen"]) == news.MAX_SEEN
    _, cursor = tick(news.new_feed_entries, cursor, live_news(feeds.url("/wire.rss")))
    assert list(json.loads(cursor)["feeds"]) == [feeds.url("/wire.rss")]
    assert len(cursor) < 2_000


def test_an_entry_listed_by_two_feeds_is_not_new_when_the_other_feed_answers_304(feeds):
    """The client returns a shared entry once, under the first feed that answered 200; when that feed
    is unchanged (304), the other feed lists it: already seen, no second run for it."""
    feeds.routes["/a.rss"] = rss([("shared-1", "Both wires carry it"), ("a-1", "Only A")])
    plain = Feeds({"/b.rss": rss([("shared-1", "Both wires carry it"), ("b-1", "Only B")])}, etags=False)
    try:
        sources = live_news(feeds.url("/a.rss"), plain.url("/b.rss"))
        first, cursor = tick(news.new_feed_entries, None, sources)
        assert isinstance(first, dg.RunRequest)
        second, _ = tick(news.new_feed_entries, cursor, sources)  # A: 304, B: 200 with the shared entry
        assert ("/a.rss", 304) in feeds.hits
        assert isinstance(second, dg.SkipReason), second
    finally:
        plain.http.close()


def test_news_sample_mode_and_garbage_cursor(feeds):
    skip, cursor = tick(news.new_feed_entries, "x", SourcesResource(mode="sample", news_feeds=[feeds.url("/wire.rss")]))
    assert isinstance(skip, dg.SkipReason) and "sample" in skip.skip_message and not feeds.hits
    assert isinstance(tick(news.new_feed_entries, "not json", live_news(feeds.url("/wire.rss")))[0], dg.RunRequest)
    skip, _ = tick(news.new_feed_entries, None, live_news())
    assert isinstance(skip, dg.SkipReason) and "no news feeds" in skip.skip_message


def test_real_sec_atom_feed():
    if not ATOM.exists():
        pytest.skip(f"real capture {ATOM} not present")
    server = Feeds({"/sec.xml": ATOM.read_bytes()})
    try:
        sources = live_news(server.url("/sec.xml"))
        first, cursor = tick(news.new_feed_entries, None, sources)
        assert isinstance(first, dg.RunRequest)
        assert 0 < len(json.loads(cursor)["feeds"][server.url("/sec.xml")]["seen"]) <= news.MAX_SEEN
        assert isinstance(tick(news.new_feed_entries, cursor, sources)[0], dg.SkipReason)
        assert server.hits[-1][1] == 304
    finally:
        server.http.close()


# --- EDGAR -------------------------------------------------------------------------------------


def submissions(filings: list[tuple[str, str, str]]) -> dict:
    """(accession, form, acceptance time) newest first, as data.sec.gov lists `filings.recent`."""
    return {"cik": "320193", "name": "Apple Inc.", "filings": {"recent": {
        "accessionNumber": [a for a, _, _ in filings], "form": [f for _, f, _ in filings],
        "acceptanceDateTime": [t for _, _, t in filings]}, "files": []}}


AAPL = [("0000320193-25-000079", "10-K", "2025-10-31T06:01:26.000Z"),
        ("0001140361-25-040000", "4", "2025-10-20T18:00:00.000Z"),
        ("0000320193-25-000073", "10-Q", "2025-08-01T06:01:00.000Z")]


class Edgar:
    def __init__(self, monkeypatch):
        self.tickers = {"0": {"cik_str": 320193, "ticker": "AAPL", "title": "Apple Inc."},
                        "1": {"cik_str": 789019, "ticker": "MSFT", "title": "MICROSOFT CORP"}}
        self.subs = {"0000320193": submissions(AAPL), "0000789019": submissions([])}
        self.fail: dict[str, int] = {}
        self.hits: list[str] = []
        self.agents: set[str] = set()
        self.http = LocalServer(self._respond)
        monkeypatch.setattr(edgar, "TICKERS_URL", self.http.base + "/files/company_tickers.json")
        monkeypatch.setattr(edgar, "SUBMISSIONS_URL", self.http.base + "/submissions/CIK{cik}.json")
        monkeypatch.setenv("SEC_EDGAR_IDENTITY", IDENTITY)

    def _respond(self, req):
        self.hits.append(req.path)
        self.agents.add(req.headers.get("User-Agent"))
        for prefix, status in self.fail.items():
            if req.path.startswith(prefix):
                return status, {"Content-Type": "text/html"}, b"<h1>no</h1>"
        if req.path == "/files/company_tickers.json":
            data = self.tickers
        elif req.path.startswith("/submissions/CIK"):
            data = self.subs.get(req.path[len("/submissions/CIK"):-len(".json")])
            if data is None:
                return 404, {}, b"{}"
        else:
            return 404, {}, b""
        return 200, {"Content-Type": "application/json"}, json.dumps(data).encode()


@pytest.fixture
def sec(monkeypatch):
    server = Edgar(monkeypatch)
    yield server
    server.http.close()


def live_filings(*tickers: str) -> SourcesResource:
    return SourcesResource(mode="live", tickers=list(tickers))


def test_edgar_ticks_request_on_new_accessions(sec):
    sources = live_filings("AAPL", "MSFT")
    first, cursor = tick(edgar.new_edgar_filings, None, sources)
    assert isinstance(first, dg.RunRequest) and first.run_key.startswith("edgar-")
    state = json.loads(cursor)
    assert state["ciks"] == {"AAPL": "0000320193", "MSFT": "0000789019"}
    assert state["latest"] == {"0000320193": {"acc": "0000320193-25-000079", "form": "10-K", "at": AAPL[0][2]}}
    assert sec.agents == {IDENTITY}

    sec.hits.clear()
    second, cursor2 = tick(edgar.new_edgar_filings, cursor, sources)
    assert isinstance(second, dg.SkipReason) and "no new" in second.skip_message
    assert "/files/company_tickers.json" not in sec.hits  # the CIK map lives in the cursor

    sec.subs["0000320193"] = submissions([("0001140361-25-050000", "4", "2025-11-02T18:00:00.000Z"), *AAPL])
    assert isinstance(tick(edgar.new_edgar_filings, cursor2, sources)[0], dg.SkipReason)  # form 4: not of interest

    sec.subs["0000320193"] = submissions([("0000320193-25-000081", "8-K", "2025-11-03T16:30:00.000Z"), *AAPL])
    third, cursor3 = tick(edgar.new_edgar_filings, cursor2, sources)
    assert isinstance(third, dg.RunRequest) and third.run_key != first.run_key
    assert json.loads(cursor3)["latest"]["0000320193"]["acc"] == "0000320193-25-000081"
    assert tick(edgar.new_edgar_filings, cursor2, sources)[0].run_key == third.run_key  # same tick, same key
    assert isinstance(tick(edgar.new_edgar_filings, cursor3, sources)[0], dg.SkipReason)


@pytest.mark.parametrize("status", [403, 503])
def test_edgar_http_errors_skip_naming_the_cause(sec, status):
    sources = live_filings("AAPL")
    _, cursor = tick(edgar.new_edgar_filings, None, sources)
    sec.fail["/submissions/"] = status
    skip, after = tick(edgar.new_edgar_filings, cursor, sources)
    assert isinstance(skip, dg.SkipReason) and f"HTTP {status}" in skip.skip_message
    assert json.loads(after)["latest"] == json.loads(cursor)["latest"]  # nothing forgotten
    sec.fail.clear()
    sec.fail["/files/"] = status
    skip, _ = tick(edgar.new_edgar_filings, None, sources)
    assert isinstance(skip, dg.SkipReason) and "ticker list" in skip.skip_message


def test_edgar_a_broken_response_for_one_company_does_not_stop_the_others(sec, monkeypatch):
    """Any requests error (here a body cut off mid-read), not only a refused connection or a timeout,
    skips that company: the tick never raises, the others still count and it is asked again next tick."""
    import requests

    real, broken = edgar.sec_session, {"on": True}

    def session(identity):
        s = real(identity)
        get = s.get

        def flaky(url, **kwargs):
            if broken["on"] and "CIK0000789019" in url:
                raise requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead(0 bytes read)")
            return get(url, **kwargs)

        s.get = flaky
        return s

    monkeypatch.setattr(edgar, "sec_session", session)
    sec.subs["0000789019"] = submissions([("0000789019-25-000101", "10-Q", "2025-10-29T16:05:00.000Z")])
    sources = live_filings("MSFT", "AAPL")
    first, cursor = tick(edgar.new_edgar_filings, None, sources)
    assert isinstance(first, dg.RunRequest)
    assert set(json.loads(cursor)["latest"]) == {"0000320193"}  # MSFT not marked as seen
    broken["on"] = False
    second, _ = tick(edgar.new_edgar_filings, cursor, sources)
    assert isinstance(second, dg.RunRequest) and second.run_key != first.run_key


def test_edgar_without_identity_or_in_sample_mode_skips(sec, monkeypatch):
    monkeypatch.delenv("SEC_EDGAR_IDENTITY")
    skip, cursor = tick(edgar.new_edgar_filings, None, live_filings("AAPL"))
    assert isinstance(skip, dg.SkipReason) and "SEC_EDGAR_IDENTITY" in skip.skip_message and cursor is None
    monkeypatch.setenv("SEC_EDGAR_IDENTITY", "no-email")
    skip, _ = tick(edgar.new_edgar_filings, None, live_filings("AAPL"))
    assert isinstance(skip, dg.SkipReason) and "SEC_EDGAR_IDENTITY" in skip.skip_message
    monkeypatch.setenv("SEC_EDGAR_IDENTITY", IDENTITY)
    skip, _ = tick(edgar.new_edgar_filings, None, SourcesResource(mode="sample", tickers=["AAPL"]))
    assert isinstance(skip, dg.SkipReason) and "sample" in skip.skip_message
    assert sec.hits == []


def test_edgar_cursor_is_bounded_to_configured_companies(sec):
    _, cursor = tick(edgar.new_edgar_filings, None, live_filings("AAPL", "MSFT", "NOPE", "320193"))
    state = json.loads(cursor)
    assert state["ciks"]["NOPE"] == "" and state["ciks"]["320193"] == "0000320193"
    assert sec.hits.count("/submissions/CIK0000320193.json") == 1  # one CIK, polled once
    _, cursor = tick(edgar.new_edgar_filings, cursor, live_filings("MSFT"))
    assert json.loads(cursor) == {"v": 1, "ciks": {"MSFT": "0000789019"}, "latest": {}}
    assert len(cursor) < 500


def test_edgar_real_submissions_capture(sec):
    if not AAPL_SUBMISSIONS.exists():
        pytest.skip(f"real capture {AAPL_SUBMISSIONS} not present")
    real = json.loads(AAPL_SUBMISSIONS.read_text())
    sec.subs["0000320193"] = real
    recent = real["filings"]["recent"]
    newest = next(i for i, f in enumerate(recent["form"]) if f in edgar.FORMS)
    first, cursor = tick(edgar.new_edgar_filings, None, live_filings("AAPL"))
    assert isinstance(first, dg.RunRequest)
    assert json.loads(cursor)["latest"]["0000320193"]["acc"] == recent["accessionNumber"][newest]
    assert isinstance(tick(edgar.new_edgar_filings, cursor, live_filings("AAPL"))[0], dg.SkipReason)
    # a newer 10-Q than anything in the capture triggers again
    newer = copy.deepcopy(real)
    for key in newer["filings"]["recent"]:
        value = {"accessionNumber": "0000320193-99-000001", "form": "10-Q",
                 "acceptanceDateTime": "2099-01-01T00:00:00.000Z"}.get(key, "")
        newer["filings"]["recent"][key].insert(0, value)
    sec.subs["0000320193"] = newer
    assert isinstance(tick(edgar.new_edgar_filings, cursor, live_filings("AAPL"))[0], dg.RunRequest)


# --- registration ------------------------------------------------------------------------------


@pytest.mark.parametrize("profile, status", [("demo", dg.DefaultSensorStatus.STOPPED),
                                             ("local", dg.DefaultSensorStatus.RUNNING),
                                             ("prod", dg.DefaultSensorStatus.RUNNING)])
def test_sensors_registered_per_profile(profile, status):
    _, sensors, _ = build_schedules_and_sensors(profile)
    by_name = {s.name: s for s in sensors}
    for name in ("new_feed_entries", "new_edgar_filings"):
        assert by_name[name].default_status == status
        assert by_name[name].minimum_interval_seconds == 900


def test_sensors_target_their_raw_assets():
    from tenali_pipeline.definitions import defs

    for name, asset in (("new_feed_entries", "raw_news"), ("new_edgar_filings", "raw_filings")):
        job = defs.resolve_job_def(defs.resolve_sensor_def(name).job_name)
        assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {asset}


def test_edgar_with_buckets_requests_only_the_partitions_with_new_filings(sec):
    from tenali_pipeline.buckets import Bucket, bucket_of

    sensor = edgar.build_new_edgar_filings_sensor(buckets=8)
    first, _ = tick(sensor, None, live_filings("AAPL", "MSFT"))
    assert isinstance(first, list) and [r.partition_key for r in first] == [Bucket(bucket_of("AAPL", 8), 8).key]
    assert first[0].run_key.startswith("edgar-") and first[0].run_key.endswith("-" + first[0].partition_key)


def test_edgar_with_buckets_requests_the_bucket_of_every_ticker_of_a_company(sec):
    """Two configured tickers of one CIK (share classes, or a ticker and its CIK as digits) sit in their
    own buckets, each holding the company's filings: a new filing asks for both."""
    from tenali_pipeline.buckets import Bucket, bucket_of

    count = next(n for n in range(2, 64) if bucket_of("AAPL", n) != bucket_of("320193", n))
    sensor = edgar.build_new_edgar_filings_sensor(buckets=count)
    first, _ = tick(sensor, None, live_filings("AAPL", "320193"))
    want = sorted(Bucket(bucket_of(t, count), count).key for t in ("AAPL", "320193"))
    assert sorted(r.partition_key for r in first) == want
    assert len({r.run_key for r in first}) == 2


# --- universe mode: EDGAR's current-filings feed (defs/filings/current_feed.py) ------------------------

from tenali_pipeline.defs.filings import current_feed  # noqa: E402


def atom(entries: list[tuple[str, str, str, str]]) -> bytes:
    """(form, company, cik, accession) newest first, in EDGAR's getcurrent Atom layout."""
    body = "".join(
        f"<entry><title>{form} - {company} ({cik}) (Filer)</title>"
        f"<updated>2026-12-01T17:0{i % 10}:00-05:00</updated>"
        f'<category scheme="https://www.sec.gov/" label="form type" term="{form}"/>'
        f"<id>urn:tag:sec.gov,2008:accession-number={acc}</id></entry>"
        for i, (form, company, cik, acc) in enumerate(entries))
    return (f'<?xml version="1.0" encoding="ISO-8859-1" ?><feed xmlns="http://www.w3.org/2005/Atom">'
            f"<title>Latest Filings</title>{body}</feed>").encode("latin-1")


def test_the_real_current_feed_capture_parses():
    if not ATOM.exists():
        pytest.skip(f"real capture {ATOM} not present (../shared/realdata is absent)")
    entries = current_feed.parse_current_feed(ATOM.read_bytes())
    assert len(entries) > 10
    first = entries[0]
    assert first["accession"] == "0002063236-25-000004" and first["cik"] == "0002063236" and first["form"] == "4"
    assert {e["cik"] for e in entries if e["accession"] == "0002063236-25-000004"} == {"0002063236", "0001673743"}


@contextlib.contextmanager
def feed_server(monkeypatch, respond):
    """EDGAR's current-filings feed served by `respond` on 127.0.0.1, with the identity the sensor needs."""
    server = LocalServer(respond)
    try:
        monkeypatch.setattr(current_feed, "FEED_URL", server.base + "/cgi-bin/browse-edgar?action=getcurrent&type={form}"
                                                                   "&start={start}&count=100&output=atom")
        monkeypatch.setenv("SEC_EDGAR_IDENTITY", IDENTITY)
        yield server
    finally:
        server.close()


def test_universe_mode_reads_the_feed_and_asks_only_for_buckets_of_universe_filers(monkeypatch):
    from tenali_pipeline.buckets import Bucket, bucket_of

    pages = {"10-K": [("10-K", "Apple Inc.", "0000320193", "0000320193-26-000001"),
                      ("10-K", "Not In Universe Corp", "0000000042", "0000000042-26-000001")],
             "10-Q": [], "8-K": [("8-K", "MICROSOFT CORP", "0000789019", "0000789019-26-000007")]}
    hits = []

    def respond(req):
        from urllib.parse import parse_qs, urlsplit
        q = parse_qs(urlsplit(req.path).query)
        hits.append((q["type"][0], q["start"][0]))
        rows = pages[q["type"][0]] if q["start"][0] == "0" else []
        return 200, {"Content-Type": "application/atom+xml"}, atom(rows)

    with feed_server(monkeypatch, respond):
        universe = {"AAPL": "0000320193", "MSFT": "0000789019"}
        sources = SourcesResource(mode="live", tickers_from_universe=True)
        first, cursor = current_feed.evaluate_universe(sources, None, universe, buckets=8)
        keys = sorted({Bucket(bucket_of(t, 8), 8).key for t in ("AAPL", "MSFT")})
        assert [r.partition_key for r in first] == keys  # the non-universe filer asks for nothing
        assert len(hits) == 3  # one page per form, however many filers the universe holds

        second, cursor2 = current_feed.evaluate_universe(sources, cursor, universe, buckets=8)
        assert isinstance(second, dg.SkipReason) and "no new" in second.skip_message

        pages["8-K"].insert(0, ("8-K", "Apple Inc.", "0000320193", "0000320193-26-000009"))
        third, _ = current_feed.evaluate_universe(sources, cursor2, universe, buckets=8)
        assert [r.partition_key for r in third] == [Bucket(bucket_of("AAPL", 8), 8).key]
        assert "0000320193-26-000009" in json.loads(_)["seen"]["8-K"]


def test_universe_mode_builds_the_feed_sensor():
    schedules, sensors, _ = build_schedules_and_sensors("local", buckets=4, universe=True)
    sensor = next(s for s in sensors if s.name == "new_edgar_filings")
    assert "current-filings feed" in sensor.description and "lake" in sensor.required_resource_keys


def test_universe_mode_pages_on_after_a_tick_that_saw_an_empty_first_page(monkeypatch):
    """A form with no filings on the feed at one tick (an empty first page) is not a first tick: when
    more than a page of filings arrives before the next one, every page back to the last tick is read
    (up to MAX_PAGES), not just the first."""
    from tenali_pipeline.buckets import Bucket, bucket_of

    universe = {f"T{i:03d}": f"{i + 1:010d}" for i in range(150)}
    pages = {"10-K": [], "10-Q": [], "8-K": []}

    def respond(req):
        from urllib.parse import parse_qs, urlsplit
        q = parse_qs(urlsplit(req.path).query)
        start = int(q["start"][0])
        return 200, {"Content-Type": "application/atom+xml"}, atom(pages[q["type"][0]][start:start + 100])

    with feed_server(monkeypatch, respond):
        sources = SourcesResource(mode="live", tickers_from_universe=True)
        first, cursor = current_feed.evaluate_universe(sources, None, universe, buckets=8)
        assert isinstance(first, dg.SkipReason)
        # 150 10-Qs, newest first, before the next tick: two pages
        pages["10-Q"] = [("10-Q", f"Co {s}", cik, f"{cik}-26-000001") for s, cik in reversed(list(universe.items()))]
        second, _ = current_feed.evaluate_universe(sources, cursor, universe, buckets=8)
        assert sorted(r.partition_key for r in second) == sorted({Bucket(bucket_of(s, 8), 8).key for s in universe})
        assert int(second[0].tags["tenali/new_filings"]) == 150


# --- cursors set by hand (the UI's "set cursor") or left by another version -------------------------


def test_news_cursor_with_a_malformed_feed_entry_starts_that_feed_over(feeds):
    """A feed entry that is not an object used to raise on every tick; a non-string ETag made every tick's
    request fail (and was kept, so it never healed)."""
    url = feeds.url("/wire.rss")
    sources = live_news(url)
    for bad in ({url: "x"}, {url: {"seen": "abc", "etag": 5}}, {url: {"seen": [1, None], "modified": []}}):
        result, cursor = tick(news.new_feed_entries, json.dumps({"v": 1, "feeds": bad}), sources)
        assert isinstance(result, dg.RunRequest), bad
        assert isinstance(tick(news.new_feed_entries, cursor, sources)[0], dg.SkipReason)


def test_edgar_cursor_with_malformed_entries_looks_them_up_again(sec):
    sources = live_filings("AAPL")
    bad = {"v": 1, "ciks": {"AAPL": None}, "latest": {"0000320193": "x"}}
    result, cursor = tick(edgar.new_edgar_filings, json.dumps(bad), sources)
    assert isinstance(result, dg.RunRequest)  # AAPL was silently never polled (a null CIK)
    assert json.loads(cursor)["ciks"] == {"AAPL": "0000320193"}
    bad = {"v": 1, "ciks": {"AAPL": 320193}, "latest": {"0000320193": {"acc": 1}}}
    result, _ = tick(edgar.new_edgar_filings, json.dumps(bad), sources)
    assert isinstance(result, dg.RunRequest)
    assert "/submissions/CIK320193.json" not in sec.hits


@pytest.mark.parametrize("raw", ["null", "[]", '"x"', '{"v": 2, "seen": []}', '{"v": 2, "seen": {"10-K": 5}}'])
def test_universe_feed_cursor_of_another_shape_is_a_baseline(monkeypatch, raw):
    """JSON that is not this sensor's cursor (null, a list, a bad `seen`) used to raise on every tick."""
    pages = {"10-K": [("10-K", "Apple Inc.", "0000320193", "0000320193-26-000001")], "10-Q": [], "8-K": []}

    def respond(req):
        from urllib.parse import parse_qs, urlsplit
        q = parse_qs(urlsplit(req.path).query)
        return 200, {"Content-Type": "application/atom+xml"}, atom(pages[q["type"][0]] if q["start"][0] == "0" else [])

    with feed_server(monkeypatch, respond):
        sources = SourcesResource(mode="live", tickers_from_universe=True)
        result, cursor = current_feed.evaluate_universe(sources, raw, {"AAPL": "0000320193"})
        assert isinstance(result, (dg.SkipReason, dg.RunRequest))
        assert json.loads(cursor)["seen"]["10-K"] == ["0000320193-26-000001"]
