"""Deterministic NSE and BSE data for made-up companies, built in the exchanges' own formats and parsed
by the live parsers (`sources/live/india.py`, `sources/live/bse.py`): NSE announcements as the
corporate-announcements JSON, daily prices as ``sec_bhavdata_full`` CSV files (the format NSE served
for these dates), IPOs as the public-past-issues JSON; BSE announcements as pages of BSE's
AnnSubCategoryGetData JSON (`SampleBseClient`).

Made-up companies (as the sample chains and banks are) so that no real company is described with
invented numbers. Three have traded throughout; four came to market in the window, each showing
one case the IPO join must handle: a main-board listing that trades in the trade-for-trade BE
series for its first ten sessions and then in EQ (MOCKPOWER), a fixed-price SME issue trading in
the SM series (TESTFOODS), a listing too recent for a month of sessions before the window ends
(LATEINFRA), and a withdrawn issue that never listed (PULLEDRET). The past-issues list also carries
an FPO line, which the parser drops. Sessions run 2012-06-01 .. 2013-02-28, inside the demo's date
range, skipping weekends and the exchange's 2012 holidays (no bhavcopy for those days, as live).

The main-board companies are listed on BSE too, under made-up scrip codes (`BSE_CODES`), and file each
announcement there as well, a few minutes after NSE, as dual-listed companies do; the SME issue
(TESTFOODS) is on NSE's SME platform only.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib

import numpy as np
import polars as pl

from ..india_schema import INDIA_ANNOUNCEMENTS, INDIA_BHAVCOPY
from ..live import bse
from ..live.india import IST, parse_announcements, parse_bhavcopy, parse_past_issues

SOURCE = "sample:generated"
D = dt.date
HOLIDAYS = (D(2012, 8, 15), D(2012, 8, 20), D(2012, 9, 19), D(2012, 10, 2), D(2012, 10, 24), D(2012, 11, 14),
            D(2012, 11, 28), D(2012, 12, 25))
ARCHIVE = "https://archives.sample-exchange.example/corporate"


# symbol -> (company, industry, ISIN, first price or None for an IPO)
COMPANIES = {
    "SMPLCHEM": ("Samplia Chemicals Limited", "Chemicals", "INE9SM101013", 412.0),
    "DEMOBANK": ("Demoland Bank Limited", "Banks", "INE9DB102018", 1250.0),
    "EXMPSOFT": ("Exemplia Software Limited", "Computers - Software", "INE9EX103014", 860.0),
    "MOCKPOWER": ("Mockpur Power Limited", "Power", "INE9MP104010", None),
    "TESTFOODS": ("Testville Foods Limited", "Food Products", "INE9TF105016", None),
    "LATEINFRA": ("Lateland Infrastructure Limited", "Construction", "INE9LI106012", None),
}


# NSE symbol -> BSE scrip code (made up) of the companies listed on both exchanges
BSE_CODES = {"SMPLCHEM": "599101", "DEMOBANK": "599102", "EXMPSOFT": "599103", "MOCKPOWER": "599104",
             "LATEINFRA": "599106"}


# symbol -> the issue: dates, band, final price, size as NSE states it, listing series, listing-day gain at the open
IPOS = {
    "MOCKPOWER": dict(start=D(2012, 9, 5), end=D(2012, 9, 7), listing=D(2012, 9, 17), band="Rs.95 to Rs.100",
                      price="   100", size="120000000", security="EQ", series="BE", t2t_sessions=10, gain=0.12),
    "TESTFOODS": dict(start=D(2012, 11, 1), end=D(2012, 11, 5), listing=D(2012, 11, 12), band="Rs.40",
                      price="    40", size="3000000", security="SME", series="SM", t2t_sessions=0, gain=0.05),
    "LATEINFRA": dict(start=D(2013, 2, 4), end=D(2013, 2, 6), listing=D(2013, 2, 15), band="Rs.210 to Rs.220",
                      price="   215", size="Rs 645 Cr", security="EQ", series="EQ", t2t_sessions=0, gain=-0.08),
}
# Issues that never listed (or are not IPOs) appear only in the past-issues list.
OTHER_ISSUES = [
    {"symbol": "PULLEDRET", "companyName": "Pulled Retail Limited-Issue Withdrawn", "securityType": "EQ",
     "ipoStartDate": "10-DEC-2012", "ipoEndDate": "12-DEC-2012", "listingDate": "-", "issuePrice": "-",
     "priceRange": "Rs.300 to Rs.315", "issueSize": "Rs 410 Cr"},
    {"symbol": "DEMOBANKFPO", "companyName": "Demoland Bank Limited - FPO", "securityType": "EQ",
     "ipoStartDate": "08-OCT-2012", "ipoEndDate": "10-OCT-2012", "listingDate": "17-OCT-2012", "issuePrice": "  1180",
     "priceRange": "Rs.1150 to Rs.1180", "issueSize": "-"},
]


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32("|".join(map(str, key)).encode())])


def _tick(x: float) -> float:
    return round(round(x / 0.05) * 0.05, 2)


def _nse_time(t: dt.datetime) -> str:
    return f"{t:%d-%b-%Y %H:%M:%S}"


class SampleIndiaClient:
    """The offline twin of `NseClient`: `announcements()`, `bhavcopy()`, `ipos()` and `holidays`."""

    def __init__(self, start: str = "2012-06-01", end: str = "2013-02-28", symbols=(), seed: int = 11):
        # Configured (real) symbols are ignored on purpose: the sample only describes made-up ones.
        self.start, self.end, self.seed = D.fromisoformat(start), D.fromisoformat(end), seed
        self.holidays = [h for h in HOLIDAYS if self.start <= h <= self.end]

    # -- prices

    def sessions(self) -> list[dt.date]:
        days = (self.start + dt.timedelta(days=i) for i in range((self.end - self.start).days + 1))
        return [d for d in days if d.weekday() < 5 and d not in HOLIDAYS]

    def _bars(self) -> dict[dt.date, list[str]]:
        """Session -> the sec_bhavdata_full lines of every symbol trading that day."""
        sessions, out = self.sessions(), {}
        for symbol, (_, _, _, first) in COMPANIES.items():
            ipo = IPOS.get(symbol)
            days = [d for d in sessions if ipo is None or d >= ipo["listing"]]
            if not days:
                continue
            rng = _rng(symbol, self.seed)
            prev = first if ipo is None else float(ipo["price"])
            for i, day in enumerate(days):
                gap = ipo["gain"] if ipo is not None and i == 0 else rng.normal(0, 0.004)
                o = _tick(prev * (1 + gap))
                c = _tick(o * float(np.exp(rng.normal(0.0004, 0.018))))
                h = _tick(max(o, c) * (1 + abs(rng.normal(0, 0.006))))
                lo = _tick(min(o, c) * (1 - abs(rng.normal(0, 0.006))))
                vol = int(rng.integers(40_000, 400_000) * (4 if ipo is not None and i < 3 else 1))
                avg = round((o + h + lo + c) / 4, 2)
                series = ipo["series"] if ipo is not None and i < max(ipo["t2t_sessions"], 1) else (
                    "SM" if ipo is not None and ipo["security"] == "SME" else "EQ")
                trades = max(1, vol // int(rng.integers(60, 140)))
                deliv = int(vol * rng.uniform(0.3, 0.7))
                out.setdefault(day, []).append(
                    f"{symbol}, {series}, {day:%d-%b-%Y}, {prev:.2f}, {o:.2f}, {h:.2f}, {lo:.2f}, {c:.2f}, {c:.2f}, "
                    f"{avg:.2f}, {vol}, {vol * avg / 1e5:.2f}, {trades}, {deliv}, {deliv / vol * 100:.2f}")
                prev = c
        return out

    def bhavcopy_files(self) -> dict[dt.date, bytes]:
        """Session -> the sec_bhavdata_full CSV NSE would serve for it."""
        header = ("SYMBOL, SERIES, DATE1, PREV_CLOSE, OPEN_PRICE, HIGH_PRICE, LOW_PRICE, LAST_PRICE, CLOSE_PRICE, "
                  "AVG_PRICE, TTL_TRD_QNTY, TURNOVER_LACS, NO_OF_TRADES, DELIV_QTY, DELIV_PER")
        return {day: "\n".join([header, *sorted(lines)]).encode() + b"\n" for day, lines in sorted(self._bars().items())}

    def bhavcopy(self) -> pl.DataFrame:
        frames = [parse_bhavcopy(data, day, source=SOURCE) for day, data in self.bhavcopy_files().items()]
        return pl.concat(frames).sort("date", "symbol", "series") if frames else pl.DataFrame(schema=INDIA_BHAVCOPY)

    # -- announcements

    def _listed_on(self, symbol: str) -> dt.date:
        ipo = IPOS.get(symbol)
        return ipo["listing"] if ipo else self.start

    def events(self) -> list[tuple[str, dt.datetime, str, str, tuple[str, str, str]]]:
        """Every company announcement in the window: (symbol, IST time, NSE's desc, text, BSE's
        (category, subcategory, subject)), in time order. Both exchanges' twins format these."""
        events: list = []

        def add(symbol: str, at: dt.datetime, desc: str, text: str, bse: tuple[str, str, str]):
            events.append((symbol, at, desc, text, bse))

        for symbol, (name, _, _, _) in COMPANIES.items():
            rng = _rng("ann", symbol, self.seed)
            ipo = IPOS.get(symbol)
            if ipo is not None and self.start <= ipo["listing"] <= self.end:
                add(symbol, dt.datetime.combine(ipo["listing"], dt.time(9, 5, 12)), "Listing of Equity Shares",
                    f"{name} equity shares are listed and admitted to dealings on the Exchange with effect from "
                    f"{ipo['listing']:%B %d, %Y}. The issue price was Rs {float(ipo['price']):g} per share.",
                    ("Company Update", "General", "Listing Of Equity Shares"))
            revenue = float(rng.uniform(300, 4000))
            for quarter_end in (D(2012, 6, 30), D(2012, 9, 30), D(2012, 12, 31)):
                meeting = quarter_end + dt.timedelta(days=int(rng.integers(25, 40)))
                while meeting.weekday() >= 5:
                    meeting += dt.timedelta(days=1)
                notice = meeting - dt.timedelta(days=10)
                if notice < self._listed_on(symbol) or meeting > self.end:
                    continue
                q = f"{quarter_end:%B} {quarter_end.day}, {quarter_end.year}"
                add(symbol, dt.datetime.combine(notice, dt.time(int(rng.integers(10, 17)), int(rng.integers(0, 60)), 3)),
                    "Board Meeting Intimation",
                    f"{name} has informed the Exchange about Board Meeting to be held on {meeting:%d-%b-%Y} to consider "
                    f"and approve the Quarterly Unaudited Financial results of the Company for the period ended {q}.",
                    ("Board Meeting", "Board Meeting Intimation",
                     f"Board Meeting Intimation for Considering And Approving Unaudited Financial Results For The "
                     f"Quarter Ended {q}"))
                revenue *= float(np.exp(rng.normal(0.02, 0.06)))
                margin = float(rng.uniform(0.06, 0.18))
                growth = float(rng.normal(0.08, 0.1))
                add(symbol, dt.datetime.combine(meeting, dt.time(int(rng.integers(17, 20)), int(rng.integers(0, 60)), 41)),
                    "Financial Result Updates",
                    f"{name} has submitted to the Exchange the financial results for the period ended {q}. Revenue from "
                    f"operations was Rs {revenue:,.1f} crore, {'up' if growth >= 0 else 'down'} {abs(growth) * 100:.1f}% "
                    f"from a year earlier, and net profit Rs {revenue * margin:,.1f} crore.",
                    ("Result", "Financial Results", f"Unaudited Financial Results For The Quarter Ended {q}"))
        # a late-night disclosure (00:40 IST is the previous day in UTC) and a dividend record date
        add("EXMPSOFT", dt.datetime(2012, 10, 11, 0, 40, 5), "Updates",
            "Exemplia Software Limited has informed the Exchange that it has won a multi-year contract from a "
            "European insurer, valued at about Rs 420 crore over five years.",
            ("Company Update", "Award of Order / Receipt of Order", "Receipt Of Order From A European Insurer"))
        add("DEMOBANK", dt.datetime(2012, 7, 24, 15, 12, 40), "Dividend",
            "Demoland Bank Limited has informed the Exchange that the Board has recommended a dividend of Rs 9 per "
            "equity share of face value Rs 10 for the financial year 2011-12; the record date is August 10, 2012.",
            ("Corp. Action", "Dividend", "Corporate Action-Board to consider Dividend"))
        return events

    def announcement_items(self) -> list[dict]:
        """Every announcement as an item of NSE's corporate-announcements JSON."""
        items: list[dict] = []
        for symbol, at, desc, text, _ in self.events():
            name, industry, isin, _ = COMPANIES[symbol]
            seq = 100_000_000 + zlib.crc32(f"{symbol}|{at}|{desc}".encode()) % 90_000_000
            stamp = f"{at:%d%m%Y%H%M%S}"
            items.append({"symbol": symbol, "desc": desc, "dt": stamp, "attchmntFile": f"{ARCHIVE}/{symbol}_{stamp}.pdf",
                          "sm_name": name, "sm_isin": isin, "an_dt": _nse_time(at), "sort_date": f"{at:%Y-%m-%d %H:%M:%S}",
                          "seq_id": str(seq), "smIndustry": industry, "orgid": None, "attchmntText": text,
                          "bflag": None, "old_new": None, "csvName": None,
                          "exchdisstime": _nse_time(at + dt.timedelta(seconds=int(_rng(seq).integers(1, 90)))),
                          "difference": None, "hasXbrl": False})
        lo, hi = (dt.datetime.combine(d, dt.time(0), IST) for d in (self.start, self.end + dt.timedelta(days=1)))
        return sorted((i for i in items if lo <= dt.datetime.strptime(i["sort_date"], "%Y-%m-%d %H:%M:%S")
                       .replace(tzinfo=IST) < hi), key=lambda i: (i["sort_date"], i["symbol"]))

    def announcements(self) -> pl.DataFrame:
        df = parse_announcements(self.announcement_items(), source=SOURCE)
        return df.sort("published", "ann_id") if df.height else pl.DataFrame(schema=INDIA_ANNOUNCEMENTS)

    # -- IPOs

    def past_issue_items(self) -> list[dict]:
        """The public-past-issues JSON: the sample IPOs, a withdrawn issue and an FPO line."""
        items = [{"symbol": s, "companyName": COMPANIES[s][0], "securityType": i["security"],
                  "ipoStartDate": f"{i['start']:%d-%b-%Y}".upper(), "ipoEndDate": f"{i['end']:%d-%b-%Y}".upper(),
                  "listingDate": f"{i['listing']:%d-%b-%Y}".upper() if i["listing"] <= self.end else "-",
                  "issuePrice": i["price"], "priceRange": i["band"], "issueSize": i["size"]}
                 for s, i in IPOS.items() if i["start"] <= self.end]
        return items + OTHER_ISSUES

    def ipos(self) -> pl.DataFrame:
        return parse_past_issues(self.past_issue_items(), source=SOURCE).sort("issue_start", "symbol")


