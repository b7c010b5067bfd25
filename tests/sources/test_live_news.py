"""RSS/Atom through requests + feedparser against a 127.0.0.1 server: the real SEC EDGAR
"latest filings" Atom feed (realdata/rss, ISO-8859-1, every filing listed twice), a small RSS 2.0
feed in ISO-8859-1, a malformed feed and a 404, with an ETag round-trip ending in a 304."""

from __future__ import annotations

import datetime as dt
import re
import zlib
from pathlib import Path

import polars as pl
import pytest

from local_http import LocalServer

pytest.importorskip("feedparser")
from tenali_pipeline.sources.live.news import NEWS_TABLE, FeedError, RssNewsClient, strip_html  # noqa: E402

ATOM = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "rss" / "sec_edgar_getcurrent_atom_2025-12-12.xml"
UTC = dt.timezone.utc

RSS = """<?xml version="1.0" encoding="ISO-8859-1"?>
<rss version="2.0"><channel>
<title>Markets desk</title><link>https://news.example/</link><description>Wire</description>
<item><title>Soci\xe9t\xe9 G\xe9n\xe9rale raises guidance</title><link>https://news.example/a</link>
<guid isPermaLink="false">wire-001</guid><pubDate>Fri, 12 Dec 2025 09:30:00 +0100</pubDate>
<description>&lt;p&gt;Shares &lt;b&gt;rose&lt;/b&gt; 3% &amp;amp; more&lt;/p&gt;&lt;p&gt;in Paris.&lt;/p&gt;</description></item>
<item><title>Soci\xe9t\xe9 G\xe9n\xe9rale raises guidance (repeat)</title><link>https://news.example/a</link>
<guid isPermaLink="false">wire-001</guid><pubDate>Fri, 12 Dec 2025 09:30:00 +0100</pubDate></item>
<item><title>Same story, new guid</title><link>https://news.example/a</link>
<guid isPermaLink="false">wire-001-bis</guid><pubDate>Fri, 12 Dec 2025 09:35:00 +0100</pubDate></item>
<item><title>Undated brief</title><link>https://news.example/b</link><guid>wire-002</guid></item>
<item><title>Updated only</title><link>https://news.example/c</link><guid>wire-003</guid>
<atom:updated xmlns:atom="http://www.w3.org/2005/Atom">2025-12-12T22:00:00-05:00</atom:updated></item>
</channel></rss>""".encode("latin-1")


class FakeFeeds:
    def __init__(self, routes: dict[str, tuple[str, bytes]]):
        self.routes = routes  # path -> (content type, body)
        self.etag = '"sec-7f3a"'
        self.hits: list[tuple[str, int]] = []
        self.http = LocalServer(self._respond)
        self.base = self.http.base

    def _respond(self, req) -> tuple[int, dict[str, str], bytes]:
        if req.path not in self.routes:
            status, ctype, body, extra = 404, "text/html", b"<h1>Not Found</h1>", {}
        else:
            ctype, body = self.routes[req.path]
            status = 200
            extra = {"ETag": self.etag, "Last-Modified": "Fri, 12 Dec 2025 23:03:44 GMT"} if req.path == "/sec.xml" else {}
            if extra and req.headers.get("If-None-Match") == self.etag:
                status, body = 304, b""
        self.hits.append((req.path, status))
        return status, {"Content-Type": ctype, **extra}, body


@pytest.fixture
def feeds():
    if not ATOM.exists():
        pytest.skip(f"real capture {ATOM} not present (../shared/realdata is absent)")
    fake = FakeFeeds(
        {
            "/sec.xml": ("application/atom+xml", ATOM.read_bytes()),
            "/wire.rss": ("application/rss+xml", RSS),
            "/broken.xml": ("application/rss+xml", b"<html><body>502 upstream <b>error</b></body"),
        }
    )
    yield fake
    fake.http.close()


