"""Deterministic synthetic SEC filings (10-K, 10-Q, 8-K) for the sample companies.

EDGAR text is too large to ship, so the demo generates filings with the real structure: an HTML
primary document with the standard item headings (10-K Items 1, 1A, 7, 7A, 8; 10-Q Part I Items 1-4;
8-K Items 2.02, 5.02, 8.01) and, for an Item 2.02 8-K, its EX-99.1 earnings press release, financial figures
from a seeded random walk, and the metadata fields of the full-submission header. The same arguments always
produce the same filings.
"""

from __future__ import annotations

import json
import zlib
from datetime import date, timedelta

import numpy as np
import polars as pl

from ..schema import FILINGS, conform

SOURCE = "sample:generated"

COMPANIES = {
    "AAPL": ("0000320193", "Apple Inc.", "designs, manufactures and markets personal computers, mobile devices and software"),
    "MSFT": ("0000789019", "Microsoft Corporation", "develops, licenses and supports software, services and devices"),
    "IBM": ("0000051143", "International Business Machines Corporation", "provides information technology services, software and systems"),
    "GOOG": ("0001288776", "Google Inc.", "operates an internet search engine and sells online advertising"),
    "FB": ("0001326801", "Facebook, Inc.", "operates a social networking service supported by advertising"),
}

RISKS = [
    "Global economic conditions could materially adversely affect the Company.",
    "The Company faces intense competition and may not be able to maintain its margins.",
    "The Company depends on the performance of distributors, carriers and other resellers.",
    "Changes in tax rates or tax laws could affect future results.",
    "The Company's business is subject to risks from foreign currency exchange rates.",
    "Failure to protect intellectual property could harm the Company's business.",
    "The Company relies on third parties for manufacturing and logistics.",
    "Security breaches could expose the Company to liability and harm its reputation.",
]


def _money(x: float) -> str:
    return f"${x:,.0f} million"


def _press_release(name: str, ticker: str, released: date, period: date, revenue: float, prev_revenue: float,
                   net: float, cash: float) -> str:
    """The EX-99.1 of an Item 2.02 8-K, as the `exhibits` column holds it (a JSON list, like the live parser's):
    a short HTML earnings release whose table splits "$" from the figure as EDGAR tables do."""
    change = (revenue / prev_revenue - 1) * 100
    figures = (("Net sales", revenue), ("Net income", net), ("Cash and marketable securities", cash))
    rows = "".join(f"<tr><td>{label}</td><td>$</td><td>{value:,.0f}</td></tr>" for label, value in figures)
    html = (f"<html><head><title>Press release</title></head><body>\n<p><b>{name} Reports Results for the Quarter "
            f"Ended {period:%B %d, %Y}</b></p>\n<p>{released:%B %d, %Y} -- {name} today announced quarterly net sales of "
            f"{_money(revenue)}, {'up' if change >= 0 else 'down'} {abs(change):.1f}% from the prior quarter, and net "
            f"income of {_money(net)}.</p>\n<table><tr><td>(in millions)</td><td>Quarter</td></tr>{rows}</table>\n"
            f"</body></html>")
    return json.dumps([{"type": "EX-99.1", "description": "Press release", "filename": f"{ticker.lower()}-ex991.htm",
                        "format": "html", "document": html, "truncated": False}])


