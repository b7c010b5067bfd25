"""Documents for the new sources: earnings narratives from SEC XBRL facts (market domain) and
on-chain / DeFi notes (crypto_forex domain).

Earnings narratives are point-in-time: each is written for one 10-K or 10-Q on the day it was
filed, from `xbrl.as_of(facts, filed)` only, so a comparison with "a year earlier" uses the figure
as it was known that day (a later restatement never leaks back), and the document is dated on the
filing day. Where that day's figure for the prior period differs from the one first filed, the
text says it was restated.
"""

from __future__ import annotations

import datetime as dt
import functools

import polars as pl

from ..sources.live.xbrl import CONCEPT_INDEX
from ..sources.live.defillama import FLOWS
from .render import _SIGNS, _doc, _frame, _pick, month_coverage, pct, price, span

_PERIODIC = ("10-K", "10-K/A", "10-Q", "10-Q/A")
_YEAR = dt.timedelta(days=365)


def _mark(currency: str) -> str:
    """The currency's sign (render's one table of them), else its code before the amount ("CNY 1.23 billion")."""
    return _SIGNS.get(currency) or f"{currency} "


def big_money(x: float, currency: str = "USD") -> str:
    """$1.23 billion / $456.7 million / $12,345 (sign kept); in the filer's reporting currency
    ("CNY 1.23 billion"): an RMB or euro filer's figures are not dollars."""
    sign, a, mark = ("-" if x < 0 else ""), abs(x), _mark(currency)
    if a >= 1e9:
        return f"{sign}{mark}{a / 1e9:,.2f} billion"
    if a >= 1e6:
        return f"{sign}{mark}{a / 1e6:,.1f} million"
    return f"{sign}{mark}{a:,.0f}"


def _reporting_currency(facts: pl.DataFrame) -> str:
    """The currency of a company's money figures (xbrl keeps one per company), from their unit
    ("CNY", "EUR/shares"); USD where none says."""
    units = [u for u in facts["unit"].drop_nulls().to_list() if u != "shares"] if "unit" in facts.columns else []
    return units[0].split("/")[0] if units else "USD"


def _day(d: dt.date) -> str:
    return f"{d:%B} {d.day}, {d.year}"


class _PointInTime:
    """The figures of one company known so far, fed in filing order (the same rule as `xbrl.as_of`:
    the latest filing wins, then the higher-priority concept), plus the value each period had when
    first reported. A sweep in plain Python: one pass per company instead of a query per filing."""

    def __init__(self, rows: list[dict]):
        self.rows = sorted(rows, key=lambda r: (r["filed"], r["_rank"]))
        self.next = 0
        self.known: dict[tuple, dict[dt.date, list[dict]]] = {}
        self.first: dict[tuple, float] = {}

    def advance(self, day: dt.date) -> None:
        while self.next < len(self.rows) and self.rows[self.next]["filed"] <= day:
            r = self.rows[self.next]
            self.next += 1
            key = (r["item"], r["period_type"])
            by_end = self.known.setdefault(key, {})
            period = (key, r["period_start"], r["period_end"])
            self.first.setdefault(period, r["value"])
            current = [x for x in by_end.get(r["period_end"], []) if x["period_start"] == r["period_start"]]
            if current and current[0]["filed"] == r["filed"] and current[0]["_rank"] <= r["_rank"]:
                continue  # same filing, a lower-priority concept
            others = [x for x in by_end.get(r["period_end"], []) if x["period_start"] != r["period_start"]]
            by_end[r["period_end"]] = others + [r]

    def get(self, item: str, ptype: str, end: dt.date, start: dt.date | None = None, tol: int = 8) -> dict | None:
        by_end = self.known.get((item, ptype), {})
        for delta in sorted(range(-tol, tol + 1), key=abs):
            for r in by_end.get(end + dt.timedelta(days=delta), []):
                if start is None or r["period_start"] is None or abs((r["period_start"] - start).days) <= tol:
                    return r
        return None

    def first_value(self, r: dict) -> float:
        return self.first[((r["item"], r["period_type"]), r["period_start"], r["period_end"])]


_OPEN = [
    "{company} ({ticker}) filed its {form} for the {period} ended {end} on {filed}.",
    "On {filed}, {company} ({ticker}) reported results for the {period} ended {end} in its {form}.",
]


