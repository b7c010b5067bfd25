"""Fundamentals from SEC XBRL: the ``companyfacts`` JSON of each company, normalised into
income-statement, balance-sheet and cash-flow figures with the day each became public.

Upstream: https://data.sec.gov/api/xbrl/companyfacts/CIK##########.json, one document per company
with every XBRL fact it has filed since 2009 (comparatives reach back further)::

    {"cik": 320193, "entityName": "Apple Inc.",
     "facts": {"dei": {...}, "us-gaap": {"NetIncomeLoss": {"label": ..., "description": ...,
        "units": {"USD": [{"start": "2019-09-29", "end": "2020-09-26", "val": 57411000000,
                           "accn": "0000320193-20-000096", "fy": 2020, "fp": "FY", "form": "10-K",
                           "filed": "2020-10-30", "frame": "CY2020"}, ...]}}}}}

`fy`/`fp` belong to the filing, not the figure (a 10-K for 2020 also reports 2019 and 2018), so
periods are classified from ``start``/``end``: about a year is ``FY``, about a quarter ``Q``, six or
nine months ``YTD``, no start an instant ``I`` (balance sheet). A figure reported again in a later
filing keeps both rows (same period, different accession and ``filed``): that is how restatements
stay visible. `as_of` gives the point-in-time view: only figures filed on or before a date, the
latest filing winning.

Rate limits: the SEC allows 10 requests per second per client (`SEC_LIMITER`, shared by the machine's processes) and
wants a User-Agent with a name and email (SEC_EDGAR_IDENTITY); it answers abuse with 403.

Concepts used (one table; the first concept a filing reports wins for its period, see `as_of`):

| item                 | statement | unit       | us-gaap concepts, in priority order |
|----------------------|-----------|------------|-------------------------------------|
| revenue              | income    | money      | Revenues, RevenueFromContractWithCustomerExcludingAssessedTax, RevenueFromContractWithCustomerIncludingAssessedTax, SalesRevenueNet |
| cost_of_revenue      | income    | money      | CostOfRevenue, CostOfGoodsAndServicesSold |
| gross_profit         | income    | money      | GrossProfit |
| operating_income     | income    | money      | OperatingIncomeLoss |
| net_income           | income    | money      | NetIncomeLoss, ProfitLoss |
| eps_basic            | income    | per share  | EarningsPerShareBasic |
| eps_diluted          | income    | per share  | EarningsPerShareDiluted |
| shares_diluted       | income    | shares     | WeightedAverageNumberOfDilutedSharesOutstanding |
| assets               | balance   | money      | Assets |
| current_assets       | balance   | money      | AssetsCurrent |
| liabilities          | balance   | money      | Liabilities |
| current_liabilities  | balance   | money      | LiabilitiesCurrent |
| equity               | balance   | money      | StockholdersEquity, StockholdersEquityIncludingPortionAttributableToNoncontrollingInterest |
| cash                 | balance   | money      | CashAndCashEquivalentsAtCarryingValue |
| long_term_debt       | balance   | money      | LongTermDebtNoncurrent, LongTermDebt |
| operating_cash_flow  | cashflow  | money      | NetCashProvidedByUsedInOperatingActivities, NetCashProvidedByOperatingActivities |
| investing_cash_flow  | cashflow  | money      | NetCashProvidedByUsedInInvestingActivities |
| financing_cash_flow  | cashflow  | money      | NetCashProvidedByUsedInFinancingActivities |
| capex                | cashflow  | money      | PaymentsToAcquirePropertyPlantAndEquipment |
| dividends_paid       | cashflow  | money      | PaymentsOfDividends, PaymentsOfDividendsCommonStock |

"money" is any ISO currency unit (USD for nearly every us-gaap filer), "per share" is
``<currency>/shares``. Filers reporting only in IFRS (``ifrs-full``) have no us-gaap facts and
yield no rows.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable

import polars as pl
import requests

from ..http import (SEC_LIMITER, MalformedResponse, PartialFetchError, RetriesExhausted, SourceBlocked, fetch_json,
                    rate_limited_session)
from ..schema import FUNDAMENTALS, conform

log = logging.getLogger(__name__)

DATA_SEC = "https://data.sec.gov"
OFF_SETTING = "TENALI_SOURCES_OFF=fundamentals"

CONCEPTS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("revenue", "income", "money", ("Revenues", "RevenueFromContractWithCustomerExcludingAssessedTax",
                                    "RevenueFromContractWithCustomerIncludingAssessedTax", "SalesRevenueNet")),
    ("cost_of_revenue", "income", "money", ("CostOfRevenue", "CostOfGoodsAndServicesSold")),
    ("gross_profit", "income", "money", ("GrossProfit",)),
    ("operating_income", "income", "money", ("OperatingIncomeLoss",)),
    ("net_income", "income", "money", ("NetIncomeLoss", "ProfitLoss")),
    ("eps_basic", "income", "per_share", ("EarningsPerShareBasic",)),
    ("eps_diluted", "income", "per_share", ("EarningsPerShareDiluted",)),
    ("shares_diluted", "income", "shares", ("WeightedAverageNumberOfDilutedSharesOutstanding",)),
    ("assets", "balance", "money", ("Assets",)),
    ("current_assets", "balance", "money", ("AssetsCurrent",)),
    ("liabilities", "balance", "money", ("Liabilities",)),
    ("current_liabilities", "balance", "money", ("LiabilitiesCurrent",)),
    ("equity", "balance", "money", ("StockholdersEquity",
                                    "StockholdersEquityIncludingPortionAttributableToNoncontrollingInterest")),
    ("cash", "balance", "money", ("CashAndCashEquivalentsAtCarryingValue",)),
    ("long_term_debt", "balance", "money", ("LongTermDebtNoncurrent", "LongTermDebt")),
    ("operating_cash_flow", "cashflow", "money", ("NetCashProvidedByUsedInOperatingActivities",
                                                  "NetCashProvidedByOperatingActivities")),
    ("investing_cash_flow", "cashflow", "money", ("NetCashProvidedByUsedInInvestingActivities",)),
    ("financing_cash_flow", "cashflow", "money", ("NetCashProvidedByUsedInFinancingActivities",)),
    ("capex", "cashflow", "money", ("PaymentsToAcquirePropertyPlantAndEquipment",)),
    ("dividends_paid", "cashflow", "money", ("PaymentsOfDividends", "PaymentsOfDividendsCommonStock")),
]
# concept -> (item, statement, unit kind, priority within the item)
CONCEPT_INDEX = {c: (item, st, kind, i) for item, st, kind, cs in CONCEPTS for i, c in enumerate(cs)}
_UNIT = {"money": re.compile(r"^[A-Z]{3}$"), "per_share": re.compile(r"^[A-Z]{3}/shares$"),
         "shares": re.compile(r"^shares$")}
_STATEMENT_OF = {item: st for item, st, _, _ in CONCEPTS}


class XbrlError(RuntimeError):
    """Company facts could not be fetched for a reason retrying will not fix."""


def period_type(start: dt.date | None, end: dt.date) -> str | None:
    """FY, Q, YTD or I (instant) from a fact's dates; None for other spans (1 or 2 months, 2 years).

    Retailers and food companies on a 12/12/12/16-week calendar (Kroger, PepsiCo, Costco, Albertsons)
    have 16- or 17-week quarters (112-119 days) and a 24-week half (168 days): still Q and YTD.
    """
    if start is None:
        return "I"
    days = (end - start).days + 1
    if 350 <= days <= 380:
        return "FY"
    if 80 <= days <= 125:
        return "Q"
    if 160 <= days <= 300:
        return "YTD"
    return None


def normalise_companyfacts(doc, *, ticker: str | None = None, source: str = "sec-xbrl") -> pl.DataFrame:
    """The mapped us-gaap facts of one companyfacts document as FUNDAMENTALS rows."""
    if not isinstance(doc, dict) or not isinstance(doc.get("facts"), dict) or "cik" not in doc:
        raise MalformedResponse("companyfacts document has no 'cik' and 'facts' object: not a companyfacts JSON")
    cik = str(doc["cik"]).zfill(10)
    company = doc.get("entityName")
    gaap = doc["facts"].get("us-gaap") or {}
    if not isinstance(gaap, dict):
        raise MalformedResponse(f"companyfacts of CIK {cik}: 'us-gaap' is not an object")
    rows = []
    for concept, body in gaap.items():
        if concept not in CONCEPT_INDEX:
            continue
        item, statement, kind, _ = CONCEPT_INDEX[concept]
        units = body.get("units") if isinstance(body, dict) else None
        if not isinstance(units, dict):
            raise MalformedResponse(f"companyfacts of CIK {cik}: {concept} has no 'units' object")
        for unit, facts in units.items():
            if not _UNIT[kind].match(unit):
                continue
            for f in facts:
                try:
                    start = dt.date.fromisoformat(f["start"]) if f.get("start") else None
                    end, filed = dt.date.fromisoformat(f["end"]), dt.date.fromisoformat(f["filed"])
                    value, accession = float(f["val"]), str(f["accn"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise MalformedResponse(f"companyfacts of CIK {cik}: a {concept} fact lacks or garbles "
                                            f"{exc} ({str(f)[:160]})") from None
                ptype = period_type(start, end)
                if ptype is None or (statement == "balance") != (ptype == "I"):
                    continue
                rows.append({"cik": cik, "ticker": ticker, "company": company, "statement": statement, "item": item,
                             "concept": concept, "unit": unit, "period_start": start, "period_end": end,
                             "period_type": ptype, "fiscal_year": f.get("fy"), "fiscal_period": f.get("fp"),
                             "form": f.get("form"), "filed": filed, "accession": accession, "value": value,
                             "source": source})
    rows = _reporting_currency(rows, cik)
    if not rows:
        return pl.DataFrame(schema=FUNDAMENTALS)
    df = conform(pl.DataFrame(rows, schema=FUNDAMENTALS), FUNDAMENTALS, what=f"companyfacts of CIK {cik}")
    # One filing can tag the same figure twice (e.g. in two statements): keep one.
    return df.unique(["cik", "concept", "unit", "period_start", "period_end", "accession"], keep="first",
                     maintain_order=True)


def _reporting_currency(rows: list[dict], cik: str) -> list[dict]:
    """Only the figures in the company's reporting currency (the one most of its money facts use).

    A filer reporting in RMB or EUR also tags the latest year in USD as a convenience translation:
    kept, the same period would have two values in two currencies, and a comparison with a year
    earlier would set USD against RMB."""
    counts = Counter(r["unit"] for r in rows if _UNIT["money"].match(r["unit"]))
    if len(counts) < 2:
        return rows
    currency = max(counts, key=lambda c: (counts[c], c == "USD"))
    kept = [r for r in rows if r["unit"] == "shares" or r["unit"].split("/")[0] == currency]
    log.info("companyfacts of CIK %s: kept figures in %s, its reporting currency; dropped %d in %s",
             cik, currency, len(rows) - len(kept), ", ".join(sorted(set(counts) - {currency})))
    return kept


def as_of(facts: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Point in time: figures filed on or before `day`, one per company, item, unit and period.

    For a period reported several times (comparatives, restatements) the latest filing up to `day`
    wins; within one filing the higher-priority concept of `CONCEPTS` wins. A figure is invisible
    before its filing date.
    """
    rank = {c: v[3] for c, v in CONCEPT_INDEX.items()}
    return (facts.filter(pl.col("filed") <= day)
            .with_columns(_rank=pl.col("concept").replace_strict(rank, default=99, return_dtype=pl.Int32))
            .sort(["filed", "_rank", "accession"], descending=[True, False, True])
            .unique(["cik", "item", "unit", "period_start", "period_end"], keep="first", maintain_order=True)
            .drop("_rank")
            .sort("cik", "item", "period_end", "period_start", nulls_last=False))


