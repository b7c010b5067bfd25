"""Full news articles (TENALI_NEWS_ARTICLES) through requests, feedparser, robots.txt and selectolax
against a 127.0.0.1 server: opt-in per feed host, short vs long summaries, robots.txt disallow,
per-host spacing (an injected clock and sleep), extraction from a news page with its chrome, failing
articles that keep their entries, and a second asset run that fetches nothing again."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from local_http import LocalServer
from tenali_pipeline.settings import SettingsError, load_settings

pytest.importorskip("feedparser")
pytest.importorskip("selectolax")
from tenali_pipeline.sources.live.news import (ARTICLE, NEWS_TABLE, SHORT_SUMMARY_CHARS,  # noqa: E402
                                               RssNewsClient, parse_article_hosts)
from tenali_pipeline.sources.polite import ARTICLE_SELECTOR, extract_text  # noqa: E402

AGENT = "tenali-pipeline/0.1 (+news collector)"
STORY = [
    "Acme Industrial Corp. said on Tuesday that third-quarter revenue rose 12% to $4.2 billion, ahead of the "
    "$3.9 billion analysts had expected, as demand for its factory automation systems recovered in Europe.",
    "Chief executive Maria Lindqvist told analysts on a call that orders from German carmakers had doubled "
    "since June, and that the company would raise its full-year guidance for the second time this year.",
    "The shares rose 6.5% in early trading in New York, their biggest one-day gain since March 2023.",
    "Acme now expects full-year earnings of $7.10 to $7.30 a share, up from $6.80 to $7.00 previously.",
]
COMMENTS = [f"Reader comment {i}: I have held this stock for years and I still think the market is missing the "
            f"bigger picture on automation demand in Asia, which nobody on the call asked about at all."
            for i in range(8)]
TEASERS = [f"Teaser {i}: a summary of another story on the markets page, long enough to look like the start of an "
           f"article, about earnings, rates, currencies and commodities moving on the day's economic data."
           for i in range(6)]

NEWS_PAGE = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Acme shares jump after results beat forecasts | Example Business News</title>
<script type="application/ld+json">{{"@type": "NewsArticle", "headline": "Acme shares jump"}}</script>
<script>window.dataLayer = window.dataLayer || []; function gtag(){{dataLayer.push(arguments);}}</script>
<style>.ad-slot {{ min-height: 250px; }}</style>
</head><body>
<div class="cookie-banner"><p>We use cookies to improve your experience on our site and to show you relevant
advertising. By continuing you agree to our cookie policy and our privacy notice.</p></div>
<header class="site-header"><a href="/">Example Business News</a>
<nav class="main-nav"><ul><li><a href="/markets">Markets</a></li><li><a href="/companies">Companies</a></li>
<li><a href="/economy">Economy</a></li><li><a href="/opinion">Opinion</a></li></ul></nav></header>
<div class="ad-slot ad-leaderboard"><p>Advertisement</p><p>Trade commission-free with BrokerX: open an account
in minutes and get a bonus on your first deposit when you sign up today.</p></div>
<main id="content">
<article class="story">
<h1>Acme shares jump after results beat forecasts</h1>
<p class="byline">By Jane Reporter &middot; <time datetime="2025-12-09T14:05:00Z">December 9, 2025</time></p>
<div class="share-bar"><a href="#">Share on X</a> <a href="#">Share on LinkedIn</a> <a href="#">Email</a></div>
<div class="story-body" itemprop="articleBody">
<p>{STORY[0]}</p>
<p>{STORY[1]}</p>
<div class="ad-slot ad-inline"><p>Advertisement</p><script>loadAd("inline-1")</script></div>
<p>{STORY[2]}</p>
<p><a href="/companies/acme-earnings-preview">Read more: What to expect from Acme's results</a></p>
<p>{STORY[3]}</p>
</div>
<div class="newsletter-signup"><p>Sign up for our Markets Daily newsletter: the stories that move markets,
in your inbox every morning before the opening bell.</p></div>
</article>
<aside class="related-stories"><h2>Related</h2><ul>
<li><a href="/a">Rival Beta Corp cuts outlook as orders slow in China and margins come under pressure</a></li>
<li><a href="/b">Automation stocks rally as European manufacturing data surprises to the upside</a></li></ul></aside>
<section class="comments" id="comments">{"".join(f"<p>{c}</p>" for c in COMMENTS)}</section>
<div class="river"><h2>More from Markets</h2>{"".join(f'<article class="teaser"><h3><a href="/t{i}">Teaser {i}'
                                                   f'</a></h3><p>{t}</p></article>' for i, t in enumerate(TEASERS))}</div>
</main>
<footer class="site-footer"><p>&copy; 2025 Example Business News. All rights reserved. Reproduction without
permission is prohibited.</p>
<ul><li><a href="/terms">Terms</a></li><li><a href="/privacy">Privacy</a></li></ul></footer>
<script src="/static/analytics.js"></script>
</body></html>"""

