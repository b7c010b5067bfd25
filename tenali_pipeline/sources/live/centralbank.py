"""Central-bank communications: policy statements, minutes and press releases of the Fed, the ECB
and the RBI, from their RSS feeds, with the full text of each linked page and the decision parsed.

Feeds (configurable, ``TENALI_CENTRAL_BANK_FEEDS`` as ``bank=url`` pairs; `DEFAULT_FEEDS`):

| bank | feed | items |
|------|------|-------|
| fed  | https://www.federalreserve.gov/feeds/press_monetary.xml | FOMC statements, minutes, discount-rate and other monetary-policy releases |
| ecb  | https://www.ecb.europa.eu/rss/press.html | press releases (monetary policy decisions, accounts of meetings), speeches |
| rbi  | https://www.rbi.org.in/pressreleases_rss.xml | press releases (MPC resolutions and minutes among many others) |

Each feed is RSS 2.0 (title, link, pubDate, guid); feeds carry only their latest items, so the asset
keeps what it collected before and passes the links it already has (`known`): a page is fetched
once. Feeds are fetched conditionally (If-None-Match / If-Modified-Since from `state`).

Politeness (`PoliteSession`, in ../polite.py, shared with full news articles): every request to a
host waits on that host's limiter (`delay` seconds apart, raised to the host's robots.txt
``Crawl-delay``), and robots.txt is read once per host with `urllib.robotparser` and honoured: a
disallowed page is skipped and listed in `self.skipped`. 429/5xx/network errors are retried with
backoff; a 403 or a bot-wall page (captcha, "Just a moment...") means the site refuses automated
access: that site's items fail with a message naming it and ``TENALI_SOURCES_OFF=centralbank``, and
when every feed is refused the fetch raises `SourceBlocked`.

Text (`extract_text`, ../polite.py): trafilatura 2.3.1 cannot be installed beside our pins (it needs
charset_normalizer>=3.5.2, ccxt 4.5.90 pins 3.4.7), so `extract_text` finds the main content with
selectolax (lexbor, an HTML5 parser that closes the legacy pages' unclosed ``<p>`` tags correctly):
the lowest element holding most of the page's paragraph text, read block by block, boilerplate lines
dropped. A page that yields less than `min_chars` of text fails that item (`ExtractionError`), never
an empty document.

Decisions: `parse_decision` reads the rate decision from statements and minutes where it is stated:
the action (cut, hike, hold, or set for "establish a target range"), the change in basis points when
the text gives it ("by 1/4 percentage point", "by 25 basis points") and the new rate or range.

Raw responses: with an `archive`, every response (robots.txt, feeds and their 304s, pages) is kept
as served in the run's `ResponseArchive` (attached to the session).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from urllib.parse import urlsplit

import polars as pl
import requests

from ..archive import ResponseArchive
from ..http import PartialFetchError, RetriesExhausted, SourceBlocked
# Polite fetching and text extraction live in sources/polite.py (shared with full news articles);
# imported here under their old names too.
from ..polite import (Disallowed, ExtractionError, PoliteSession, _clean, extract_text,  # noqa: F401
                      looks_like_bot_wall)
from ..schema import CENTRAL_BANK, conform

log = logging.getLogger(__name__)

OFF_SETTING = "TENALI_SOURCES_OFF=centralbank"
FEEDS_SETTING = "TENALI_CENTRAL_BANK_FEEDS"
USER_AGENT = "tenali-pipeline/0.1 (central-bank collector)"
SOURCE = "centralbank"

# bank id -> (institution, decision style). Sample banks (sources/sample/centralbank.py) add theirs.
BANKS: dict[str, tuple[str, str]] = {
    "fed": ("Federal Reserve", "fed"),
    "ecb": ("European Central Bank", "ecb"),
    "rbi": ("Reserve Bank of India", "rbi"),
}
DEFAULT_FEEDS: tuple[tuple[str, str], ...] = (
    ("fed", "https://www.federalreserve.gov/feeds/press_monetary.xml"),
    ("ecb", "https://www.ecb.europa.eu/rss/press.html"),
    ("rbi", "https://www.rbi.org.in/pressreleases_rss.xml"),
)


def parse_feeds(pairs: Iterable[str | tuple[str, str]]) -> list[tuple[str, str]]:
    """``["fed=https://...", ...]`` (or tuples) -> [(bank, url)]; a clear error for a bad entry."""
    out = []
    for pair in pairs:
        if isinstance(pair, tuple):
            bank, url = pair
        else:
            bank, sep, url = str(pair).partition("=")
            if not sep:
                raise ValueError(f"{FEEDS_SETTING} entry {pair!r} must be bank=url, e.g. "
                                 "fed=https://www.federalreserve.gov/feeds/press_monetary.xml")
        bank, url = bank.strip().lower(), url.strip()
        if not re.fullmatch(r"[a-z][a-z0-9_]*", bank) or not url.lower().startswith(("http://", "https://")):
            raise ValueError(f"{FEEDS_SETTING} entry {bank}={url} must be bank=url with a lowercase bank id "
                             "and an http(s) URL")
        out.append((bank, url))
    return out


# ---- decision parsing ----------------------------------------------------------------------------

_FRACTIONS = {"¼": " 1/4", "½": " 1/2", "¾": " 3/4", "⅛": " 1/8", "⅜": " 3/8", "⅝": " 5/8", "⅞": " 7/8"}
_DASHES = re.compile(r"[\u2010\u2011\u2012\u2013\u2014\u2212]")
_FRACTION = r"(?:[1357]/8|[13]/4|1/2)"
NUM = rf"(?:-?\d+(?:\.\d+)?(?:(?:\s?-\s?|\s){_FRACTION})?|{_FRACTION})"
_PCT = r"(?:percent|per\s?cent|%)"
_TRIGGER = re.compile(r"\b(?:decided|voted|agreed)\b|\bwill\s+(?:be|remain|maintain|keep|stay)\b|"
                      r"\bhas\s+been\s+decided\b", re.I)
_VERBS = [
    ("cut", r"lower|lowered|reduce|reduced|decrease|decreased|cut"),
    ("hike", r"raise|raised|increase|increased|hike|hiked"),
    ("hold", r"maintain|maintained|keep|kept|leave|left|hold|remain\s+unchanged|stay\s+unchanged"),
    ("set", r"establish|set\s+a\s+target\s+range"),
]
_VERB = re.compile(r"\b(?:" + "|".join(f"(?P<{a}>{v})" for a, v in _VERBS) + r")\b", re.I)
_CHANGE = re.compile(rf"(?:\bby\s+(?P<a>{NUM})|(?<![\w/.])(?P<b>{NUM}))\s*(?P<unit>basis\s+points?|bps|percentage\s+points?)"
                     rf"(?!\s+(?:spread|above|below|over))", re.I)
_RANGE = re.compile(rf"\b(?:to|at|of)\s+(?P<lo>{NUM})(?:\s*{_PCT})?\s+to\s+(?P<hi>{NUM})\s*{_PCT}", re.I)
_LEVEL = re.compile(rf"\b(?:to|at|of)\s+(?:(?:their|its)\s+(?:current\s+)?levels?\s+of\s+)?(?P<v>{NUM})\s*{_PCT}", re.I)
# What each bank's policy rate is called; the first one a sentence names is the rate it sets.
_SUBJECTS = {
    "fed": [(r"federal\s+funds\s+rate", "federal funds rate")],
    "ecb": [(r"deposit\s+facility", "deposit facility rate"),
            (r"main\s+refinancing\s+operations", "main refinancing operations rate"),
            (r"marginal\s+lending\s+facility", "marginal lending facility rate"),
            (r"(?:three\s+)?key\s+(?:ECB\s+)?interest\s+rates", None)],
    "rbi": [(r"(?<!reverse\s)(?:policy\s+)?repo\s+rate", "policy repo rate")],
}


@dataclass(frozen=True)
class Decision:
    """A policy-rate decision as stated: `change_bps` is signed (None when the text gives only the new
    level); `rate_low` == `rate_high` for a single rate, a range for the Fed's target range."""

    action: str  # cut | hike | hold | set
    change_bps: float | None
    rate_low: float | None
    rate_high: float | None
    rate_name: str | None


