"""Indian exchanges: NSE corporate announcements, the daily cash-market bhavcopy and past IPOs.

Read straight from NSE's JSON endpoints and archive files with `requests`, which is all nselib and
nsepython do: nselib builds a fresh session per call on hard-coded https://www.nseindia.com URLs, so
it could not be replayed from a local server in tests, and it would add pandas-based parsing only.

Announcements: ``www.nseindia.com/api/corporate-announcements?index=equities&from_date=DD-MM-YYYY&
to_date=DD-MM-YYYY`` answers a list (some deployments wrap it in ``{"data": [...]}``) of::

    {"symbol": "RELIANCE", "desc": "Outcome of Board Meeting", "an_dt": "15-Jan-2024 18:45:12",
     "attchmntFile": "https://nsearchives.nseindia.com/corporate/...pdf", "attchmntText": "...",
     "sm_name": "Reliance Industries Limited", "sm_isin": "INE002A01018", "smIndustry": "Refineries",
     "seq_id": "104512345", "exchdisstime": "15-Jan-2024 18:45:14", "sort_date": "2024-01-15 18:45:12", ...}

Bhavcopy, one file per trading day on ``nsearchives.nseindia.com``:

- from 2024-07-08, the UDiFF zip ``/content/cm/BhavCopy_NSE_CM_0_0_0_YYYYMMDD_F_0000.csv.zip``, one
  CSV inside: ``TradDt,BizDt,Sgmt,Src,FinInstrmTp,FinInstrmId,ISIN,TckrSymb,SctySrs,...,OpnPric,
  HghPric,LwPric,ClsPric,LastPric,PrvsClsgPric,...,TtlTradgVol,TtlTrfVal,TtlNbOfTxsExctd,...``
  (turnover in rupees);
- before, ``/products/content/sec_bhavdata_full_DDMMYYYY.csv``: ``SYMBOL, SERIES, DATE1, PREV_CLOSE,
  OPEN_PRICE, HIGH_PRICE, LOW_PRICE, LAST_PRICE, CLOSE_PRICE, AVG_PRICE, TTL_TRD_QNTY,
  TURNOVER_LACS, NO_OF_TRADES, DELIV_QTY, DELIV_PER`` (spaces after the commas; turnover in lakhs).

The parser tells the layout from the header (the old ``cmDDMONYYYYbhav.csv`` too).

IPOs: ``www.nseindia.com/api/public-past-issues`` lists past issues, as far back as NSE keeps them
(no date parameters; the asset merges each answer into the issues held)::

    {"symbol": "TATATECH", "companyName": "Tata Technologies Limited", "securityType": "EQ",
     "ipoStartDate": "22-NOV-2023", "ipoEndDate": "24-NOV-2023", "listingDate": "30-NOV-2023",
     "issuePrice": "   500", "priceRange": "Rs.475 to Rs.500", ...}

NSE sits behind a bot manager: its API answers 401 to a client that has not first loaded a page of
the site with a browser's headers and kept the cookies it set. `NseClient.handshake` does that (the
home page) before the first API call and again, once, when a call answers 401 (the cookies last
minutes). A 403, an HTML challenge page where JSON or a file was expected, or a second 401 mean NSE
refuses this client: `SourceBlocked` names NSE and ``TENALI_SOURCES_OFF=india``. 429, 5xx and
network errors are retried with backoff; every request waits on its host's machine-wide limiter
(3 per second by default, the pace NSE client libraries keep to).

Times are IST (UTC+05:30, no daylight saving) and stored in UTC. A weekday without a bhavcopy
(404: a trading holiday, or today's file before NSE publishes it in the evening) is not an error:
it is listed in ``holidays``, and an incremental run that starts a few days back picks it up later. Weekends are skipped
without a request (NSE's rare Saturday sessions, e.g. budget days, are missed unless
``weekends=True``). One failing window of announcements or one failing day of bhavcopy fails only
itself: `PartialFetchError` names every one and carries what the others returned.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import re
import threading
import time
import zipfile
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import polars as pl
import requests
from requests.adapters import HTTPAdapter

from ..http import (MalformedResponse, PartialFetchError, RateLimiter, RetriesExhausted, SourceBlocked,
                    get_or_transient, home_state_file, retry)
from ..india_schema import INDIA_ANNOUNCEMENTS, INDIA_BHAVCOPY, INDIA_IPOS
from ..schema import conform
from .centralbank import looks_like_bot_wall

log = logging.getLogger(__name__)

NSE_HOME = "https://www.nseindia.com"
NSE_ARCHIVES = "https://nsearchives.nseindia.com"
OFF_SETTING = "TENALI_SOURCES_OFF=india"
SITE = "NSE (nseindia.com)"
SOURCE = "nse"
IST = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")
UDIFF_FROM = dt.date(2024, 7, 8)  # first day of the UDiFF CM bhavcopy
# Equity series kept from the bhavcopy by default (bonds, G-secs, warrants and the like are not).
EQUITY_SERIES = ("EQ", "BE", "BZ", "SM", "ST", "SZ")
ANNOUNCEMENTS_REFERER = f"{NSE_HOME}/companies-listing/corporate-filings-announcements"
IPO_REFERER = f"{NSE_HOME}/market-data/all-upcoming-issues-ipo"
BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/124.0.0.0 Safari/537.36",
    "Accept-Language": "en-US,en;q=0.9",
    "Accept-Encoding": "gzip, deflate",
    "Connection": "keep-alive",
}
_PAGE_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
_JSON_ACCEPT = "application/json, text/plain, */*"


# ---- per-host rate limits -------------------------------------------------------------------------

_HOST_LIMITERS: dict[str, RateLimiter] = {}
_HOST_LOCK = threading.Lock()


def host_limiter(url: str, per_second: float) -> RateLimiter:
    """The limiter of `url`'s host (created at `per_second` on first use), shared by the machine's processes
    through $TENALI_HOME: bhavcopy, announcements and IPOs are separate assets, run at once in separate
    processes, and NSE's bot wall answers a burst from one address."""
    host = (urlsplit(url).hostname or "").lower()
    with _HOST_LOCK:
        if host not in _HOST_LIMITERS:
            _HOST_LIMITERS[host] = RateLimiter(per_second, shared=lambda: home_state_file(host))
        return _HOST_LIMITERS[host]