def _html(title: str, sections: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{h}</h2>\n<p>{p}</p>\n" for h, p in sections)
    return f"<html><head><title>{title}</title></head><body>\n<h1>{title}</h1>\n{body}</body></html>"


class SampleFilingsClient:
    def __init__(self, tickers=tuple(COMPANIES), start: str = "2010-01-01", end: str = "2013-03-01", seed: int = 11):
        self.tickers = [t for t in tickers if t in COMPANIES]
        self.start, self.end, self.seed = date.fromisoformat(start), date.fromisoformat(end), seed

    def fetch(self, since: dict | None = None) -> pl.DataFrame:
        """Like the live client: every company, or those in `since` from their day (None: all)."""
        rows = []
        for ticker in self.tickers:
            if since is not None and ticker not in since:
                continue
            cik, name, business = COMPANIES[ticker]
            rng = np.random.default_rng([self.seed, zlib.crc32(ticker.encode())])
            revenue = float(rng.uniform(5_000, 25_000))
            margin = float(rng.uniform(0.15, 0.35))
            seq = 0
            for year in range(self.start.year, self.end.year + 1):
                for q in range(1, 5):
                    period = date(year, 3 * q, 1) + timedelta(days=31)
                    period = period.replace(day=1) - timedelta(days=1)  # last day of quarter
                    filed = period + timedelta(days=int(rng.integers(25, 45)))
                    if not (self.start <= filed < self.end):
                        continue
                    growth = float(rng.normal(0.02, 0.05))
                    prev_revenue, revenue = revenue, revenue * (1 + growth)
                    margin = float(np.clip(margin + rng.normal(0, 0.01), 0.02, 0.5))
                    net = revenue * margin
                    cash = revenue * float(rng.uniform(0.5, 2.0))
                    form = "10-K" if q == 4 else "10-Q"
                    seq += 1
                    accession = f"{cik[-7:]}-{str(year)[2:]}-{seq:06d}"
                    direction = "increased" if revenue >= prev_revenue else "decreased"
                    mdna = (
                        f"Net sales {direction} {abs(growth) * 100:.1f}% to {_money(revenue)} compared with "
                        f"{_money(prev_revenue)} in the prior quarter. Net income was {_money(net)}, an operating "
                        f"margin of {margin * 100:.1f}%. Cash, cash equivalents and marketable securities totalled "
                        f"{_money(cash)} at the end of the period."
                    )
                    risks = " ".join(rng.choice(RISKS, size=3, replace=False))
                    if form == "10-K":
                        sections = [
                            ("Item 1. Business", f"{name} {business}. The Company's fiscal year ended {period:%B %d, %Y}."),
                            ("Item 1A. Risk Factors", risks),
                            ("Item 7. Management's Discussion and Analysis of Financial Condition and Results of Operations", mdna),
                            ("Item 7A. Quantitative and Qualitative Disclosures About Market Risk",
                             f"A 100 basis point increase in interest rates would change the fair value of the investment portfolio by approximately {_money(cash * 0.012)}."),
                            ("Item 8. Financial Statements and Supplementary Data",
                             f"Total net sales {_money(revenue * 4)}; net income {_money(net * 4)}."),
                        ]
                        items = "1,1A,7,7A,8"
                    else:
                        sections = [
                            ("Part I. Item 1. Financial Statements", f"Net sales {_money(revenue)}; net income {_money(net)}."),
                            ("Part I. Item 2. Management's Discussion and Analysis of Financial Condition and Results of Operations", mdna),
                            ("Part I. Item 3. Quantitative and Qualitative Disclosures About Market Risk", "There have been no material changes to the Company's market risk during the period."),
                            ("Part II. Item 1A. Risk Factors", risks),
                        ]
                        items = "I-1,I-2,I-3,II-1A"
                    rows.append(dict(cik=cik, ticker=ticker, company=name, form=form, accession=accession,
                                     filed=filed, period=period, items=items,
                                     document=_html(f"{name} {form} for the period ended {period:%B %d, %Y}", sections),
                                     document_format="html", source=SOURCE, exhibits=None))
                    if rng.random() < 0.5:  # an earnings-release 8-K beside many periodic reports
                        seq += 1
                        rows.append(dict(
                            cik=cik, ticker=ticker, company=name, form="8-K",
                            accession=f"{cik[-7:]}-{str(year)[2:]}-{seq:06d}", filed=filed - timedelta(days=7),
                            period=filed - timedelta(days=7), items="2.02,9.01",
                            document=_html(f"{name} Form 8-K", [
                                ("Item 2.02. Results of Operations and Financial Condition",
                                 f"On {filed - timedelta(days=7):%B %d, %Y}, {name} issued a press release announcing "
                                 f"quarterly net sales of {_money(revenue)} and net income of {_money(net)}."),
                                ("Item 9.01. Financial Statements and Exhibits", "Exhibit 99.1 Press release."),
                            ]),
                            document_format="html", source=SOURCE,
                            exhibits=_press_release(name, ticker, filed - timedelta(days=7), period, revenue,
                                                    prev_revenue, net, cash)))
        if not rows:
            return pl.DataFrame(schema=FILINGS)
        df = conform(pl.DataFrame(rows, schema=FILINGS), FILINGS, what="sample filings")
        if since:
            first = {t: d for t, d in since.items() if d is not None}
            df = df.filter(pl.col("filed") >= pl.col("ticker").replace_strict(first, default=self.start,
                                                                                 return_dtype=pl.Date))
        return df