def test_real_sec_atom_and_rss_with_etag_roundtrip(feeds):
    sec, wire = f"{feeds.base}/sec.xml", f"{feeds.base}/wire.rss"
    client = RssNewsClient([sec, wire, f"{feeds.base}/broken.xml", f"{feeds.base}/gone.xml"], timeout=5)

    df = client.fetch()

    assert df.schema == pl.Schema(NEWS_TABLE) and df["article"].null_count() == df.height  # articles off by default
    real = df.filter(pl.col("feed") == sec)
    ids = set(re.findall(rb"<id>(urn:tag:sec\.gov[^<]*)</id>", ATOM.read_bytes()))
    assert real.height == len(ids) == 50  # 100 entries, each filing listed for filer and issuer
    first = real.row(0, named=True)
    assert first["entry_id"] == "urn:tag:sec.gov,2008:accession-number=0002063236-25-000004"
    assert first["title"] == "4 - Perez Daniel Antonio (0002063236) (Reporting)"
    assert first["link"].endswith("0002063236-25-000004-index.htm")
    assert first["summary"] == "Filed: 2025-12-12 AccNo: 0002063236-25-000004 Size: 10 KB"
    assert first["published"] == dt.datetime(2025, 12, 12, 23, 2, 43, tzinfo=UTC)  # 18:02:43 EST

    news = df.filter(pl.col("feed") == wire).sort("published")
    assert news["title"].to_list() == ["Société Générale raises guidance", "Updated only"]
    assert news["summary"][0] == "Shares rose 3% & more in Paris."
    assert news["published"].to_list() == [dt.datetime(2025, 12, 12, 8, 30, tzinfo=UTC), dt.datetime(2025, 12, 13, 3, 0, tzinfo=UTC)]
    assert client.undated == 1
    assert set(client.errors) == {f"{feeds.base}/broken.xml", f"{feeds.base}/gone.xml"}
    assert "not a readable RSS/Atom" in client.errors[f"{feeds.base}/broken.xml"]
    assert "HTTP 404" in client.errors[f"{feeds.base}/gone.xml"]
    assert client.state[sec] == {"etag": feeds.etag, "modified": "Fri, 12 Dec 2025 23:03:44 GMT"}
    assert wire not in client.state or client.state[wire] == {}

    # The caller persists client.state; the next run sends it back and gets a 304 for the SEC feed.
    again = RssNewsClient([sec, wire], state=client.state).fetch()
    assert ("/sec.xml", 304) in feeds.hits
    assert set(again["feed"]) == {wire} and again.height == 2


def test_every_feed_failing_raises(feeds):
    with pytest.raises(FeedError, match="every feed failed.*broken.xml"):
        RssNewsClient([f"{feeds.base}/broken.xml"]).fetch()


def test_strip_html():
    assert strip_html("<p>A&amp;B</p><p>C&nbsp;D</p><script></script>") == "A&B C D"
    assert strip_html(None) == ""


# --- through Dagster: feed bodies and 304s kept, conditional second run, one failing feed ---------

