"""Central-bank communications: the live client replayed from 127.0.0.1 (one server per bank, so each
is its own host) serving RSS feeds and pages shaped like the Fed's, the ECB's and the RBI's, with
robots.txt, conditional requests, per-host politeness and the error paths (403 bot walls, a malformed
feed, a page whose text cannot be extracted, a 404, a 503 retried); the sample twin; and the assets
(history kept across runs, the off switch)."""

from __future__ import annotations

import datetime as dt
import time

import dagster as dg
import polars as pl
import pytest

from local_http import LocalServer
from tenali_pipeline.cleaning import clean
from tenali_pipeline.sources.http import PartialFetchError, SourceBlocked
from tenali_pipeline.sources.live.centralbank import USER_AGENT, CentralBankClient, PoliteSession
from tenali_pipeline.sources.sample.centralbank import SampleCentralBankClient
from tenali_pipeline.sources.schema import CENTRAL_BANK
from tenali_pipeline.text.render_centralbank import render_central_bank

UTC = dt.timezone.utc

FED_FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss xmlns:a10="http://www.w3.org/2005/Atom" version="2.0">
  <channel>
    <title>FRB: Press Release - Monetary Policy</title>
    <link>{base}/feeds/press_monetary.xml</link>
    <description>Board of Governors of the Federal Reserve System: Monetary Policy Press Releases</description>
    <language>en</language>
    <copyright>Federal Reserve Board</copyright>
    <item>
      <guid isPermaLink="true">{base}/newsevents/pressreleases/monetary20250108a.htm</guid>
      <link>{base}/newsevents/pressreleases/monetary20250108a.htm</link>
      <category>Monetary Policy</category>
      <title>Minutes of the Federal Open Market Committee, December 17-18, 2024</title>
      <description>Minutes of the Federal Open Market Committee, December 17-18, 2024</description>
      <pubDate>Wed, 08 Jan 2025 19:00:00 Z</pubDate>
    </item>
    <item>
      <guid isPermaLink="true">{base}/newsevents/pressreleases/monetary20241218a.htm</guid>
      <link>{base}/newsevents/pressreleases/monetary20241218a.htm</link>
      <category>Monetary Policy</category>
      <title>Federal Reserve issues FOMC statement</title>
      <description>Federal Reserve issues FOMC statement</description>
      <pubDate>Wed, 18 Dec 2024 19:00:00 Z</pubDate>
    </item>
    <item>
      <guid isPermaLink="true">{base}/private/embargoed.htm</guid>
      <link>{base}/private/embargoed.htm</link>
      <title>Federal Reserve Board announces approval of discount rate actions</title>
      <pubDate>Tue, 17 Dec 2024 18:00:00 Z</pubDate>
    </item>
  </channel>