def number(s: str) -> float:
    """'4-1/4', '4 1/4', '1/4', '6.00', '-0.50' -> float."""
    s = s.strip()
    m = re.fullmatch(rf"(?P<sign>-?)(?P<whole>\d+(?:\.\d+)?)?(?:\s?-\s?|\s)?(?P<frac>{_FRACTION})?", s)
    if not m or not (m["whole"] or m["frac"]):
        raise ValueError(f"not a rate: {s!r}")
    value = Fraction(m["whole"] or "0") + (Fraction(m["frac"]) if m["frac"] else 0)
    return float(-value if m["sign"] else value)


def normalise(text: str) -> str:
    """One line of text with unicode fractions, dashes and spaces the regexes expect."""
    for k, v in _FRACTIONS.items():
        text = text.replace(k, v)
    text = text.replace("\u2044", "/")
    text = _DASHES.sub("-", text)
    return re.sub(r"[\s\u00a0\u2009\u202f]+", " ", text).strip()


def _sentences(text: str) -> list[str]:
    return re.split(r"(?<=[.!?;])\s+(?=[A-Z0-9\"'(\u2022])", normalise(text))


def _parse_sentence(sentence: str, style: str) -> Decision | None:
    subjects = _SUBJECTS[style]
    named = [(m.start(), name) for pattern, name in subjects for m in re.finditer(pattern, sentence, re.I)]
    if not named or not _TRIGGER.search(sentence):
        return None
    verb = _VERB.search(sentence, _TRIGGER.search(sentence).start())
    if verb is None:
        return None
    action = next(a for a, _ in _VERBS if verb.group(a))
    rest = sentence[verb.start():]
    change = None
    m = _CHANGE.search(rest)
    if m and action in ("cut", "hike"):
        amount = number(m["a"] or m["b"])
        change = abs(amount * 100 if m["unit"].lower().startswith("percentage") else amount)
        change = -change if action == "cut" else change
    elif action == "hold":
        change = 0.0
    lo = hi = None
    if (r := _RANGE.search(rest)) is not None:
        lo, hi = number(r["lo"]), number(r["hi"])
    elif (v := _LEVEL.search(rest)) is not None:
        lo = hi = number(v["v"])
    name = next((n for _, n in sorted(named) if n), None)
    if name and style == "fed":
        name = "federal funds rate target range" if lo is not None and lo != hi else "federal funds rate target"
    if lo is not None and (lo > hi or hi > 100):
        lo = hi = None
    return Decision(action, change, lo, hi, name if lo is not None else None)


