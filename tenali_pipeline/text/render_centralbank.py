"""Central-bank communications as documents (economic domain): the bank's own text, headed by a
line that says who published what and when, and, where a decision was parsed, one sentence that
states it in a uniform form ("Decision: a cut of 25 basis points, to 4.25-4.50%."), so that the
model sees the same fact in the bank's wording and in a plain one. Dated on the day of publication.
"""

from __future__ import annotations

import polars as pl

from .render import _doc, _frame

_KIND = {"statement": "policy statement", "minutes": "minutes", "speech": "speech", "press_release": "press release"}


def _level(x: float) -> str:
    """Two decimals, three where the rate has them: a 4-1/8% rate is "4.125%", not "4.12%"."""
    s = f"{x:.3f}"
    return s[:-1] if s.endswith("0") else s


def _rate(lo: float, hi: float) -> str:
    return f"{_level(lo)}%" if lo == hi else f"{_level(lo)}-{_level(hi)}%"


def decision_sentence(r: dict) -> str | None:
    """'Decision: a cut of 25 basis points in the deposit facility rate, to 3.00%.' (None without a decision)."""
    action = r.get("decision")
    if not action:
        return None
    name = r.get("rate_name") or "policy rate"
    level = f", to {_rate(r['rate_low'], r['rate_high'])}" if r.get("rate_low") is not None else ""
    change = r.get("change_bps")
    if action == "hold":
        at = f" at {_rate(r['rate_low'], r['rate_high'])}" if r.get("rate_low") is not None else ""
        return f"Decision: the {name} was left unchanged{at}."
    if action == "set":
        return f"Decision: the {name} was set{level.replace(', to', ' at')}."
    noun = "cut" if action == "cut" else "increase"
    size = f" of {abs(change):g} basis points" if change is not None else ""
    return f"Decision: {'a' if noun == 'cut' else 'an'} {noun}{size} in the {name}{level}."


def render_central_bank(comms: pl.DataFrame) -> pl.DataFrame:
    """One document per communication: heading line, decision sentence (if any), the full text."""
    rows = []
    for r in comms.sort("published", "doc_id").iter_rows(named=True):
        day = r["published"].date()
        head = f"{r['institution']}, {_KIND.get(r['doc_type'], r['doc_type'])} of {day:%B} {day.day}, {day.year}: {r['title']}"
        parts = [head] + [s for s in (decision_sentence(r),) if s] + [r["text"].strip()]
        rows.append(_doc("economic", r["source"], r["bank"], day, r["title"], "\n\n".join(parts)))
    return _frame(rows)