CHROME = ["cookies", "Markets</a>", "BrokerX", "Advertisement", "Share on", "Read more", "newsletter", "Rival Beta",
          "Reader comment", "Teaser", "All rights reserved", "dataLayer", "NewsArticle"]


def _page(body: str) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "text/html; charset=utf-8"}, body.encode()


def _story_page(title: str, paragraphs: list[str]) -> tuple[int, dict, bytes]:
    ps = "".join(f"<p>{p}</p>" for p in paragraphs)
    return _page(f"<html><head><title>{title}</title></head><body><nav><a href='/'>Home</a></nav>"
                 f"<article><h1>{title}</h1>{ps}</article><footer><p>Example footer text</p></footer></body></html>")


def _rss(items: list[tuple[str, str, str]]) -> tuple[int, dict, bytes]:
    """items: (guid, link, summary)."""
    body = "".join(f"<item><title>Story {guid}</title><link>{link}</link><guid isPermaLink=\"false\">{guid}</guid>"
                   f"<pubDate>Tue, 09 Dec 2025 14:{i:02d}:00 GMT</pubDate><description>{summary}</description></item>"
                   for i, (guid, link, summary) in enumerate(items))
    xml = f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Wire</title>{body}</channel></rss>'
    return 200, {"Content-Type": "application/rss+xml"}, xml.encode()


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Site:
    """One server reachable as two hosts (127.0.0.1 and localhost); routes by (host, path) or path.
    `hits` records (host, path, status, fake time) of every request."""

    def __init__(self, time: FakeTime | None = None):
        self.routes: dict = {}
        self.hits: list[tuple[str, str, int, float]] = []
        self.time = time or FakeTime()
        self.http = LocalServer(self._respond)
        self.a = f"http://127.0.0.1:{self.http.port}"
        self.b = f"http://localhost:{self.http.port}"

    def _respond(self, req):
        host = req.headers.get("Host", "").split(":")[0]
        route = self.routes.get((host, req.path), self.routes.get(req.path))
        status, headers, body = route() if callable(route) else route or (404, {"Content-Type": "text/html"},
                                                                             b"<h1>Not Found</h1>")
        self.hits.append((host, req.path, status, self.time.now))
        return status, headers, body

    def paths(self) -> list[str]:
        return [f"{h}{p}" for h, p, _, _ in self.hits]

    def close(self):
        self.http.close()


@pytest.fixture
def site():
    s = Site()
    yield s
    s.close()


def _client(site: Site, feeds: list[str], **kw) -> RssNewsClient:
    kw.setdefault("articles", ["127.0.0.1"])
    return RssNewsClient(feeds, user_agent=AGENT, attempts=2, base_delay=0.01, article_delay=kw.pop("delay", 0),
                         sleep=site.time.sleep, clock=site.time.clock, **kw)


# --- extraction -----------------------------------------------------------------------------------


def test_extraction_keeps_the_story_and_drops_nav_scripts_ads_and_comments():
    title, text = extract_text(NEWS_PAGE, url="https://news.example/acme", prefer=ARTICLE_SELECTOR)

    assert title == "Acme shares jump after results beat forecasts"
    assert text.split("\n\n") == STORY
    assert not [c for c in CHROME if c in text], text
    # the river of teasers holds more paragraph text than the story: without the article hint the densest
    # block is the page's whole <main>, teasers and all
    assert sum(map(len, TEASERS)) > sum(map(len, STORY))
    _, densest = extract_text(NEWS_PAGE)
    assert TEASERS[0] in densest and STORY[0] in densest