def parse_decision(text: str, style: str) -> Decision | None:
    """The policy-rate decision stated in `text` (a statement or minutes), or None.

    The first sentence that announces a decision about the bank's policy rate gives the action and
    the change; when it states no level ("lower the three key ECB interest rates by 25 basis
    points"), the first later sentence with a level and the same action gives it ("will be decreased
    to 3.00%, 3.15% and 3.40% respectively": the rate named first, the one the bank steers by).
    """
    if style not in _SUBJECTS or not text:
        return None
    decision = None
    for sentence in _sentences(text):
        d = _parse_sentence(sentence, style)
        if d is None:
            continue
        if decision is None:
            decision = d
        elif d.rate_low is not None and d.action == decision.action:
            decision = Decision(decision.action, decision.change_bps if decision.change_bps is not None else d.change_bps,
                                d.rate_low, d.rate_high, d.rate_name)
        if decision.rate_low is not None:
            break
    if decision is not None and decision.action == "set" and decision.rate_low is None:
        return None  # "establish a target range" without the range: nothing stated
    return decision


_DOC_TYPES = [
    ("minutes", re.compile(r"\bminutes\b|\baccount of the monetary policy meeting", re.I)),
    ("statement", re.compile(r"\bFOMC statement\b|monetary policy decisions?\b|monetary policy statement\b|"
                             r"resolution of the monetary policy committee|\bpolicy statement\b", re.I)),
    ("speech", re.compile(r"\bspeech\b|\bremarks\b|\btestimony\b|\binterview\b|\bpress conference\b", re.I)),
]


