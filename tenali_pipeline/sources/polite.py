"""Fetching third-party web pages politely, and reading their main text.

Shared by the sources that fetch pages linked from feeds (central-bank communications, full news
articles), so that every such page is requested under the same rules:

- `PoliteSession`: GETs spaced per host (`delay` seconds apart, raised to the host's robots.txt
  ``Crawl-delay``), robots.txt read once per host with `urllib.robotparser` and honoured (a disallowed
  URL raises `Disallowed` before any request for it), 429/5xx/network errors retried with backoff,
  and a 403 or a bot-wall page raised as `SourceBlocked` naming the site and `advice` (the setting
  that turns the source off).
- `extract_text`: the main text of an HTML page with selectolax (lexbor, an HTML5 parser that also
  closes legacy pages' unclosed ``<p>`` tags): scripts, navigation, headers, footers and elements
  marked as chrome (menus, share bars, ads, newsletters, comments) dropped, then the lowest element
  holding most of the paragraph text, read block by block. trafilatura 2.3.1 would do this but
  cannot be installed beside our pins (it needs charset_normalizer>=3.5.2, ccxt 4.5.90 pins 3.4.7).
"""

from __future__ import annotations

import re
import time
import urllib.robotparser
from collections.abc import Callable
from urllib.parse import urlsplit

import requests

from .http import RateLimiter, SourceBlocked, get_or_transient, retry

USER_AGENT = "tenali-pipeline/0.1 (+polite collector)"


# ---- text extraction -----------------------------------------------------------------------------


class ExtractionError(ValueError):
    """A page's main text could not be found (an unknown layout, a script-rendered page)."""


_DROP_TAGS = ["script", "style", "noscript", "nav", "header", "footer", "aside", "form", "iframe", "svg", "button",
              "select", "template", "object"]
_BOILERPLATE_ATTR = re.compile(r"(?:^|[\s_-])(?:nav|navbar|menu|breadcrumbs?|footer|masthead|share|social|cookies?|"
                               r"sidebar|related|skip|banner|toolbar|pagination|print|ads?|adslot|advert\w*|promo|"
                               r"newsletter|subscribe|paywall|comments?|taboola|outbrain)(?:$|[\s_-])", re.I)
_BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "pre", "dd", "dt", "td", "th", "div",
           "section", "article", "main", "table", "tr", "ul", "ol", "dl", "center", "caption", "figcaption",
           "address", "hr"}
