"""US IPOs from EDGAR: final prospectuses (424B4, also 424B1) listed in the quarterly full index,
each cover page parsed for the offering price, size, ticker and exchange.

Endpoints (both constructor arguments, so tests point them at 127.0.0.1):

- ``https://www.sec.gov/Archives/edgar/full-index/{year}/QTR{q}/form.idx``: every filing of the
  quarter sorted by form type, fixed-width text after a short preamble::

      Form Type   Company Name                                                  CIK         Date Filed  File Name
      ---------------------------------------------------------------------------------------------------------
      424B4       Facebook Inc                                                  1326801     2012-05-18  edgar/data/1326801/0001193125-12-240111.txt

  The current quarter's file grows each night (tens of MB late in a quarter; requests asks for gzip);
- ``https://www.sec.gov/Archives/{File Name}``: the full submission (SGML header, then each document).
  Only its start is asked for (an HTTP Range of `cover_bytes`): the prospectus is the first document
  and its cover page comes first. A server that ignores Range answers the whole file, which parses
  the same; when the bytes received hold neither the cover's closing line ("The date of this
  prospectus is ...") nor more text than any cover has, the whole file is fetched once more.

What the cover parser reads (`parse_cover`): the IPO statement ("This is our initial public
offering", "no public market currently exists", "Prior to this offering, there has been no public
market"), the price table ("Public offering price $17.00 $170,000,000", "Price to Public ... Per
Share $38.00 ... Total $16,006,877,370", "The initial public offering price is $17.00 per share",
"PRICE $38.00 A SHARE"),
the headline size ("421,233,615 Shares", "20,000,000 Units"), the first symbol after "under the
symbol" (for a SPAC, its units) and the exchange named just before it; "blank check company" or
"initial business combination" flags a SPAC.

What it cannot parse, and what happens then:

- a follow-on (no IPO statement on the cover) is skipped, as are a direct listing (no offering
  price: Spotify, Slack) and a cover that states only a price range; each skip is logged and kept
  in `skipped` with its reason;
- an IPO cover with no fixed price it can read (an unusual table layout, a price drawn as an
  image) fails that filing alone: `PartialFetchError` names the accession, the others are kept.
  Silently dropping it would lose an IPO;
- S-1 / F-1 registration statements are not read at all: before pricing they state at most an
  estimated range, and the final price appears only in the 424B prospectus. An IPO whose final
  prospectus was filed under another rule (424B3, a post-effective amendment) is therefore missed;
- the share count is the base offering as the cover states it (over-allotment excluded); the
  gross proceeds are the table's "Total" (price x shares when the table has none); prices in a
  currency other than US dollars are read as dollars only when written "$" / "US$".

Rate limits and faults: every request waits on the machine-wide `SEC_LIMITER` (10 per second, the
SEC's fair-access limit) and carries the User-Agent from SEC_EDGAR_IDENTITY ("Name email"); 429,
5xx and network errors are retried with backoff. A 403 (the SEC's answer to an undeclared tool or
a client over the limit) stops the fetch with `SourceBlocked` naming SEC_EDGAR_IDENTITY and
``TENALI_SOURCES_OFF=us_ipos``. A failing quarter index or filing fails alone.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import polars as pl
import requests

from ..http import (SEC_LIMITER, MalformedResponse, PartialFetchError, RateLimiter, SourceBlocked,
                    get_checked, rate_limited_session, retry)
from ..schema import conform
from ..us_ipo_schema import US_IPOS
from .filings import parse_identity

log = logging.getLogger(__name__)

FULL_INDEX = "https://www.sec.gov/Archives/edgar/full-index"
ARCHIVES = "https://www.sec.gov/Archives"
FORMS = ("424B4", "424B1")
OFF_SETTING = "TENALI_SOURCES_OFF=us_ipos"
SOURCE = "sec-edgar"
COVER_BYTES = 512 * 1024  # the SGML header and the prospectus cover fit well inside this
# Text kept as the cover when its closing line is not found: a cover runs to 2,000-8,000 characters,
# so this holds it whole, and a body with more text than this cannot have cut it.
COVER_CHARS = 12_000


class CoverParseError(ValueError):
    """An IPO cover page whose offering price could not be read."""


class NotFound(RuntimeError):
    """EDGAR answered 404."""


# ---- the quarterly form index ------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexEntry:
    form: str
    company: str
    cik: str  # 10 digits
    filed: dt.date
    path: str  # edgar/data/1326801/0001193125-12-240111.txt

    @property
    def accession(self) -> str:
        return self.path.rsplit("/", 1)[-1].removesuffix(".txt")


_INDEX_LINE = re.compile(r"^(?P<form>\S+(?: \S+)*?)\s{2,}(?P<company>\S.*?)\s+(?P<cik>\d{1,10})\s+"
                         r"(?P<filed>\d{4}-\d{2}-\d{2}|\d{8})\s+(?P<path>edgar/\S+)\s*$")


def parse_form_index(text: str, forms: Iterable[str] = FORMS) -> list[IndexEntry]:
    """The entries of `forms` in a full-index ``form.idx``; `MalformedResponse` if it is not one."""
    header = re.search(r"^Form Type\s+Company Name\s+CIK\s+Date Filed\s+File Name\s*$\n^-{20,}\s*$", text[:5000],
                       flags=re.M)
    if header is None:
        raise MalformedResponse("EDGAR form.idx: no 'Form Type  Company Name  CIK  Date Filed  File Name' header "
                                f"followed by dashes; got {text[:160]!r}")
    wanted = tuple(f + " " for f in forms)
    out = []
    for line in text[header.end():].splitlines():
        if not line.startswith(wanted):  # sorted by form type: a prefix test skips the other 99%
            continue
        m = _INDEX_LINE.match(line)
        if m is None:
            raise MalformedResponse(f"EDGAR form.idx: unreadable line {line!r}")
        filed = m["filed"] if "-" in m["filed"] else f"{m['filed'][:4]}-{m['filed'][4:6]}-{m['filed'][6:]}"
        out.append(IndexEntry(form=m["form"], company=m["company"].strip(), cik=m["cik"].zfill(10),
                              filed=dt.date.fromisoformat(filed), path=m["path"]))
    return out


def quarters(start: dt.date, end: dt.date) -> list[tuple[int, int]]:
    """(year, quarter) from `start`'s quarter through `end`'s."""
    out, y, q = [], start.year, (start.month - 1) // 3 + 1
    while (y, q) <= (end.year, (end.month - 1) // 3 + 1):
        out.append((y, q))
        y, q = (y + 1, 1) if q == 4 else (y, q + 1)
    return out


def quarter_end(year: int, q: int) -> dt.date:
    return dt.date(year + (q == 4), 1 if q == 4 else 3 * q + 1, 1) - dt.timedelta(days=1)


# ---- the submission and its cover page ---------------------------------------------------------------


def primary_document(submission: str) -> tuple[str, bool]:
    """(the prospectus, is_html) from a full submission, which may be cut short by a Range request:
    the first <DOCUMENT> whose <TYPE> is a 424B form (the first document otherwise), read up to its
    </TEXT> or to the end of what arrived. A body without <DOCUMENT> is taken as the document itself."""
    docs = [m.start() for m in re.finditer(r"<DOCUMENT>", submission)]
    if not docs:
        body = submission
    else:
        chosen = None
        for start in docs:
            kind = re.match(r"<DOCUMENT>\s*<TYPE>([^\n<]*)", submission[start:start + 200])
            if kind and kind.group(1).strip().upper().startswith("424B"):
                chosen = start
                break
        start = docs[0] if chosen is None else chosen
        end = submission.find("</DOCUMENT>", start)
        body = submission[start:end if end >= 0 else len(submission)]
        text_at = body.find("<TEXT>")
        if text_at >= 0:
            body = body[text_at + len("<TEXT>"):]
            close = body.find("</TEXT>")
            body = body[:close] if close >= 0 else body
    is_html = bool(re.search(r"<(?:html|body|div|p|table|font)[\s>]", body[:20_000], re.I))
    return body, is_html


_SPACES = re.compile(r"[\s\u00a0\u2000-\u200b\u202f\u205f\u3000\ufeff]+")
_COVER_END = re.compile(r"(?:The\s+date\s+of\s+this\s+prospectus\s+is|Prospectus\s+dated)\s+"
                        r"[A-Z][a-z]+\.?\s+\d{1,2}\s*,\s*\d{4}")


def document_text(document: str, is_html: bool) -> str:
    """Visible text of the prospectus on one line (whitespace collapsed), scripts and styles dropped."""
    if is_html:
        from selectolax.lexbor import LexborHTMLParser

        tree = LexborHTMLParser(document)
        for node in tree.css("script, style, head"):
            node.decompose()
        root = tree.body or tree.root
        text = root.text(separator=" ") if root is not None else ""
    else:
        text = re.sub(r"</?(?:PAGE|TABLE|CAPTION|S|C|FN|PRE|F\d+)>", " ", document, flags=re.I)
    return _SPACES.sub(" ", text).strip()


def cover_of(text: str) -> tuple[str, bool]:
    """(the cover page's text, whether it is whole): up to its closing line ("The date of this
    prospectus is May 17, 2012", "Prospectus dated ..."), else the first `COVER_CHARS` characters
    (many covers end on a bare date), whole when the text runs on past them."""
    m = _COVER_END.search(text, 0, COVER_CHARS + 200)
    if m is not None:
        return text[:m.end()], True
    return text[:COVER_CHARS], len(text) > COVER_CHARS


@dataclass(frozen=True)
class Cover:
    is_ipo: bool
    offer_price: float | None = None
    shares_offered: float | None = None
    gross_proceeds: float | None = None
    ticker: str | None = None
    exchange: str | None = None
    is_spac: bool = False
    skip: str | None = None  # why the filing is not kept (a follow-on, a direct listing, a range only)


_I = re.I
_DOLLAR = r"(?:U\.?S\.?\s?)?\$\s*"
_NUM = r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
_SCALE = r"(?:\s*(million|billion))?"
_NOTE = r"(?:\s*\(\d\))?"
_UNIT = r"(?:(?:common\s+|ordinary\s+)?(?:share|unit)|ADS|American\s+Depositary\s+Share)"
_LEADER = r"[\s.]*"  # spaces, or the dot leaders of plain-text tables ("Initial public offering price.....")

_IPO = re.compile(  # "This is our / an / Uber Technologies, Inc.’s initial public offering", ...
    r"this\s+is\s+(?:our|an|the|a|[A-Z][\w.,&\- ]{0,80}?[’']s)\s+initial\s+public\s+offering"
    r"|no\s+public\s+market\s+(?:currently\s+)?exists"
    r"|there\s+(?:has|have)\s+(?:previously\s+)?been\s+no\s+(?:established\s+)?public\s+(?:trading\s+)?market"
    r"|there\s+is\s+(?:currently\s+|presently\s+)?no\s+(?:established\s+)?public\s+(?:trading\s+)?market", _I)
_SPAC = re.compile(r"blank\s+check\s+company|initial\s+business\s+combination|special\s+purpose\s+acquisition", _I)
_DIRECT = re.compile(r"direct\s+listing|registered\s+stockholders"
                     r"|not\s+(?:selling|offering)\s+any\s+(?:shares|securities)", _I)
_HYPOTHETICAL = re.compile(r"(?:assumed|estimated|midpoint)\W*(?:\w+\W+){0,3}$", _I)  # "assumed initial public ..."
_RANGE = re.compile(rf"(?:between|from)\s+{_DOLLAR}\d[\d.,]*\s+(?:and|to)\s+{_DOLLAR}\d[\d.,]*\s+per\s+{_UNIT}", _I)
# "Public offering price $17.00 $170,000,000" / "Price to public $ 10.00 $ 200,000,000": per unit, then total.
_ROW = re.compile(rf"(?:initial\s+)?(?:public\s+offering\s+price|price\s+to\s+(?:the\s+)?public){_NOTE}{_LEADER}"
                  rf"(?:per\s+{_UNIT}{_LEADER})?{_DOLLAR}{_NUM}{_NOTE}\s*(?:{_DOLLAR}{_NUM}{_SCALE})?", _I)
# "The initial public offering price is $17.00 per share" / "Each unit has an offering price of $10.00".
_SENTENCE = re.compile(rf"(?:public\s+)?offering\s+price\s+(?:is|of|will\s+be)\s+"
                       rf"{_DOLLAR}{_NUM}(?:\s+per\s+{_UNIT})?", _I)
# "PRICE $38.00 A SHARE" / "Price $17.00 Per Share", the headline of many covers.
_HEADLINE = re.compile(rf"\bprice\s+{_DOLLAR}{_NUM}\s+(?:a|per)\s+{_UNIT}", _I)
# FB-style: columns Price to Public | Discounts | Proceeds; rows "Per Share $38.00 ..." and "Total $16,006,877,370 ...".
_PER = re.compile(rf"\bPer\s+{_UNIT}{_NOTE}{_LEADER}{_DOLLAR}{_NUM}", _I)
_TOTAL = re.compile(rf"\bTotal{_NOTE}{_LEADER}{_DOLLAR}{_NUM}{_SCALE}", _I)
_SHARES = re.compile(r"(?<![\d,.$])(\d{1,3}(?:,\d{3})+)\s+(?:Class\s+[A-Z]\s+)?(?:common\s+|ordinary\s+)?"
                     r"(?:shares|units|American\s+Depositary\s+Shares|ADSs)\b", _I)
_SYMBOL = re.compile(r"(?i:under\s+the\s+(?:ticker\s+|trading\s+)?symbols?)\s*[“\"‘'`]*\s*"
                     r"([A-Z][A-Z0-9]{0,5}(?:[.\-][A-Z0-9]{1,3})?)(?![A-Za-z0-9])")
_EXCHANGE = re.compile(r"(NYSE\s+American|NYSE\s+MKT|NYSE\s+Amex|American\s+Stock\s+Exchange)|(NYSE\s+Arca)"
                       r"|(New\s+York\s+Stock\s+Exchange|\bNYSE\b)|(Nasdaq)|(Cboe|BATS)", _I)
_EXCHANGE_NAMES = ("NYSE American", "NYSE Arca", "NYSE", "Nasdaq", "Cboe")


def _number(text: str, scale: str | None = None) -> float:
    return float(text.replace(",", "")) * {"million": 1e6, "billion": 1e9}.get((scale or "").lower(), 1.0)


def _price_and_total(cover: str) -> tuple[float | None, float | None]:
    row = _ROW.search(cover)
    if row is not None:
        price = _number(row.group(1))
        total = _number(row.group(2), row.group(3)) if row.group(2) else None
        return price, total if total and total >= price else None
    sentence = next((m for m in _SENTENCE.finditer(cover)
                     if not _HYPOTHETICAL.search(cover[max(0, m.start() - 40):m.start()])), None)
    per = _PER.search(cover)
    total = _TOTAL.search(cover, per.end()) if per is not None else None
    if sentence is None:
        sentence = _HEADLINE.search(cover)
    if sentence is not None:
        return _number(sentence.group(1)), _number(total.group(1), total.group(2)) if total else None
    if per is not None:
        return _number(per.group(1)), _number(total.group(1), total.group(2)) if total else None
    return None, None


def parse_cover(cover: str) -> Cover:
    """Read one prospectus cover (text from `document_text` / `cover_of`); see the module docstring."""
    if not _IPO.search(cover):
        return Cover(is_ipo=False, skip="not an initial public offering (no IPO statement on the cover: a follow-on)")
    is_spac = bool(_SPAC.search(cover))
    price, total = _price_and_total(cover)
    if price is None or price <= 0:
        if _DIRECT.search(cover):
            return Cover(is_ipo=True, is_spac=is_spac, skip="direct listing: no offering price")
        if _RANGE.search(cover):
            return Cover(is_ipo=True, is_spac=is_spac, skip="price range only: not the final prospectus")
        raise CoverParseError("IPO cover page without a readable offering price (no 'public offering price $..', "
                              "'price to public $..' or 'per share $..')")
    shares_m = _SHARES.search(cover)
    shares = _number(shares_m.group(1)) if shares_m else None
    if shares is None and total:
        shares = round(total / price)
    if total is None and shares:
        total = round(shares * price, 2)
    ticker = exchange = None
    symbol = _SYMBOL.search(cover)
    if symbol is not None:
        ticker = symbol.group(1)
        named = list(_EXCHANGE.finditer(cover, max(0, symbol.start() - 400), symbol.start()))
        if named:
            last = named[-1]
            exchange = _EXCHANGE_NAMES[last.lastindex - 1]
    if exchange is None:  # "... NYSE under the symbol" not found: the first exchange the cover names
        first = _EXCHANGE.search(cover)
        exchange = _EXCHANGE_NAMES[first.lastindex - 1] if first else None
    return Cover(is_ipo=True, offer_price=price, shares_offered=shares, gross_proceeds=total, ticker=ticker,
                 exchange=exchange, is_spac=is_spac)


def parse_prospectus(submission: str) -> tuple[Cover, bool]:
    """(the cover read from a full submission or prospectus, whether the cover was whole in it)."""
    document, is_html = primary_document(submission)
    cover, complete = cover_of(document_text(document, is_html))
    return parse_cover(cover), complete


def ipo_row(entry: IndexEntry, cover: Cover, source: str = SOURCE) -> dict:
    """One `US_IPOS` row from the index entry and its parsed cover."""
    return {"cik": entry.cik, "company": entry.company, "accession": entry.accession, "form": entry.form,
            "filed": entry.filed, "ticker": cover.ticker, "exchange": cover.exchange, "offer_price": cover.offer_price,
            "shares_offered": cover.shares_offered, "gross_proceeds": cover.gross_proceeds, "is_spac": cover.is_spac,
            "source": source}


def ipo_frame(rows: list[dict]) -> pl.DataFrame:
    frame = pl.DataFrame(rows, schema=US_IPOS) if rows else pl.DataFrame(schema=US_IPOS)
    return conform(frame, US_IPOS, what="SEC EDGAR IPO prospectuses")


def _is_whole(resp: requests.Response) -> bool:
    """A 206 that nevertheless holds the whole file ("Content-Range: bytes 0-35999/36000")."""
    m = re.fullmatch(r"bytes\s+0-(\d+)/(\d+)", resp.headers.get("Content-Range", "").strip())
    return bool(m) and int(m.group(1)) + 1 >= int(m.group(2))


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":  # a Range cut inside the last character: UTF-8 all the same
            try:
                return body[:exc.start].decode("utf-8")
            except UnicodeDecodeError:
                pass
        return body.decode("cp1252", errors="replace")  # EDGAR's older documents: Windows curly quotes


# ---- the client ------------------------------------------------------------------------------------


class EdgarIpoClient:
    """US IPOs whose final prospectus (424B4 / 424B1) was filed in [start, end] (end: today)."""

    def __init__(
        self,
        start: str | dt.date,
        end: str | dt.date | None = None,
        identity: str | None = None,
        *,
        forms: tuple[str, ...] = FORMS,
        archive=None,
        session: requests.Session | None = None,
        full_index_url: str = FULL_INDEX,
        archives_url: str = ARCHIVES,
        limiter: RateLimiter | None = None,
        cover_bytes: int | None = COVER_BYTES,
        timeout: float = 60.0,
        attempts: int = 4,
        base_delay: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.start = dt.date.fromisoformat(str(start))
        self.end = dt.date.fromisoformat(str(end)) if end else None
        if self.end is not None and self.end < self.start:
            raise ValueError(f"EDGAR IPOs: end {self.end} is before start {self.start}")
        name, email = parse_identity(identity)
        self.forms = tuple(forms)
        self.full_index_url, self.archives_url = full_index_url.rstrip("/"), archives_url.rstrip("/")
        self.cover_bytes, self.timeout = cover_bytes, timeout
        self.attempts, self.base_delay, self.sleep = attempts, base_delay, sleep
        self.session = rate_limited_session(limiter or SEC_LIMITER, session)
        self.session.headers.update({"User-Agent": f"{name} {email}", "Accept-Encoding": "gzip, deflate"})
        if archive is not None:
            archive.attach(self.session)  # every response kept (sources/archive.py)
        self.skipped: dict[str, str] = {}  # accession -> why it is not an IPO row
        self.covered_through: dt.date | None = None  # last day the latest fetch covered

    # -- HTTP

    def _get(self, url: str, *, what: str, headers: dict | None = None) -> requests.Response:
        def attempt() -> requests.Response:
            return get_checked(
                self.session, url, site="SEC EDGAR", shown=f"{what} ({url})", timeout=self.timeout, headers=headers,
                not_found=NotFound,
                blocked="The SEC answers 403 to a User-Agent without a real name and contact email and to clients "
                        "over 10 requests per second: set SEC_EDGAR_IDENTITY='Your Name you@example.com', or turn "
                        f"the source off with {OFF_SETTING}.")

        return retry(attempt, attempts=self.attempts, base_delay=self.base_delay, what=f"SEC EDGAR {what}",
                     sleep=self.sleep)

    # -- pieces

    def index(self, year: int, q: int) -> list[IndexEntry]:
        """The quarter's 424B4 / 424B1 filings; none for a quarter whose index is not published yet."""
        url = f"{self.full_index_url}/{year}/QTR{q}/form.idx"
        try:
            resp = self._get(url, what=f"form index {year} Q{q}")
        except NotFound:
            if quarter_end(year, q) >= dt.date.today() - dt.timedelta(days=7):
                log.info("EDGAR form index %d Q%d not published yet", year, q)
                return []
            raise
        return parse_form_index(resp.content.decode("latin-1"), self.forms)

    def prospectus(self, entry: IndexEntry) -> Cover:
        """The cover of one filing: its first `cover_bytes`, then the whole file if the cover is cut."""
        url = f"{self.archives_url}/{entry.path}"
        what = f"{entry.form} {entry.accession} ({entry.company})"
        partial = None
        if self.cover_bytes:
            partial = self._get(url, what=what, headers={"Range": f"bytes=0-{self.cover_bytes - 1}"})
            whole = partial.status_code != 206 or _is_whole(partial)
            try:
                cover, complete = parse_prospectus(_decode(partial.content))
            except CoverParseError:
                if whole:
                    raise
                complete = False
            if complete or whole:
                return cover
            log.info("EDGAR %s: cover not within the first %d bytes; fetching the whole file", what, self.cover_bytes)
        cover, _ = parse_prospectus(_decode(self._get(url, what=what).content))
        return cover

    def fetch(self, since: dt.date | None = None, known: Iterable[str] = (),
              max_quarters: int | None = None) -> pl.DataFrame:
        """IPO prospectuses filed from `since` (None: `start`) through `end`, at most `max_quarters`
        quarters of them; accessions in `known` are not fetched again. One failing quarter index or
        filing fails alone: `PartialFetchError` names it and carries the other rows.

        `covered_through` is then the last day a later run need not ask for again: the end of what
        was asked, but never today (EDGAR indexes a day's filings that night) and never on or after
        a failure, so that a run from there retries it. Skipped follow-ons are in `skipped`; pass
        them in `known` next time too."""
        first = max(self.start, since) if since else self.start
        last = self.end or dt.date.today()
        todo = quarters(first, last) if first <= last else []
        if max_quarters is not None and len(todo) > max_quarters:
            todo = todo[:max_quarters]
            last = quarter_end(*todo[-1])
        known = set(known)
        rows, failures = [], {}
        self.skipped = {}
        # The day before the earliest failure: a later fetch from there asks for the failed items again.
        stop = min(last, dt.date.today() - dt.timedelta(days=1))
        for year, q in todo:
            try:
                entries = self.index(year, q)
            except SourceBlocked:
                raise
            except Exception as exc:  # noqa: BLE001 - named in the PartialFetchError, never swallowed
                log.warning("EDGAR form index %d Q%d failed: %s", year, q, exc)
                failures[f"form.idx {year} Q{q}"] = f"{type(exc).__name__}: {exc}"
                stop = min(stop, max(first, dt.date(year, 3 * q - 2, 1)) - dt.timedelta(days=1))
                continue
            for entry in entries:
                if not first <= entry.filed <= last or entry.accession in known:
                    continue
                try:
                    cover = self.prospectus(entry)
                except SourceBlocked:
                    raise
                except Exception as exc:  # noqa: BLE001 - named in the PartialFetchError
                    log.warning("EDGAR %s %s (%s) failed: %s", entry.form, entry.accession, entry.company, exc)
                    failures[entry.accession] = f"{type(exc).__name__}: {exc}"
                    stop = min(stop, entry.filed - dt.timedelta(days=1))
                    continue
                known.add(entry.accession)
                if cover.skip:
                    log.info("EDGAR %s %s (%s) skipped: %s", entry.form, entry.accession, entry.company, cover.skip)
                    self.skipped[entry.accession] = cover.skip
                    continue
                rows.append(ipo_row(entry, cover))
        self.covered_through = stop
        frame = ipo_frame(rows)
        if failures:
            raise PartialFetchError("SEC EDGAR IPO prospectuses", failures, partial=frame)
        return frame
