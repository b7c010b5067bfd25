"""Deterministic companyfacts documents for the sample companies, shaped exactly like the SEC's.

Ten fiscal years (2003-2012) per company: three 10-Qs and a 10-K each, every filing carrying its
comparatives as real ones do (the same quarter a year earlier, year-to-date figures, the prior
year-end balance sheet, two prior years in a 10-K). Fiscal years end in September (AAPL), June
(MSFT) or December. Two real-world wrinkles are built in: the revenue concept changes over time
(SalesRevenueNet, then Revenues, then RevenueFromContractWithCustomerExcludingAssessedTax), and
IBM's 10-K for 2010 restates 2009 net income, so the point-in-time view has two values for it.
The documents go through the live `normalise_companyfacts`, so the demo exercises the real parser.
"""

from __future__ import annotations

import calendar
import datetime as dt
import zlib

import numpy as np
import polars as pl

from ..live.xbrl import normalise_companyfacts
from ..schema import FUNDAMENTALS

SOURCE = "sample:generated"
FIRST_FY, LAST_FY = 2003, 2012

# ticker -> (CIK, entityName, fiscal-year-end month); CIKs as the sample filings use them.
COMPANIES = {
    "AAPL": ("0000320193", "Apple Inc.", 9),
    "MSFT": ("0000789019", "Microsoft Corporation", 6),
    "IBM": ("0000051143", "International Business Machines Corporation", 12),
    "GOOG": ("0001288776", "Google Inc.", 12),
    "FB": ("0001326801", "Facebook, Inc.", 12),
}
# IBM's 10-K for 2010 (and every later filing) reports 2009 net income 3% lower than first filed.
RESTATED = ("IBM", 2010, 2009, 0.97)  # (ticker, first restating fiscal year, restated year, factor)


def _month_end(year: int, month: int) -> dt.date:
    while month < 1:
        month, year = month + 12, year - 1
    while month > 12:
        month, year = month - 12, year + 1
    return dt.date(year, month, calendar.monthrange(year, month)[1])


def _revenue_concept(filed: dt.date) -> str:
    if filed.year < 2008:
        return "SalesRevenueNet"
    if filed.year < 2011:
        return "Revenues"
    return "RevenueFromContractWithCustomerExcludingAssessedTax"


class _Company:
    """Quarterly figures from a seeded random walk; sums and year-ends derived from them."""

    def __init__(self, ticker: str, seed: int):
        self.ticker = ticker
        self.cik, self.name, self.fye = COMPANIES[ticker]
        rng = np.random.default_rng([seed, zlib.crc32(ticker.encode())])
        n = (LAST_FY - FIRST_FY + 3) * 4  # two years of history before the first fiscal year
        growth = rng.normal(0.02, 0.04, n)
        self.revenue = float(rng.uniform(2e9, 8e9)) * np.cumprod(1 + growth)
        self.gross = np.clip(rng.normal(0.45, 0.03, n), 0.2, 0.7)
        self.operating = np.clip(self.gross - rng.uniform(0.12, 0.2, n), 0.02, 0.5)
        self.shares = float(rng.uniform(0.8e9, 3e9)) * np.cumprod(1 + rng.normal(-0.002, 0.002, n))
        self.assets = self.revenue * 4 * np.clip(rng.normal(1.0, 0.05, n), 0.8, 1.2)
        self.payout = 0.25 if ticker in ("IBM", "MSFT") else 0.0

    def q(self, fy: int, k: int) -> int:  # index of quarter k (1..4) of fiscal year fy
        return (fy - FIRST_FY + 2) * 4 + k - 1

    def quarter_end(self, fy: int, k: int) -> dt.date:
        return _month_end(fy, self.fye - 3 * (4 - k))

    def quarter_start(self, fy: int, k: int) -> dt.date:
        return self.quarter_end(fy, k - 1) + dt.timedelta(days=1) if k > 1 else self.quarter_end(fy - 1, 4) + dt.timedelta(days=1)

    def flows(self, fy: int, k_from: int, k_to: int) -> dict[str, float]:
        idx = [self.q(fy, k) for k in range(k_from, k_to + 1)]
        rev = float(sum(self.revenue[i] for i in idx))
        gross = float(sum(self.revenue[i] * self.gross[i] for i in idx))
        op = float(sum(self.revenue[i] * self.operating[i] for i in idx))
        net = op * 0.76
        shares = float(np.mean([self.shares[i] for i in idx]))
        return {
            "revenue": rev, "CostOfRevenue": rev - gross, "GrossProfit": gross, "OperatingIncomeLoss": op,
            "NetIncomeLoss": net, "EarningsPerShareBasic": round(net / shares, 2),
            "EarningsPerShareDiluted": round(net / (shares * 1.01), 2),
            "WeightedAverageNumberOfDilutedSharesOutstanding": round(shares * 1.01),
            "NetCashProvidedByUsedInOperatingActivities": net * 1.25,
            "NetCashProvidedByUsedInInvestingActivities": -rev * 0.09,
            "NetCashProvidedByUsedInFinancingActivities": -net * (0.3 + self.payout),
            "PaymentsToAcquirePropertyPlantAndEquipment": rev * 0.05,
            **({"PaymentsOfDividends": net * self.payout} if self.payout else {}),
        }

    def balance(self, fy: int, k: int) -> dict[str, float]:
        a = float(self.assets[self.q(fy, k)])
        return {"Assets": a, "AssetsCurrent": a * 0.45, "Liabilities": a * 0.55, "LiabilitiesCurrent": a * 0.25,
                "StockholdersEquity": a * 0.45, "CashAndCashEquivalentsAtCarryingValue": a * 0.12,
                "LongTermDebtNoncurrent": a * 0.2}


