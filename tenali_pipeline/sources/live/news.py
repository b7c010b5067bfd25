"""Headlines from RSS / Atom feeds: bytes fetched with requests, parsed with feedparser.

Endpoints: whatever feed URLs the caller configures, e.g. the SEC's latest filings
(https://www.sec.gov/cgi-bin/browse-edgar?action=getcurrent&output=atom), central-bank and
exchange press-release feeds. One GET per feed per fetch, conditional (If-None-Match /
If-Modified-Since) when `state` holds the feed's last ETag / Last-Modified, so an unchanged
feed costs a 304 and no parsing.

Rate limits: feeds publish none, but hosts do: requests to sec.gov go through the machine-wide
10/s `SEC_LIMITER` (see ../http.py), 429 and 5xx are retried with backoff (Retry-After
honoured). feedparser has no timeout of its own, which is why we fetch the bytes ourselves.

State: `client.state` maps feed URL -> {"etag", "modified"}. Persist it only after the entries
returned by `fetch()` are stored; otherwise the next call gets a 304 and those entries are lost.

A feed that fails (HTTP error, unparseable body) is logged and recorded in `client.errors`; the
other feeds are still returned. Only when every feed fails does `fetch()` raise.

Raw responses: with an `archive`, every response the session receives (feed bodies, 304s, error
pages, robots.txt and article pages) is recorded into it as served; request headers (the User-Agent
identity) are not kept.

User-Agent: the EDGAR identity (``SEC_EDGAR_IDENTITY``, "Name email") goes to sec.gov hosts only, which
refuse anonymous agents; every other feed, robots.txt and article host gets `user_agent` (default a
neutral ``tenali-pipeline`` agent), so the user's name and e-mail never reach third parties.

Full articles (opt-in, `articles`: feed hosts or ``all``, from ``TENALI_NEWS_ARTICLES``; default off,
since the pages belong to their publishers and their terms decide what may be kept, see
docs/sources.md): an entry of such a feed whose summary is shorter than `SHORT_SUMMARY_CHARS`
characters of text gets the text of its linked page in the `article` column. Pages are fetched through
a `PoliteSession` (../polite.py): `article_delay` seconds apart per host (a longer robots.txt
Crawl-delay wins), robots.txt honoured (a disallowed page is skipped and counted in
`articles_disallowed`, not an error), and the main text extracted with `extract_text`. An article
that fails (4xx, 5xx after retries, not HTML, no extractable text, a bot wall) leaves its entry with
the summary, is logged and listed in `article_failures`, and never fails the feed; permanent failures
(anything but a transient 5xx/network error) are returned in `articles_given_up` so that the caller
can pass them back as `skip_articles` and the page is not asked again. Texts from earlier runs come
back through `known_articles` (entry id -> text) and are reused, never fetched again.
"""

from __future__ import annotations

import html
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from html.parser import HTMLParser
from urllib.parse import urlsplit

import polars as pl
import requests
from dateutil import parser as dateutil_parser
from dateutil import tz
from requests.adapters import BaseAdapter

from ..archive import ResponseArchive
from ..http import RetriesExhausted, SourceBlocked, get_or_transient, rate_limited_session, retry
from ..polite import ARTICLE_SELECTOR, Disallowed, ExtractionError, PoliteSession, extract_text
from ..schema import NEWS, conform

log = logging.getLogger(__name__)

_DEFAULT_AGENT = "tenali-pipeline/0.1 (+news collector)"
ARTICLES_SETTING = "TENALI_NEWS_ARTICLES"
ARTICLE = "article"
# The raw news table: NEWS plus the article text. Until sources/schema.py NEWS carries the column the
# clean table drops it; once it does, this is NEWS itself.
NEWS_TABLE = NEWS  # ARTICLE is a column of the news schema
SHORT_SUMMARY_CHARS = 400  # a summary shorter than this (characters of text) is a teaser: fetch the article
ARTICLE_MIN_CHARS = 200  # an extracted page shorter than this is not the story (a paywall, a script-rendered page)
_HTML_TYPES = ("text/html", "application/xhtml+xml")


class FeedError(RuntimeError):
    """A feed could not be fetched or parsed."""


class NotHtml(ValueError):
    """An article link answered with something other than an HTML page (a PDF, a JSON document)."""


