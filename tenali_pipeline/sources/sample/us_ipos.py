"""Deterministic US IPOs for the demo, written as EDGAR serves them (a quarterly ``form.idx`` and
424B4 cover pages) and read by the live parsers (`sources/live/us_ipos.py`), so the sample has the
live schema and exercises the same code.

Two are real listings that the sample market prices (`SampleMarketClient`, bokeh_sampledata) hold
from their first session, so their listing performance can be computed offline: Google (Nasdaq:
GOOG, priced at $85.00 on 2004-08-18, 19,605,052 shares, first trade 2004-08-19) and Facebook
(Nasdaq: FB, $38.00, 421,233,615 shares, first trade 2012-05-18); price, size, exchange and dates
are the public facts, and each final prospectus is dated on its first trading day. The other filings
are made up, to show what the parser keeps and skips: a blank-check company selling units (kept,
flagged as a SPAC; no prices, so no performance) and a follow-on by a listed company (skipped).
Accession numbers use the made-up filer prefix 0009999999, so no sample row is mistaken for a real
EDGAR filing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import polars as pl

from ..live.us_ipos import IndexEntry, ipo_frame, ipo_row, parse_form_index, parse_prospectus, quarter_end, quarters

SOURCE = "sample:generated"

# company, CIK, filed, accession, cover facts
_IPOS = [
    dict(company="Google Inc.", cik="1288776", filed=dt.date(2004, 8, 19), accession="0009999999-04-000101",
         kind="ipo", shares=19_605_052, price=85.00, ticker="GOOG", market="the Nasdaq National Market",
         security="Class A Common Stock"),
    dict(company="Samplia Acquisition Corp", cik="9990001", filed=dt.date(2012, 4, 12),
         accession="0009999999-12-000102", kind="spac", shares=20_000_000, price=10.00, ticker="SMPLU",
         market="the NASDAQ Capital Market", security="Units"),
    dict(company="Facebook Inc", cik="1326801", filed=dt.date(2012, 5, 18), accession="0009999999-12-000103",
         kind="ipo", shares=421_233_615, price=38.00, ticker="FB", market="the NASDAQ Global Select Market",
         security="Class A Common Stock"),
    dict(company="Exemplia Therapeutics, Inc.", cik="9990002", filed=dt.date(2012, 6, 6),
         accession="0009999999-12-000104", kind="follow-on", shares=5_000_000, price=12.00, ticker="EXMP",
         market="The NASDAQ Global Market", security="Common Stock"),
]

_INDEX_HEAD = """Description:           Master Index of EDGAR Dissemination Feed by Form Type
Last Data Received:    {last}
Comments:              webmaster@sec.gov
Anonymous FTP:         ftp://ftp.sec.gov/edgar/
 
 
 
 
Form Type   Company Name                                                  CIK         Date Filed  File Name
---------------------------------------------------------------------------------------------------------------------------------------------
"""


def _index(year: int, q: int) -> str:
    """The quarter's ``form.idx`` as EDGAR lays it out (fixed-width, sorted by form type)."""
    end = quarter_end(year, q)
    lines = [f"{'424B4':<12}{i['company']:<62}{i['cik']:<12}{i['filed'].isoformat():<12}"
             f"edgar/data/{i['cik']}/{i['accession']}.txt"
             for i in sorted(_IPOS, key=lambda i: i["company"]) if quarters(i["filed"], i["filed"]) == [(year, q)]]
    return _INDEX_HEAD.format(last=f"{end:%B} {end.day}, {end.year}") + "\n".join(lines) + "\n"


def _p(text: str, align: str = "justify") -> str:
    return f'<P ALIGN="{align}"><FONT SIZE="2">{text}</FONT></P>'


