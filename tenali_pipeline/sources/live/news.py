"""Headlines from RSS / Atom feeds: bytes fetched with requests, parsed with feedparser.

Endpoints: whatever feed URLs the caller configures, e.g. the SEC's latest filings
(https://www.sec.gov/cgi-bin/browse-edgar?action=getcurrent&output=atom), central-bank and
exchange press-release feeds. One GET per feed per fetch, conditional (If-None-Match /
If-Modified-Since) when `state` holds the feed's last ETag / Last-Modified, so an unchanged
feed costs a 304 and no parsing.

Rate limits: feeds publish none, but hosts do: requests to sec.gov go through the process-wide
10/s `SEC_LIMITER` (see ../http.py), 429 and 5xx are retried with backoff (Retry-After
honoured). feedparser has no timeout of its own, which is why we fetch the bytes ourselves.

State: `client.state` maps feed URL -> {"etag", "modified"}. Persist it only after the entries
returned by `fetch()` are stored; otherwise the next call gets a 304 and those entries are lost.

A feed that fails (HTTP error, unparseable body) is logged and recorded in `client.errors`; the
other feeds are still returned. Only when every feed fails does `fetch()` raise.
"""

from __future__ import annotations

import html
import logging
import os
import re
from datetime import datetime, timezone
from html.parser import HTMLParser

import polars as pl
import requests

from ..http import TransientError, rate_limited_session, retry
from ..schema import NEWS, conform

log = logging.getLogger(__name__)

_DEFAULT_AGENT = "tenali-pipeline/0.1 (+news collector)"


class FeedError(RuntimeError):
    """A feed could not be fetched or parsed."""


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
    ):
        self.feeds = list(feeds)
        self.timeout = timeout
        self.state: dict[str, dict[str, str]] = {k: dict(v) for k, v in (state or {}).items()}
        if session is None:
            session = rate_limited_session()
            # sec.gov refuses anonymous agents: reuse the EDGAR identity ("Name email") when set.
            session.headers["User-Agent"] = user_agent or os.environ.get("SEC_EDGAR_IDENTITY") or _DEFAULT_AGENT
        elif user_agent:
            session.headers["User-Agent"] = user_agent
        self.session = session
        self.attempts, self.base_delay = attempts, base_delay
        self.errors: dict[str, str] = {}
        self.undated = 0  # entries dropped for having neither published nor updated

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
            log.warning("dropped %d feed entries with neither a published nor an updated date", self.undated)
        seen: set[str] = set()
        unique = []
        for row in rows:
            keys = {f"id:{row['entry_id']}"} | ({f"link:{row['link']}"} if row["link"] else set())
            if keys & seen:
                continue
            seen |= keys
            unique.append(row)
        frame = pl.DataFrame(unique, schema=NEWS) if unique else pl.DataFrame(schema=NEWS)
        return conform(frame, NEWS, what="RSS news")

    def _get(self, feed: str) -> requests.Response:
        headers = {}
        cached = self.state.get(feed, {})
        if cached.get("etag"):
            headers["If-None-Match"] = cached["etag"]
        if cached.get("modified"):
            headers["If-Modified-Since"] = cached["modified"]
        try:
            resp = self.session.get(feed, headers=headers, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"could not reach feed {feed}: {exc}") from exc
        if resp.status_code == 429 or resp.status_code >= 500:
            after = resp.headers.get("Retry-After", "")
            raise TransientError(f"feed {feed} answered HTTP {resp.status_code}", retry_after=float(after) if after.isdigit() else None)
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
            when = entry.get("published_parsed") or entry.get("updated_parsed")  # UTC struct_time
            if when is None:
                self.undated += 1
                continue
            link = entry.get("link")
            rows.append(
                {
                    "feed": feed,
                    "entry_id": entry.get("id") or link or f"{entry.get('title', '')}@{datetime(*when[:6]).isoformat()}",
                    "link": link,
                    "title": strip_html(entry.get("title")),
                    "summary": strip_html(entry.get("summary")),
                    "published": datetime(*when[:6], tzinfo=timezone.utc),
                    "source": "rss",
                }
            )
        self.state[feed] = {k: v for k, v in {"etag": resp.headers.get("ETag"), "modified": resp.headers.get("Last-Modified")}.items() if v}
        return rows