def parse_article_hosts(values: Iterable[str]) -> frozenset[str] | None:
    """``["www.sec.gov", ...]`` -> those hosts; ``["all"]`` -> None (every feed); a clear error otherwise."""
    hosts = {v.strip().lower() for v in values if v.strip()}
    if "all" in hosts:
        if len(hosts) > 1:
            raise ValueError(f"{ARTICLES_SETTING} is 'all' or a list of feed hosts, not both: {sorted(hosts)}")
        return None
    for host in hosts:
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?", host):
            raise ValueError(f"{ARTICLES_SETTING} entry {host!r} must be a feed's host name such as www.sec.gov "
                             "(no scheme, path or port), or 'all'")
    return frozenset(hosts)


class _TextExtractor(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag, attrs):
        if tag in ("br", "p", "div", "li", "tr"):
            self.parts.append(" ")


def strip_html(text: str | None) -> str:
    """Plain text of an HTML fragment, entities decoded and whitespace collapsed."""
    if not text:
        return ""
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return re.sub(r"\s+", " ", html.unescape("".join(parser.parts))).strip()


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


def _decode(resp: requests.Response) -> str:
    """A page's text: the charset of the Content-Type header, else of its <meta> tag, else UTF-8
    (requests alone would take Latin-1 for any text/html without a header charset)."""
    if "charset=" in resp.headers.get("Content-Type", "").lower():
        return resp.text
    m = _META_CHARSET.search(resp.content[:4096])
    try:
        return resp.content.decode(m.group(1).decode("ascii") if m else "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        return resp.content.decode("utf-8", errors="replace")


def is_sec_host(url: str) -> bool:
    """sec.gov or one of its subdomains (www., data., efts.)."""
    host = (urlsplit(url).hostname or "").lower()
    return host == "sec.gov" or host.endswith(".sec.gov")


class _SecIdentityAdapter(BaseAdapter):
    """Wraps a session's adapter: the EDGAR identity as User-Agent for sec.gov, never for other hosts.

    Set per request at send time, so that a redirect between hosts switches the agent too."""

    def __init__(self, inner: BaseAdapter, identity: str, neutral: str):
        super().__init__()
        self.inner, self.identity, self.neutral = inner, identity, neutral

    def send(self, request, *args, **kwargs):  # type: ignore[override]
        if is_sec_host(request.url):
            request.headers["User-Agent"] = self.identity
        elif request.headers.get("User-Agent") == self.identity:
            request.headers["User-Agent"] = self.neutral
        return self.inner.send(request, *args, **kwargs)

    def close(self) -> None:
        self.inner.close()


_US_EASTERN = tz.gettz("America/New_York")
_ZONES = {"ET": _US_EASTERN, "EST": _US_EASTERN, "EDT": _US_EASTERN}  # the zone US financial news is dated in


def entry_time(entry) -> datetime | None:
    """When an entry was published (else updated), in UTC; None when it carries no readable date.

    feedparser's own parse first; failing that (it rejects an RFC 822 date without its zone, such as
    "Fri, 12 Dec 2025 09:30:00", and "9:30am ET" styles) the raw string is read by dateutil, a time
    without a zone taken as UTC. A string without a four-digit year is not trusted (dateutil would
    fill the missing date from today)."""
    when = entry.get("published_parsed") or entry.get("updated_parsed")  # UTC struct_time
    if when is not None:
        return datetime(*when[:6], tzinfo=timezone.utc)
    for raw in (entry.get("published"), entry.get("updated")):
        if not raw or not re.search(r"(?<!\d)\d{4}(?!\d)", raw):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", dateutil_parser.UnknownTimezoneWarning)
                parsed = dateutil_parser.parse(raw, tzinfos=_ZONES)
        except (ValueError, OverflowError):
            continue
        return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
    return None


class RssNewsClient:
    """Entries of `feeds`, de-duplicated by id (then link), published time in UTC."""

    def __init__(
        self,
        feeds: list[str],
        timeout: float = 10,
        state: dict[str, dict[str, str]] | None = None,
        *,
        session: requests.Session | None = None,
        user_agent: str | None = None,
        attempts: int = 3,
        base_delay: float = 1.0,
        archive: ResponseArchive | None = None,
        articles: Sequence[str] = (),
        known_articles: dict[str, str] | None = None,
        skip_articles: Iterable[str] = (),
        article_delay: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.feeds = list(feeds)
        self.timeout = timeout
        self.state: dict[str, dict[str, str]] = {k: dict(v) for k, v in (state or {}).items()}
        if session is None:
            session = rate_limited_session()
            session.headers["User-Agent"] = user_agent or _DEFAULT_AGENT
        elif user_agent:
            session.headers["User-Agent"] = user_agent
        # sec.gov refuses anonymous agents, so its hosts get the EDGAR identity ("Name email"); no other
        # host may see it (it names the user and their e-mail), not even after a redirect.
        identity = os.environ.get("SEC_EDGAR_IDENTITY")
        if identity:
            neutral = user_agent if user_agent and user_agent != identity else _DEFAULT_AGENT
            for prefix, adapter in list(session.adapters.items()):
                session.mount(prefix, _SecIdentityAdapter(adapter, identity, neutral))
        self.session = archive.attach(session) if archive is not None else session
        self.attempts, self.base_delay = attempts, base_delay
        self.errors: dict[str, str] = {}
        self.undated = 0  # entries dropped for having no readable published or updated date
        # Full articles: one polite session over the same requests session (same agents, same archive).
        self.article_hosts = parse_article_hosts(articles) if articles else frozenset()
        self.known_articles = dict(known_articles or {})
        self.skip_articles = set(skip_articles)
        self.http = PoliteSession(self.session, user_agent=str(self.session.headers.get("User-Agent", _DEFAULT_AGENT)),
                                  delay=article_delay, timeout=timeout, attempts=attempts, base_delay=base_delay,
                                  sleep=sleep, clock=clock,
                                  advice=f"its entries keep their summaries; to stop asking it, remove the feed's "
                                         f"host from {ARTICLES_SETTING}")
        self.articles_fetched = 0
        self.articles_disallowed: list[str] = []  # links robots.txt disallows
        self.article_failures: dict[str, str] = {}  # link -> why (logged; the entry keeps its summary)
        self.articles_given_up: dict[str, str] = {}  # entry id -> why, for failures that will not heal

    def fetch(self) -> pl.DataFrame:
        self.errors, self.undated = {}, 0
        rows: list[dict] = []
        for feed in self.feeds:
            try:
                rows += self._fetch_feed(feed)
            except Exception as exc:  # one bad feed must not lose the others
                self.errors[feed] = str(exc)
                log.warning("feed %s skipped: %s", feed, exc)
        if self.feeds and len(self.errors) == len(self.feeds):
            raise FeedError("every feed failed: " + "; ".join(f"{f}: {e}" for f, e in self.errors.items()))
        if self.undated:
            log.warning("dropped %d feed entries without a readable published or updated date", self.undated)
        seen: set[str] = set()
        unique = []
        for row in rows:
            keys = {f"id:{row['entry_id']}"} | ({f"link:{row['link']}"} if row["link"] else set())
            if keys & seen:
                continue
            seen |= keys
            unique.append(row)
        self._add_articles(unique)
        frame = pl.DataFrame(unique, schema=NEWS_TABLE) if unique else pl.DataFrame(schema=NEWS_TABLE)
        return conform(frame, NEWS_TABLE, what="RSS news")

    # ---- full articles ---------------------------------------------------------------------------

    def wants_article(self, row: dict) -> bool:
        """An entry of an opted-in feed, with a web link and a summary too short to stand alone."""
        if self.article_hosts is not None and not self.article_hosts:
            return False
        link = row.get("link") or ""
        if not link.lower().startswith(("http://", "https://")):
            return False
        if self.article_hosts is not None and (urlsplit(row["feed"]).hostname or "").lower() not in self.article_hosts:
            return False
        return len(row.get("summary") or "") < SHORT_SUMMARY_CHARS

    def _add_articles(self, rows: list[dict]) -> None:
        """Fill `rows`' article text: known texts reused, wanted ones fetched; failures keep the summary."""
        self.articles_fetched, self.articles_disallowed = 0, []
        self.article_failures, self.articles_given_up = {}, {}
        host_down: dict[str, str] = {}  # robots.txt unreadable, or the site refused us: ask it no more this run
        for row in rows:
            entry_id, link = row["entry_id"], row.get("link") or ""
            row[ARTICLE] = self.known_articles.get(entry_id)
            if row[ARTICLE] is not None or entry_id in self.skip_articles or not self.wants_article(row):
                continue
            host = PoliteSession.host(link)
            site = urlsplit(link).hostname or link
            try:
                if host in host_down:
                    raise SourceBlocked(f"{site} not asked again in this run: {host_down[host]}")
                try:
                    self.http.robots(link, site)  # read once per host
                except (SourceBlocked, RetriesExhausted, requests.RequestException) as exc:
                    host_down[host] = str(exc)
                    raise
                row[ARTICLE] = self.article(link)
                self.articles_fetched += 1
            except Disallowed as exc:
                log.info("article skipped: %s", exc)
                self.articles_disallowed.append(link)
            except (SourceBlocked, RetriesExhausted, requests.RequestException) as exc:
                if isinstance(exc, SourceBlocked) and host not in host_down:
                    host_down[host] = str(exc)
                self._failed(entry_id, link, str(exc), permanent=isinstance(exc, requests.HTTPError))
            except (NotHtml, ExtractionError) as exc:
                self._failed(entry_id, link, str(exc), permanent=True)
        if self.articles_fetched or self.articles_disallowed or self.article_failures:
            log.info("articles: %d fetched, %d disallowed by robots.txt, %d failed (entries keep their summaries)",
                     self.articles_fetched, len(self.articles_disallowed), len(self.article_failures))

    def _failed(self, entry_id: str, link: str, why: str, *, permanent: bool) -> None:
        log.warning("article %s not fetched, the entry keeps its summary: %s", link, why)
        self.article_failures[link] = why
        if permanent:
            self.articles_given_up[entry_id] = why

    def article(self, link: str) -> str:
        """The main text of the page at `link` (robots.txt and the host's spacing honoured)."""
        site = urlsplit(link).hostname or link
        resp = self.http.page(link, site=site)
        ctype = resp.headers.get("Content-Type", "")
        kind = ctype.split(";")[0].strip().lower()
        if kind not in _HTML_TYPES and not (not kind and "<html" in resp.text[:1000].lower()):
            raise NotHtml(f"{link} is not an HTML page (Content-Type {ctype or 'missing'})")
        _, text = extract_text(_decode(resp), url=link, min_chars=ARTICLE_MIN_CHARS, prefer=ARTICLE_SELECTOR)
        return text

    # ---- feeds -----------------------------------------------------------------------------------

    def _get(self, feed: str) -> requests.Response:
        headers = {}
        cached = self.state.get(feed, {})
        if cached.get("etag"):
            headers["If-None-Match"] = cached["etag"]
        if cached.get("modified"):
            headers["If-Modified-Since"] = cached["modified"]
        resp = get_or_transient(self.session, feed, site="feed", shown=feed, timeout=self.timeout, headers=headers)
        if resp.status_code >= 400:
            raise FeedError(f"feed {feed} answered HTTP {resp.status_code} {resp.reason}: check the feed URL")
        return resp

    def _fetch_feed(self, feed: str) -> list[dict]:
        import feedparser

        resp = retry(lambda: self._get(feed), attempts=self.attempts, base_delay=self.base_delay, what=f"feed {feed}")
        if resp.status_code == 304:
            log.info("feed %s not modified", feed)
            return []
        headers = {k.lower(): v for k, v in resp.headers.items()}
        headers.setdefault("content-location", resp.url)
        parsed = feedparser.parse(resp.content, response_headers=headers)
        if parsed.bozo and not parsed.entries:
            raise FeedError(f"feed {feed} is not a readable RSS/Atom document ({parsed.get('bozo_exception')})")
        if parsed.bozo:
            log.warning("feed %s is malformed but readable (%s)", feed, parsed.get("bozo_exception"))
        rows = []
        for entry in parsed.entries:
            when = entry_time(entry)
            if when is None:
                self.undated += 1
                continue
            link = entry.get("link")
            fallback_id = f"{entry.get('title', '')}@{when.replace(tzinfo=None).isoformat()}"
            rows.append(
                {
                    "feed": feed,
                    "entry_id": entry.get("id") or link or fallback_id,
                    "link": link,
                    "title": strip_html(entry.get("title")),
                    "summary": strip_html(entry.get("summary")),
                    "published": when,
                    "source": "rss",
                    ARTICLE: None,
                }
            )
        self.state[feed] = {k: v for k, v in {"etag": resp.headers.get("ETag"), "modified": resp.headers.get("Last-Modified")}.items() if v}
        return rows
