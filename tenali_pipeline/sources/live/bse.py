"""BSE corporate announcements, results included (BSE lists them as the "Result" category), from the
JSON API behind bseindia.com.

``api.bseindia.com/BseIndiaAPI/api/AnnSubCategoryGetData/w?pageno=1&strCat=-1&strPrevDate=20240101&
strToDate=20240107&strScrip=&strSearch=P&strType=C&subcategory=-1`` (strCat/subcategory -1 = every
category, strScrip empty = every company, strType C = equity) answers one page of the query, newest
first, and the query's row count::

    {"Table": [{"NEWSID": "6fb57b5e-a05f-4e05-b2da-6e2b5bfe32ae", "SCRIP_CD": 517397,
                "NEWSSUB": "PAN ELECTRONICS INDIA LTD. - 517397 - Compliances-Reg. 39 (3) - ...",
                "HEADLINE": "Issuance of duplicate share certificate ...", "MORE": "",
                "CATEGORYNAME": "Company Update", "SUBCATNAME": "Reg. 39 (3) - ...",
                "NEWS_DT": "2023-10-20T23:44:22.95", "DT_TM": "2023-10-20T23:44:22.95",
                "News_submission_dt": "2023-10-20T23:44:22", "DissemDT": "2023-10-20T23:44:22.95",
                "ATTACHMENTNAME": "aab502e1-3e05-4fdc-bc10-ecbb436cab8d.pdf", "PDFFLAG": 1,
                "SLONGNAME": "PAN ELECTRONICS INDIA LTD.", ...}],
     "Table1": [{"ROWCNT": 1292}]}

`BseClient` asks page after page (``pageno`` 1, 2, ...) until the rows seen reach ROWCNT. No BSE
library is used: ``bsedata`` reads quotes only, and ``bse`` (BseIndiaApi) sends this same request
through its own throttle; plain `requests` with `india.py`'s per-host limiter (3 per second per host),
retries and response archive is all it takes, and it replays from 127.0.0.1 in tests.

BSE wants a browser's headers with Referer and Origin bseindia.com; without them, or from a network it
refuses, it answers 403 or an HTML page: `SourceBlocked` names BSE and ``TENALI_SOURCES_OFF=india``.
429, 5xx and network errors are retried with backoff. One failing window fails only itself
(`PartialFetchError` names each and carries the others' rows).

Mapped into INDIA_ANNOUNCEMENTS with exchange ``BSE``, ann_id ``BSE:<NEWSID>``, and the BSE scrip code
(``SCRIP_CD``, e.g. ``500325``) as symbol: BSE's announcements carry no NSE symbol, so the same company
has two symbols in the table. They carry no ISIN either (``isin`` is kept when a row has one): the ISIN
that joins the two exchanges is in BSE's scrip master, not in this feed. ``subject`` is NEWSSUB without
its "<company> - <scrip code> - " prefix, ``text`` the HEADLINE (and MORE when it adds to it),
``published`` the submission time and ``disseminated`` DissemDT, both IST stored in UTC. Attachments are
linked under ``www.bseindia.com/xml-data/corpfiling/AttachLive/``; BSE moves older files to
``AttachHis/``, and ``www.bseindia.com/stockinfo/AnnPdfOpen.aspx?Pname=<name>`` resolves either.

Volume: BSE disseminates a few thousand announcements on a busy day, a few dozen pages. A first run from
TENALI_START_DATE over years of history is tens of thousands of requests at 3 per second; ``scrips=``
(one query per scrip code) is the cheap way to backfill a chosen set of companies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time
from collections.abc import Callable, Iterable

import polars as pl
import requests

from ..http import MalformedResponse, PartialFetchError, RetriesExhausted, SourceBlocked, fetch_json
from ..india_schema import INDIA_ANNOUNCEMENTS
from ..schema import conform
from .india import BROWSER_HEADERS, IST, OFF_SETTING, _as_date, _text, per_host_session, windows

BSE_HOME = "https://www.bseindia.com"
BSE_API = "https://api.bseindia.com/BseIndiaAPI/api"
ANNOUNCEMENTS_PATH = "/AnnSubCategoryGetData/w"
ATTACHMENTS = f"{BSE_HOME}/xml-data/corpfiling/AttachLive/"
SITE = "BSE (bseindia.com)"
SOURCE = "bse"
_JSON_ACCEPT = "application/json, text/plain, */*"


def parse_bse_time(text) -> dt.datetime | None:
    """'2023-10-20T23:44:22.95' (IST, any fraction) or '20/10/2023 23:44:22' -> aware UTC; None if blank."""
    if text is None or not str(text).strip():
        return None
    s = str(text).strip()
    try:
        local = dt.datetime.fromisoformat(s)
    except ValueError:
        try:
            local = dt.datetime.strptime(s, "%d/%m/%Y %H:%M:%S")
        except ValueError:
            raise ValueError(f"unrecognised BSE time {s!r}") from None
    if local.tzinfo is None:
        local = local.replace(tzinfo=IST)
    return local.astimezone(dt.timezone.utc)


def parse_page(body, what: str = "corporate announcements") -> tuple[list[dict], int]:
    """One page of AnnSubCategoryGetData -> (its rows, the query's ROWCNT)."""
    if not isinstance(body, dict) or not isinstance(body.get("Table"), list):
        raise MalformedResponse(f"BSE {what}: expected {{'Table': [...], 'Table1': [{{'ROWCNT': n}}]}}, got "
                                f"{type(body).__name__}: {str(body)[:120]}")
    rows, counts = body["Table"], body.get("Table1")
    if not counts:  # an empty or missing Table1 is read as an empty result, unless rows came with it
        if rows:
            raise MalformedResponse(f"BSE {what}: {len(rows)} rows but no Table1 ROWCNT, so the pages cannot be "
                                    "counted")
        return [], 0
    try:
        return rows, int(counts[0]["ROWCNT"])
    except (KeyError, TypeError, ValueError, IndexError):
        raise MalformedResponse(f"BSE {what}: Table1 has no ROWCNT ({str(counts)[:120]})") from None


def _subject(item: dict, code: str) -> str | None:
    """NEWSSUB without BSE's "<company> - <scrip code> - " prefix; else the subcategory or category."""
    sub = _text(item.get("NEWSSUB"))
    if sub:
        m = re.match(rf"^.*?-\s*{re.escape(code)}\s*-\s*", sub)
        sub = _text(sub[m.end():]) if m else sub
    return sub or _text(item.get("SUBCATNAME")) or _text(item.get("CATEGORYNAME"))


def _summary(item: dict) -> str | None:
    head, more = _text(item.get("HEADLINE")), _text(item.get("MORE"))
    if more and (not head or more not in head):
        return f"{head} {more}" if head else more
    return head


def parse_announcements(rows: Iterable[dict], *, source: str = SOURCE,
                        attachments: str = ATTACHMENTS) -> pl.DataFrame:
    """Rows of BSE's announcement pages -> INDIA_ANNOUNCEMENTS rows (exchange BSE, times in UTC)."""
    out = []
    for item in rows:
        try:
            code = _text(item["SCRIP_CD"])
            published = parse_bse_time(item.get("News_submission_dt") or item.get("NEWS_DT") or item.get("DT_TM"))
            disseminated = parse_bse_time(item.get("DissemDT"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedResponse(f"BSE corporate announcements: a row lacks or garbles {exc} "
                                    f"({str(item)[:160]})") from None
        subject = _subject(item, code or "")
        if not code or not subject or published is None:
            raise MalformedResponse(f"BSE corporate announcements: a row has no SCRIP_CD, NEWSSUB or time "
                                    f"({str(item)[:160]})")
        news_id, attachment = _text(item.get("NEWSID")), _text(item.get("ATTACHMENTNAME"))
        ann_id = f"BSE:{news_id}" if news_id else "BSE:" + hashlib.sha1(
            f"{code}|{published.isoformat()}|{subject}|{attachment}".encode()).hexdigest()[:20]
        out.append({"ann_id": ann_id, "exchange": "BSE", "symbol": code, "company": _text(item.get("SLONGNAME")),
                    "isin": _text(item.get("ISIN") or item.get("ISIN_NUMBER")), "industry": None,
                    "subject": subject, "text": _summary(item),
                    "attachment": attachments + attachment if attachment else None,
                    "published": published, "disseminated": disseminated, "source": source})
    if not out:
        return pl.DataFrame(schema=INDIA_ANNOUNCEMENTS)
    return conform(pl.DataFrame(out, schema=INDIA_ANNOUNCEMENTS), INDIA_ANNOUNCEMENTS, what="BSE announcements")


class BseClient:
    """BSE corporate announcements from `start` to `end` (inclusive; `end` defaults to today in IST).

    `scrips` (BSE scrip codes) asks for those companies only, one query each per window; empty asks
    for every company. `category` is BSE's strCat (-1 = all; "Result" = results only). `archive`
    (a `sources.archive.ResponseArchive`, or anything with `attach(session)`) records every response.
    """

    def __init__(self, start: str | dt.date, end: str | dt.date | None = None, *, scrips: Iterable[str] = (),
                 category: str = "-1", api_url: str = BSE_API, home_url: str = BSE_HOME,
                 attachments_url: str = ATTACHMENTS, session: requests.Session | None = None, window_days: int = 7,
                 per_second: float = 3.0, attempts: int = 4, base_delay: float = 1.0, timeout: float = 30.0,
                 max_pages: int = 2000, archive=None, sleep: Callable[[float], None] = time.sleep):
        self.start = _as_date(start)
        self.end = _as_date(end) or dt.datetime.now(IST).date()
        if self.start is None or self.start > self.end:
            raise ValueError(f"BSE: start {start!r} must be a date on or before end {self.end}")
        self.scrips = sorted({str(s).strip() for s in scrips if str(s).strip()})
        self.category = category
        self.api_url, self.attachments_url = api_url.rstrip("/"), attachments_url
        home = home_url.rstrip("/")
        self.headers = {"Accept": _JSON_ACCEPT, "Referer": home + "/", "Origin": home}
        self.session = session or per_host_session(per_second)
        self.session.headers.update(BROWSER_HEADERS)
        self.window_days, self.max_pages = window_days, max_pages
        self.attempts, self.base_delay, self.timeout, self.sleep = attempts, base_delay, timeout, sleep
        if archive is not None:
            archive.attach(self.session)

    def page(self, lo: dt.date, hi: dt.date, pageno: int, scrip: str = "") -> dict:
        """One page of the announcements of [lo, hi] (all companies, or `scrip`)."""
        params = {"pageno": pageno, "strCat": self.category, "strPrevDate": f"{lo:%Y%m%d}",
                  "strToDate": f"{hi:%Y%m%d}", "strScrip": scrip, "strSearch": "P", "strType": "C",
                  "subcategory": "-1"}
        return fetch_json(self.session, self.api_url + ANNOUNCEMENTS_PATH, site=SITE, off_setting=OFF_SETTING,
                          params=params, headers=self.headers, timeout=self.timeout, attempts=self.attempts,
                          base_delay=self.base_delay, sleep=self.sleep)

    def window(self, lo: dt.date, hi: dt.date, scrip: str = "") -> pl.DataFrame:
        """Every page of [lo, hi]: until the rows seen reach ROWCNT (the largest any page stated, since
        announcements arriving while a day is paged raise it and push rows onto later pages)."""
        what = f"corporate announcements {lo}..{hi}" + (f" for {scrip}" if scrip else "")
        rows: list[dict] = []
        total = 0
        for pageno in range(1, self.max_pages + 1):
            items, count = parse_page(self.page(lo, hi, pageno, scrip), what)
            rows, total = rows + items, max(total, count)
            if len(rows) >= total:
                return parse_announcements(rows, attachments=self.attachments_url)
            if not items:
                raise MalformedResponse(f"BSE {what}: page {pageno} is empty after {len(rows)} of the "
                                        f"{total} rows its ROWCNT promises")
        raise MalformedResponse(f"BSE {what}: still short of ROWCNT after {self.max_pages} pages")

    def announcements(self) -> pl.DataFrame:
        """Every announcement from `start` to `end`, window by window; one failing window fails alone."""
        frames, failures = [], {}
        for lo, hi in windows(self.start, self.end, self.window_days):
            for scrip in self.scrips or [""]:
                try:
                    frames.append(self.window(lo, hi, scrip))
                except SourceBlocked:
                    raise
                except (RetriesExhausted, MalformedResponse, requests.HTTPError) as exc:
                    key = f"corporate announcements {lo}..{hi}" + (f" for {scrip}" if scrip else "")
                    failures[key] = str(exc)
        df = pl.concat(frames) if frames else pl.DataFrame(schema=INDIA_ANNOUNCEMENTS)
        df = df.unique("ann_id", keep="last", maintain_order=True).sort("published", "ann_id")
        if failures:
            raise PartialFetchError("BSE corporate announcements", failures, partial=df)
        return df