def test_short_summaries_get_their_article_and_long_ones_do_not(site):
    long_summary = "x" * SHORT_SUMMARY_CHARS
    site.routes.update({
        "/robots.txt": (200, {"Content-Type": "text/plain"}, b"User-agent: *\nAllow: /\n"),
        "/wire.rss": _rss([("n1", f"{site.a}/markets/acme", "Acme beats forecasts."),
                           ("n2", f"{site.a}/markets/long", long_summary),
                           ("n3", f"{site.a}/markets/just-short", "y" * (SHORT_SUMMARY_CHARS - 1))]),
        "/markets/acme": _page(NEWS_PAGE),
        "/markets/just-short": _story_page("Just short", STORY[:3]),
    })
    client = _client(site, [f"{site.a}/wire.rss"])

    df = client.fetch()

    assert df.schema == pl.Schema(NEWS_TABLE)
    articles = dict(zip(df["entry_id"], df[ARTICLE]))
    assert articles["n1"] == "\n\n".join(STORY) and not [c for c in CHROME if c in articles["n1"]]
    assert articles["n2"] is None and df.filter(pl.col("entry_id") == "n2")["summary"][0] == long_summary
    assert articles["n3"].startswith(STORY[0])
    assert df.filter(pl.col("entry_id") == "n1")["summary"][0] == "Acme beats forecasts."  # the summary stays
    assert "127.0.0.1/markets/long" not in site.paths()
    assert client.articles_fetched == 2 and client.errors == {}


def test_off_by_default_and_only_for_the_named_feed_hosts(site):
    site.routes.update({
        "/robots.txt": (200, {}, b"User-agent: *\nAllow: /\n"),
        "/wire.rss": _rss([("n1", f"{site.a}/markets/acme", "Acme beats forecasts.")]),
        "/markets/acme": _page(NEWS_PAGE),
    })
    df = RssNewsClient([f"{site.a}/wire.rss"], user_agent=AGENT).fetch()
    assert df[ARTICLE].to_list() == [None] and site.paths() == ["127.0.0.1/wire.rss"]  # no robots.txt, no page

    # a feed on another host is not opted in: its entries keep their summaries, its pages are not asked
    site.hits.clear()
    df = _client(site, [f"{site.b}/wire.rss"], articles=["127.0.0.1"]).fetch()
    assert df[ARTICLE].to_list() == [None] and site.paths() == ["localhost/wire.rss"]
    df = _client(site, [f"{site.b}/wire.rss"], articles=["all"]).fetch()
    assert df[ARTICLE][0] == "\n\n".join(STORY)

    # the setting: empty = off, hosts or 'all', a clear error for a URL
    assert load_settings({}).news_articles == ()
    assert load_settings({"TENALI_NEWS_ARTICLES": "www.sec.gov, WWW.Reuters.com"}).news_articles == (
        "www.sec.gov", "www.reuters.com")
    with pytest.raises(SettingsError, match="TENALI_NEWS_ARTICLES entry 'https://www.sec.gov/rss'.*host name"):
        load_settings({"TENALI_NEWS_ARTICLES": "https://www.sec.gov/rss"})
    with pytest.raises(SettingsError, match="'all' or a list"):
        load_settings({"TENALI_NEWS_ARTICLES": "all,www.sec.gov"})
    assert parse_article_hosts(["ALL"]) is None and parse_article_hosts(["a.example"]) == {"a.example"}


def test_resources_pass_the_setting_to_the_live_client(tmp_path):
    from tenali_pipeline.resources import SourcesResource, build_resources

    settings = load_settings({"TENALI_PROFILE": "local", "TENALI_HOME": str(tmp_path),
                              "TENALI_NEWS_ARTICLES": "www.sec.gov"})
    sources = build_resources(settings, env={})["sources"]
    assert sources.news_articles == ["www.sec.gov"]
    client = sources.news({}, known_articles={"e1": "text"}, skip_articles=["e2"])
    assert client.article_hosts == {"www.sec.gov"} and client.known_articles == {"e1": "text"}
    assert client.skip_articles == {"e2"}
    assert SourcesResource(mode="live").news().article_hosts == frozenset()  # off


# --- politeness -----------------------------------------------------------------------------------


def test_robots_txt_disallow_skips_and_counts_the_page(site):
    site.routes.update({
        "/robots.txt": (200, {}, b"User-agent: tenali-pipeline\nDisallow: /premium/\n\nUser-agent: *\nAllow: /\n"),
        "/wire.rss": _rss([("n1", f"{site.a}/premium/acme", "Acme beats forecasts."),
                           ("n2", f"{site.a}/markets/acme", "Acme beats forecasts, again.")]),
        "/premium/acme": _page(NEWS_PAGE),
        "/markets/acme": _page(NEWS_PAGE),
    })
    client = _client(site, [f"{site.a}/wire.rss"])

    df = client.fetch()

    assert client.articles_disallowed == [f"{site.a}/premium/acme"] and client.article_failures == {}
    assert "127.0.0.1/premium/acme" not in site.paths()  # never requested
    assert site.paths().count("127.0.0.1/robots.txt") == 1  # read once per host
    assert df.filter(pl.col("entry_id") == "n1")[ARTICLE][0] is None
    assert df.filter(pl.col("entry_id") == "n2")[ARTICLE][0] is not None
    assert client.articles_given_up == {}  # robots.txt may change: asked again next run