_PARAGRAPHS = {"p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "dd", "dt"}
# Lines every page of a site carries that are not part of the text.
_BOILERPLATE_LINE = re.compile(
    r"^(?:for media inquiries|media (?:contacts?|inquiries)|reproduction is permitted|last update|"
    r"implementation note issued|related information|back to top|share this page|copyright|"
    r"for further information|\[email\s*protected\]|advertisement$)", re.I)
# The Fed's pre-2006 pages delimit the release with these comments.
_LEGACY_MARK = re.compile(r"<!-+\s*DO NOT REMOVE:\s*Wireless Generation\s*-+>", re.I)
_BOT_WALL = re.compile(r"just a moment\.\.\.|captcha|cf-browser-verification|attention required|access denied|"
                       r"request unsuccessful\. incapsula|enable javascript and cookies", re.I)
# Where news pages put the story itself, most specific first (schema.org articleBody, HTML5 article/main).
ARTICLE_SELECTOR = '[itemprop="articleBody"], article, main, [role="main"]'


def looks_like_bot_wall(body: str) -> bool:
    """A challenge page where content was expected (Cloudflare, Akamai, Incapsula)."""
    return bool(_BOT_WALL.search(body[:5000]))


def _clean(s: str) -> str:
    return re.sub(r"\s+", " ", s.replace("\u00a0", " ")).strip()


def _is_boilerplate(node) -> bool:
    attrs = node.attributes
    marks = " ".join(v for k, v in attrs.items() if k in ("class", "id", "role") and v)
    return bool(marks and _BOILERPLATE_ATTR.search(marks)) or attrs.get("role") == "navigation"


def _link_only(node) -> bool:
    text = _clean(node.text())
    links = "".join(_clean(a.text()) for a in node.css("a"))
    return bool(text) and text.replace(" ", "") == links.replace(" ", "")


def _lines(container) -> list[str]:
    """Text of `container` block by block: paragraphs (p, li, headings) always; loose text outside
    any paragraph only when the container has no paragraphs (pages laid out with <br>)."""
    has_paragraphs = container.css_first(",".join(sorted(_PARAGRAPHS))) is not None
    out: list[str] = []
    buf: list[str] = []

    def flush(keep: bool):
        line = _clean("".join(buf))
        buf.clear()
        if line and keep:
            out.append(line)

    def walk(node, in_paragraph: bool):
        for child in node.iter(include_text=True):
            tag = child.tag
            if tag == "-text":
                buf.append(child.text_content or "")
            elif tag == "br":
                flush(in_paragraph or not has_paragraphs)
            elif tag in _BLOCKS or tag in _PARAGRAPHS:
                flush(in_paragraph or not has_paragraphs)
                para = in_paragraph or tag in _PARAGRAPHS
                if tag in _PARAGRAPHS and _link_only(child):
                    continue  # "Implementation Note issued ...", "Related information" links
                walk(child, para)
                flush(para or not has_paragraphs)
            elif tag not in ("-comment", "img"):
                buf.append(" ")
                walk(child, in_paragraph)
                buf.append(" ")

    walk(container, False)
    flush(not has_paragraphs)
    return out


def _paragraph_chars(root) -> int:
    return sum(len(_clean(p.text())) for p in root.css("p, li, pre, blockquote"))


def _main_container(root):
    """The lowest element under `root` holding at least 80% of its paragraph text (after boilerplate
    is removed): one article even when it is split into sections, without the page's chrome."""
    scores: dict[int, tuple[object, int]] = {}
    total = 0
    for p in root.css("p, li, pre, blockquote"):
        n = len(_clean(p.text()))
        if not n:
            continue
        total += n
        node = p.parent
        while node is not None:
            key = node.mem_id
            scores[key] = (node, scores.get(key, (node, 0))[1] + n)
            if node.mem_id == root.mem_id or node.tag == "body":
                break
            node = node.parent
    if not total:
        return root
    # deepest first: the first that reaches 80% of the text is the lowest such element
    best = root
    best_depth = -1
    for node, n in scores.values():
        if n >= 0.8 * total:
            depth, up = 0, node
            while up is not None and up.mem_id != root.mem_id and up.tag != "body":
                depth, up = depth + 1, up.parent
            if depth > best_depth:
                best, best_depth = node, depth
    return best


def extract_text(html: str | bytes, *, url: str = "", min_chars: int = 200,
                 prefer: str | None = None) -> tuple[str, str]:
    """(title, main text) of an HTML page, paragraphs separated by blank lines.

    `prefer`: selectors of the elements that hold the text on this kind of page, most specific first
    (news pages: `ARTICLE_SELECTOR`). The first selector whose largest match holds at least a quarter
    of the page's paragraph text narrows the search to that element, so that a river of teasers or a
    long comment thread cannot outweigh the story. Otherwise (and within it) the densest block of
    paragraphs wins. Raises `ExtractionError` naming `url` when fewer than `min_chars` characters of
    text are found.
    """
    from selectolax.lexbor import LexborHTMLParser

    if isinstance(html, bytes):
        html = html.decode("utf-8", errors="replace")
    title_tree = LexborHTMLParser(html)
    marks = [m.start() for m in _LEGACY_MARK.finditer(html)]
    if len(marks) >= 2:
        html = "<html><body>" + html[marks[0]:marks[-1]] + "</body></html>"
    tree = LexborHTMLParser(html)
    title_node = (title_tree.css_first("h1") or title_tree.css_first("h3.title") or title_tree.css_first(".title")
                  or title_tree.css_first("title"))
    title = _clean(title_node.text()) if title_node is not None else ""
    tree.strip_tags(_DROP_TAGS)
    body = tree.body
    if body is not None:
        for node in body.css("div, section, ul, ol, table, span, p"):
            if _is_boilerplate(node):
                node.decompose()
    root = body or tree.root
    if prefer:
        total = _paragraph_chars(root)
        for selector in (s.strip() for s in prefer.split(",")):
            matches = [(_paragraph_chars(n), n) for n in root.css(selector)]
            chars, node = max(matches, key=lambda m: m[0], default=(0, None))
            if total and chars >= 0.25 * total:
                root = node
                break
    container = _main_container(root)
    lines = [ln for ln in _lines(container) if not _BOILERPLATE_LINE.match(ln)]
    # a heading repeated as the first line of the body adds nothing
    if lines and title and lines[0] == title:
        lines = lines[1:]
    text = "\n\n".join(lines)
    if len(text) < min_chars:
        where = f" of {url}" if url else ""
        raise ExtractionError(
            f"could not extract the text{where}: only {len(text)} characters of paragraph text found (need "
            f"{min_chars}); the page may be rendered by JavaScript or use a layout the extractor does not know")
    return title, text


# ---- polite HTTP ---------------------------------------------------------------------------------


class Disallowed(Exception):
    """robots.txt disallows the URL for our user agent."""


class PoliteSession:
    """GETs spaced per host (`delay` seconds, or the host's robots.txt Crawl-delay if longer), with
    robots.txt read once per host and honoured. 429/5xx/network errors raise `TransientError` (retried
    `attempts` times); a 403 or a bot-wall page raises `SourceBlocked` naming the site and `advice`.

    `session` may be shared with the caller's other requests (its response hooks, e.g. a
    `ResponseArchive`, then see the pages and robots.txt too); its User-Agent is set to `user_agent`.
    `sleep` and `clock` are injectable so that tests can check the spacing without waiting.
    """

    def __init__(self, session: requests.Session | None = None, *, user_agent: str = USER_AGENT, delay: float = 1.0,
                 timeout: float = 30.0, attempts: int = 3, base_delay: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 advice: str = "to run without this source, add it to TENALI_SOURCES_OFF"):
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = user_agent
        self.user_agent, self.delay, self.timeout = user_agent, delay, timeout
        self.attempts, self.base_delay, self.sleep, self.clock = attempts, base_delay, sleep, clock
        self.advice = advice
        self._limiters: dict[str, RateLimiter | None] = {}
        self._robots: dict[str, urllib.robotparser.RobotFileParser] = {}

    @staticmethod
    def host(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    def _limiter(self, seconds: float) -> RateLimiter:
        return RateLimiter(1.0 / seconds, sleep=self.sleep, clock=self.clock)

    def _wait(self, host: str) -> None:
        if host not in self._limiters:
            self._limiters[host] = self._limiter(self.delay) if self.delay > 0 else None
        limiter = self._limiters[host]
        if limiter is not None:
            limiter.wait()

    def _request(self, url: str, *, site: str, headers: dict | None = None) -> requests.Response:
        host = self.host(url)

        def attempt():
            self._wait(host)
            return get_or_transient(self.session, url, site=site, shown=url, timeout=self.timeout, headers=headers)

        return retry(attempt, attempts=self.attempts, base_delay=self.base_delay, what=f"{site} {url}",
                     sleep=self.sleep)

    def blocked(self, site: str, url: str, why: str) -> SourceBlocked:
        return SourceBlocked(f"{site} refused automated access ({why}) to {url}. The site may block this network or "
                             f"User-Agent; {self.advice}.")

    def robots(self, url: str, site: str) -> urllib.robotparser.RobotFileParser:
        host = self.host(url)
        if host not in self._robots:
            parser = urllib.robotparser.RobotFileParser(f"{host}/robots.txt")
            resp = self._request(f"{host}/robots.txt", site=site)
            if resp.status_code in (401, 403):
                raise self.blocked(site, f"{host}/robots.txt", f"HTTP {resp.status_code}")
            if resp.status_code >= 400:
                parser.allow_all = True  # no robots.txt: everything is allowed
            elif "<html" in resp.text[:500].lower() and looks_like_bot_wall(resp.text):
                raise self.blocked(site, f"{host}/robots.txt", "a bot-wall page")
            else:
                parser.parse(resp.text.splitlines())
                crawl = parser.crawl_delay(self.user_agent)
                if crawl and float(crawl) > self.delay:
                    limiter = self._limiter(float(crawl))
                    limiter.wait()  # books the robots.txt request just made: the next one waits a full Crawl-delay
                    self._limiters[host] = limiter
            self._robots[host] = parser
        return self._robots[host]

    def get(self, url: str, *, site: str, headers: dict | None = None) -> requests.Response:
        """GET `url` if robots.txt allows it (else `Disallowed`); 304 is returned as is."""
        if not self.robots(url, site).can_fetch(self.user_agent, url):
            raise Disallowed(f"robots.txt of {self.host(url)} disallows {url} for {self.user_agent}")
        resp = self._request(url, site=site, headers=headers)
        if resp.status_code == 403:
            raise self.blocked(site, url, "HTTP 403")
        if resp.status_code >= 400:
            raise requests.HTTPError(f"{site} answered HTTP {resp.status_code} {resp.reason} for {url}", response=resp)
        return resp

    def page(self, url: str, *, site: str) -> requests.Response:
        """`get`, and a challenge page served with 200 instead of the page raised as `SourceBlocked`."""
        resp = self.get(url, site=site)
        if "<html" in resp.text[:2000].lower() and len(resp.text) < 20000 and looks_like_bot_wall(resp.text):
            raise self.blocked(site, url, "a bot-wall page")
        return resp