class _PerHostAdapter(HTTPAdapter):
    def __init__(self, per_second: float, **kwargs):
        self.per_second = per_second
        super().__init__(**kwargs)

    def send(self, request, *args, **kwargs):  # type: ignore[override]
        host_limiter(request.url, self.per_second).wait()
        return super().send(request, *args, **kwargs)


def per_host_session(per_second: float = 3.0, session: requests.Session | None = None) -> requests.Session:
    """A session whose every request waits on its host's machine-wide limiter."""
    session = session or requests.Session()
    adapter = _PerHostAdapter(per_second)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# ---- parsing ----------------------------------------------------------------------------------------


def parse_ist(text) -> dt.datetime | None:
    """'15-Jan-2024 18:45:12', '2024-01-15 18:45:12' or '15012024184512' (IST) -> aware UTC; None if blank."""
    if text is None or not str(text).strip() or str(text).strip() == "-":
        return None
    s = str(text).strip()
    for fmt in ("%d-%b-%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%d-%b-%Y %H:%M", "%d%m%Y%H%M%S", "%d-%m-%Y %H:%M:%S"):
        try:
            return dt.datetime.strptime(s, fmt).replace(tzinfo=IST).astimezone(dt.timezone.utc)
        except ValueError:
            continue
    raise ValueError(f"unrecognised NSE time {s!r}")


def parse_day(text) -> dt.date | None:
    """'22-NOV-2023', '22-Nov-2023', '2023-11-22' or '22-11-2023' -> date; None for blank or '-'."""
    if text is None or not str(text).strip() or str(text).strip() in ("-", "NA"):
        return None
    s = str(text).strip()
    for fmt in ("%d-%b-%Y", "%Y-%m-%d", "%d-%m-%Y", "%d %b %Y", "%b %d, %Y"):
        try:
            return dt.datetime.strptime(s, fmt).date()
        except ValueError:
            continue
    raise ValueError(f"unrecognised NSE date {s!r}")