def classify(title: str) -> str:
    """statement | minutes | speech | press_release, from the item's title."""
    return next((kind for kind, pattern in _DOC_TYPES if pattern.search(title or "")), "press_release")


def make_row(*, bank: str, feed: str, link: str, title: str, published: dt.datetime, text: str, source: str,
             institution: str | None = None, style: str | None = None) -> dict:
    """One CENTRAL_BANK row: the item classified and, for statements and minutes, its decision parsed."""
    institution_default, style_default = BANKS.get(bank, (bank.upper(), bank))
    style = style or style_default
    doc_type = classify(title)
    decision = parse_decision(text, style) if doc_type in ("statement", "minutes") else None
    return {
        "doc_id": hashlib.sha1(f"{bank}|{link}".encode()).hexdigest()[:20],
        "bank": bank, "institution": institution or institution_default, "doc_type": doc_type,
        "title": title, "link": link, "published": published, "text": text,
        "decision": decision.action if decision else None,
        "change_bps": decision.change_bps if decision else None,
        "rate_low": decision.rate_low if decision else None,
        "rate_high": decision.rate_high if decision else None,
        "rate_name": decision.rate_name if decision else None,
        "feed": feed, "source": source,
    }


def to_frame(rows: list[dict]) -> pl.DataFrame:
    if not rows:
        return pl.DataFrame(schema=CENTRAL_BANK)
    df = conform(pl.DataFrame(rows, schema=CENTRAL_BANK), CENTRAL_BANK, what="central-bank communications")
    return df.unique("doc_id", keep="last", maintain_order=True).sort("bank", "published", "doc_id")


# ---- the client ----------------------------------------------------------------------------------