ATOM_SMALL = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Filings desk</title><id>urn:desk</id><updated>2025-12-12T10:00:00Z</updated>
<entry><title>8-K - Example Corp</title><id>urn:desk:1</id><link href="https://desk.example/1"/>
<updated>2025-12-12T10:00:00Z</updated><summary>Item 2.02 results.</summary></entry>
<entry><title>10-Q - Other Inc</title><id>urn:desk:2</id><link href="https://desk.example/2"/>
<updated>2025-12-12T11:00:00Z</updated></entry></feed>"""


class ConditionalFeeds:
    """Every feed with an ETag (304 when it matches); `broken` paths answer 500; records (path, status)."""

    def __init__(self, routes: dict[str, bytes]):
        self.routes, self.broken, self.hits = routes, set(), []
        self.http = LocalServer(self._respond)

    def url(self, path: str) -> str:
        return f"{self.http.base}{path}"

    def _respond(self, req):
        if req.path in self.broken or req.path not in self.routes:
            status, headers, body = (500 if req.path in self.broken else 404), {}, b"<h1>error</h1>"
        else:
            body = self.routes[req.path]
            etag = f'"{zlib.crc32(body):08x}"'
            headers = {"ETag": etag, "Content-Type": "application/xml"}
            status = 304 if req.headers.get("If-None-Match") == etag else 200
            body = b"" if status == 304 else body
        self.hits.append((req.path, status))
        return status, headers, body


@pytest.fixture
def conditional():
    fake = ConditionalFeeds({"/wire.rss": RSS, "/desk.atom": ATOM_SMALL})
    yield fake
    fake.http.close()


def _materialize(tmp_path, feeds):
    import dagster as dg

    from tenali_pipeline.defs.news import assets as news
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import LakeResource, SourcesResource

    class Replayed(SourcesResource):
        def news(self, state=None, archive=None, **articles):
            return RssNewsClient(self.news_feeds, state=state, archive=archive, attempts=2, base_delay=0.01, **articles)

    result = dg.materialize(news.defs[:1], raise_on_error=False,
                            resources={"lake": LakeResource(root=str(tmp_path / "lake")),
                                       "sources": Replayed(mode="live", news_feeds=list(feeds))})
    lake = Lake(str(tmp_path / "lake"))
    return result, lake.read_parquet("raw/news/news.parquet") if lake.exists("raw/news/news.parquet") else None


def _archive(tmp_path, result) -> list[dict]:
    """The responses kept by the run of `result`."""
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.sources.archive import read_archive

    lake = Lake(str(tmp_path / "lake"))
    [key] = [k for k in lake.list("raw/news/responses") if k.endswith(f"-{result.run_id[:8]}.jsonl.gz")]
    return read_archive(lake.read_bytes(key))


def test_asset_keeps_feeds_and_a_second_run_is_conditional(conditional, tmp_path, monkeypatch):
    identity = "Jane Analyst jane@tenali.example"
    monkeypatch.setenv("SEC_EDGAR_IDENTITY", identity)  # sent as the User-Agent, never kept
    feeds = [conditional.url("/wire.rss"), conditional.url("/desk.atom")]

    first, table = _materialize(tmp_path, feeds)

    assert first.success and table.height == 4
    records = _archive(tmp_path, first)
    assert {(r["url"], r["status"]) for r in records} == {(f, 200) for f in feeds}
    desk = next(r for r in records if r["url"].endswith("/desk.atom"))
    assert desk["body"] == ATOM_SMALL.decode()
    assert RSS == next(r for r in records if r["url"].endswith("/wire.rss"))["body"]  # bytes not UTF-8: base64 kept
    assert all(identity not in str(r) for r in records)

    conditional.hits.clear()
    second, again = _materialize(tmp_path, feeds)

    assert second.success and again.equals(table)
    assert sorted(conditional.hits) == [("/desk.atom", 304), ("/wire.rss", 304)]  # only conditional requests
    assert [r["status"] for r in _archive(tmp_path, second)] == [304, 304]


def test_one_failing_feed_fails_alone_and_the_others_land(conditional, tmp_path):
    conditional.broken.add("/desk.atom")
    feeds = [conditional.url("/wire.rss"), conditional.url("/desk.atom")]

    result, raw = _materialize(tmp_path, feeds)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error.message
    assert "desk.atom" in failure and "500" in failure and "wire.rss:" not in failure
    assert set(raw["feed"]) == {feeds[0]} and raw.height == 2

    # repaired: the failed feed is fetched in full (no ETag kept for it), the other answers 304
    conditional.broken.clear()
    conditional.hits.clear()
    fixed, table = _materialize(tmp_path, feeds)
    assert fixed.success and table.height == 4
    assert sorted(conditional.hits) == [("/desk.atom", 200), ("/wire.rss", 304)]