def test_requests_to_one_host_are_spaced_and_hosts_do_not_wait_on_each_other(site):
    a, b = site.a, site.b
    site.routes.update({
        ("127.0.0.1", "/robots.txt"): (200, {}, b"User-agent: *\nCrawl-delay: 8\nAllow: /\n"),
        ("localhost", "/robots.txt"): (404, {}, b"not found"),
        "/wire.rss": _rss([(f"n{i}", f"{h}/story/{i}", "Short.") for i, h in enumerate([a, b, a, b, a])]),
        **{f"/story/{i}": _story_page(f"Story {i}", STORY) for i in range(5)},
    })
    client = _client(site, [f"{a}/wire.rss"], delay=5)

    df = client.fetch()

    assert df[ARTICLE].null_count() == 0 and client.articles_fetched == 5
    polite = [(h, t) for h, p, _, t in site.hits if p != "/wire.rss"]
    for host, spacing in (("127.0.0.1", 8), ("localhost", 5)):  # robots.txt Crawl-delay wins over 5 s
        times = [t for h, t in polite if h == host]
        assert len(times) == (4 if host == "127.0.0.1" else 3)  # robots.txt + its pages
        assert all(later - earlier >= spacing - 1e-9 for earlier, later in zip(times, times[1:])), (host, times)
    # the hosts interleave: 24 s in all (host A's three 8-second gaps); waiting on one another would take 6 x 8 s
    assert site.time.now == pytest.approx(24.0)


def test_failing_articles_keep_their_entries_and_never_fail_the_feed(site):
    a, b = site.a, site.b
    site.routes.update({
        "/robots.txt": (200, {}, b"User-agent: *\nAllow: /\n"),
        "/wire.rss": _rss([("gone", f"{a}/gone", "Gone."), ("boom", f"{a}/boom", "Boom."),
                           ("pdf", f"{a}/report.pdf", "A PDF."), ("js", f"{a}/app", "A script-rendered page."),
                           ("ok", f"{a}/ok", "Fine."), ("walled", f"{b}/walled", "Behind a wall."),
                           ("walled2", f"{b}/walled2", "Behind the same wall.")]),
        "/boom": (500, {"Content-Type": "text/html"}, b"<h1>Internal Server Error</h1>"),
        "/report.pdf": (200, {"Content-Type": "application/pdf"}, b"%PDF-1.7 ..."),
        "/app": _page("<html><body><div id='root'></div><script src='/app.js'></script></body></html>"),
        "/ok": _story_page("Fine", STORY),
        "/walled": (403, {"Content-Type": "text/html"}, b"<html><body>Access Denied</body></html>"),
    })
    client = _client(site, [f"{a}/wire.rss"], articles=["all"])

    df = client.fetch()

    assert df.height == 7 and client.errors == {}
    assert df.filter(pl.col(ARTICLE).is_not_null())["entry_id"].to_list() == ["ok"]
    assert dict(zip(df["entry_id"], df["summary"])) == {
        "gone": "Gone.", "boom": "Boom.", "pdf": "A PDF.", "js": "A script-rendered page.", "ok": "Fine.",
        "walled": "Behind a wall.", "walled2": "Behind the same wall."}
    failures = client.article_failures
    assert set(failures) == {f"{a}/gone", f"{a}/boom", f"{a}/report.pdf", f"{a}/app", f"{b}/walled", f"{b}/walled2"}
    assert "HTTP 404" in failures[f"{a}/gone"]
    assert "still failing after 2 attempts" in failures[f"{a}/boom"] and "HTTP 500" in failures[f"{a}/boom"]
    assert "not an HTML page (Content-Type application/pdf)" in failures[f"{a}/report.pdf"]
    assert "could not extract the text" in failures[f"{a}/app"]
    assert "refused automated access (HTTP 403)" in failures[f"{b}/walled"]
    assert "TENALI_NEWS_ARTICLES" in failures[f"{b}/walled"]
    assert "localhost/walled2" not in site.paths()  # a site that refused us is not asked again this run
    assert "not asked again in this run" in failures[f"{b}/walled2"]
    assert site.paths().count("127.0.0.1/boom") == 2  # retried
    # permanent failures are not asked again next run; a 5xx or a refusal may heal
    assert set(client.articles_given_up) == {"gone", "pdf", "js"}