</rss>"""

FED_STATEMENT = """<!DOCTYPE html><html lang="en"><head><title>Federal Reserve Board - Federal Reserve issues FOMC statement</title>
<script>window.dataLayer = [];</script></head><body>
<nav class="navbar navbar-default"><ul><li><a href="/">Home</a></li><li><a href="/newsevents.htm">News &amp; Events</a></li></ul></nav>
<div id="content" class="container container__main"><div class="row"><div id="article">
<div class="heading col-xs-12 col-sm-8 col-md-8"><p class="article__time">December 18, 2024</p>
<h3 class="title"><em>Federal Reserve issues FOMC statement</em></h3><p class="releaseTime">For release at 2:00 p.m. EST</p></div>
<div class="col-xs-12 col-sm-4 col-md-4 hidden-sm"><div class="shareDL"><a href="#">Share</a></div></div>
<div class="col-xs-12 col-sm-8 col-md-8">
<P></P>
<p>Recent indicators suggest that economic activity has continued to expand at a solid pace. Since earlier in the year, labor market conditions have generally eased, and the unemployment rate has moved up but remains low. Inflation has made progress toward the Committee's 2 percent objective but remains somewhat elevated.</p>
<p>The Committee seeks to achieve maximum employment and inflation at the rate of 2 percent over the longer run. The Committee judges that the risks to achieving its employment and inflation goals are roughly in balance.</p>
<p>In support of its goals, the Committee decided to lower the target range for the federal funds rate by 1/4 percentage point to 4-1/4 to 4&nbsp;1/2 percent. In considering the extent and timing of additional adjustments to the target range for the federal funds rate, the Committee will carefully assess incoming data.</p>
<p>Voting for the monetary policy action were Jerome H. Powell, Chair; John C. Williams, Vice Chair; Michael S. Barr; Michelle W. Bowman; Lisa D. Cook; Mary C. Daly; Philip N. Jefferson; Adriana D. Kugler; Alberto G. Musalem; Jeffrey R. Schmid; and Christopher J. Waller. Voting against this action was Beth M. Hammack, who preferred to maintain the target range for the federal funds rate at 4-1/2 to 4-3/4 percent.</p>
<p>For media inquiries, please email <a href="/cdn-cgi/l/email-protection#d4"><span class="__cf_email__" data-cfemail="d4">[email&#160;protected]</span></a> or call 202-452-2955.</p>
<p><a href="/newsevents/pressreleases/monetary20241218a1.htm">Implementation Note issued December 18, 2024</a></p>
</div></div></div></div>
<footer id="footer"><p>Last Update: December 18, 2024</p></footer></body></html>"""

FED_MINUTES = """<html><head><title>Federal Reserve Board - Minutes of the FOMC, December 17-18, 2024</title></head><body>
<div id="article"><h3>Minutes of the Federal Open Market Committee</h3><p class="article__time">December 17-18, 2024</p>
<div class="col-xs-12 col-sm-12 col-md-8">
<p>A joint meeting of the Federal Open Market Committee and the Board of Governors of the Federal Reserve System was held in the offices of the Board of Governors on Tuesday, December 17, 2024, at 10:00 a.m. and continued on Wednesday, December 18, 2024, at 9:00 a.m.</p>
<h4><strong>Developments in Financial Markets and Open Market Operations</strong></h4>
<p>The manager turned first to a review of developments in financial markets over the intermeeting period. Market participants expected the Committee to lower the target range for the federal funds rate by 25 basis points at this meeting.</p>
<h4><strong>Committee Policy Actions</strong></h4>
<p>In their discussion of monetary policy for this meeting, members agreed that economic activity had continued to expand at a solid pace. In support of its goals, the Committee decided to lower the target range for the federal funds rate by 1/4 percentage point to 4-1/4 to 4-1/2 percent.</p>
</div></div></body></html>"""

ECB_FEED = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">
<channel>
<title>European Central Bank - Press releases, speeches, interviews</title>
<link>https://www.ecb.europa.eu/home/html/rss.en.html</link>
<description>Press releases, speeches, interviews and other publications of the ECB</description>
<item>
<title>Monetary policy decisions</title>
<link>{base}//press/pr/date/2024/html/ecb.mp241212~2acab6e51e.en.html</link>
<description>12 December 2024</description>
<pubDate>Thu, 12 Dec 2024 13:15:00 +0100</pubDate>
<guid>{base}//press/pr/date/2024/html/ecb.mp241212~2acab6e51e.en.html</guid>
</item>
</channel>
</rss>"""

ECB_DECISIONS = """<!DOCTYPE html><html lang="en"><head><title>Monetary policy decisions</title></head><body>
<header class="header"><div class="ecb-logo"><a href="/home/html/index.en.html">European Central Bank</a></div></header>
<main>
<div class="title"><ul><li>PRESS RELEASE</li></ul><h1 class="ecb-pressContentTitle">Monetary policy decisions</h1>
<p class="ecb-publicationDate">12 December 2024</p></div>
<div class="section">
<p>The Governing Council today decided to lower the three key ECB interest rates by 25 basis points. In particular, the decision to lower the deposit facility rate \u2013 the rate through which the Governing Council steers the monetary policy stance \u2013 is based on its updated assessment of the inflation outlook, the dynamics of underlying inflation and the strength of monetary policy transmission.</p>
<p>The disinflation process is well on track. Staff see headline inflation averaging 2.4% in 2024, 2.1% in 2025, 1.9% in 2026 and 2.1% in 2027.</p>
</div>
<div class="section"><h2>Key ECB interest rates</h2>
<p>The interest rates on the deposit facility, the main refinancing operations and the marginal lending facility will be decreased to 3.00%, 3.15% and 3.40% respectively, with effect from 18 December 2024.</p>
<p>Reproduction is permitted provided that the source is acknowledged.</p>
</div>
<div class="related-topics"><ul><li><a href="/mopo">Monetary policy</a></li><li><a href="/rates">Interest rates</a></li></ul></div>
</main><footer><p>Copyright European Central Bank</p></footer></body></html>"""

RBI_FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>RBI Press Releases</title><link>https://www.rbi.org.in</link>
<description>Reserve Bank of India press releases</description>
<item><title>Monetary Policy Statement, 2024-25 Resolution of the Monetary Policy Committee (MPC) February 5 to 7, 2025</title>
<link>{base}/Scripts/BS_PressReleaseDisplay.aspx?prid=59780</link>
<description>&lt;p&gt;On the basis of an assessment ...&lt;/p&gt;</description>
<pubDate>Fri, 07 Feb 2025 04:40:00 GMT</pubDate></item>
<item><title>Money Market Operations as on February 6, 2025</title>
<link>{base}/Scripts/BS_PressReleaseDisplay.aspx?prid=59777</link>
<pubDate>Fri, 07 Feb 2025 03:30:00 GMT</pubDate></item>
</channel></rss>"""

RBI_RESOLUTION = """<html><head><title>Reserve Bank of India - Press Releases</title></head><body>
<div id="header"><a href="/">Home</a> | <a href="/Scripts/AboutusDisplay.aspx">About Us</a></div>
<table class="tablebg" width="100%"><tr><td class="tableheader"><b>Monetary Policy Statement, 2024-25 Resolution of the Monetary Policy Committee (MPC) February 5 to 7, 2025</b></td>
<td align="right" class="tableheader"><b>Date : </b>Feb 07, 2025</td></tr>
<tr><td class="tablecontent2" colspan="2">
<p>On the basis of an assessment of the current and evolving macroeconomic situation, the Monetary Policy Committee (MPC) at its meeting today (February 7, 2025) decided to:</p>
<ul><li>reduce the policy repo rate under the liquidity adjustment facility (LAF) by 25 basis points to 6.25 per cent with immediate effect.</li></ul>
<p>Consequently, the standing deposit facility (SDF) rate shall stand adjusted to 6.00 per cent and the marginal standing facility (MSF) rate and the Bank Rate to 6.50 per cent.</p>
<p>The MPC also decided to continue with the neutral stance and remain unambiguously focused on a durable alignment of inflation with the target, while supporting growth.</p>
<p>(Puneet Pancholy)<br>Chief General Manager</p><p>Press Release: 2024-2025/2076</p>
</td></tr></table></body></html>"""

RBI_MONEY_MARKET = """<html><body><table class="tablebg"><tr><td class="tableheader"><b>Money Market Operations as on February 6, 2025</b></td></tr>
<tr><td class="tablecontent2">(Amount in \u20b9 crore, Rate in Per cent)<br>MONEY MARKETS @<br>Volume (One Leg) Weighted Average Rate Range<br>
A. Overnight Segment (I+II+III+IV) 5,69,432.77 6.44 5.00-6.70<br>I. Call Money 17,823.55 6.47 5.10-6.55<br>II. Triparty Repo 4,01,216.40 6.45 6.20-6.70<br>
III. Market Repo 1,48,417.82 6.40 5.00-6.65<br>B. Term Segment: Notice Money 266.25 6.28 6.00-6.45<br>(Ajit Prasad) Deputy General Manager (Communications)</td></tr></table></body></html>"""

ROBOTS = "User-agent: *\nDisallow: /private/\n"


class Site:
    """A bank's site on its own 127.0.0.1 port: path -> list of (status, headers, body) served in turn
    (the last repeats); records (time, path, headers) of every request."""

    def __init__(self, routes=None):
        self.routes, self.requests = routes or {}, []
        self.clock = time.monotonic  # a test's virtual clock, to read the client's spacing exactly
        self.http = LocalServer(self._respond)
        self.base = self.http.base

    def _respond(self, req):
        self.requests.append((self.clock(), req.path, dict(req.headers)))
        queue = self.routes.get(req.path, [(404, {}, b"<html><body><h1>Page not found</h1></body></html>")])
        status, headers, body = queue.pop(0) if len(queue) > 1 else queue[0]
        if callable(body):
            status, headers, body = body(req)
        return status, headers, body.encode() if isinstance(body, str) else body

    def paths(self) -> list[str]:
        return [p for _, p, _ in self.requests]

    def close(self):
        self.http.close()


def _rss(text: str, etag: str | None = None):
    def respond(req):
        if etag and req.headers.get("If-None-Match") == etag:
            return 304, {"ETag": etag}, b""
        return 200, {"Content-Type": "application/rss+xml; charset=utf-8", **({"ETag": etag} if etag else {})}, text
    return [(200, {}, respond)]


def _html(text: str):
    return [(200, {"Content-Type": "text/html; charset=utf-8"}, text)]


@pytest.fixture
def banks():
    fed, ecb, rbi = Site(), Site(), Site()
    fed.routes.update({"/robots.txt": [(200, {}, ROBOTS)],
                       "/feeds/press_monetary.xml": _rss(FED_FEED.format(base=fed.base), etag='"fed-1"'),
                       "/newsevents/pressreleases/monetary20241218a.htm": _html(FED_STATEMENT),
                       "/newsevents/pressreleases/monetary20250108a.htm": _html(FED_MINUTES)})
    ecb.routes.update({"/robots.txt": [(200, {}, "User-agent: *\nDisallow: /shared/\n")],
                       "/rss/press.html": _rss(ECB_FEED.format(base=ecb.base)),
                       # http.server collapses the leading "//" of the ECB's links
                       "/press/pr/date/2024/html/ecb.mp241212~2acab6e51e.en.html": _html(ECB_DECISIONS)})
    rbi.routes.update({"/pressreleases_rss.xml": _rss(RBI_FEED.format(base=rbi.base)),  # no robots.txt: 404
                       "/Scripts/BS_PressReleaseDisplay.aspx?prid=59780": _html(RBI_RESOLUTION),
                       "/Scripts/BS_PressReleaseDisplay.aspx?prid=59777": _html(RBI_MONEY_MARKET)})
    yield fed, ecb, rbi
    for site in (fed, ecb, rbi):
        site.close()


def _feeds(fed, ecb, rbi):
    return [f"fed={fed.base}/feeds/press_monetary.xml", f"ecb={ecb.base}/rss/press.html",
            f"rbi={rbi.base}/pressreleases_rss.xml"]


class VirtualTime:
    """A clock that moves only when the client sleeps: the sites stamp each request with the time the
    client sent it, however late a loaded machine's server threads get to it."""

    def __init__(self):
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_replay_of_three_banks_full_text_decisions_robots_and_politeness(banks):
    fed, ecb, rbi = banks
    virtual = VirtualTime()
    for site in banks:
        site.clock = virtual.clock
    client = CentralBankClient(_feeds(fed, ecb, rbi), delay=0.2, base_delay=0.01, sleep=virtual.sleep)
    client.http.clock = virtual.clock  # PoliteSession's own clock (the client passes on only `sleep`)
    df = client.fetch()
    assert dict(df.schema) == CENTRAL_BANK and df.height == 5
    by_title = {r["title"]: r for r in df.iter_rows(named=True)}

    fomc = by_title["Federal Reserve issues FOMC statement"]
    assert (fomc["bank"], fomc["institution"], fomc["doc_type"]) == ("fed", "Federal Reserve", "statement")
    assert fomc["published"] == dt.datetime(2024, 12, 18, 19, 0, tzinfo=UTC)
    assert (fomc["decision"], fomc["change_bps"], fomc["rate_low"], fomc["rate_high"]) == ("cut", -25.0, 4.25, 4.5)
    assert fomc["text"].startswith("Recent indicators suggest") and "Beth M. Hammack" in fomc["text"]
    for chrome in ("For media inquiries", "Implementation Note", "News & Events", "Last Update", "Share", "2:00 p.m."):
        assert chrome not in fomc["text"], chrome
    minutes = by_title["Minutes of the Federal Open Market Committee, December 17-18, 2024"]
    assert minutes["doc_type"] == "minutes" and "Committee Policy Actions" in minutes["text"]
    assert (minutes["decision"], minutes["change_bps"]) == ("cut", -25.0)  # not what markets expected, what was decided

    ecb_row = by_title["Monetary policy decisions"]
    assert ecb_row["published"] == dt.datetime(2024, 12, 12, 12, 15, tzinfo=UTC)  # +0100 normalised to UTC
    assert (ecb_row["decision"], ecb_row["change_bps"], ecb_row["rate_low"], ecb_row["rate_name"]) == \
        ("cut", -25.0, 3.0, "deposit facility rate")
    assert "Reproduction is permitted" not in ecb_row["text"] and "Interest rates" not in ecb_row["text"]
    assert "Key ECB interest rates" in ecb_row["text"]  # both sections of the release

    rbi_rows = df.filter(pl.col("bank") == "rbi").sort("published")
    assert rbi_rows["doc_type"].to_list() == ["press_release", "statement"]
    mpc = rbi_rows.row(1, named=True)
    assert (mpc["decision"], mpc["change_bps"], mpc["rate_low"], mpc["rate_name"]) == ("cut", -25.0, 6.25, "policy repo rate")
    assert "Triparty Repo" in rbi_rows["text"][0] and rbi_rows["decision"][0] is None  # text laid out with <br>

    # robots.txt: read once per host, honoured (the /private/ page is never requested), absent = allowed
    assert fed.paths().count("/robots.txt") == 1 and "/private/embargoed.htm" not in fed.paths()
    assert client.skipped == [f"{fed.base}/private/embargoed.htm"]
    assert rbi.paths()[0] == "/robots.txt"
    # our User-Agent on every request; requests to one host spaced by the delay
    assert all(h.get("User-Agent") == USER_AGENT for site in banks for _, _, h in site.requests)
    stamps = [t for t, _, _ in fed.requests]
    assert len(stamps) > 2 and min(b - a for a, b in zip(stamps, stamps[1:])) >= 0.2 - 1e-9  # without the limiter, 0
    assert sum(clean("centralbank", df).dropped.values()) == 0

    # a second run: the Fed feed answers 304 to its ETag, known pages are not fetched again
    before = {s: len(s.requests) for s in banks}
    again = CentralBankClient(_feeds(fed, ecb, rbi), known=df["link"].to_list(), state=client.state, delay=0)
    assert again.fetch().is_empty()
    assert fed.requests[-1][2].get("If-None-Match") == '"fed-1"'
    new_paths = [p for s in banks for _, p, _ in s.requests[before[s]:]]
    assert all(p.endswith((".xml", "press.html", "/robots.txt")) for p in new_paths), new_paths  # a new client reads robots again


def test_failures_fail_their_item_and_name_it(banks):
    fed, ecb, rbi = banks
    fed.routes["/newsevents/pressreleases/monetary20250108a.htm"] = [(503, {}, "busy"), *_html(FED_MINUTES)]
    fed.routes["/newsevents/pressreleases/monetary20241218a.htm"] = _html(
        "<html><body><div id='app'></div><script src='/bundle.js'></script><noscript>Enable JavaScript</noscript></body></html>")
    ecb.routes["/rss/press.html"] = [(200, {"Content-Type": "application/json"}, b'{"error": "moved"}')]
    rbi.routes["/Scripts/BS_PressReleaseDisplay.aspx?prid=59777"] = [(404, {}, b"not found")]
    with pytest.raises(PartialFetchError) as e:
        CentralBankClient(_feeds(fed, ecb, rbi), delay=0, base_delay=0.01).fetch()
    failures = e.value.failures
    assert set(failures) == {f"fed {fed.base}/newsevents/pressreleases/monetary20241218a.htm",
                             f"ecb feed {ecb.base}/rss/press.html",
                             f"rbi {rbi.base}/Scripts/BS_PressReleaseDisplay.aspx?prid=59777"}
    assert "could not extract the text" in failures[f"fed {fed.base}/newsevents/pressreleases/monetary20241218a.htm"]
    assert "not a readable RSS/Atom document" in failures[f"ecb feed {ecb.base}/rss/press.html"]
    assert "TENALI_CENTRAL_BANK_FEEDS" in failures[f"ecb feed {ecb.base}/rss/press.html"]
    assert "HTTP 404" in failures[f"rbi {rbi.base}/Scripts/BS_PressReleaseDisplay.aspx?prid=59777"]
    # the minutes page answered 503 once and was retried; the others landed
    assert sorted(e.value.partial["title"].to_list()) == [
        "Minutes of the Federal Open Market Committee, December 17-18, 2024",
        "Monetary Policy Statement, 2024-25 Resolution of the Monetary Policy Committee (MPC) February 5 to 7, 2025"]


def test_403_and_bot_walls_name_the_site_and_the_setting(banks):
    fed, ecb, rbi = banks
    rbi.routes["/robots.txt"] = [(403, {}, b"<html><body>Access Denied</body></html>")]
    with pytest.raises(SourceBlocked, match=r"Reserve Bank of India \(127\.0\.0\.1\) refused automated access "
                                            r"\(HTTP 403\).*TENALI_SOURCES_OFF=centralbank"):
        CentralBankClient([f"rbi={rbi.base}/pressreleases_rss.xml"], delay=0).fetch()
    # one bank behind a bot wall: its items fail with the message, the other banks land
    ecb.routes["/rss/press.html"] = _html("<html><head><title>Just a moment...</title></head><body>Checking your "
                                          "browser before accessing. cf-browser-verification</body></html>")
    with pytest.raises(PartialFetchError) as e:
        CentralBankClient(_feeds(fed, ecb, rbi), delay=0).fetch()
    assert set(e.value.partial["bank"]) == {"fed"}
    assert "European Central Bank (127.0.0.1) refused automated access (a bot-wall page" in \
        e.value.failures[f"ecb feed {ecb.base}/rss/press.html"]
    assert "TENALI_SOURCES_OFF=centralbank" in e.value.failures[f"rbi feed {rbi.base}/pressreleases_rss.xml"]


def test_crawl_delay_from_robots_txt_spaces_requests():
    site = Site({"/robots.txt": [(200, {}, "User-agent: tenali-pipeline\nCrawl-delay: 2\n\nUser-agent: *\nDisallow: /\n")],
                 "/a": _html("a"), "/b": _html("b")})
    slept = []
    try:
        polite = PoliteSession(delay=0.01, sleep=slept.append)
        polite.get(f"{site.base}/a", site="Test bank")
        polite.get(f"{site.base}/b", site="Test bank")
        other = PoliteSession(user_agent="SomeBot/1.0", delay=0)
        with pytest.raises(Exception, match="robots.txt .* disallows"):
            other.get(f"{site.base}/a", site="Test bank")  # the * group disallows everything else
    finally:
        site.close()
    assert slept and max(slept) > 1.9  # the host's Crawl-delay (2 s), not our 0.01 s


def test_sample_twin_is_deterministic_dated_and_parsed_like_live():
    client = SampleCentralBankClient()
    df = client.fetch()
    assert df.equals(SampleCentralBankClient().fetch()) and dict(df.schema) == CENTRAL_BANK
    assert df["published"].min() >= dt.datetime(2000, 1, 1, tzinfo=UTC)
    assert df["published"].max() < dt.datetime(2013, 3, 1, tzinfo=UTC)
    assert set(df["doc_type"]) == {"statement", "minutes", "press_release"}
    assert sum(clean("centralbank", df).dropped.values()) == 0
    # every statement's parsed decision is the one the generator took
    path = {(b, day): (move, rate) for b in ("samplia_fed", "demoland_cb", "exemplia_rb")
            for day, move, rate in client.meetings(b)}
    statements = df.filter(pl.col("doc_type") == "statement")
    assert statements["decision"].null_count() == 0 and set(statements["decision"]) == {"cut", "hike", "hold"}
    for r in statements.iter_rows(named=True):
        move, rate = path[(r["bank"], r["published"].date())]
        assert (r["change_bps"], r["rate_low"]) == (move, rate / 100), r["title"]
    docs = render_central_bank(df)
    assert docs.height == df.height and (docs["domain"] == "economic").all() and docs["doc_id"].is_unique().all()
    example = docs.filter(pl.col("instrument") == "samplia_fed", pl.col("text").str.contains("Decision: a cut"))["text"][0]
    assert example.startswith("Federal Reserve of Samplia, policy statement of ")
    assert "For media inquiries" not in example


def _materialise(resources, keys=("raw_central_bank", "clean_central_bank"), raise_on_error=True):
    from tenali_pipeline.defs.centralbank.assets import defs

    return dg.materialize(defs, resources=resources, selection=list(keys), raise_on_error=raise_on_error)


def test_assets_keep_history_and_the_off_switch(banks, tmp_path):
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import LakeResource, SourcesResource

    fed, ecb, rbi = banks
    lake = LakeResource(root=str(tmp_path / "lake"))
    live = SourcesResource(mode="live", central_bank_feeds=_feeds(fed, ecb, rbi), central_bank_delay=0)
    assert _materialise({"lake": lake, "sources": live}).success
    first = Lake(lake.root).read_parquet("clean/centralbank/central_bank.parquet")
    assert first.height == 5 and first["source"].unique().to_list() == ["centralbank"]
    # the feed moves on: the FOMC items drop out of it, an unchanged feed answers 304: history is kept
    fed.routes["/feeds/press_monetary.xml"] = _rss(FED_FEED.format(base=fed.base).split("<item>")[0] + "</channel></rss>")
    before = {s: len(s.requests) for s in banks}
    assert _materialise({"lake": lake, "sources": live}).success
    again = Lake(lake.root).read_parquet("clean/centralbank/central_bank.parquet")
    assert again.equals(first)
    new_paths = sorted(p for s in banks for _, p, _ in s.requests[before[s]:])
    assert new_paths == sorted(["/robots.txt"] * 3 + ["/feeds/press_monetary.xml", "/rss/press.html",
                                                      "/pressreleases_rss.xml"])  # no page again

    # a page that fails: the asset fails naming it, and keeps the rows it had plus the new ones
    rbi.routes["/pressreleases_rss.xml"] = _rss(RBI_FEED.format(base=rbi.base).replace("prid=59777", "prid=60000"))
    state_key = "state/centralbank/central_bank.json"
    state_before = Lake(lake.root).read_json(state_key)
    assert state_before["feeds"]  # the ETags / Last-Modified of the feeds that sent them
    result = _materialise({"lake": lake, "sources": live}, keys=("raw_central_bank",), raise_on_error=False)
    assert not result.success
    error = [e for e in result.all_events if e.is_step_failure][0].step_failure_data.error.to_string()
    assert "prid=60000" in error and "HTTP 404" in error
    assert Lake(lake.root).read_parquet("raw/centralbank/central_bank.parquet").height == 5
    # the feed state did not move on: the next run is offered the failed item again
    assert Lake(lake.root).read_json(state_key) == state_before

    off = SourcesResource(mode="live", central_bank_feeds=_feeds(fed, ecb, rbi), sources_off=["centralbank"])
    assert _materialise({"lake": LakeResource(root=str(tmp_path / "off")), "sources": off}).success
    assert Lake(str(tmp_path / "off")).read_parquet("clean/centralbank/central_bank.parquet").is_empty()


def test_a_feed_whose_dates_all_became_unreadable_fails_by_name(banks):
    """The RBI switching its pubDate to "07/02/2025 10:10:00" must fail that feed with a message, not
    yield zero new rows as if nothing had been published; the other banks still land."""
    fed, ecb, rbi = banks
    changed = RBI_FEED.replace("Fri, 07 Feb 2025 04:40:00 GMT", "07/02/2025 10:10:00").replace(
        "Fri, 07 Feb 2025 03:30:00 GMT", "07/02/2025 09:00:00")
    rbi.routes["/pressreleases_rss.xml"] = _rss(changed.format(base=rbi.base))
    client = CentralBankClient(_feeds(fed, ecb, rbi), delay=0, base_delay=0.01)
    with pytest.raises(PartialFetchError) as e:
        client.fetch()
    why = e.value.failures[f"rbi feed {rbi.base}/pressreleases_rss.xml"]
    assert "none of its 2 items" in why and "07/02/2025 10:10:00" in why and "TENALI_CENTRAL_BANK_FEEDS" in why
    assert set(e.value.partial["bank"]) == {"fed", "ecb"}
    assert f"{rbi.base}/pressreleases_rss.xml" not in client.state  # asked again in full next time, not 304