def _line(label: str, cur: dict | None, prior: dict | None, pit: _PointInTime, *, eps: bool = False,
          currency: str = "USD") -> str | None:
    if cur is None:
        return None
    fmt = ((lambda v: f"{'-' if v < 0 else ''}{_mark(currency)}{abs(v):,.2f}") if eps
           else (lambda v: big_money(v, currency)))
    text = f"{label} was {fmt(cur['value'])}"
    if prior is not None and prior["value"]:
        change = cur["value"] / prior["value"] - 1
        if prior["value"] > 0 and cur["value"] > 0:
            text += f", {'up' if change >= 0 else 'down'} {abs(change) * 100:.1f}% from {fmt(prior['value'])} a year earlier"
        else:
            text += f", against {fmt(prior['value'])} a year earlier"
        first = pit.first_value(prior)
        if abs(first - prior["value"]) > 1e-6 * max(1.0, abs(first)):
            text += f" (restated from {fmt(first)} as first reported)"
    return text + "."


def render_earnings(facts: pl.DataFrame) -> pl.DataFrame:
    """One narrative per periodic filing (10-K, 10-Q), using only figures public on its filing day."""
    if facts.is_empty():
        return _frame([])
    rank = {c: v[3] for c, v in CONCEPT_INDEX.items()}
    facts = facts.with_columns(_rank=pl.col("concept").replace_strict(rank, default=99, return_dtype=pl.Int32))
    rows = []
    for (cik,), company_facts in facts.group_by(["cik"], maintain_order=True):
        pit = _PointInTime(company_facts.to_dicts())
        currency = _reporting_currency(company_facts)
        money = functools.partial(big_money, currency=currency)
        own_periods = (company_facts.filter(pl.col("form").is_in(_PERIODIC), pl.col("statement") == "income",
                                            pl.col("period_type").is_in(["FY", "Q"]))
                       .with_columns(_own=pl.when(pl.col("form").str.starts_with("10-K")).then(pl.lit("FY")).otherwise(pl.lit("Q")))
                       .filter(pl.col("period_type") == pl.col("_own"))
                       .sort("period_end", "period_start")
                       .group_by("accession").agg(pl.col("filed").min(), pl.col("form").first(), pl.col("_own").first(),
                                                  pl.col("period_end").last(), pl.col("period_start").last(),
                                                  pl.col("ticker").first(), pl.col("company").first(), pl.col("source").first())
                       .sort("filed", "accession"))
        for accession, filed, form, ptype, end, start, ticker, name, source in own_periods.iter_rows():
            pit.advance(filed)
            ticker, name = ticker or cik, name or f"CIK {cik}"
            prior_end, prior_start = end - _YEAR, start - _YEAR
            f = dict(company=name, ticker=ticker, form=form, period="fiscal year" if ptype == "FY" else "quarter",
                     end=_day(end), filed=_day(filed))
            parts = [_pick(_OPEN, cik, accession).format(**f)]
            for item, label, eps in (("revenue", "Revenue", False), ("operating_income", "Operating income", False),
                                     ("net_income", "Net income", False), ("eps_diluted", "Diluted earnings per share", True)):
                line = _line(label, pit.get(item, ptype, end, start), pit.get(item, ptype, prior_end, prior_start), pit,
                             eps=eps, currency=currency)
                if line:
                    parts.append(line)
            rev, net = pit.get("revenue", ptype, end, start), pit.get("net_income", ptype, end, start)
            if rev and net and rev["value"] > 0:
                parts.append(f"The net margin was {net['value'] / rev['value'] * 100:.1f}%.")
            # Cash flow: the longest period ending on `end` (a year, or the year to date in a 10-Q).
            cash = next((c for c in (pit.get("operating_cash_flow", t, end) for t in ("FY", "YTD", "Q")) if c), None)
            if cash:
                months = round(((cash["period_end"] - cash["period_start"]).days + 1) / 30.4)
                prior = pit.get("operating_cash_flow", cash["period_type"], cash["period_end"] - _YEAR,
                                cash["period_start"] - _YEAR)
                line = _line(f"Operating cash flow for the {months} months", cash, prior, pit, currency=currency)
                capex = pit.get("capex", cash["period_type"], cash["period_end"], cash["period_start"])
                if capex:
                    line += (f" Capital expenditure was {money(capex['value'])}, leaving free cash flow of "
                             f"{money(cash['value'] - capex['value'])}.")
                parts.append(line)
            bal = {i: pit.get(i, "I", end) for i in ("assets", "liabilities", "equity", "cash")}
            if bal["assets"]:
                text = f"At {_day(end)} total assets were {money(bal['assets']['value'])}"
                if bal["liabilities"]:
                    text += f", total liabilities {money(bal['liabilities']['value'])}"
                if bal["equity"]:
                    text += f" and shareholders' equity {money(bal['equity']['value'])}"
                if bal["cash"]:
                    text += f"; cash and equivalents stood at {money(bal['cash']['value'])}"
                parts.append(text + ".")
            if len(parts) < 2:
                continue
            title = f"{ticker} {form} {'fiscal year' if ptype == 'FY' else 'quarter'} ended {end}"
            rows.append(_doc("market", source, ticker, filed, title, " ".join(parts)))
    return _frame(rows)