def _rows(body, what: str) -> list:
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        body = body["data"]
    if not isinstance(body, list):
        raise MalformedResponse(f"NSE {what}: expected a JSON list of objects (or {{'data': [...]}}), "
                                f"got {type(body).__name__}: {str(body)[:120]}")
    return body


def _text(v) -> str | None:
    if v is None:
        return None
    s = re.sub(r"\s+", " ", str(v)).strip()
    return s or None


def parse_announcements(body, *, exchange: str = "NSE", source: str = SOURCE) -> pl.DataFrame:
    """A corporate-announcements response -> INDIA_ANNOUNCEMENTS rows (times in UTC)."""
    rows = []
    for item in _rows(body, "corporate announcements"):
        try:
            symbol, subject = _text(item["symbol"]), _text(item["desc"])
            published = parse_ist(item.get("an_dt") or item.get("sort_date"))
            disseminated = parse_ist(item.get("exchdisstime"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedResponse(f"NSE corporate announcements: an item lacks or garbles {exc} "
                                    f"({str(item)[:160]})") from None
        if not symbol or not subject or published is None:
            raise MalformedResponse(f"NSE corporate announcements: an item has no symbol, desc or an_dt "
                                    f"({str(item)[:160]})")
        seq = _text(item.get("seq_id"))
        ann_id = f"{exchange}:{seq}" if seq else f"{exchange}:" + hashlib.sha1(
            f"{symbol}|{published.isoformat()}|{subject}|{item.get('attchmntFile')}".encode()).hexdigest()[:20]
        rows.append({"ann_id": ann_id, "exchange": exchange, "symbol": symbol, "company": _text(item.get("sm_name")),
                     "isin": _text(item.get("sm_isin")), "industry": _text(item.get("smIndustry")),
                     "subject": subject, "text": _text(item.get("attchmntText")),
                     "attachment": _text(item.get("attchmntFile")), "published": published,
                     "disseminated": disseminated, "source": source})
    if not rows:
        return pl.DataFrame(schema=INDIA_ANNOUNCEMENTS)
    return conform(pl.DataFrame(rows, schema=INDIA_ANNOUNCEMENTS), INDIA_ANNOUNCEMENTS, what="NSE announcements")


# bhavcopy column -> ours, per format; turnover scale to INR.
_UDIFF = {"TckrSymb": "symbol", "SctySrs": "series", "ISIN": "isin", "TradDt": "date", "OpnPric": "open",
          "HghPric": "high", "LwPric": "low", "ClsPric": "close", "LastPric": "last", "PrvsClsgPric": "prev_close",
          "TtlTradgVol": "volume", "TtlTrfVal": "turnover", "TtlNbOfTxsExctd": "trades"}
_FULL = {"SYMBOL": "symbol", "SERIES": "series", "DATE1": "date", "OPEN_PRICE": "open", "HIGH_PRICE": "high",
         "LOW_PRICE": "low", "CLOSE_PRICE": "close", "LAST_PRICE": "last", "PREV_CLOSE": "prev_close",
         "TTL_TRD_QNTY": "volume", "TURNOVER_LACS": "turnover", "NO_OF_TRADES": "trades"}
# the pre-2024 "cmDDMONYYYYbhav.csv" layout, for archives kept from then
_LEGACY = {"SYMBOL": "symbol", "SERIES": "series", "ISIN": "isin", "TIMESTAMP": "date", "OPEN": "open",
           "HIGH": "high", "LOW": "low", "CLOSE": "close", "LAST": "last", "PREVCLOSE": "prev_close",
           "TOTTRDQTY": "volume", "TOTTRDVAL": "turnover", "TOTALTRADES": "trades"}
_FORMATS = (("UDiFF", _UDIFF, 1.0), ("sec_bhavdata_full", _FULL, 1e5), ("cm bhav", _LEGACY, 1.0))


def _csv_bytes(data: bytes, what: str) -> bytes:
    if data[:2] != b"PK":
        return data
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = [n for n in z.namelist() if n.lower().endswith(".csv")]
            if not names:
                raise MalformedResponse(f"{what}: the zip holds no CSV ({z.namelist()})")
            return z.read(names[0])
    except zipfile.BadZipFile as exc:
        raise MalformedResponse(f"{what}: a damaged zip ({exc})") from None


def _number(col: str) -> pl.Expr:
    s = pl.col(col).str.strip_chars().str.replace_all(",", "")
    return pl.when(s.is_in(["", "-", "NA"])).then(None).otherwise(s).cast(pl.Float64, strict=False)


def parse_bhavcopy(data: bytes, day: dt.date | None = None, *, exchange: str = "NSE", source: str = SOURCE,
                   series: Iterable[str] | None = None) -> pl.DataFrame:
    """One day's bhavcopy (a UDiFF zip or CSV, a sec_bhavdata_full CSV or an old cm bhav CSV) -> INDIA_BHAVCOPY.

    The format is told from the header. When `day` is given, a file dated otherwise is malformed (NSE
    has been seen to serve the previous session's file under a new name). `series` keeps only those.
    """
    what = f"NSE bhavcopy for {day}" if day else "NSE bhavcopy"
    raw = _csv_bytes(data, what)
    head = raw[:400].decode("utf-8", "replace").lower()
    if "<html" in head or looks_like_bot_wall(head):
        raise SourceBlocked(f"{SITE} answered an HTML page instead of the bhavcopy ({what}): a bot wall; "
                            f"to run without it, turn the source off with {OFF_SETTING}.")
    try:
        df = pl.read_csv(raw, infer_schema=False, truncate_ragged_lines=True)
    except Exception as exc:  # polars raises ComputeError / NoDataError on garbage
        raise MalformedResponse(f"{what}: not a CSV ({exc})") from None
    df = df.rename({c: c.strip() for c in df.columns})
    for name, mapping, turnover_scale in _FORMATS:
        needed = [c for c in mapping if c != "ISIN"]
        if all(c in df.columns for c in needed):
            break
    else:
        raise MalformedResponse(f"{what}: unknown bhavcopy layout; header {df.columns[:16]}")
    if name == "UDiFF" and "Sgmt" in df.columns:
        df = df.filter(pl.col("Sgmt").str.strip_chars() == "CM")
    present = {src: dst for src, dst in mapping.items() if src in df.columns}
    df = df.select([pl.col(src).alias(dst) for src, dst in present.items()])
    if "isin" not in df.columns:
        df = df.with_columns(isin=pl.lit(None, pl.String))
    df = df.with_columns(
        pl.col("symbol").str.strip_chars(), pl.col("series").str.strip_chars(),
        pl.col("isin").str.strip_chars(),
        *[_number(c).alias(c) for c in ("open", "high", "low", "close", "last", "prev_close", "volume", "turnover",
                                        "trades")],
    ).with_columns(pl.col("turnover") * turnover_scale)
    try:  # one file holds one or a few distinct dates: parse each once
        parsed = {text: parse_day(text) for text in df["date"].drop_nulls().unique().to_list()}
    except ValueError as exc:
        raise MalformedResponse(f"{what}: {exc}") from None
    df = df.with_columns(date=pl.col("date").replace_strict(parsed, default=None, return_dtype=pl.Date),
                         exchange=pl.lit(exchange), source=pl.lit(source))
    dates = set(parsed.values())
    if day is not None and df.height and dates != {day}:
        raise MalformedResponse(f"{what}: the file is dated {sorted(map(str, dates))}, not {day}")
    if series is not None:
        df = df.filter(pl.col("series").is_in(list(series)))
    return conform(df, INDIA_BHAVCOPY, what=what)


_NUM = re.compile(r"\d[\d,]*(?:\.\d+)?")
_NAME_STATUS = re.compile(r"\s*-\s*issue\s+(withdrawn|postponed|deferred|cancell?ed)\s*$", re.I)
_NOT_AN_IPO = re.compile(r"(?:-\s*(?:special\s+)?withdrawal\s+(?:window|option)|-\s*FPO)\s*$", re.I)
# The numbered partly-paid line of a listed company's rights issue (ADANIENPP1); a bare PP is a real
# IPO's symbol (CLOUDPP, SILGOPP).
_NOT_AN_IPO_SYMBOL = re.compile(r"(?:FPO|PP\d+)$")
IPO_TYPES = ("EQ", "SME")  # main board and SME; the past list also carries debt, InvIT and REIT issues


def _amounts(text) -> list[float]:
    return [float(m.replace(",", "")) for m in _NUM.findall(str(text or ""))]


def parse_issue_size(text) -> tuple[float | None, float | None]:
    """'1,23,45,678' -> (shares, None); 'Rs 3,042.51 Cr' -> (None, 3.04251e10 INR); blank -> (None, None)."""
    s = str(text or "").strip()
    nums = _amounts(s)
    if not nums:
        return None, None
    low = s.lower()
    if "cr" in low:
        return None, nums[0] * 1e7
    if "lakh" in low or "lac" in low:
        return None, nums[0] * 1e5
    if "rs" in low or "₹" in s or "inr" in low:
        return None, nums[0]
    return nums[0], None


def parse_past_issues(body, *, exchange: str = "NSE", source: str = SOURCE) -> pl.DataFrame:
    """A public-past-issues response -> INDIA_IPOS rows.

    FPOs, "withdrawal window" lines, rights issues' partly-paid lines and issues other than equity
    (EQ, SME: not debt, InvITs or REITs) are dropped; a "-Issue Withdrawn" suffix on the
    name becomes the status. `issuePrice` is the final price ("   500", "Rs.500"; "-" before it is
    fixed); `priceRange` the band ("Rs.475 to Rs.500"; a fixed-price issue states one number).
    """
    rows = []
    for item in _rows(body, "past issues"):
        try:
            symbol = _text(item["symbol"])
            name = _text(item.get("companyName") or item.get("company"))
            if not symbol or not name:
                raise KeyError("symbol/companyName")
            security_type = (_text(item.get("securityType") or item.get("series")) or "EQ").upper()
            if _NOT_AN_IPO.search(name) or _NOT_AN_IPO_SYMBOL.search(symbol.upper()) or security_type not in IPO_TYPES:
                continue
            m = _NAME_STATUS.search(name)
            status = m.group(1).lower() if m else None
            name = name[:m.start()].strip() if m else name
            start = parse_day(item.get("ipoStartDate") or item.get("issueStartDate"))
            end = parse_day(item.get("ipoEndDate") or item.get("issueEndDate"))
            listing = parse_day(item.get("listingDate"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedResponse(f"NSE past issues: an item lacks or garbles {exc} ({str(item)[:160]})") from None
        band = _amounts(item.get("priceRange") or item.get("priceBand"))
        price = _amounts(item.get("issuePrice"))
        shares, inr = parse_issue_size(item.get("issueSize"))
        rows.append({
            "exchange": exchange, "symbol": symbol, "company": name,
            "security_type": security_type,
            "issue_start": start, "issue_end": end, "listing_date": listing,
            "issue_price": price[-1] if price else (band[-1] if len(band) == 1 else None),
            "price_band_low": band[0] if band else None, "price_band_high": band[-1] if band else None,
            "issue_size_shares": shares, "issue_size_inr": inr,
            "status": status or ("listed" if listing else "closed"), "source": source})
    if not rows:
        return pl.DataFrame(schema=INDIA_IPOS)
    return conform(pl.DataFrame(rows, schema=INDIA_IPOS), INDIA_IPOS, what="NSE past issues")


# ---- the client ------------------------------------------------------------------------------------


def windows(start: dt.date, end: dt.date, days: int) -> list[tuple[dt.date, dt.date]]:
    """[start, end] cut into inclusive windows of at most `days` days."""
    out, d = [], start
    while d <= end:
        last = min(end, d + dt.timedelta(days=days - 1))
        out.append((d, last))
        d = last + dt.timedelta(days=1)
    return out


def bhavcopy_url(day: dt.date, archives: str = NSE_ARCHIVES, fmt: str = "auto") -> str:
    """UDiFF zip from 2024-07-08 (`fmt='auto'`), sec_bhavdata_full before; or the one `fmt` names."""
    fmt = ("udiff" if day >= UDIFF_FROM else "full") if fmt == "auto" else fmt
    if fmt == "udiff":
        return f"{archives}/content/cm/BhavCopy_NSE_CM_0_0_0_{day:%Y%m%d}_F_0000.csv.zip"
    if fmt == "full":
        return f"{archives}/products/content/sec_bhavdata_full_{day:%d%m%Y}.csv"
    raise ValueError(f"bhavcopy format {fmt!r}: use auto, udiff or full")


def _as_date(v) -> dt.date | None:
    return None if v in (None, "") else v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v))


class NseClient:
    """NSE announcements, bhavcopy and past IPOs over one cookie-carrying, rate-limited session.

    `start`/`end` (inclusive; `end` defaults to today in IST) bound announcements and bhavcopy;
    `symbols` keeps only those symbols (all when empty). `archive` (a `sources.archive.ResponseArchive`,
    or anything with `attach(session)`) records every response as served, for the raw store.
    """

    def __init__(self, start: str | dt.date, end: str | dt.date | None = None, *, symbols: Iterable[str] = (),
                 series: Iterable[str] | None = EQUITY_SERIES, base_url: str = NSE_HOME,
                 archives_url: str = NSE_ARCHIVES, session: requests.Session | None = None, window_days: int = 7,
                 bhavcopy_format: str = "auto", weekends: bool = False, per_second: float = 3.0,
                 attempts: int = 4, base_delay: float = 1.0, timeout: float = 30.0,
                 archive=None, sleep: Callable[[float], None] = time.sleep):
        self.start = _as_date(start)
        self.end = _as_date(end) or dt.datetime.now(IST).date()
        if self.start is None or self.start > self.end:
            raise ValueError(f"NSE: start {start!r} must be a date on or before end {self.end}")
        self.symbols = {s.strip().upper() for s in symbols if s.strip()}
        self.series = tuple(series) if series is not None else None
        self.base_url, self.archives_url = base_url.rstrip("/"), archives_url.rstrip("/")
        self.session = session or per_host_session(per_second)
        self.session.headers.update(BROWSER_HEADERS)
        self.window_days, self.bhavcopy_format, self.weekends = window_days, bhavcopy_format, weekends
        self.attempts, self.base_delay, self.timeout = attempts, base_delay, timeout
        self.sleep = sleep
        if archive is not None:
            archive.attach(self.session)
        self.holidays: list[dt.date] = []
        self._handshaken = False

    # -- transport

    def _get(self, url: str, *, params: dict | None = None, accept: str, referer: str | None, what: str
             ) -> requests.Response:
        headers = {"Accept": accept, **({"Referer": referer} if referer else {})}

        # 401 and 404 come back to the callers (a fresh handshake; a holiday's missing bhavcopy)
        def attempt() -> requests.Response:
            return get_or_transient(self.session, url, site=SITE, shown=what, timeout=self.timeout, params=params,
                                    headers=headers)

        resp = retry(attempt, attempts=self.attempts, base_delay=self.base_delay, what=f"{SITE} {what}",
                     sleep=self.sleep)
        if resp.status_code == 403:
            raise SourceBlocked(f"{SITE} refused automated access (HTTP 403) to {what} ({resp.url}). NSE's bot "
                                f"manager blocks some networks and clients; to run without it, turn the source off "
                                f"with {OFF_SETTING}.")
        return resp

    def handshake(self) -> None:
        """Load the home page as a browser would, so the session holds the cookies NSE's API checks."""
        resp = self._get(self.base_url + "/", accept=_PAGE_ACCEPT, referer=None, what="the home page (cookie handshake)")
        if resp.status_code >= 400:
            raise requests.HTTPError(f"{SITE} answered HTTP {resp.status_code} to the cookie handshake ({resp.url})",
                                     response=resp)
        if not self.session.cookies:
            log.warning("%s set no cookies on the home page; its API may answer 401", SITE)
        self._handshaken = True

    def _api(self, path: str, params: dict | None, *, referer: str, what: str):
        """GET a JSON API path after the handshake; one fresh handshake on 401, then `SourceBlocked`."""
        if not self._handshaken:
            self.handshake()
        url = self.base_url + path
        for fresh in (False, True):
            resp = self._get(url, params=params, accept=_JSON_ACCEPT, referer=referer, what=what)
            if resp.status_code != 401:
                break
            if fresh:
                raise SourceBlocked(f"{SITE} answered HTTP 401 to {what} even after a fresh cookie handshake: its bot "
                                    f"manager is refusing this client; to run without it, turn the source off with "
                                    f"{OFF_SETTING}.")
            log.info("%s answered 401 to %s; redoing the cookie handshake", SITE, what)
            self.session.cookies.clear()
            self.handshake()
        if resp.status_code >= 400:
            raise requests.HTTPError(f"{SITE} answered HTTP {resp.status_code} {resp.reason} for {what}", response=resp)
        try:
            return json.loads(resp.content)
        except ValueError:
            if "<html" in resp.text[:500].lower() or looks_like_bot_wall(resp.text):
                raise SourceBlocked(f"{SITE} answered an HTML page instead of JSON for {what} (a bot wall); to run "
                                    f"without it, turn the source off with {OFF_SETTING}.") from None
            raise MalformedResponse(f"{SITE} answered a body that is not JSON for {what}: {resp.text[:120]!r}") from None

    # -- data

    def _keep(self, df: pl.DataFrame) -> pl.DataFrame:
        return df.filter(pl.col("symbol").is_in(sorted(self.symbols))) if self.symbols else df

    def announcements(self) -> pl.DataFrame:
        """Every announcement from `start` to `end`, one request per window of `window_days`."""
        frames, failures = [], {}
        for lo, hi in windows(self.start, self.end, self.window_days):
            what = f"corporate announcements {lo}..{hi}"
            params = {"index": "equities", "from_date": f"{lo:%d-%m-%Y}", "to_date": f"{hi:%d-%m-%Y}"}
            try:
                frames.append(parse_announcements(self._api("/api/corporate-announcements", params,
                                                             referer=ANNOUNCEMENTS_REFERER, what=what)))
            except SourceBlocked:
                raise
            except (RetriesExhausted, MalformedResponse, requests.HTTPError) as exc:
                failures[what] = str(exc)
        df = pl.concat(frames) if frames else pl.DataFrame(schema=INDIA_ANNOUNCEMENTS)
        df = self._keep(df).unique("ann_id", keep="last", maintain_order=True).sort("published", "ann_id")
        if failures:
            raise PartialFetchError("NSE corporate announcements", failures, partial=df)
        return df

    def trading_days(self) -> list[dt.date]:
        days = [self.start + dt.timedelta(days=i) for i in range((self.end - self.start).days + 1)]
        return [d for d in days if self.weekends or d.weekday() < 5]

    def bhavcopy_day(self, day: dt.date) -> pl.DataFrame | None:
        """One day's bhavcopy, or None when NSE has no file for it (a holiday)."""
        url = bhavcopy_url(day, self.archives_url, self.bhavcopy_format)
        resp = self._get(url, accept="*/*", referer=self.base_url + "/", what=f"bhavcopy for {day}")
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise requests.HTTPError(f"{SITE} answered HTTP {resp.status_code} {resp.reason} for the bhavcopy of "
                                     f"{day} ({url})", response=resp)
        return parse_bhavcopy(resp.content, day, series=self.series)

    def bhavcopy(self) -> pl.DataFrame:
        """Every trading day's bhavcopy from `start` to `end`; holidays are listed in `self.holidays`."""
        frames, failures = [], {}
        for day in self.trading_days():
            try:
                df = self.bhavcopy_day(day)
            except SourceBlocked:
                raise
            except (RetriesExhausted, MalformedResponse, requests.HTTPError) as exc:
                failures[str(day)] = str(exc)
                continue
            if df is None:
                log.info("NSE has no bhavcopy for %s (a trading holiday)", day)
                self.holidays.append(day)
            else:
                frames.append(self._keep(df))
        df = pl.concat(frames) if frames else pl.DataFrame(schema=INDIA_BHAVCOPY)
        df = df.sort("date", "symbol", "series")
        if failures:
            raise PartialFetchError("NSE bhavcopy", failures, partial=df)
        return df

    def ipos(self) -> pl.DataFrame:
        """The past public issues NSE lists now (no date parameters; older ones may have left the list)."""
        body = self._api("/api/public-past-issues", None, referer=IPO_REFERER, what="past public issues")
        return self._keep(parse_past_issues(body)).sort("issue_start", "symbol", nulls_last=True)
