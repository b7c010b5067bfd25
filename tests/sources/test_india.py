"""NSE and BSE clients replayed from 127.0.0.1 on the exchanges' response shapes: NSE's cookie handshake
(and its renewal on 401), date windows, BSE's paging by ROWCNT, IST -> UTC, 429 then success, 403 and
HTML bot walls, malformed bodies, holidays, a failing day or window failing alone; the sample twins,
the announcements asset over both exchanges (one failing keeps the other's rows) and the documents."""

from __future__ import annotations

import datetime as dt
import io
import json
import time
import zipfile
from urllib.parse import parse_qs, urlsplit

import polars as pl
import pytest

from local_http import LocalServer
from tenali_pipeline.sources.http import MalformedResponse, PartialFetchError, SourceBlocked
from tenali_pipeline.sources.india_schema import (INDIA_ANNOUNCEMENTS, INDIA_BHAVCOPY, INDIA_IPOS, INDIA_KEYS,
                                                  INDIA_REQUIRED, INDIA_SCHEMAS)
from tenali_pipeline.sources.live import bse, india
from tenali_pipeline.sources.live.bse import BseClient
from tenali_pipeline.sources.live.india import NseClient, parse_bhavcopy, parse_past_issues
from tenali_pipeline.sources.sample.india import BSE_CODES, SampleBseClient, SampleIndiaClient
from tenali_pipeline.text.render_india import render_announcements

D = dt.date
UTC = dt.timezone.utc


def _reply(queue: list, content_type: str):
    """The next queued (status, headers, body) of a fake route (the last one repeats); a body that is
    not bytes is sent as JSON with ``content_type``."""
    status, headers, body = queue.pop(0) if len(queue) > 1 else queue[0]
    if not isinstance(body, bytes):
        body, headers = json.dumps(body).encode(), {"Content-Type": content_type, **headers}
    return status, headers, body


def _ann(symbol, name, desc, an_dt, seq, text="", isin="INE002A01018", industry="Refineries"):
    """One item as NSE's corporate-announcements API serves it."""
    stamp = dt.datetime.strptime(an_dt, "%d-%b-%Y %H:%M:%S")
    return {"symbol": symbol, "desc": desc, "dt": f"{stamp:%d%m%Y%H%M%S}",
            "attchmntFile": f"https://nsearchives.nseindia.com/corporate/{symbol}_{stamp:%d%m%Y%H%M%S}.pdf",
            "sm_name": name, "sm_isin": isin, "an_dt": an_dt, "sort_date": f"{stamp:%Y-%m-%d %H:%M:%S}",
            "seq_id": seq, "smIndustry": industry, "orgid": None, "attchmntText": text, "bflag": None,
            "old_new": None, "csvName": None, "exchdisstime": an_dt, "difference": "00:00:00", "hasXbrl": False,
            "fileSize": "245 KB"}


WEEK1 = [
    _ann("RELIANCE", "Reliance Industries Limited", "Board Meeting Intimation", "02-Jan-2024 00:30:00", "104100001",
         "Reliance Industries Limited has informed the Exchange about Board Meeting to be held on 19-Jan-2024."),
    _ann("TCS", "Tata Consultancy Services Limited", "Financial Result Updates", "05-Jan-2024 18:45:12", "104100002",
         "Tata Consultancy Services Limited has submitted the financial results.", "INE467B01029", "Computers - Software"),
]
WEEK2 = {"data": [
    _ann("RELIANCE", "Reliance Industries Limited", "Analysts/Institutional Investor Meet/Con. Call Updates",
         "09-Jan-2024 11:02:40", "104100003", ""),
    WEEK1[1],  # NSE repeats an item near a window edge: one row per seq_id
]}


class Recorder:
    """Stands in for `sources.archive.ResponseArchive`: the client only calls `attach(session)`."""

    def __init__(self):
        self.records = []

    def attach(self, session):
        session.hooks["response"].append(lambda r, *a, **k: self.records.append((r.url, r.status_code, r.content)))
        return session


class Nse:
    """A replay of nseindia.com: the home page sets the session cookie (`nsit`, renewed on each visit);
    API paths answer 401 without the current cookie. `routes` maps a path (or path + from_date) to a
    queue of (status, headers, body) served in turn, the last repeating."""

    def __init__(self, routes, *, cookie_ok=True):
        self.routes, self.requests, self.cookie, self.cookie_ok = routes, [], 0, cookie_ok
        self.http = LocalServer(self._respond)

    def _respond(self, req):
        url = urlsplit(req.path)
        query = parse_qs(url.query)
        self.requests.append((url.path, query, dict(req.headers)))
        if url.path == "/" and "/" not in self.routes:
            self.cookie += 1
            return 200, {"Content-Type": "text/html", "Set-Cookie": f"nsit=v{self.cookie}; Path=/; HttpOnly"}, \
                b"<html><head><title>NSE - National Stock Exchange of India Ltd</title></head><body></body></html>"
        if url.path.startswith("/api/") and (not self.cookie_ok or f"nsit=v{self.cookie}" not in req.headers.get("Cookie", "")):
            return 401, {"Content-Type": "application/json"}, b'{"message":"Unauthorized"}'
        key = url.path + ("?" + query["from_date"][0] if "from_date" in query else "")
        queue = self.routes.get(key) or self.routes.get(url.path) or [(404, {}, b"<html>Resource not found</html>")]
        return _reply(queue, "application/json")

    def client(self, start, end, **kw):
        kw.setdefault("session", india.per_host_session(1000.0))
        return NseClient(start, end, base_url=self.http.base, archives_url=self.http.base, base_delay=0.01, **kw)

    def paths(self):
        return [p for p, _, _ in self.requests]

    def close(self):
        self.http.close()