# ---- on-chain and DeFi: one note per chain or protocol and month ---------------------------------
_METRIC_LABEL = {"tvl": "total value locked", "fees": "fees", "revenue": "revenue", "dex_volume": "DEX volume",
                 "stablecoin_supply": "stablecoin supply"}
_FLOW = FLOWS  # daily flows: summed over the month; others are levels


def render_defi(metrics: pl.DataFrame) -> pl.DataFrame:
    """Monthly notes per entity: month-end levels (TVL, stablecoin supply) with their change, and
    monthly totals of daily flows (fees, revenue, DEX volume). Dated on the month's last data day.
    The data's current month is not over (`month_coverage`): its flows are a month to date, said so
    and compared per day, and the heading says how far the data goes ("in March 2024 through March 12")."""
    if metrics.is_empty():
        return _frame([])
    df = metrics.with_columns(month=pl.col("date").dt.truncate("1mo"),
                              series=pl.concat_str("scope", "entity", "metric", separator="|"))
    key = ("scope", "entity", "metric")
    monthly = (df.sort("date").group_by(*key, "series", "month")
               .agg(last=pl.col("value").last(), first=pl.col("value").first(), total=pl.col("value").sum(),
                    days=pl.len(), first_day=pl.col("date").min(), last_day=pl.col("date").max(),
                    source=pl.col("source").first())
               .with_columns(weekend=True))  # DeFi runs every day
    monthly = (month_coverage(monthly, "series", month="month", first="first_day", last="last_day", weekend="weekend")
               .sort(*key, "month")
               .with_columns(full=pl.col("days") == pl.col("month").dt.month_end().dt.day())
               .with_columns(prev_last=pl.col("last").shift(1).over(*key),
                             prev_total=pl.col("total").shift(1).over(*key),
                             prev_days=pl.col("days").shift(1).over(*key),
                             prev_full=pl.col("full").shift(1).over(*key),
                             prev_month=pl.col("month").shift(1).over(*key))
               # "the previous month" is the calendar month before, not the last month that has data
               .with_columns(pl.when(pl.col("prev_month") == pl.col("month").dt.offset_by("-1mo"))
                             .then(pl.col(c)).otherwise(None).alias(c)
                             for c in ("prev_last", "prev_total", "prev_days", "prev_full")))
    rows = []
    for (scope, entity, month), g in monthly.group_by(["scope", "entity", "month"], maintain_order=True):
        if g["days"].max() < 5:
            continue
        who = "all of DeFi" if scope == "all" else (f"the {entity} chain" if scope == "chain" else f"the {entity} protocol")
        lines = []
        for r in g.sort("metric").iter_rows(named=True):
            label = _METRIC_LABEL.get(r["metric"], r["metric"])
            if r["metric"] in _FLOW:
                label = label[0].upper() + label[1:]
                line = (f"{label} totalled {big_money(r['total'])} over {r['days']} days" if r["ended"] else
                        f"{label} for the month to date ({r['days']} days through {r['last_day']:%B} "
                        f"{r['last_day'].day}) totalled {big_money(r['total'])}")
                if r["prev_total"] and r["full"] and r["prev_full"]:
                    line += f" ({pct(r['total'] / r['prev_total'] - 1)} on the previous month)"
                elif r["prev_total"]:  # a month not fully covered: compare like with like, per day
                    per_day = (r["total"] / r["days"]) / (r["prev_total"] / r["prev_days"]) - 1
                    line += f" (a daily average {pct(per_day)} on the previous month's)"
            else:
                label = label[0].upper() + label[1:]
                line = (f"{label} ended the month at {big_money(r['last'])}" if r["full"] else
                        f"{label} stood at {big_money(r['last'])} on {_day(r['last_day'])}")
                if r["prev_last"]:
                    line += f", {pct(r['last'] / r['prev_last'] - 1)} from the previous month-end"
            lines.append(line + ".")
        title = f"{entity} on-chain activity in {month:%B %Y}"
        when = span(f"{month:%B %Y}", g["first_day"].min(), g["last_day"].max(), g["started"].any(), g["ended"].any())
        text = f"On-chain and DeFi activity for {who} {when} (DefiLlama):\n" + "\n".join(lines)
        rows.append(_doc("crypto_forex", g["source"][0], entity, g["last_day"].max(), title, text))
    return _frame(rows)