def _cover(i: dict) -> str:
    """A 424B4 cover in the layout of its kind: IPO (columns per share / total), SPAC units, follow-on."""
    unit = "Unit" if i["kind"] == "spac" else "Share"
    total = i["shares"] * i["price"]
    head = [_p("Filed Pursuant to Rule 424(b)(4)", "right"), _p("<B>PROSPECTUS</B>"),
            _p(f"<B>{i['shares']:,} {unit}s</B>", "center"), _p(f"<B>{i['company']}</B>", "center"),
            _p(f"<B>{i['security']}</B>", "center")]
    if i["kind"] == "ipo":
        body = [_p(f"This is our initial public offering. We are offering {i['shares']:,} shares of our "
                   f"{i['security'].lower()}. No public market currently exists for our shares. Our "
                   f"{i['security'].lower()} has been approved for quotation on {i['market']} under the symbol "
                   f"&#147;{i['ticker']}.&#148;")]
    elif i["kind"] == "spac":
        body = [_p(f"{i['company']} is a newly organized blank check company formed for the purpose of effecting "
                   "a merger or similar business combination, which we refer to as our initial business combination."),
                _p(f"This is an initial public offering of our securities. Each unit has an offering price of "
                   f"${i['price']:.2f} and consists of one share of common stock and one warrant. Our units have been "
                   f"approved for listing on {i['market']} under the symbol &#147;{i['ticker']}&#148;.")]
    else:
        day = i["filed"] - dt.timedelta(days=1)
        body = [_p(f"We are offering {i['shares']:,} shares of our common stock. Our common stock is listed on "
                   f"{i['market']} under the symbol &#147;{i['ticker']}.&#148; On {day:%B} {day.day}, {day.year}, "
                   f"the last reported sale price of our common stock was ${i['price'] * 1.03:.2f} per share.")]
    table = (f'<TABLE><TR><TD></TD><TD>Per {unit}</TD><TD>Total</TD></TR>'
             f'<TR><TD>Public offering price</TD><TD>$</TD><TD>{i["price"]:,.2f}</TD><TD>$</TD><TD>{total:,.0f}</TD></TR>'
             f'<TR><TD>Underwriting discounts and commissions</TD><TD>$</TD><TD>{i["price"] * 0.03:,.3f}</TD>'
             f'<TD>$</TD><TD>{total * 0.03:,.0f}</TD></TR></TABLE>')
    date = i["filed"] - dt.timedelta(days=1)
    return ("<HTML><BODY>" + "".join(head + body) + table
            + _p(f"The date of this prospectus is {date:%B} {date.day}, {date.year}.", "center") + "</BODY></HTML>")


def _submission(i: dict) -> str:
    return (f"<SEC-DOCUMENT>{i['accession']}.txt : {i['filed']:%Y%m%d}\n<SEC-HEADER>\nACCESSION NUMBER:\t\t"
            f"{i['accession']}\nCONFORMED SUBMISSION TYPE:\t424B4\n</SEC-HEADER>\n<DOCUMENT>\n<TYPE>424B4\n<SEQUENCE>1\n"
            f"<FILENAME>d{i['accession'][-6:]}d424b4.htm\n<TEXT>\n{_cover(i)}\n</TEXT>\n</DOCUMENT>\n</SEC-DOCUMENT>\n")


class SampleUsIpoClient:
    """The offline twin of `EdgarIpoClient`: the same `fetch`, `skipped` and `covered_through`."""

    def __init__(self, start: str | dt.date | None = None, end: str | dt.date | None = None):
        self.start = dt.date.fromisoformat(str(start)) if start else dt.date(2004, 1, 1)
        self.end = dt.date.fromisoformat(str(end)) if end else dt.date(2013, 3, 1)  # the sample prices' last day
        self.skipped: dict[str, str] = {}
        self.covered_through: dt.date | None = None

    def fetch(self, since: dt.date | None = None, known: Iterable[str] = (),
              max_quarters: int | None = None) -> pl.DataFrame:
        first = max(self.start, since) if since else self.start
        todo = quarters(first, self.end) if first <= self.end else []
        last = self.end
        if max_quarters is not None and len(todo) > max_quarters:
            todo = todo[:max_quarters]
            last = quarter_end(*todo[-1])
        known, by_accession = set(known), {i["accession"]: i for i in _IPOS}
        rows, self.skipped = [], {}
        for year, q in todo:
            entries: list[IndexEntry] = parse_form_index(_index(year, q))
            for entry in entries:
                if not first <= entry.filed <= last or entry.accession in known:
                    continue
                cover, _ = parse_prospectus(_submission(by_accession[entry.accession]))
                if cover.skip:
                    self.skipped[entry.accession] = cover.skip
                else:
                    rows.append(ipo_row(entry, cover, SOURCE))
        self.covered_through = last
        return ipo_frame(rows)
