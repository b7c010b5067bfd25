"""Deterministic educational finance documents, the offline twin of a folder of documents.

A small hand-written glossary is combined into lesson-style documents with worked numeric examples
drawn from a seeded generator, so the demo has an educational domain without shipping copyrighted
text. The same arguments always produce the same documents.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import numpy as np
import polars as pl

from ..schema import DOCUMENTS, conform

SOURCE = "sample:generated"

CONCEPTS = {
    "Price-to-earnings ratio": "The price-to-earnings ratio divides a share's price by the company's earnings per share. "
    "A stock at ${p:.2f} with earnings of ${e:.2f} per share trades at {pe:.1f} times earnings. A high ratio means investors "
    "pay more for each dollar of profit, often because they expect growth.",
    "Dividend yield": "Dividend yield is the annual dividend divided by the share price. A company paying ${d:.2f} a year on a "
    "${p:.2f} share yields {dy:.2f}%. Yields rise when prices fall, so a high yield can signal either value or distress.",
    "Compound interest": "Compound interest earns interest on past interest. ${a:,.0f} invested at {r:.1f}% a year grows to "
    "${fv:,.0f} after {n} years, while simple interest would give only ${sv:,.0f}.",
    "Bond prices and yields": "A bond's price moves opposite to its yield. When market rates rise from {r:.1f}% to {r2:.1f}%, "
    "a ten-year bond paying a {r:.1f}% coupon falls to about {bp:.1f}% of face value, because new bonds pay more.",
    "Duration": "Duration measures how sensitive a bond's price is to interest rates. A bond with a duration of {dur:.1f} years "
    "loses roughly {dur:.1f}% of its value when yields rise by one percentage point.",
    "Inflation": "Inflation is the rate at which the general price level rises. At {inf:.1f}% annual inflation, prices double "
    "in about {dbl:.0f} years, and a dollar today buys what {real:.2f} dollars will buy in ten years.",
    "Diversification": "Diversification spreads money across assets whose returns do not move together. Two assets each with "
    "{vol:.0f}% volatility and a correlation of {rho:.1f}, held half and half, give a portfolio volatility of about {pv:.1f}%.",
    "Market capitalisation": "Market capitalisation is the share price times the number of shares outstanding. {sh:,.0f} "
    "million shares at ${p:.2f} give a market value of ${mc:,.0f} million.",
    "Volatility": "Volatility is the standard deviation of returns. A daily volatility of {dv:.2f}% corresponds to about "
    "{av:.1f}% a year, because variance grows with time and a year has about 252 trading days.",
    "Moving averages": "A moving average smooths prices by averaging the last N closes. When the 50-day average crosses above "
    "the 200-day average, chartists call it a golden cross; the opposite is a death cross.",
    "Relative strength index": "The relative strength index compares average gains with average losses over 14 periods and "
    "scales the result from 0 to 100. Readings above 70 are often called overbought and below 30 oversold.",
    "Earnings per share": "Earnings per share is net income divided by the weighted average number of shares. Net income of "
    "${ni:,.0f} million over {sh:,.0f} million shares is ${eps:.2f} per share.",
    "Free cash flow": "Free cash flow is operating cash flow minus capital expenditure. A company generating ${ocf:,.0f} million "
    "from operations and spending ${cap:,.0f} million on equipment has ${fcf:,.0f} million of free cash flow.",
    "Yield curve": "The yield curve plots interest rates across maturities. When two-year yields rise above ten-year yields the "
    "curve is inverted, which has preceded most US recessions since the 1970s.",
    "Gross domestic product": "Gross domestic product is the value of all final goods and services produced in an economy. Real "
    "GDP removes inflation, so growth of {g:.1f}% in real terms means output itself grew.",
    "Central bank policy rate": "The policy rate is the short-term interest rate a central bank targets. Raising it from {r:.2f}% "
    "to {r3:.2f}% makes borrowing dearer, which tends to slow spending and inflation.",
    "Leverage": "Leverage uses borrowed money to increase exposure. With {lev:.0f}:1 leverage a {m:.1f}% move in the asset becomes "
    "a {lm:.1f}% move in equity, for gains and losses alike.",
    "Bid-ask spread": "The bid-ask spread is the gap between the highest price a buyer offers and the lowest a seller asks. A bid "
    "of ${b:.2f} and an ask of ${ak:.2f} is a spread of {sp:.1f} basis points of the mid price.",
}


def _numbers(rng: np.random.Generator) -> dict:
    p, e = rng.uniform(10, 300), rng.uniform(0.5, 15)
    a, r, n = rng.choice([1000, 5000, 10000]), rng.uniform(2, 9), int(rng.integers(5, 31))
    r2 = r + rng.uniform(0.5, 2.5)
    coupon = r / 100
    bp = sum(coupon * 100 / (1 + r2 / 100) ** t for t in range(1, 11)) + 100 / (1 + r2 / 100) ** 10
    inf = rng.uniform(1, 8)
    vol, rho = rng.uniform(10, 40), rng.uniform(-0.3, 0.9)
    sh, ni = rng.uniform(100, 5000), rng.uniform(50, 20000)
    ocf = rng.uniform(100, 20000)
    cap = ocf * rng.uniform(0.1, 0.8)
    dv = rng.uniform(0.5, 3)
    lev, m = rng.choice([2, 3, 5, 10]), rng.uniform(0.5, 5)
    mid = rng.uniform(5, 500)
    half = mid * rng.uniform(0.00005, 0.002)
    return dict(
        p=p, e=e, pe=p / e, d=p * rng.uniform(0.005, 0.05), dy=0.0, a=a, r=r, n=n,
        fv=a * (1 + r / 100) ** n, sv=a * (1 + r / 100 * n), r2=r2, bp=bp, dur=rng.uniform(2, 15),
        inf=inf, dbl=72 / inf, real=(1 + inf / 100) ** 10, vol=vol, rho=rho,
        pv=vol * np.sqrt(0.5 * (1 + rho)), sh=sh, mc=sh * p, dv=dv, av=dv * np.sqrt(252), ni=ni, eps=ni / sh,
        ocf=ocf, cap=cap, fcf=ocf - cap, g=rng.uniform(-3, 6), r3=r + rng.uniform(0.25, 1.0), lev=lev, m=m,
        lm=lev * m, b=mid - half, ak=mid + half, sp=2 * half / mid * 1e4,
    )


class SampleDocumentsClient:
    def __init__(self, n_documents: int = 400, start: str = "2005-01-01", end: str = "2013-03-01", seed: int = 5):
        self.n, self.seed = n_documents, seed
        self.start, self.end = date.fromisoformat(start), date.fromisoformat(end)

    def fetch(self) -> pl.DataFrame:
        rng = np.random.default_rng(self.seed)
        names = list(CONCEPTS)
        span = (self.end - self.start).days
        rows = []
        for i in range(self.n):
            picked = rng.choice(len(names), size=int(rng.integers(2, 5)), replace=False)
            nums = _numbers(rng)
            nums["dy"] = nums["d"] / nums["p"] * 100
            title = f"Lesson {i + 1}: " + ", ".join(names[j] for j in picked)
            body = "\n\n".join(f"## {names[j]}\n\n{CONCEPTS[names[j]].format(**nums)}" for j in picked)
            uri = f"sample://documents/lesson-{i + 1:04d}.md"
            rows.append(dict(doc_id=hashlib.sha1(uri.encode()).hexdigest(), uri=uri, title=title,
                             text=f"# {title}\n\n{body}\n", date=self.start + timedelta(days=int(rng.integers(0, span))),
                             source=SOURCE))
        return conform(pl.DataFrame(rows), DOCUMENTS, what="sample documents")