# --- through Dagster: articles archived, a second run fetches nothing again -----------------------


def _materialize(tmp_path, site: Site, feeds: list[str]):
    import dagster as dg

    from tenali_pipeline.defs.news import assets as news
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import LakeResource, SourcesResource

    class Replayed(SourcesResource):
        def news(self, state=None, archive=None, **articles):
            return RssNewsClient(self.news_feeds, state=state, archive=archive, articles=self.news_articles,
                                 user_agent=AGENT, attempts=2, base_delay=0.01, article_delay=0,
                                 sleep=site.time.sleep, clock=site.time.clock, **articles)

    result = dg.materialize(news.defs[:1], raise_on_error=False,
                            resources={"lake": LakeResource(root=str(tmp_path / "lake")),
                                       "sources": Replayed(mode="live", news_feeds=feeds,
                                                           news_articles=["127.0.0.1"])})
    return result, Lake(str(tmp_path / "lake"))


def test_asset_archives_articles_and_a_second_run_does_not_refetch(site, tmp_path):
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.sources.archive import read_archive
    from tenali_pipeline.sources.schema import NEWS
    from tenali_pipeline.text.render import render_news

    a = site.a
    feed = f"{a}/wire.rss"
    site.routes.update({
        "/robots.txt": (200, {}, b"User-agent: *\nAllow: /\n"),
        "/wire.rss": _rss([("ok", f"{a}/ok", "Fine."), ("gone", f"{a}/gone", "Gone."), ("boom", f"{a}/boom", "Boom."),
                           ("old", f"{a}/old", "Collected before articles existed.")]),
        "/ok": _story_page("Fine", STORY),
        "/old": _story_page("Old", STORY),
        "/boom": (500, {}, b"error"),
    })
    # a raw table written before the article column existed: its entries are kept and get the column
    old = pl.DataFrame([{"feed": feed, "entry_id": "older", "link": f"{a}/older", "title": "Older story",
                         "summary": "From an earlier run.", "source": "rss",
                         "published": dt.datetime(2025, 12, 1, tzinfo=dt.timezone.utc)}], schema=NEWS)
    Lake(str(tmp_path / "lake")).write_parquet("raw/news/news.parquet", old)

    first, lake = _materialize(tmp_path, site, [feed])

    assert first.success  # failing articles never fail the feed
    table = lake.read_parquet("raw/news/news.parquet")
    assert table.schema == pl.Schema(NEWS_TABLE) and table.height == 5
    texts = dict(zip(table["entry_id"], table[ARTICLE]))
    assert texts["ok"].split("\n\n") == STORY and texts["old"].split("\n\n") == STORY
    assert texts["gone"] is None and texts["boom"] is None and texts["older"] is None
    [key] = [k for k in lake.list("raw/news/responses") if k.endswith(f"-{first.run_id[:8]}.jsonl.gz")]
    kept = {(r["url"].removeprefix(a), r["status"]) for r in read_archive(lake.read_bytes(key))}
    assert {("/wire.rss", 200), ("/robots.txt", 200), ("/ok", 200), ("/gone", 404), ("/boom", 500)} <= kept
    assert lake.read_json("state/news/news.json")["articles_given_up"].keys() == {"gone"}

    site.hits.clear()
    second, lake = _materialize(tmp_path, site, [feed])

    assert second.success
    assert sorted(p for _, p, _, _ in site.hits) == ["/boom", "/boom", "/robots.txt", "/wire.rss"]  # only the 5xx again
    again = lake.read_parquet("raw/news/news.parquet")
    assert again.sort("entry_id").equals(table.sort("entry_id"))

    # the rendered document carries the article, or the summary where there is none
    docs = render_news(again.sort("entry_id"))
    by_title = dict(zip(again.sort("entry_id")["title"], docs["text"]))
    assert by_title["Story ok"].endswith(STORY[-1]) and STORY[0] in by_title["Story ok"]
    assert by_title["Story gone"].endswith("Gone.")
    assert render_news(again.drop(ARTICLE)).height == again.height  # a clean table without the column renders too
