"""Every live source's upstream, replayed on 127.0.0.1 (or through an injected session), for the local
profile's end-to-end test (test_local_profile.py).

The data and the replay approach are those of the per-source tests in tests/sources/ (imported by file
path, tests/ not being a package) and the real captures in ../shared/realdata/: Yahoo's AAPL chart,
FRED's GDP and FEDFUNDS, one-minute candles of a Binance pair (here as daily klines), Apple's EDGAR
submissions and 8-K, the SEC ticker map and EDGAR's "latest filings" Atom feed. Microsoft, the second
ticker (so that each of the two instrument buckets holds one), is shaped on Apple's captures and marked
as made up where it is.

Each upstream logs every request it answers as (path, status), so a test can say what a run asked:
`Replays.log()` gives them all, by upstream. Nothing here reaches the network: yfinance gets a
`requests.Session` whose adapter answers Yahoo's URLs, sec-edgar-downloader's URL constants are pointed
at the local SEC, and every other client takes its base URL as an argument or setting.
"""

from __future__ import annotations

import bz2
import datetime as dt
import importlib.util
import json
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

SOURCES_TESTS = Path(__file__).resolve().parents[1] / "sources"
REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
if str(SOURCES_TESTS) not in sys.path:
    sys.path.insert(0, str(SOURCES_TESTS))
from local_http import LocalServer  # noqa: E402

FRED_KEY = "abcdef0123456789abcdef0123456789"
SEC_IDENTITY = "Tenali Tests tests@example.com"
TICKERS = ("AAPL", "MSFT")  # bucket 01 and bucket 00 of 2 (tenali_pipeline.buckets.bucket_of)
START = "2012-04-01"  # TENALI_START_DATE: before every replayed series
YAHOO_END = "2020-11-07"  # the AAPL capture covers 2020-08-31 .. 2020-11-06
FILINGS_WINDOW = ("2019-11-01", "2019-11-30")  # Apple's 8-K of 2019-11-15, Microsoft's made-up one
NSE_WINDOW = ("2024-07-05", "2024-07-08")  # the last old-format bhavcopy and the first UDiFF one
IPO_END = "2012-06-30"  # one quarter of EDGAR's form index (tests/sources/fixtures/us_ipos)
COINGECKO_END = dt.date(2024, 1, 4)

AAPL_8K = "0001193125-19-292676"
MSFT_8K = "0001193125-19-299999"  # made up
NOT_FOUND = (404, {"Content-Type": "text/html"}, b"<html><body><h1>Not Found</h1></body></html>")