class CentralBankClient:
    """Items of the configured feeds with the full text of their pages (see the module docstring).

    `known`: links already collected (not fetched again). `state`: feed URL -> {"etag", "modified"}
    for conditional requests; read back `client.state` after storing the rows.
    """

    def __init__(self, feeds: Sequence[str | tuple[str, str]] = DEFAULT_FEEDS, *, known: Iterable[str] = (),
                 state: dict[str, dict[str, str]] | None = None, session: requests.Session | None = None,
                 user_agent: str = USER_AGENT, delay: float = 1.0, timeout: float = 30.0, attempts: int = 3,
                 base_delay: float = 1.0, min_chars: int = 200, sleep: Callable[[float], None] = time.sleep,
                 archive: ResponseArchive | None = None):
        self.feeds = parse_feeds(feeds)
        self.known = set(known)
        self.state = {k: dict(v) for k, v in (state or {}).items()}
        self.http = PoliteSession(session, user_agent=user_agent, delay=delay, timeout=timeout, attempts=attempts,
                                  base_delay=base_delay, sleep=sleep,
                                  advice=f"to run without central-bank communications set {OFF_SETTING}, or drop "
                                         f"this bank's feed from {FEEDS_SETTING}")
        if archive is not None:
            archive.attach(self.http.session)
        self.min_chars = min_chars
        self.skipped: list[str] = []  # disallowed by robots.txt
        self.undated = 0

    @staticmethod
    def site(bank: str, url: str) -> str:
        name = BANKS.get(bank, (bank.upper(), bank))[0]
        return f"{name} ({urlsplit(url).hostname})"

    def entries(self, bank: str, feed: str) -> list[dict]:
        """The feed's items as {link, title, published}; [] when it is unchanged (304)."""
        import feedparser

        site = self.site(bank, feed)
        cached = self.state.get(feed, {})
        headers = {k: v for k, v in (("If-None-Match", cached.get("etag")),
                                     ("If-Modified-Since", cached.get("modified"))) if v}
        resp = self.http.get(feed, site=site, headers=headers or None)
        if resp.status_code == 304:
            log.info("feed %s not modified", feed)
            return []
        head = resp.text[:2000].lower()
        if "<html" in head and looks_like_bot_wall(resp.text):
            raise self.http.blocked(site, feed, "a bot-wall page instead of the feed")
        response_headers = {k.lower(): v for k, v in resp.headers.items()}
        response_headers.setdefault("content-location", resp.url)
        parsed = feedparser.parse(resp.content, response_headers=response_headers)
        if not parsed.entries and (parsed.bozo or not parsed.get("version")):  # an empty feed is fine
            why = parsed.get("bozo_exception") or "not RSS or Atom"
            raise ValueError(f"feed {feed} is not a readable RSS/Atom document ({why}): check {FEEDS_SETTING}")
        if parsed.bozo:
            log.warning("feed %s is malformed but readable (%s)", feed, parsed.get("bozo_exception"))
        out, dropped = [], []
        for entry in parsed.entries:
            when = entry.get("published_parsed") or entry.get("updated_parsed")  # UTC
            link = (entry.get("link") or "").strip()
            if not link or when is None:
                dropped.append(entry)
                continue
            out.append({"link": link, "title": _clean(entry.get("title") or ""),
                        "published": dt.datetime(*when[:6], tzinfo=dt.timezone.utc)})
        self.undated += len(dropped)
        if dropped and not out:  # a changed feed layout, not a quiet day: never zero rows without a word
            first = dropped[0]
            raise ValueError(f"feed {feed}: none of its {len(dropped)} items has both a link and a readable date "
                             f"(first: link {first.get('link')!r}, date {first.get('published') or first.get('updated')!r}); "
                             f"the feed's layout may have changed: check the feed or {FEEDS_SETTING}")
        self.state[feed] = {k: v for k, v in (("etag", resp.headers.get("ETag")),
                                              ("modified", resp.headers.get("Last-Modified"))) if v}
        return out

    def fetch(self) -> pl.DataFrame:
        rows: list[dict] = []
        failures: dict[str, str] = {}
        blocked: dict[str, str] = {}
        for bank, feed in self.feeds:
            try:
                items = self.entries(bank, feed)
            except SourceBlocked as exc:
                blocked[f"{bank} feed {feed}"] = str(exc)
                continue
            except (ValueError, requests.HTTPError, RetriesExhausted, Disallowed) as exc:
                failures[f"{bank} feed {feed}"] = str(exc)
                continue
            for item in items:
                link = item["link"]
                if link in self.known:
                    continue
                try:
                    resp = self.http.get(link, site=self.site(bank, link))
                    if "<html" in resp.text[:2000].lower() and looks_like_bot_wall(resp.text) and len(resp.text) < 20000:
                        raise self.http.blocked(self.site(bank, link), link, "a bot-wall page")
                    page_title, text = extract_text(resp.content, url=link, min_chars=self.min_chars)
                except Disallowed as exc:
                    log.info("%s", exc)
                    self.skipped.append(link)
                    continue
                except SourceBlocked as exc:
                    blocked[f"{bank} {link}"] = str(exc)
                    continue
                except (ExtractionError, requests.HTTPError, RetriesExhausted) as exc:
                    failures[f"{bank} {link}"] = str(exc)
                    continue
                rows.append(make_row(bank=bank, feed=feed, link=link, title=item["title"] or page_title,
                                     published=item["published"], text=text, source=SOURCE))
                self.known.add(link)
        if self.undated:
            log.warning("dropped %d feed items without a link or a date", self.undated)
        df = to_frame(rows)
        if blocked and len({k.split()[0] for k in blocked}) == len({b for b, _ in self.feeds}) and not rows:
            raise SourceBlocked(next(iter(blocked.values())))
        failures.update(blocked)
        if failures:
            raise PartialFetchError("central-bank communications", failures, partial=df)
        return df