def statements(facts: pl.DataFrame, day: dt.date | None = None) -> dict[str, pl.DataFrame]:
    """Wide income / balance / cashflow tables (one row per company and period) as known on `day`
    (default: everything filed)."""
    pit = as_of(facts, day or dt.date.max)
    out = {}
    for statement in ("income", "balance", "cashflow"):
        part = pit.filter(pl.col("statement") == statement)
        items = [i for i, st, _, _ in CONCEPTS if st == statement and i in set(part["item"].to_list())]
        if part.is_empty():
            out[statement] = part
            continue
        wide = part.pivot(on="item", index=["cik", "ticker", "period_type", "period_start", "period_end"],
                          values="value", aggregate_function="first")
        out[statement] = wide.select(["cik", "ticker", "period_type", "period_start", "period_end", *items]).sort(
            "cik", "period_end", "period_type")
    return out


# --- live client ---------------------------------------------------------------------------------


class SecXbrlClient:
    """companyfacts for each company (ticker -> 10-digit CIK), at most 10 requests per second.

    A company whose request fails (after retries) or whose document is malformed fails alone: the
    others are returned through `PartialFetchError.partial` and the error names every failure. A
    404 means the SEC has no XBRL facts for that CIK (small or new filers): it is listed in
    `self.missing`, not a failure. A 403 stops the fetch (the SEC is refusing this client).
    """

    def __init__(self, companies: dict[str, str], identity: str | None = None, *, base_url: str = DATA_SEC,
                 session: requests.Session | None = None, on_raw: Callable[[str, bytes], None] | None = None,
                 attempts: int = 4, base_delay: float = 1.0):
        from .filings import parse_identity

        self.name, self.email = parse_identity(identity)
        self.companies = {t: str(c).zfill(10) for t, c in companies.items()}
        self.base_url = base_url.rstrip("/")
        self.session = session or rate_limited_session(SEC_LIMITER)
        self.on_raw = on_raw
        self.attempts, self.base_delay = attempts, base_delay
        self.missing: list[str] = []

    def url(self, cik: str) -> str:
        return f"{self.base_url}/api/xbrl/companyfacts/CIK{cik}.json"

    def documents(self) -> Iterable[tuple[str, str, dict | Exception | None]]:
        """(ticker, cik, document | the error | None when the SEC has none) per company."""
        headers = {"User-Agent": f"{self.name} {self.email}", "Accept-Encoding": "gzip, deflate"}
        for ticker, cik in self.companies.items():
            try:
                doc = fetch_json(self.session, self.url(cik), site="SEC (data.sec.gov)", headers=headers,
                                 off_setting=f"{OFF_SETTING}, or set SEC_EDGAR_IDENTITY to a real name and email",
                                 attempts=self.attempts, base_delay=self.base_delay)
            except SourceBlocked:
                raise
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                yield ticker, cik, None if status == 404 else exc
                continue
            except (RetriesExhausted, MalformedResponse) as exc:
                yield ticker, cik, exc
                continue
            yield ticker, cik, doc

    def fetch(self) -> pl.DataFrame:
        frames, failures = [], {}
        for ticker, cik, doc in self.documents():
            if doc is None:
                log.info("SEC has no XBRL company facts for %s (CIK %s)", ticker, cik)
                self.missing.append(ticker)
                continue
            if isinstance(doc, Exception):
                failures[f"{ticker} (CIK {cik})"] = str(doc)
                continue
            try:
                frames.append(normalise_companyfacts(doc, ticker=ticker))
            except MalformedResponse as exc:
                failures[f"{ticker} (CIK {cik})"] = str(exc)
                continue
            if self.on_raw:
                self.on_raw(cik, json.dumps(doc, separators=(",", ":")).encode())
        df = pl.concat(frames) if frames else pl.DataFrame(schema=FUNDAMENTALS)
        if failures:
            raise PartialFetchError("SEC XBRL company facts", failures, partial=df)
        return df