def render_coins(coins: pl.DataFrame) -> pl.DataFrame:
    """Monthly tokenomics notes per coin: market cap, circulating supply and its change, the cap."""
    if coins.is_empty():
        return _frame([])
    # a day without a price or a cap says nothing: the month's figures are those of its last full day
    monthly = (coins.filter(pl.col("price_usd").is_not_null(), pl.col("market_cap_usd").is_not_null())
               .sort("date").with_columns(month=pl.col("date").dt.truncate("1mo"))
               .group_by("coin_id", "month")
               .agg(symbol=pl.col("symbol").last(), price=pl.col("price_usd").last(), mcap=pl.col("market_cap_usd").last(),
                    supply=pl.col("circulating_supply").last(), max_supply=pl.col("max_supply").last(),
                    volume=pl.col("volume_usd").mean(), days=pl.len(), last_day=pl.col("date").max(),
                    first_day=pl.col("date").min(), source=pl.col("source").first())
               .with_columns(weekend=True))
    monthly = (month_coverage(monthly, "coin_id", month="month", first="first_day", last="last_day", weekend="weekend")
               # "on the month" compares with the calendar month before, not the last month that has data
               .with_columns(pl.when(pl.col("month").shift(1).over("coin_id") == pl.col("month").dt.offset_by("-1mo"))
                             .then(pl.col(c).shift(1).over("coin_id")).alias(f"prev_{c}") for c in ("supply", "mcap")))
    rows = []
    for r in monthly.iter_rows(named=True):
        if r["days"] < 5 or r["mcap"] is None:
            continue
        sym = (r["symbol"] or r["coin_id"]).upper()
        # "ended the month" only once it has: the data's current month stood at a price on its last day
        when = (f"ended {r['month']:%B %Y}" if r["ended"] else f"stood on {_day(r['last_day'])}")
        parts = [f"{r['coin_id'].capitalize()} ({sym}) {when} at {price(r['price'])} with a market "
                 f"capitalisation of {big_money(r['mcap'])}"]
        if r["prev_mcap"]:
            parts[-1] += (f" ({pct(r['mcap'] / r['prev_mcap'] - 1)} on the month)" if r["ended"] else
                          f" ({pct(r['mcap'] / r['prev_mcap'] - 1)} since the end of the previous month)")
        parts[-1] += "."
        if r["supply"]:
            line = f"Circulating supply was about {r['supply']:,.0f} {sym}"
            if r["prev_supply"]:
                line += (f", {pct(r['supply'] / r['prev_supply'] - 1)} "
                         + ("from a month earlier" if r["ended"] else "from the previous month-end"))
            if r["max_supply"]:
                line += f"; {r['supply'] / r['max_supply'] * 100:.1f}% of the {r['max_supply']:,.0f} maximum"
            parts.append(line + ".")
        if r["volume"]:
            parts.append(f"Average daily trading volume was {big_money(r['volume'])}.")
        rows.append(_doc("crypto_forex", r["source"], sym, r["last_day"], f"{sym} tokenomics {r['month']:%B %Y}",
                         " ".join(parts)))
    return _frame(rows)