def load_test_module(name: str):
    """tests/sources/<name>.py as a module of its own (its fixture data and helpers, not its tests)."""
    spec = importlib.util.spec_from_file_location(f"_replayed_{name}", SOURCES_TESTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def real(*parts: str) -> Path:
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real capture {path} not present (../shared/realdata is absent)")
    return path


class Replay:
    """One upstream on its own 127.0.0.1 port. `routes` maps a path (with its query, or without) to a
    body, a (status, headers, body) answer or a function of the request returning one; an answer with
    an ETag is a 304 to a matching If-None-Match. `faults[path]` answers first, forever."""

    def __init__(self, name: str, routes: dict | None = None):
        self.name, self.routes, self.faults = name, dict(routes or {}), {}
        self.log: list[tuple[str, int]] = []
        self.http = LocalServer(self._respond)
        self.base = self.http.base

    def _respond(self, req):
        status, headers, body = self._answer(req)
        self.log.append((req.path, status))
        if isinstance(body, (dict, list)):
            body, headers = json.dumps(body).encode(), {"Content-Type": "application/json", **headers}
        return status, headers, body.encode() if isinstance(body, str) else body

    def _answer(self, req):
        bare = urlsplit(req.path).path
        for key in (req.path, bare):
            if key in self.faults:
                return self.faults[key]
        route = self.routes.get(req.path, self.routes.get(bare))
        if route is None:
            return NOT_FOUND
        if callable(route):
            return route(req)
        status, headers, body = route if isinstance(route, tuple) else (200, {}, route)
        etag = headers.get("ETag")
        if etag and req.headers.get("If-None-Match") == etag:
            return 304, {"ETag": etag}, b""
        return status, headers, body

    def close(self):
        self.http.close()


def _daily_klines(minute_candles: list) -> list[list]:
    """Binance 1d klines (open time, OHLCV as strings, close time, quote volume, trades, ...) from
    one-minute [ts, o, h, l, c, v] candles."""
    days: dict[int, list] = {}
    for ts, o, h, low, c, v in minute_candles:
        days.setdefault(ts // 86_400_000, []).append((o, h, low, c, v))
    out = []
    for day, bars in sorted(days.items()):
        o, c = bars[0][0], bars[-1][3]
        h, low, v = max(b[1] for b in bars), min(b[2] for b in bars), sum(b[4] for b in bars)
        start = day * 86_400_000
        out.append([start, f"{o:.8f}", f"{h:.8f}", f"{low:.8f}", f"{c:.8f}", f"{v:.8f}", start + 86_399_999,
                    f"{v * c:.8f}", len(bars), "0", "0", "0"])
    return out


def _msft_submissions() -> dict:
    """data.sec.gov's submissions JSON for Microsoft, trimmed to one (made-up) 8-K."""
    recent = {"accessionNumber": [MSFT_8K], "filingDate": ["2019-11-26"], "reportDate": ["2019-11-26"],
              "acceptanceDateTime": ["2019-11-26T16:15:30.000Z"], "act": ["34"], "form": ["8-K"],
              "fileNumber": ["001-37845"], "filmNumber": ["191252999"], "items": ["8.01"], "size": [4321],
              "isXBRL": [0], "isInlineXBRL": [0], "primaryDocument": ["d8k.htm"], "primaryDocDescription": ["8-K"]}
    return {"cik": "789019", "entityType": "operating", "sic": "7372", "name": "MICROSOFT CORP", "tickers": ["MSFT"],
            "exchanges": ["Nasdaq"], "filings": {"recent": recent, "files": []}}


MSFT_8K_TEXT = f"""<SEC-DOCUMENT>{MSFT_8K}.txt : 20191126
<SEC-HEADER>{MSFT_8K}.hdr.sgml : 20191126
<ACCEPTANCE-DATETIME>20191126161530
ACCESSION NUMBER:		{MSFT_8K}
CONFORMED SUBMISSION TYPE:	8-K
PUBLIC DOCUMENT COUNT:		1
CONFORMED PERIOD OF REPORT:	20191126
ITEM INFORMATION:		Other Events
FILED AS OF DATE:		20191126
DATE AS OF CHANGE:		20191126

FILER:

	COMPANY DATA:
		COMPANY CONFORMED NAME:			MICROSOFT CORP
		CENTRAL INDEX KEY:			0000789019
		STANDARD INDUSTRIAL CLASSIFICATION:	SERVICES-PREPACKAGED SOFTWARE [7372]
		STATE OF INCORPORATION:			WA
		FISCAL YEAR END:			0630
</SEC-HEADER>
<DOCUMENT>
<TYPE>8-K
<SEQUENCE>1
<FILENAME>d8k.htm
<DESCRIPTION>8-K
<TEXT>
<html><head><title>8-K</title></head><body>
<p>UNITED STATES SECURITIES AND EXCHANGE COMMISSION, Washington, D.C. 20549. FORM 8-K. CURRENT REPORT.</p>
<p>Microsoft Corporation (Exact name of registrant as specified in its charter).</p>
<p>Item 8.01 Other Events. On November 26, 2019, the registrant announced a quarterly dividend of $0.51 per share,
payable March 12, 2020, to shareholders of record on February 20, 2020.</p>
</body></html>
</TEXT>
</DOCUMENT>
</SEC-DOCUMENT>
"""


def _msft_companyfacts(fact) -> dict:
    """A companyfacts document shaped like the SEC's (Microsoft-like figures, made up for the replay)."""
    k20 = "0001564590-20-034944"
    usd = lambda *rows: {"label": "x", "units": {"USD": [fact(*r) for r in rows]}}  # noqa: E731
    return {"cik": 789019, "entityName": "MICROSOFT CORPORATION", "facts": {"us-gaap": {
        "RevenueFromContractWithCustomerExcludingAssessedTax": usd(
            ("2019-07-01", "2020-06-30", 143015000000, k20, 2020, "FY", "10-K", "2020-07-30", "CY2019")),
        "NetIncomeLoss": usd(("2019-07-01", "2020-06-30", 44281000000, k20, 2020, "FY", "10-K", "2020-07-30")),
        "Assets": usd((None, "2020-06-30", 301311000000, k20, 2020, "FY", "10-K", "2020-07-30")),
    }}}


MSFT_EQUITY = ("MSFT,Microsoft Corporation,Software.,USD,Information Technology,Software & Services,Software,NMS,XNAS,"
               "NASDAQ Global Select,United States,WA,Redmond,98052,https://www.microsoft.com,Mega Cap,US5949181045,"
               "594918104,,,,False")


class Replays:
    """Every upstream of the live clients, started together; `close()` stops them and undoes the patches."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch):
        self.tmp = tmp
        self._started: list = []  # every server, closed by `close()`
        self._load_fixture_data()
        monkeypatch.setenv("FRED_API_KEY", FRED_KEY)
        monkeypatch.setenv("SEC_EDGAR_IDENTITY", SEC_IDENTITY)
        monkeypatch.setenv("FINANCEDATABASE_CACHE_DIR", str(tmp / "financedatabase"))
        try:
            self._yahoo(tmp)
            self._fred()
            self._binance()
            self._sec(monkeypatch)
            self._feeds()
            self._central_banks()
            self._universe_files()
            self._onchain()
            self._nse()
            self._bse()
            self._edgar_index()
            self._documents(tmp / "documents")
        except BaseException:  # a capture missing (a skip) or a port refused: stop what started
            self.close()
            raise

    # -- fixture data of the per-source tests ------------------------------------------------------------

    def _load_fixture_data(self):
        names = ("test_live_market", "test_live_macro", "test_live_crypto", "test_live_news", "test_live_documents",
                 "test_universe", "test_xbrl", "test_onchain", "test_centralbank", "test_india", "test_us_ipos")
        self.t = {name.removeprefix("test_").removeprefix("live_"): load_test_module(name) for name in names}

    def _replay(self, name: str, routes: dict | None = None) -> Replay:
        replay = Replay(name, routes)
        self._started.append(replay)
        return replay

    # -- the upstreams ------------------------------------------------------------------------------------

    def _yahoo(self, tmp: Path):
        """yfinance: an adapter answering Yahoo's hard-coded URLs, its caches isolated under `tmp`."""
        import yfinance as yf
        from yfinance.data import YfData

        yf.set_tz_cache_location(str(tmp / "yfinance"))
        YfData.cache_get.cache_clear()
        aapl = real("yahoo", "chart-AAPL-2020-08-31-to-2020-11-07.body.json").read_bytes()
        msft = aapl.replace(b'"symbol":"AAPL"', b'"symbol":"MSFT"')  # AAPL's bars, relabelled: made up
        chart = "https://query2.finance.yahoo.com/v8/finance/chart/"
        self.yahoo = self.t["market"].CannedYahoo({
            "https://fc.yahoo.com": [(404, b"")],
            "https://query1.finance.yahoo.com/v1/test/getcrumb": [(200, b"crumb-abc")],
            chart + "AAPL": [(200, aapl)],
            chart + "MSFT": [(200, msft)],
        })

    def yahoo_session(self) -> requests.Session:
        session = requests.Session()
        session.mount("https://", self.yahoo)
        return session

    def _fred(self):
        macro = self.t["macro"]
        bodies = {"GDP": macro.observations_xml(json.loads(real("fred", "fredapi_gdp.json").read_text())),
                  "FEDFUNDS": macro.observations_xml(json.loads(real("fred", "fredapi_fedfunds.json").read_text()))}

        def respond(req):
            url = urlsplit(req.path)
            sid = parse_qs(url.query).get("series_id", [""])[0]
            if sid not in bodies:
                return 400, {}, macro.error_xml(400, "Bad Request.  The series does not exist.")
            body = macro.series_xml(sid) if url.path == "/fred/series" else bodies[sid]
            return 200, {"Content-Type": "text/xml; charset=UTF-8"}, body

        self.fred = self._replay("fred", {"/fred/series": respond, "/fred/series/observations": respond})

    def _binance(self):
        crypto = self.t["crypto"]
        self.klines = _daily_klines(json.loads(real("crypto", "freqtrade_UNITTEST_BTC-1m.json").read_text()))

        def klines(req):
            q = {k: v[0] for k, v in parse_qs(urlsplit(req.path).query).items()}
            start, limit = int(q.get("startTime", 0)), int(q.get("limit", 500))
            return 200, {}, [k for k in self.klines if k[0] >= start][:limit]

        self.binance = self._replay("binance", {"/api/v3/exchangeInfo": crypto.EXCHANGE_INFO, "/api/v3/klines": klines})

    def _sec(self, monkeypatch):
        """www.sec.gov and data.sec.gov: the ticker map, submissions, full submissions, companyfacts."""
        from sec_edgar_downloader import _orchestrator, _sec_gateway

        tickers = json.loads(real("sec", "company_tickers.json").read_text())
        mapping = {"fields": ["cik", "name", "ticker", "exchange"],  # company_tickers_exchange.json's shape
                   "data": [[t["cik_str"], t["title"], t["ticker"], None] for t in tickers.values()]}
        fact = self.t["xbrl"].fact
        self.sec = self._replay("sec", {
            "/files/company_tickers_exchange.json": json.dumps(mapping),
            "/submissions/CIK0000320193.json": real("sec", "CIK0000320193.json").read_bytes(),
            "/submissions/CIK0000320193-submissions-001.json":
                real("sec", "CIK0000320193-submissions-001.json").read_bytes(),
            f"/Archives/edgar/data/320193/{AAPL_8K.replace('-', '')}/{AAPL_8K}.txt":
                real("sec", "aapl-8k-20191115-full-submission.txt").read_bytes(),
            "/submissions/CIK0000789019.json": _msft_submissions(),
            f"/Archives/edgar/data/789019/{MSFT_8K.replace('-', '')}/{MSFT_8K}.txt": MSFT_8K_TEXT,
            "/api/xbrl/companyfacts/CIK0000320193.json": self.t["xbrl"].APPLE,
            "/api/xbrl/companyfacts/CIK0000789019.json": _msft_companyfacts(fact),
        })
        # sec-edgar-downloader's URLs are constants imported by name into these two modules
        monkeypatch.setattr(_sec_gateway, "URL_CIK_MAPPING", f"{self.sec.base}/files/company_tickers_exchange.json")
        monkeypatch.setattr(_orchestrator, "URL_SUBMISSIONS", f"{self.sec.base}/submissions/{{submission}}")
        monkeypatch.setattr(_orchestrator, "URL_FILING",
                            f"{self.sec.base}/Archives/edgar/data/{{cik}}/{{acc_num_no_dash}}/{{document}}")

    def _feeds(self):
        atom = real("rss", "sec_edgar_getcurrent_atom_2025-12-12.xml").read_bytes()
        self.feeds = self._replay("news", {
            "/sec.atom": (200, {"Content-Type": "application/atom+xml", "ETag": '"sec-1"'}, atom),
            "/wire.rss": (200, {"Content-Type": "application/rss+xml", "ETag": '"wire-1"'}, self.t["news"].RSS),
        })

    def news_feeds(self) -> list[str]:
        return [f"{self.feeds.base}/sec.atom", f"{self.feeds.base}/wire.rss"]

    def _central_banks(self):
        cb = self.t["centralbank"]
        html = lambda text: (200, {"Content-Type": "text/html; charset=utf-8"}, text)  # noqa: E731
        rss = lambda text, etag: (200, {"Content-Type": "application/rss+xml", "ETag": etag}, text)  # noqa: E731
        self.fed, self.ecb, self.rbi = self._replay("fed"), self._replay("ecb"), self._replay("rbi")
        self.fed.routes.update({"/robots.txt": cb.ROBOTS,
                                "/feeds/press_monetary.xml": rss(cb.FED_FEED.format(base=self.fed.base), '"fed-1"'),
                                "/newsevents/pressreleases/monetary20241218a.htm": html(cb.FED_STATEMENT),
                                "/newsevents/pressreleases/monetary20250108a.htm": html(cb.FED_MINUTES)})
        self.ecb.routes.update({"/robots.txt": "User-agent: *\nDisallow: /shared/\n",
                                "/rss/press.html": rss(cb.ECB_FEED.format(base=self.ecb.base), '"ecb-1"'),
                                "/press/pr/date/2024/html/ecb.mp241212~2acab6e51e.en.html": html(cb.ECB_DECISIONS)})
        self.rbi.routes.update({"/pressreleases_rss.xml": rss(cb.RBI_FEED.format(base=self.rbi.base), '"rbi-1"'),
                                "/Scripts/BS_PressReleaseDisplay.aspx?prid=59780": html(cb.RBI_RESOLUTION),
                                "/Scripts/BS_PressReleaseDisplay.aspx?prid=59777": html(cb.RBI_MONEY_MARKET)})

    def central_bank_feeds(self) -> list[str]:
        return [f"fed={self.fed.base}/feeds/press_monetary.xml", f"ecb={self.ecb.base}/rss/press.html",
                f"rbi={self.rbi.base}/pressreleases_rss.xml"]

    def _universe_files(self):
        """financedatabase's bz2 CSVs: two US equities (one per bucket), an Indian one, SPY, two pairs each."""
        u = self.t["universe"]
        equities = u.EQUITIES.splitlines()
        kept = [equities[0]] + [line for line in equities[1:] if line.split(",")[0] in ("AAPL", "RELIANCE.NS")]
        etfs = [line for line in u.ETFS.splitlines() if not line.startswith("003D")]
        texts = {"equities": "\n".join(kept + [MSFT_EQUITY]) + "\n", "etfs": "\n".join(etfs) + "\n",
                 "currencies": u.CURRENCIES, "cryptos": u.CRYPTOS}
        self.fd = self._replay("financedatabase", {
            f"/fd/{name}.bz2": (200, {"ETag": '"v1"'}, bz2.compress(text.encode())) for name, text in texts.items()})

    def _onchain(self):
        onchain = self.t["onchain"]
        # the last answer of each route (the per-source test serves a 429 first)
        llama = {path: (answers[-1][0], {}, answers[-1][1]) for path, answers in onchain.LLAMA.items()
                 if "Brokenchain" not in path}
        self.defillama = self._replay("defillama", llama)
        self.coingecko = self._replay("coingecko", {
            "/coins/bitcoin/market_chart/range": onchain._market_chart([40000, 42000, 41000, 41500],
                                                                       [8e11, 8.4e11, 8.2e11, 8.3e11]),
            "/coins/bitcoin": {"id": "bitcoin", "symbol": "btc", "market_data": {"max_supply": 21000000.0}},
        })

    def _nse(self):
        india = self.t["india"]
        announcements = [
            india._ann("RELIANCE", "Reliance Industries Limited", "Board Meeting Intimation", "05-Jul-2024 17:30:00",
                       "104700001", "Reliance Industries Limited has informed the Exchange about a Board Meeting."),
            india._ann("TCS", "Tata Consultancy Services Limited", "Financial Result Updates", "08-Jul-2024 18:45:12",
                       "104700002", "Tata Consultancy Services Limited has submitted the financial results.",
                       "INE467B01029", "Computers - Software"),
        ]
        self.nse = india.Nse({
            "/api/corporate-announcements": [(200, {}, announcements)],
            "/products/content/sec_bhavdata_full_05072024.csv": [(200, {"Content-Type": "text/csv"}, india.FULL_0705)],
            "/content/cm/BhavCopy_NSE_CM_0_0_0_20240708_F_0000.csv.zip":
                [(200, {"Content-Type": "application/zip"}, india.UDIFF_0708)],
            "/api/public-past-issues": [(200, {}, india.PAST_ISSUES)],
        })
        self._started.append(self.nse.http)

    def _bse(self):
        """BSE's announcement API: one page for NSE_WINDOW's only window."""
        india = self.t["india"]
        rows = [india._bse_row(532540, "Tata Consultancy Services Ltd", "Financial Results For The Quarter Ended "
                               "June 30, 2024", "2024-07-08T18:50:02.4", "5c1d7e90-2f4b-4b7e-8a1d-3e4f5a6b7c11",
                               "Tata Consultancy Services Ltd has submitted the financial results.", "Result",
                               "Financial Results"),
                india._bse_row(500325, "Reliance Industries Ltd", "Board Meeting Intimation", "2024-07-05T17:34:10.1",
                               "0b8f6a52-9d43-4a57-9f3c-1c2b5d1e0a12", "Reliance Industries Ltd has informed BSE about "
                               "a Board Meeting.", "Board Meeting", "Board Meeting Intimation")]
        self.bse = india.Bse({("20240705", 1): [(200, {}, india._page(rows, 2))]})
        self._started.append(self.bse.http)

    def _edgar_index(self):
        """EDGAR's 2012 Q2 form index and prospectuses (tests/sources/fixtures/us_ipos), without the one
        cover that cannot be parsed (that failure is test_us_ipos.py's)."""
        ipos = self.t["us_ipos"]
        self.edgar = ipos.FakeEdgar()
        self._started.append(self.edgar.http)
        key = "/full-index/2012/QTR2/form.idx"
        self.edgar.files[key] = b"".join(line for line in self.edgar.files[key].splitlines(keepends=True)
                                         if ipos.NO_PRICE.encode() not in line)

    def _documents(self, folder: Path):
        docs = self.t["documents"]
        self.documents_root = folder
        docs._write(folder, docs.FILES)

    # -- what the clients asked ---------------------------------------------------------------------------

    def log(self) -> dict[str, list[tuple[str, int | None]]]:
        """Every request answered so far, by upstream, as (path or URL, status)."""
        out = {r.name: list(r.log) for r in self._started if isinstance(r, Replay)}
        out["yahoo"] = [(url, None) for url in self.yahoo.calls]
        out["nse"] = [(path, None) for path, _, _ in self.nse.requests]
        out["bse"] = [(path, None) for path, _, _ in self.bse.requests]
        out["edgar_index"] = [(path, None) for path, _ in self.edgar.requests]
        return out

    def env(self, home: Path) -> dict[str, str]:
        """The environment of a new user of the local profile, its URLs pointed at the replays."""
        return {
            "TENALI_PROFILE": "local", "TENALI_HOME": str(home), "TENALI_INSTRUMENT_BUCKETS": "2",
            "TENALI_TICKERS": ",".join(TICKERS), "TENALI_FRED_SERIES": "GDP,FEDFUNDS", "TENALI_START_DATE": START,
            "TENALI_CRYPTO_EXCHANGE": "binance", "TENALI_CRYPTO_SYMBOLS": "UNITTEST/BTC",
            "TENALI_NEWS_FEEDS": ",".join(self.news_feeds()), "TENALI_DOCUMENTS_ROOT": str(self.documents_root),
            "TENALI_CENTRAL_BANK_FEEDS": ",".join(self.central_bank_feeds()), "TENALI_CENTRAL_BANK_DELAY": "0",
            "TENALI_FINANCEDATABASE_URL": f"{self.fd.base}/fd/", "TENALI_DEFILLAMA_CHAINS": "Ethereum",
            "TENALI_DEFILLAMA_PROTOCOLS": "aave", "TENALI_COINGECKO_COINS": "bitcoin",
        }

    def sources(self, settings, **overrides):
        """The profile's `sources` resource, its clients built on their real libraries against the replays.

        News, central banks and documents keep the product's own factories (their URLs and folder are
        settings); the others get the replay's base URL or session, short backoffs, and the date window
        the replayed data covers."""
        from tenali_pipeline.resources import SourcesResource, build_resources
        from tenali_pipeline.sources.live import india as nse_module

        replays = self

        class ReplayedSources(SourcesResource):
            def market(self, tickers=None, archive=None):
                from tenali_pipeline.sources.live.market import YFinanceMarketClient

                return YFinanceMarketClient(list(tickers) if tickers is not None else self.tickers,
                                            start=self.start_date, end=YAHOO_END, session=replays.yahoo_session(),
                                            base_delay=0.01, archive=archive)

            def macro(self, archive=None):
                from tenali_pipeline.sources.live.macro import FredMacroClient

                return FredMacroClient(self.fred_series, api_key=None, start=self.start_date,
                                       root_url=f"{replays.fred.base}/fred", base_delay=0.01, archive=archive)

            def crypto(self, archive=None):
                import ccxt

                from tenali_pipeline.sources.live.crypto import CcxtCryptoClient

                exchange = ccxt.binance({"urls": {"api": {"public": f"{replays.binance.base}/api/v3"}},
                                         "options": {"fetchMarkets": {"types": ["spot"]}}, "rateLimit": 1})
                return CcxtCryptoClient(self.crypto_exchange, self.crypto_symbols, timeframe="1d",
                                        since=self.start_date, exchange=exchange, base_delay=0.01, archive=archive)

            def filings(self, download_dir, companies=None, *, archive=None, tickers=None):
                from tenali_pipeline.sources.live.filings import EdgarFilingsClient

                wanted = list(companies.values()) if companies is not None else list(tickers or self.tickers)
                return EdgarFilingsClient(wanted, identity=None, download_dir=download_dir, after=FILINGS_WINDOW[0],
                                          before=FILINGS_WINDOW[1], base_delay=0.01, archive=archive)

            def fundamentals(self, companies, on_raw=None):
                from tenali_pipeline.sources.live.xbrl import SecXbrlClient

                return SecXbrlClient(companies, identity=None, base_url=replays.sec.base, on_raw=on_raw,
                                     base_delay=0.01)

            def universe(self, archive=None):
                from tenali_pipeline.sources.live.universe import FinanceDatabaseUniverseClient

                return FinanceDatabaseUniverseClient(
                    self.universe_classes, mics=self.universe_mics, countries=self.universe_countries,
                    quote_currencies=self.universe_quote_currencies, base_url=self.financedatabase_url,
                    sec_url=f"{replays.sec.base}/files/company_tickers_exchange.json", base_delay=0.01, archive=archive)

            def defillama(self, chains=None, protocols=None, archive=None):
                from tenali_pipeline.sources.live.defillama import DefiLlamaClient

                return DefiLlamaClient(self.defillama_chains if chains is None else list(chains),
                                       self.defillama_protocols if protocols is None else list(protocols),
                                       start=self.start_date, api=replays.defillama.base,
                                       stablecoins=replays.defillama.base, base_delay=0.01, archive=archive)

            def coingecko(self, coins=None, archive=None, end=None):
                from tenali_pipeline.sources.live.coingecko import CoinGeckoClient

                # the public API's limiter spaces calls 5 s apart: a plain session keeps the test short
                return CoinGeckoClient(self.coingecko_coins if coins is None else list(coins), start=self.start_date,
                                       end=end or COINGECKO_END, api=replays.coingecko.base, session=requests.Session(),
                                       base_delay=0.01, archive=archive)

            def us_ipos(self, archive=None):
                from tenali_pipeline.sources.live.us_ipos import EdgarIpoClient

                return EdgarIpoClient(self.start_date, IPO_END, identity=None, archive=archive,
                                      full_index_url=f"{replays.edgar.http.base}/full-index",
                                      archives_url=f"{replays.edgar.http.base}/Archives", base_delay=0.01)

            def india(self, start=None, archive=None, exchange="NSE"):
                from tenali_pipeline.sources.live.bse import BseClient
                from tenali_pipeline.sources.live.india import NseClient

                if exchange == "BSE":
                    return BseClient(start or NSE_WINDOW[0], NSE_WINDOW[1], api_url=replays.bse.http.base + "/BseIndiaAPI/api",
                                     session=nse_module.per_host_session(1000.0), base_delay=0.01, archive=archive)

                # 1000/s for 127.0.0.1, as tests/sources/test_india.py sets it (the limiter is per host, per process)
                return NseClient(start or NSE_WINDOW[0], NSE_WINDOW[1], base_url=replays.nse.http.base,
                                 archives_url=replays.nse.http.base, session=nse_module.per_host_session(1000.0),
                                 base_delay=0.01, archive=archive)

        base = build_resources(settings)["sources"]
        fields = {name: getattr(base, name) for name in SourcesResource.model_fields}
        return ReplayedSources(**{**fields, **overrides})

    def close(self):
        for server in self._started:
            server.close()
        self._started = []

