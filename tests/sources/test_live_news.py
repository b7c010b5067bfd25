"""RSS/Atom through requests + feedparser against a 127.0.0.1 server: the real SEC EDGAR
"latest filings" Atom feed (realdata/rss, ISO-8859-1, every filing listed twice), a small RSS 2.0
feed in ISO-8859-1, a malformed feed and a 404, with an ETag round-trip ending in a 304."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl
import pytest

from local_http import LocalServer
from tenali_pipeline.sources.schema import NEWS

pytest.importorskip("feedparser")
from tenali_pipeline.sources.live.news import FeedError, RssNewsClient, strip_html  # noqa: E402

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

    assert df.schema == pl.Schema(NEWS)
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