_INCOME = ("revenue", "CostOfRevenue", "GrossProfit", "OperatingIncomeLoss", "NetIncomeLoss",
           "EarningsPerShareBasic", "EarningsPerShareDiluted", "WeightedAverageNumberOfDilutedSharesOutstanding")
_CASH = ("NetCashProvidedByUsedInOperatingActivities", "NetCashProvidedByUsedInInvestingActivities",
         "NetCashProvidedByUsedInFinancingActivities", "PaymentsToAcquirePropertyPlantAndEquipment",
         "PaymentsOfDividends")
_UNIT = {"EarningsPerShareBasic": "USD/shares", "EarningsPerShareDiluted": "USD/shares",
         "WeightedAverageNumberOfDilutedSharesOutstanding": "shares"}


def companyfacts(ticker: str, seed: int = 23) -> dict:
    """The companyfacts JSON (as a dict) of one sample company."""
    c = _Company(ticker, seed)
    facts: dict[str, dict] = {}
    seq = 0

    def add(concept, start, end, value, accn, fy, fp, form, filed):
        unit = _UNIT.get(concept, "USD")
        row = {"end": end.isoformat(), "val": int(round(value)) if unit != "USD/shares" else value, "accn": accn,
               "fy": fy, "fp": fp, "form": form, "filed": filed.isoformat()}
        if start is not None:
            row = {"start": start.isoformat(), **row}
        body = facts.setdefault(concept, {"label": concept, "description": f"{concept} (sample)", "units": {}})
        body["units"].setdefault(unit, []).append(row)

    for fy in range(FIRST_FY, LAST_FY + 1):
        for k in range(1, 5):
            end = c.quarter_end(fy, k)
            form = "10-K" if k == 4 else "10-Q"
            filed = end + dt.timedelta(days=60 if k == 4 else 40)
            seq += 1
            accn = f"{c.cik}-{filed.year % 100:02d}-{seq:06d}"
            fp = "FY" if k == 4 else f"Q{k}"
            revenue_concept = _revenue_concept(filed)

            def flows(concepts, periods):
                for year, k_from, k_to in periods:
                    values = c.flows(year, k_from, k_to)
                    if c.ticker == RESTATED[0] and fy >= RESTATED[1] and year == RESTATED[2] and (k_from, k_to) == (1, 4):
                        values["NetIncomeLoss"] *= RESTATED[3]
                    start, stop = c.quarter_start(year, k_from), c.quarter_end(year, k_to)
                    for concept in concepts:
                        if concept in values:
                            add(revenue_concept if concept == "revenue" else concept, start, stop, values[concept],
                                accn, fy, fp, form, filed)

            if k == 4:
                flows(_INCOME + _CASH, [(fy, 1, 4), (fy - 1, 1, 4), (fy - 2, 1, 4)])
                balances = [(fy, 4), (fy - 1, 4)]
            else:
                flows(_INCOME, [(fy, k, k), (fy - 1, k, k)] + ([(fy, 1, k), (fy - 1, 1, k)] if k > 1 else []))
                flows(_CASH, [(fy, 1, k), (fy - 1, 1, k)])
                balances = [(fy, k), (fy - 1, 4)]
            for year, kk in balances:
                for concept, value in c.balance(year, kk).items():
                    add(concept, None, c.quarter_end(year, kk), value, accn, fy, fp, form, filed)
    return {"cik": int(c.cik), "entityName": c.name,
            "facts": {"dei": {"EntityCommonStockSharesOutstanding": {"label": "Entity Common Stock, Shares Outstanding",
                                                                      "units": {"shares": []}}},
                      "us-gaap": facts}}


class SampleXbrlClient:
    def __init__(self, tickers=tuple(COMPANIES), *, on_raw=None, seed: int = 23):
        self.tickers = [t for t in tickers if t in COMPANIES]
        self.on_raw, self.seed = on_raw, seed
        self.missing: list[str] = [t for t in tickers if t not in COMPANIES]

    def fetch(self) -> pl.DataFrame:
        import json

        frames = []
        for ticker in self.tickers:
            doc = companyfacts(ticker, self.seed)
            if self.on_raw:
                self.on_raw(COMPANIES[ticker][0], json.dumps(doc, separators=(",", ":")).encode())
            frames.append(normalise_companyfacts(doc, ticker=ticker, source=SOURCE))
        return pl.concat(frames) if frames else pl.DataFrame(schema=FUNDAMENTALS)