@pytest.fixture
def nse():
    servers = []

    def make(routes, **kw):
        servers.append(Nse(routes, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_announcements_handshake_windows_and_utc(nse):
    server = nse({"/api/corporate-announcements?01-01-2024": [(200, {}, WEEK1)],
                  "/api/corporate-announcements?08-01-2024": [(200, {}, WEEK2)]})
    archive = Recorder()
    df = server.client("2024-01-01", "2024-01-10", archive=archive).announcements()
    # the home page first, then one request per 7-day window, each with the cookie and a browser's headers
    assert server.paths() == ["/", "/api/corporate-announcements", "/api/corporate-announcements"]
    (_, q1, h1), (_, q2, _) = server.requests[1], server.requests[2]
    assert q1 == {"index": ["equities"], "from_date": ["01-01-2024"], "to_date": ["07-01-2024"]}
    assert q2["from_date"] == ["08-01-2024"] and q2["to_date"] == ["10-01-2024"]
    assert "nsit=v1" in h1["Cookie"] and h1["User-Agent"].startswith("Mozilla/5.0")
    assert h1["Referer"].endswith("/companies-listing/corporate-filings-announcements")
    assert "application/json" in h1["Accept"] and "text/html" in server.requests[0][2]["Accept"]
    assert dict(df.schema) == INDIA_ANNOUNCEMENTS and df.height == 3  # the repeated item kept once
    assert df["ann_id"].to_list() == ["NSE:104100001", "NSE:104100002", "NSE:104100003"]
    rel = df.row(0, named=True)
    # 00:30 IST on 2 January is 19:00 UTC on 1 January
    assert rel["published"] == dt.datetime(2024, 1, 1, 19, 0, tzinfo=UTC)
    assert rel["company"] == "Reliance Industries Limited" and rel["isin"] == "INE002A01018"
    assert df.row(1, named=True)["published"] == dt.datetime(2024, 1, 5, 13, 15, 12, tzinfo=UTC)
    assert df.row(2, named=True)["text"] is None  # an empty attchmntText is null, not ""
    # every response as served, the handshake page included
    assert [(urlsplit(u).path, status) for u, status, _ in archive.records] == [
        ("/", 200), ("/api/corporate-announcements", 200), ("/api/corporate-announcements", 200)]
    assert json.loads(archive.records[2][2]) == WEEK2


def test_symbols_filter_and_expired_cookie_renewed_once(nse):
    server = nse({"/api/corporate-announcements": [(200, {}, WEEK1)]})
    client = server.client("2024-01-01", "2024-01-05", symbols=["tcs"])
    client.handshake()
    server.cookie += 1  # the session's cookie has expired on the server's side
    df = client.announcements()
    assert df["symbol"].to_list() == ["TCS"]
    assert server.paths() == ["/", "/api/corporate-announcements", "/", "/api/corporate-announcements"]
    assert "nsit=v3" in server.requests[-1][2]["Cookie"]


def test_401_after_a_fresh_handshake_names_the_site_and_setting(nse):
    server = nse({"/api/public-past-issues": [(200, {}, [])]}, cookie_ok=False)
    with pytest.raises(SourceBlocked, match=r"NSE \(nseindia.com\).*401.*TENALI_SOURCES_OFF=india"):
        server.client("2024-01-01", "2024-01-02").ipos()
    assert server.paths().count("/") == 2  # renewed once, not in a loop


def test_403_and_html_challenge_are_bot_walls(nse):
    akamai = b"<HTML><HEAD><TITLE>Access Denied</TITLE></HEAD><BODY>You don't have permission. Reference #18.6a</BODY></HTML>"
    server = nse({"/": [(403, {"Content-Type": "text/html"}, akamai)]})
    with pytest.raises(SourceBlocked, match=r"NSE.*HTTP 403.*TENALI_SOURCES_OFF=india"):
        server.client("2024-01-01", "2024-01-02").announcements()
    server = nse({"/api/public-past-issues": [(200, {"Content-Type": "text/html"},
                                               b"<html><title>Just a moment...</title>captcha</html>")]})
    with pytest.raises(SourceBlocked, match=r"HTML page instead of JSON.*TENALI_SOURCES_OFF=india"):
        server.client("2024-01-01", "2024-01-02").ipos()


def test_429_then_success_with_backoff(nse):
    server = nse({"/api/corporate-announcements": [(429, {"Retry-After": "0"}, b"Too Many Requests"),
                                                   (503, {}, b"Service Unavailable"), (200, {}, WEEK1)]})
    slept = []
    df = server.client("2024-01-01", "2024-01-07", sleep=slept.append).announcements()
    assert df.height == 2 and len(slept) == 2 and server.paths().count("/api/corporate-announcements") == 3


def test_malformed_window_fails_alone(nse):
    server = nse({"/api/corporate-announcements?01-01-2024": [(200, {"Content-Type": "application/json"}, b'[{"symbol": "TC')],
                  "/api/corporate-announcements?08-01-2024": [(200, {}, WEEK2)],
                  "/api/corporate-announcements?15-01-2024": [(200, {}, {"error": "no data"})],
                  "/api/corporate-announcements?22-01-2024": [(200, {}, [{"symbol": "X", "desc": "Updates", "an_dt": "31-Feb-2024 10:00:00"}])]})
    with pytest.raises(PartialFetchError, match=r"NSE corporate announcements: 3 failed") as e:
        server.client("2024-01-01", "2024-01-28").announcements()
    failures = e.value.failures
    assert set(failures) == {"corporate announcements 2024-01-01..2024-01-07", "corporate announcements 2024-01-15..2024-01-21",
                             "corporate announcements 2024-01-22..2024-01-28"}
    assert "not JSON" in failures["corporate announcements 2024-01-01..2024-01-07"]
    assert "expected a JSON list" in failures["corporate announcements 2024-01-15..2024-01-21"]
    assert "31-Feb-2024" in failures["corporate announcements 2024-01-22..2024-01-28"]
    assert e.value.partial["ann_id"].to_list() == ["NSE:104100002", "NSE:104100003"]


# ---- bhavcopy ------------------------------------------------------------------------------------------

FULL_0705 = (
    "SYMBOL, SERIES, DATE1, PREV_CLOSE, OPEN_PRICE, HIGH_PRICE, LOW_PRICE, LAST_PRICE, CLOSE_PRICE, AVG_PRICE, "
    "TTL_TRD_QNTY, TURNOVER_LACS, NO_OF_TRADES, DELIV_QTY, DELIV_PER\n"
    "RELIANCE, EQ, 05-Jul-2024, 3177.45, 3180.00, 3199.90, 3168.10, 3192.00, 3192.65, 3185.27, 4290012, 136649.96, 201451, 2145678, 50.02\n"
    "SGBAUG27, GB, 05-Jul-2024, 7210.00, 7215.00, 7215.00, 7200.00, 7200.00, 7200.00, 7207.31, 112, 8.07, 9, -, -\n"
    "TCS, EQ, 05-Jul-2024, 3986.65, 3990.00, 4014.00, 3975.25, 4004.80, 4003.40, 3996.87, 1512840, 60466.41, 98120, 910234, 60.17\n"
).encode()
UDIFF_HEAD = ("TradDt,BizDt,Sgmt,Src,FinInstrmTp,FinInstrmId,ISIN,TckrSymb,SctySrs,XpryDt,FininstrmActlXpryDt,StrkPric,"
              "OptnTp,FinInstrmNm,OpnPric,HghPric,LwPric,ClsPric,LastPric,PrvsClsgPric,UndrlygPric,SttlmPric,OpnIntrst,"
              "ChngInOpnIntrst,TtlTradgVol,TtlTrfVal,TtlNbOfTxsExctd,SsnId,NewBrdLotQty,Rmks,Rsvd1,Rsvd2,Rsvd3,Rsvd4\n")


def _udiff(day: str, rows: list[str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"BhavCopy_NSE_CM_0_0_0_{day.replace('-', '')}_F_0000.csv", UDIFF_HEAD + "".join(r + "\n" for r in rows))
    return out.getvalue()


UDIFF_0708 = _udiff("2024-07-08", [
    "2024-07-08,2024-07-08,CM,NSE,STK,2885,INE002A01018,RELIANCE,EQ,,,,,RELIANCE INDUSTRIES LTD,3195.00,3211.80,3170.00,"
    "3189.45,3190.10,3192.65,,3189.45,,,4733919,15114574032.55,238561,F1,1,,,,,",
    "2024-07-08,2024-07-08,CM,NSE,STK,11536,INE467B01029,TCS,EQ,,,,,TATA CONSULTANCY SERV LT,4005.00,4012.00,3961.10,"
    "3966.90,3965.00,4003.40,,3966.90,,,1733104,6900152219.10,110422,F1,1,,,,,",
    "2024-07-08,2024-07-08,CM,NSE,STK,19543,INE02P107015,NEWCO,BE,,,,,NEW LISTING CO LTD,118.00,124.00,117.10,"
    "121.40,121.40,112.00,,121.40,,,904455,110012044.20,15210,F1,1,,,,,",
    "2024-07-08,2024-07-08,CM,NSE,STK,20999,IN0020230085,726GS2033,GS,,,,,GOI LOAN 7.26% 2033,99.90,99.95,99.85,"
    "99.92,99.92,99.88,,99.92,,,1200,119904.00,4,F1,1,,,,,",
])


def _archive_routes():
    return {
        "/products/content/sec_bhavdata_full_05072024.csv": [(200, {"Content-Type": "text/csv"}, FULL_0705)],
        "/content/cm/BhavCopy_NSE_CM_0_0_0_20240708_F_0000.csv.zip": [(200, {"Content-Type": "application/zip"}, UDIFF_0708)],
        # 2024-07-09: no file (a holiday) -> the archive's 404
        "/content/cm/BhavCopy_NSE_CM_0_0_0_20240710_F_0000.csv.zip": [(500, {}, b"Internal Server Error")],
        "/content/cm/BhavCopy_NSE_CM_0_0_0_20240711_F_0000.csv.zip": [(200, {}, _udiff("2024-07-10", [
            "2024-07-10,2024-07-10,CM,NSE,STK,2885,INE002A01018,RELIANCE,EQ,,,,,RELIANCE INDUSTRIES LTD,3195.00,3211.80,"
            "3170.00,3189.45,3190.10,3192.65,,3189.45,,,4733919,15114574032.55,238561,F1,1,,,,,"]))],
        "/content/cm/BhavCopy_NSE_CM_0_0_0_20240712_F_0000.csv.zip": [(200, {}, UDIFF_0708[:200])],
    }


def test_bhavcopy_formats_holiday_and_failing_days(nse):
    server = nse(_archive_routes())
    client = server.client("2024-07-05", "2024-07-12", attempts=2)
    with pytest.raises(PartialFetchError, match=r"NSE bhavcopy: 3 failed") as e:
        client.bhavcopy()
    assert set(e.value.failures) == {"2024-07-10", "2024-07-11", "2024-07-12"}
    assert "HTTP 500" in e.value.failures["2024-07-10"]
    assert "dated ['2024-07-10'], not 2024-07-11" in e.value.failures["2024-07-11"]
    assert "damaged zip" in e.value.failures["2024-07-12"]
    assert client.holidays == [D(2024, 7, 9)]  # no file: not an error
    weekend = ("20240706", "06072024", "20240707", "07072024")
    assert not any(d in p for p in server.paths() for d in weekend)  # weekends not asked for
    df = e.value.partial
    assert dict(df.schema) == INDIA_BHAVCOPY
    assert df.select("date", "symbol", "series").rows() == [
        (D(2024, 7, 5), "RELIANCE", "EQ"), (D(2024, 7, 5), "TCS", "EQ"),
        (D(2024, 7, 8), "NEWCO", "BE"), (D(2024, 7, 8), "RELIANCE", "EQ"), (D(2024, 7, 8), "TCS", "EQ")]  # GB, GS dropped
    full = df.row(0, named=True)
    assert (full["open"], full["high"], full["low"], full["close"], full["last"], full["prev_close"]) == \
        (3180.0, 3199.9, 3168.1, 3192.65, 3192.0, 3177.45)
    assert full["volume"] == 4290012 and full["trades"] == 201451 and full["isin"] is None
    assert full["turnover"] == pytest.approx(136649.96e5)  # lakhs -> rupees
    udiff = df.row(3, named=True)
    assert udiff["isin"] == "INE002A01018" and udiff["close"] == 3189.45 and udiff["prev_close"] == 3192.65
    assert udiff["turnover"] == pytest.approx(15114574032.55) and udiff["trades"] == 238561
    # the archive files need no API cookie, but go through the same session (browser headers)
    assert all(h["User-Agent"].startswith("Mozilla/5.0") for _, _, h in server.requests)


def test_bhavcopy_parsers_reject_bad_files():
    with pytest.raises(MalformedResponse, match="unknown bhavcopy layout"):
        parse_bhavcopy(b"a,b,c\n1,2,3\n", D(2024, 7, 5))
    with pytest.raises(SourceBlocked, match="TENALI_SOURCES_OFF=india"):
        parse_bhavcopy(b"<html><head><title>Access Denied</title></head></html>", D(2024, 7, 5))
    legacy = (b"SYMBOL,SERIES,OPEN,HIGH,LOW,CLOSE,LAST,PREVCLOSE,TOTTRDQTY,TOTTRDVAL,TIMESTAMP,TOTALTRADES,ISIN,\n"
              b"RELIANCE,EQ,2590,2600,2580,2595.5,2596,2588,5123456,13294000000.5,05-JAN-2024,180234,INE002A01018,\n")
    row = parse_bhavcopy(legacy, D(2024, 1, 5)).row(0, named=True)
    assert row["close"] == 2595.5 and row["date"] == D(2024, 1, 5) and row["isin"] == "INE002A01018"


def test_bhavcopy_urls_switch_to_udiff_on_its_first_day():
    assert india.bhavcopy_url(D(2024, 7, 5)).endswith("/products/content/sec_bhavdata_full_05072024.csv")
    assert india.bhavcopy_url(D(2024, 7, 8)).endswith("/content/cm/BhavCopy_NSE_CM_0_0_0_20240708_F_0000.csv.zip")
    assert "sec_bhavdata_full_08072024" in india.bhavcopy_url(D(2024, 7, 8), fmt="full")
    with pytest.raises(ValueError, match="auto, udiff or full"):
        india.bhavcopy_url(D(2024, 7, 8), fmt="xml")


# ---- IPOs ----------------------------------------------------------------------------------------------

PAST_ISSUES = [
    {"symbol": "TATATECH", "companyName": "Tata Technologies Limited", "securityType": "EQ", "ipoStartDate": "22-NOV-2023",
     "ipoEndDate": "24-NOV-2023", "listingDate": "30-NOV-2023", "issuePrice": "   500", "priceRange": "Rs.475 to Rs.500"},
    {"symbol": "SHREEOSFM", "companyName": "Shree OSFM E-Mobility Limited", "securityType": "SME",
     "ipoStartDate": "04-MAR-2024", "ipoEndDate": "07-MAR-2024", "listingDate": "12-MAR-2024", "issuePrice": "    65",
     "priceRange": "Rs.65", "issueSize": "3,800,000"},
    {"symbol": "BIGCO", "companyName": "Big Company Limited", "securityType": "EQ", "ipoStartDate": "09-DEC-2024",
     "ipoEndDate": "11-DEC-2024", "listingDate": "-", "issuePrice": "-", "priceRange": "Rs.1,150 to Rs.1,210",
     "issueSize": "Rs 3,042.51 Cr"},
    {"symbol": "PULLED", "companyName": "Pulled Retail Limited-Issue Withdrawn", "securityType": "EQ",
     "ipoStartDate": "10-DEC-2024", "ipoEndDate": "12-DEC-2024", "listingDate": "-", "issuePrice": None,
     "priceRange": "Rs.300 to Rs.315"},
    {"symbol": "IDEAFPO", "companyName": "Vodafone Idea Limited - FPO", "securityType": "EQ", "ipoStartDate": "18-APR-2024",
     "ipoEndDate": "22-APR-2024", "listingDate": "25-APR-2024", "issuePrice": "    11", "priceRange": "Rs.10 to Rs.11"},
    {"symbol": "BIGCO", "companyName": "Big Company Limited - Withdrawal Window", "securityType": "EQ",
     "ipoStartDate": "13-DEC-2024", "ipoEndDate": "14-DEC-2024", "listingDate": "-", "issuePrice": "-", "priceRange": "-"},
]


def test_past_issues_replayed(nse):
    server = nse({"/api/public-past-issues": [(200, {}, PAST_ISSUES)]})
    df = server.client("2024-01-01", "2024-01-02").ipos()
    assert dict(df.schema) == INDIA_IPOS and df["symbol"].to_list() == ["TATATECH", "SHREEOSFM", "BIGCO", "PULLED"]
    rows = {r["symbol"]: r for r in df.iter_rows(named=True)}
    tata = rows["TATATECH"]
    assert (tata["issue_price"], tata["price_band_low"], tata["price_band_high"]) == (500.0, 475.0, 500.0)
    assert (tata["issue_start"], tata["listing_date"], tata["status"]) == (D(2023, 11, 22), D(2023, 11, 30), "listed")
    sme = rows["SHREEOSFM"]
    assert sme["security_type"] == "SME" and sme["issue_price"] == 65.0 and sme["issue_size_shares"] == 3.8e6
    big = rows["BIGCO"]
    assert big["listing_date"] is None and big["issue_price"] is None and big["status"] == "closed"
    assert big["issue_size_inr"] == pytest.approx(3042.51e7) and big["price_band_high"] == 1210.0
    assert rows["PULLED"]["status"] == "withdrawn" and rows["PULLED"]["company"] == "Pulled Retail Limited"
    assert server.requests[1][2]["Referer"].endswith("/market-data/all-upcoming-issues-ipo")


def test_past_issues_malformed():
    with pytest.raises(MalformedResponse, match="past issues: an item lacks"):
        parse_past_issues([{"companyName": "No Symbol Limited"}])
    with pytest.raises(MalformedResponse, match="expected a JSON list"):
        parse_past_issues({"error": "x"})


def test_per_host_limiter_spaces_requests(nse, monkeypatch):
    monkeypatch.setattr(india, "_HOST_LIMITERS", {})
    server = nse({"/api/public-past-issues": [(200, {}, [])]})
    client = server.client("2024-01-01", "2024-01-02", session=india.per_host_session(10.0))
    t0 = time.monotonic()
    client.ipos()
    client.ipos()
    assert time.monotonic() - t0 >= 0.2  # three requests to one host, 0.1 s apart
    assert india.host_limiter(server.http.base + "/x", 1.0) is india.host_limiter(server.http.base, 1.0)
    assert india.host_limiter("https://www.nseindia.com/", 3.0) is not india.host_limiter("https://nsearchives.nseindia.com/", 3.0)


def test_client_rejects_reversed_dates():
    with pytest.raises(ValueError, match="on or before end"):
        NseClient("2024-02-01", "2024-01-01")


# ---- BSE announcements ---------------------------------------------------------------------------------


def _bse_row(code, name, subject, at, news_id, headline, category="Company Update", subcat="General", more="",
             dissem=None):
    """One row as BSE's AnnSubCategoryGetData serves it: times IST, with BSE's fraction of a second."""
    return {"NEWSID": news_id, "SCRIP_CD": code, "XML_NAME": f"ANN_{code}_{news_id.upper()}",
            "NEWSSUB": f"{name} - {code} - {subject}", "DT_TM": at, "NEWS_DT": at, "CRITICALNEWS": 0,
            "ANNOUNCEMENT_TYPE": "A", "QUARTER_ID": None, "FILESTATUS": "N    ",
            "ATTACHMENTNAME": f"{news_id[::-1]}.pdf", "MORE": more, "HEADLINE": headline, "CATEGORYNAME": category,
            "OLD": 1, "RN": 1, "PDFFLAG": 0, "NSURL": f"https://www.bseindia.com/stock-share-price/company/scrip/{code}/",
            "SLONGNAME": name, "AGENDA_ID": 177, "TotalPageCnt": 6, "News_submission_dt": at.split(".")[0],
            "DissemDT": dissem or at, "TimeDiff": "00:00:00", "Fld_Attachsize": 626877, "SUBCATNAME": subcat,
            "AUDIO_VIDEO_FILE": None}


B1 = _bse_row(500325, "Reliance Industries Ltd", "Board Meeting Intimation for Considering Financial Results",
              "2024-01-02T00:30:00.47", "0b8f6a52-9d43-4a57-9f3c-1c2b5d1e0a01",
              "Reliance Industries Ltd has informed BSE that a meeting of the Board will be held on 19/01/2024.",
              "Board Meeting", "Board Meeting Intimation", dissem="2024-01-02T00:30:01.5")
B2 = _bse_row(532540, "Tata Consultancy Services Ltd", "Financial Results For The Quarter Ended December 31, 2023",
              "2024-01-05T18:45:12.3", "5c1d7e90-2f4b-4b7e-8a1d-3e4f5a6b7c02",
              "Tata Consultancy Services Ltd has submitted the financial results.", "Result", "Financial Results",
              more="Revenue grew 4.0% year on year.")
B3 = _bse_row(517397, "PAN ELECTRONICS INDIA LTD.", "Compliances-Reg. 39 (3) - Details of Loss of Certificate / "
              "Duplicate Certificate", "2024-01-06T23:44:22.95", "6fb57b5e-a05f-4e05-b2da-6e2b5bfe32ae",
              "Issuance of duplicate share certificate in lieu of loss of original share certificate.",
              "Company Update", "Reg. 39 (3) - Details of Loss of Certificate / Duplicate Certificate")
B4 = _bse_row(500209, "Infosys Ltd", "Announcement under Regulation 30 (LODR)-Press Release / Media Release",
              "2024-01-04T09:12:40", "7a2e3f41-0c5d-4e6f-9a7b-8c9d0e1f2a04", "")
B5 = _bse_row(532977, "Bajaj Auto Ltd", "Monthly Business Updates", "2024-01-01T11:02:03.1",
              "8b3f4a52-1d6e-4f70-ab8c-9d0e1f2a3b05", "Sales for December 2023.")
B6 = _bse_row(500325, "Reliance Industries Ltd", "Updates", "2024-01-07T21:10:00.2",
              "9c4a5b63-2e7f-4081-bc9d-0e1f2a3b4c06", "A new arrival while the window is being paged.")


def _page(rows, rowcount):
    return {"Table": rows, "Table1": [{"ROWCNT": rowcount}]}


class Bse:
    """A replay of api.bseindia.com. `pages` maps (strPrevDate, pageno) to a queue of (status, headers, body)
    served in turn, the last repeating; a request without bseindia.com's Referer is refused with 403."""

    def __init__(self, pages):
        self.pages, self.requests = pages, []
        self.http = LocalServer(self._respond)

    def _respond(self, req):
        url = urlsplit(req.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        self.requests.append((url.path, query, dict(req.headers)))
        if not req.headers.get("Referer", "").startswith("https://www.bseindia.com"):
            return 403, {"Content-Type": "text/html"}, b"<html><title>403 - Forbidden</title></html>"
        queue = (self.pages.get((query.get("strPrevDate"), int(query.get("pageno", 0))))
                 or [(200, {}, _page([], 0))])
        return _reply(queue, "application/json; charset=utf-8")

    def client(self, start, end, **kw):
        kw.setdefault("session", india.per_host_session(1000.0))
        return BseClient(start, end, api_url=self.http.base + "/BseIndiaAPI/api", base_delay=0.01, **kw)

    def close(self):
        self.http.close()


@pytest.fixture
def bse_api():
    servers = []

    def make(pages):
        servers.append(Bse(pages))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_bse_pages_until_rowcnt_and_converts_ist_to_utc(bse_api):
    # newest first; B6 arrives while the window is paged: ROWCNT grows and page 2 repeats B2
    server = bse_api({("20240101", 1): [(200, {}, _page([B3, B2], 5))],
                      ("20240101", 2): [(200, {}, _page([B2, B4], 6))],
                      ("20240101", 3): [(200, {}, _page([B1, B5], 6))],
                      ("20240108", 1): [(200, {}, _page([], 0))]})
    archive = Recorder()
    df = server.client("2024-01-01", "2024-01-10", archive=archive).announcements()
    asked = [(q["strPrevDate"], q["strToDate"], q["pageno"]) for _, q, _ in server.requests]
    assert asked == [("20240101", "20240107", "1"), ("20240101", "20240107", "2"), ("20240101", "20240107", "3"),
                     ("20240108", "20240110", "1")]  # stops when the rows seen reach ROWCNT
    path, query, headers = server.requests[0]
    assert path == "/BseIndiaAPI/api/AnnSubCategoryGetData/w"
    assert query == {"pageno": "1", "strCat": "-1", "strPrevDate": "20240101", "strToDate": "20240107",
                     "strScrip": "", "strSearch": "P", "strType": "C", "subcategory": "-1"}
    assert headers["Referer"] == "https://www.bseindia.com/" and headers["Origin"] == "https://www.bseindia.com"
    assert headers["User-Agent"].startswith("Mozilla/5.0") and "application/json" in headers["Accept"]
    assert dict(df.schema) == INDIA_ANNOUNCEMENTS and df.height == 5  # B2 kept once
    assert df["ann_id"].to_list() == ["BSE:8b3f4a52-1d6e-4f70-ab8c-9d0e1f2a3b05", "BSE:0b8f6a52-9d43-4a57-9f3c-1c2b5d1e0a01",
                                      "BSE:7a2e3f41-0c5d-4e6f-9a7b-8c9d0e1f2a04", "BSE:5c1d7e90-2f4b-4b7e-8a1d-3e4f5a6b7c02",
                                      "BSE:6fb57b5e-a05f-4e05-b2da-6e2b5bfe32ae"]  # by publication time
    rel = df.row(1, named=True)
    assert (rel["exchange"], rel["symbol"], rel["company"], rel["isin"]) == ("BSE", "500325", "Reliance Industries Ltd", None)
    # 00:30 IST on 2 January is 19:00 UTC on 1 January; BSE's fraction of a second is kept
    assert rel["published"] == dt.datetime(2024, 1, 1, 19, 0, tzinfo=UTC)
    assert rel["disseminated"] == dt.datetime(2024, 1, 1, 19, 0, 1, 500000, tzinfo=UTC)
    assert rel["subject"] == "Board Meeting Intimation for Considering Financial Results"
    assert rel["attachment"] == "https://www.bseindia.com/xml-data/corpfiling/AttachLive/10a0e1d5b2c1-c3f9-75a4-34d9-25a6f8b0.pdf"
    rows = {r["symbol"]: r for r in df.iter_rows(named=True)}
    # the "<company> - <code> - " prefix goes, the rest of the subject stays, dashes and all
    assert rows["517397"]["subject"] == ("Compliances-Reg. 39 (3) - Details of Loss of Certificate / Duplicate "
                                         "Certificate")
    assert rows["517397"]["published"] == dt.datetime(2024, 1, 6, 18, 14, 22, tzinfo=UTC)
    assert rows["532540"]["text"] == ("Tata Consultancy Services Ltd has submitted the financial results. Revenue grew "
                                      "4.0% year on year.")  # HEADLINE, then MORE
    assert rows["500209"]["text"] is None
    assert [status for _, status, _ in archive.records] == [200] * 4
    assert json.loads(archive.records[1][2]) == _page([B2, B4], 6)


def test_bse_asks_each_scrip_and_the_results_category(bse_api):
    server = bse_api({("20240101", 1): [(200, {}, _page([B2], 1))]})
    df = server.client("2024-01-01", "2024-01-07", scrips=["532540", " 500325 "], category="Result").announcements()
    assert [(q["strScrip"], q["strCat"]) for _, q, _ in server.requests] == [("500325", "Result"), ("532540", "Result")]
    assert df["symbol"].to_list() == ["532540"]  # the replay answers the same row to both: kept once


def test_bse_403_and_html_answers_name_bse_and_the_setting(bse_api):
    akamai = b"<HTML><HEAD><TITLE>Access Denied</TITLE></HEAD><BODY>You don't have permission. Reference #18.6a</BODY></HTML>"
    server = bse_api({("20240101", 1): [(403, {"Content-Type": "text/html"}, akamai)]})
    with pytest.raises(SourceBlocked, match=r"BSE \(bseindia.com\).*HTTP 403.*TENALI_SOURCES_OFF=india"):
        server.client("2024-01-01", "2024-01-20").announcements()
    assert len(server.requests) == 1  # a refusal is not retried, nor are the other windows asked
    server = bse_api({("20240101", 1): [(200, {"Content-Type": "text/html"},
                                         b"<!DOCTYPE html><html><head><title>BSE Ltd</title></head><body></body></html>")]})
    with pytest.raises(SourceBlocked, match=r"BSE.*HTML page instead of JSON.*TENALI_SOURCES_OFF=india"):
        server.client("2024-01-01", "2024-01-07").announcements()
    # without BSE's Referer the replay answers 403, as BSE does: the client always sends it
    client = server.client("2024-01-01", "2024-01-07", home_url="https://example.org")
    with pytest.raises(SourceBlocked, match="HTTP 403"):
        client.announcements()


def test_bse_429_then_success_with_backoff(bse_api):
    server = bse_api({("20240101", 1): [(429, {"Retry-After": "0"}, b"Too Many Requests"), (502, {}, b"Bad Gateway"),
                                        (200, {}, _page([B2, B1], 2))]})
    slept = []
    df = server.client("2024-01-01", "2024-01-07", sleep=slept.append).announcements()
    assert df.height == 2 and len(slept) == 2 and len(server.requests) == 3


def test_bse_malformed_window_fails_alone(bse_api):
    bad_time = {**B4, "News_submission_dt": "2024-01-31T25:00:00", "NEWSID": "bad"}
    server = bse_api({("20240101", 1): [(200, {}, _page([B2, B1], 2))],
                      ("20240108", 1): [(200, {"Content-Type": "application/json"}, b'{"Table": [{"NEWSID": "x')],
                      ("20240115", 1): [(200, {}, _page([B5, B6], 5))],  # page 2 empty: 3 rows missing
                      ("20240115", 2): [(200, {}, _page([], 0))],
                      ("20240122", 1): [(200, {}, _page([bad_time], 1))],
                      ("20240129", 1): [(200, {}, {"Table": [B3]})],
                      ("20240205", 1): [(200, {}, _page([B3], 1))]})
    with pytest.raises(PartialFetchError, match=r"BSE corporate announcements: 4 failed") as e:
        server.client("2024-01-01", "2024-02-11", attempts=2).announcements()
    failures = e.value.failures
    assert set(failures) == {f"corporate announcements {w}" for w in (
        "2024-01-08..2024-01-14", "2024-01-15..2024-01-21", "2024-01-22..2024-01-28", "2024-01-29..2024-02-04")}
    assert "not JSON" in failures["corporate announcements 2024-01-08..2024-01-14"]
    assert "page 2 is empty after 2 of the 5 rows" in failures["corporate announcements 2024-01-15..2024-01-21"]
    assert "2024-01-31T25:00:00" in failures["corporate announcements 2024-01-22..2024-01-28"]
    assert "no Table1 ROWCNT" in failures["corporate announcements 2024-01-29..2024-02-04"]
    assert e.value.partial["symbol"].to_list() == ["500325", "532540", "517397"]  # the good windows kept


def test_bse_page_shapes():
    assert bse.parse_page({"Table": [], "Table1": []}) == ([], 0)
    with pytest.raises(MalformedResponse, match="expected"):
        bse.parse_page([B1])
    with pytest.raises(MalformedResponse, match="no SCRIP_CD, NEWSSUB or time"):
        bse.parse_announcements([{**B1, "NEWSSUB": "", "SUBCATNAME": None, "CATEGORYNAME": None}])
    # no NEWSID: a stable id from the row itself
    ids = {bse.parse_announcements([{**B1, "NEWSID": None}])["ann_id"][0] for _ in range(2)}
    assert len(ids) == 1 and ids.pop().startswith("BSE:")
    with pytest.raises(ValueError, match="on or before end"):
        BseClient("2024-02-01", "2024-01-01")


# ---- sample twin and documents ------------------------------------------------------------------------


def _passes_cleaning_rules(source: str, df: pl.DataFrame) -> None:
    """The keys and required columns proposed for cleaning.py hold on `df`."""
    assert dict(df.schema) == INDIA_SCHEMAS[source]
    assert df.select(pl.any_horizontal([pl.col(c).is_null() for c in INDIA_REQUIRED[source]]).sum()).item() == 0
    assert df.select(INDIA_KEYS[source]).is_duplicated().sum() == 0


def test_sample_twin_matches_the_live_schema():
    a, b = SampleIndiaClient(), SampleIndiaClient()
    ann, bhav, ipos = a.announcements(), a.bhavcopy(), a.ipos()
    assert ann.equals(b.announcements()) and bhav.equals(b.bhavcopy()) and ipos.equals(b.ipos())
    _passes_cleaning_rules("india_announcements", ann)
    _passes_cleaning_rules("india_bhavcopy", bhav)
    _passes_cleaning_rules("india_ipos", ipos)
    assert (bhav["source"] == "sample:generated").all() and bhav["date"].max() <= D(2013, 2, 28)
    assert not set(bhav["date"]) & set(a.holidays) and a.holidays
    assert bhav.filter((pl.col("low") > pl.col("open")) | (pl.col("high") < pl.col("close"))
                       | (pl.col("low") > pl.col("close")) | (pl.col("high") < pl.col("open"))).is_empty()
    # the new listing trades in BE for ten sessions, then EQ; the SME one in SM
    mock = bhav.filter(pl.col("symbol") == "MOCKPOWER").sort("date")
    assert mock["series"].head(10).unique().to_list() == ["BE"] and mock["series"][10] == "EQ"
    assert set(bhav.filter(pl.col("symbol") == "TESTFOODS")["series"]) == {"SM"}
    assert set(ipos["status"]) == {"listed", "withdrawn"} and "DEMOBANKFPO" not in ipos["symbol"].to_list()


def test_announcement_digests_are_dated_on_the_ist_day():
    ann = SampleIndiaClient().announcements()
    late = ann.filter(pl.col("subject") == "Updates").row(0, named=True)
    assert late["published"].date() == D(2012, 10, 10)  # 00:40 IST on the 11th
    docs = render_announcements(ann)
    assert (docs["domain"] == "news_filings").all() and docs["doc_id"].is_unique().all()
    day = docs.filter(pl.col("instrument") == "EXMPSOFT", pl.col("date") == D(2012, 10, 11))
    assert day.height == 1 and "00:40 IST, Updates: Exemplia Software Limited has informed" in day["text"][0]
    # one digest per company and IST day; every announcement appears in its digest
    per_day = ann.with_columns(d=pl.col("published").dt.convert_time_zone("Asia/Kolkata").dt.date()).select(
        "symbol", "d").unique()
    assert docs.height == per_day.height
    for r in ann.iter_rows(named=True):
        assert any(r["text"] in t for t in docs.filter(pl.col("instrument") == r["symbol"])["text"])


def test_bse_sample_twin_files_what_nse_gets_under_the_scrip_code():
    client = SampleBseClient()
    ann = client.announcements()
    assert ann.equals(SampleBseClient().announcements())
    _passes_cleaning_rules("india_announcements", ann)
    assert set(ann["exchange"]) == {"BSE"} and ann["ann_id"].str.starts_with("BSE:").all()
    assert set(ann["symbol"]) == set(BSE_CODES.values())  # TESTFOODS is on NSE's SME platform only
    pages = client.pages()
    assert len(pages) > 1 and {p["Table1"][0]["ROWCNT"] for p in pages} == {ann.height}
    # each BSE row is an announcement of a dual-listed company also filed with NSE, minutes earlier
    nse = SampleIndiaClient().announcements()
    code_of = {v: k for k, v in BSE_CODES.items()}
    for r in ann.iter_rows(named=True):
        twin = nse.filter(pl.col("symbol") == code_of[r["symbol"]], pl.col("text") == r["text"])
        assert twin.height == 1
        lag = r["published"] - twin["published"][0]
        assert dt.timedelta(minutes=1) <= lag <= dt.timedelta(minutes=10) and r["disseminated"] > r["published"]
    order = ann.filter(pl.col("subject").str.contains("Receipt Of Order")).row(0, named=True)
    assert order["published"].date() == D(2012, 10, 10)  # filed after midnight IST on the 11th
    results = ann.filter(pl.col("subject").str.starts_with("Unaudited Financial Results"))
    assert results.height == 11 and results["text"].str.contains("Revenue from operations").all()


def test_the_india_assets_materialise_and_render_documents(materialize_sample):
    """The three tables through the raw -> clean factory (sample twins; announcements from NSE and BSE),
    then their documents."""
    from tenali_pipeline.defs.india import assets as india

    _, lake, _, _ = materialize_sample(india.announcement_defs + india.bhavcopy_defs + india.ipo_defs,
                                       ("india_announcement_documents", "ipo_documents"))
    clean = lake.read_parquet("clean/india_announcements/india_announcements.parquet")
    counts = dict(clean.group_by("exchange").len().iter_rows())
    assert counts == {"NSE": SampleIndiaClient().announcements().height, "BSE": SampleBseClient().announcements().height}
    ann = lake.read_parquet("documents/india_announcement_documents.parquet")
    ipo = lake.read_parquet("documents/ipo_documents.parquet")
    assert ann.height and set(ann["domain"]) == {"news_filings"}
    bse_docs = ann.filter(pl.col("instrument").is_in(list(BSE_CODES.values())))
    assert bse_docs.height and bse_docs["text"].str.contains(r"\(BSE: 5991\d\d\)").all()
    assert ipo.height and set(ipo["domain"]) == {"market"} and ipo["text"].str.contains("issue price").any()


def test_sources_off_india_turns_off_every_table():
    from tenali_pipeline.resources import SourcesResource
    from tenali_pipeline.settings import load_settings

    off = SourcesResource(sources_off=list(load_settings({"TENALI_SOURCES_OFF": "india"}).sources_off))
    assert all(off.is_off(s) for s in ("india_announcements", "india_bhavcopy", "india_ipos")) and not off.is_off("market")


def test_bhavcopy_runs_ask_only_from_a_week_before_the_last_day_held():
    import logging
    from types import SimpleNamespace

    from tenali_pipeline.defs.india.assets import _since_last

    held = pl.DataFrame({"exchange": ["NSE"] * 2, "symbol": ["ABC", "ABC"], "series": ["EQ"] * 2,
                         "date": [dt.date(2024, 7, 10), dt.date(2024, 7, 11)], "close": [10.0, 11.0]})
    run = SimpleNamespace(previous=held, log=logging.getLogger("t"), sources=SimpleNamespace(start_date="2015-01-01"))
    asked = []

    def fetch(start):
        asked.append(start)
        return pl.DataFrame({"exchange": ["NSE"] * 2, "symbol": ["ABC", "ABC"], "series": ["EQ"] * 2,
                             "date": [dt.date(2024, 7, 11), dt.date(2024, 7, 12)], "close": [11.5, 12.0]})

    out = _since_last(run, "date", ["exchange", "symbol", "series", "date"], fetch)
    assert asked == [dt.date(2024, 7, 4)]
    assert out["close"].to_list() == [10.0, 11.5, 12.0]  # the re-sent day replaced, nothing duplicated


def test_announcements_ask_each_exchange_from_its_own_last_day():
    import logging
    from types import SimpleNamespace

    from tenali_pipeline.defs.india.assets import _announcements

    held = pl.concat([SampleIndiaClient().announcements().head(3)])  # NSE rows only: BSE is new
    asked = []

    class Sources:
        start_date = "2012-06-01"

        def india(self, start=None, archive=None, exchange="NSE"):
            asked.append((exchange, start))
            return SampleBseClient() if exchange == "BSE" else SampleIndiaClient()

    run = SimpleNamespace(previous=held, log=logging.getLogger("t"), sources=Sources(), archive=None)
    out = _announcements(run)
    last = held["published"].max().date()
    assert asked == [("NSE", last - dt.timedelta(days=7)), ("BSE", None)]  # BSE from TENALI_START_DATE
    assert out.height == SampleIndiaClient().announcements().height + SampleBseClient().announcements().height
    assert out["ann_id"].is_unique().all()


def test_one_exchange_refusing_keeps_the_others_rows(tmp_path, nse):
    """NSE's bot wall answers 403: BSE's rows are written, and the run fails naming NSE and the setting."""
    import dagster as dg

    from tenali_pipeline.defs.india import assets as india_assets
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import LakeResource, SourcesResource

    server = nse({"/": [(403, {"Content-Type": "text/html"}, b"<html><title>Access Denied</title></html>")]})

    class WalledNse(SourcesResource):
        def india(self, start=None, archive=None, exchange="NSE"):
            if exchange == "BSE":
                return SampleBseClient()
            return server.client("2012-06-01", "2012-06-07", archive=archive)

    raw = [india_assets.announcement_defs[0]]  # raw_india_announcements
    result = dg.materialize(raw, resources={"lake": LakeResource(root=str(tmp_path / "lake")), "sources": WalledNse()},
                            raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message
    assert "Indian exchange announcements: 1 failed (NSE: NSE (nseindia.com) refused automated access (HTTP 403)" in message
    assert "TENALI_SOURCES_OFF=india" in message
    kept = Lake(str(tmp_path / "lake")).read_parquet("raw/india_announcements/india_announcements.parquet")
    assert set(kept["exchange"]) == {"BSE"} and kept.height == SampleBseClient().announcements().height