class SampleBseClient:
    """The offline twin of `BseClient`: `announcements()` from BSE-format pages, through its parsers.

    The sample companies' announcements (`SampleIndiaClient.events`) as BSE disseminates them: filed a
    few minutes after NSE, under the scrip code, with BSE's category, subcategory and NEWSSUB.
    """

    PAGE_SIZE = 10  # small, so that the sample spans several pages as live answers do

    def __init__(self, start: str = "2012-06-01", end: str = "2013-02-28", scrips=(), seed: int = 11):
        # Configured (real) scrip codes are ignored on purpose: the sample only describes made-up ones.
        self.nse = SampleIndiaClient(start, end, seed=seed)
        self.start, self.end, self.seed = self.nse.start, self.nse.end, seed

    def announcement_items(self) -> list[dict]:
        """Every announcement as a row of BSE's AnnSubCategoryGetData JSON, newest first."""
        items = []
        for symbol, at, _, text, (category, subcategory, subject) in self.nse.events():
            code = BSE_CODES.get(symbol)
            if code is None:
                continue
            key = f"sample-bse|{symbol}|{at:%Y%m%d%H%M%S}|{subject}"
            rng = _rng(key, self.seed)
            filed = at + dt.timedelta(seconds=int(rng.integers(60, 600)))
            dissem = filed + dt.timedelta(seconds=int(rng.integers(1, 60)))
            if not self.start <= filed.date() <= self.end:
                continue
            name = COMPANIES[symbol][0].replace(" Limited", " Ltd")
            news_id = str(uuid.uuid5(uuid.NAMESPACE_URL, key))
            stamp = f"{filed:%Y-%m-%dT%H:%M:%S}.{int(rng.integers(0, 100)):02d}"
            items.append({
                "NEWSID": news_id, "SCRIP_CD": int(code), "XML_NAME": f"ANN_{code}_{news_id.upper()}",
                "NEWSSUB": f"{name} - {code} - {subject}", "DT_TM": stamp, "NEWS_DT": stamp, "CRITICALNEWS": 0,
                "ANNOUNCEMENT_TYPE": "A", "QUARTER_ID": None, "FILESTATUS": "N    ",
                "ATTACHMENTNAME": f"{uuid.uuid5(uuid.NAMESPACE_URL, key + '|pdf')}.pdf", "MORE": "",
                "HEADLINE": text, "CATEGORYNAME": category, "OLD": 1, "RN": 0, "PDFFLAG": 0,
                "NSURL": f"https://www.sample-exchange.example/stock-share-price/{symbol.lower()}/{code}/",
                "SLONGNAME": name, "AGENDA_ID": None, "TotalPageCnt": int(rng.integers(1, 30)),
                "News_submission_dt": f"{filed:%Y-%m-%dT%H:%M:%S}",
                "DissemDT": f"{dissem:%Y-%m-%dT%H:%M:%S}.{int(rng.integers(0, 100)):02d}",
                "TimeDiff": f"00:00:{(dissem - filed).seconds:02d}", "Fld_Attachsize": int(rng.integers(60_000, 900_000)),
                "SUBCATNAME": subcategory, "AUDIO_VIDEO_FILE": None})
        items.sort(key=lambda i: (i["News_submission_dt"], i["SCRIP_CD"]), reverse=True)
        return items

    def pages(self) -> list[dict]:
        """The API's answers for the whole window: pages of `PAGE_SIZE` rows, each with the ROWCNT."""
        items = self.announcement_items()
        chunks = [items[i:i + self.PAGE_SIZE] for i in range(0, len(items), self.PAGE_SIZE)] or [[]]
        return [{"Table": [{**row, "RN": n + 1} for n, row in enumerate(chunk, start=p * self.PAGE_SIZE)],
                 "Table1": [{"ROWCNT": len(items)}]} for p, chunk in enumerate(chunks)]

    def announcements(self) -> pl.DataFrame:
        rows: list[dict] = []
        for page in self.pages():
            rows += bse.parse_page(page)[0]
        df = bse.parse_announcements(rows, source=SOURCE, attachments=f"{ARCHIVE}/bse/")
        return df.unique("ann_id", keep="last", maintain_order=True).sort("published", "ann_id")
