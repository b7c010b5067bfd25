"""Grounded finance instructions: question-answer pairs whose answers are computed from the lake.

Instruction data scraped from the web teaches a model to *sound* like an analyst; these pairs teach
it to read numbers correctly, because every answer is recomputed from the cleaned tables:

- ``close_on``      closing price on a day (clean market prices)
- ``return``        total return over N trading days, from the adjusted close (ratio, so causal)
- ``sma``           N-day simple moving average, in the bar's own price units (as the features are)
- ``range_high``    highest close of the last N trading days, split-adjusted to the day's units
- ``rsi``           the 14-day RSI reading and what it signals (technical features)
- ``pattern``       the candlestick pattern printed on a day (technical features)
- ``macro_change``  change of an economic series between two observations (values as first published)
- ``filing_date``   when a company filed a 10-K / 10-Q for a period; ``filing_items``: an 8-K's items

Time split: a question's ``as_of`` is the last date its answer depends on (for macro, the later of
the observation date and its publication date). Questions wholly before ``val_start`` go to
``train``; those whose every input date is on or after it go to ``val`` (held out); a question whose
inputs straddle the boundary is dropped, so nothing from the validation window reaches training.

Each question also carries a wrong answer (a plausible wrong number or name) for preference pairs
and multiple-choice options for log-likelihood evaluation. Same tables + same seed -> same output.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from .render import _SIGNS, quote_currency

KINDS = ("close_on", "return", "sma", "range_high", "rsi", "pattern", "macro_change", "filing_date", "filing_items")

QUESTION_SCHEMA = {
    "id": pl.String, "split": pl.String, "kind": pl.String, "subject": pl.String, "as_of": pl.Date,
    "first_date": pl.Date, "question": pl.String, "answer": pl.String, "value": pl.Float64,
    "wrong_answer": pl.String, "choices": pl.List(pl.String), "correct_choice": pl.Int64,
}

PATTERN_NAMES = {
    "cdl_doji": "a doji", "cdl_hammer": "a hammer", "cdl_hanging_man": "a hanging man",
    "cdl_shooting_star": "a shooting star", "cdl_engulfing_bull": "a bullish engulfing pattern",
    "cdl_engulfing_bear": "a bearish engulfing pattern", "cdl_harami_bull": "a bullish harami",
    "cdl_harami_bear": "a bearish harami", "cdl_morning_star": "a morning star",
    "cdl_evening_star": "an evening star", "cdl_three_white_soldiers": "three white soldiers",
    "cdl_three_black_crows": "three black crows",
}


@dataclass
class GroundedConfig:
    val_start: dt.date
    seed: int = 0
    per_kind: int = 200  # at most this many questions of each kind in each split
    n_choices: int = 4
    return_windows: tuple[int, ...] = (5, 20, 60)
    sma_windows: tuple[int, ...] = (20, 50)
    high_windows: tuple[int, ...] = (20, 60)
    kinds: tuple[str, ...] = field(default=KINDS)


def _fmt_date(d: dt.date) -> str:
    return f"{d:%B} {d.day}, {d.year}"


def _money(x: float, currency: str = "USD") -> str:
    """Cents in the ticker's quote currency: "$1,234.50", "₹2,950.10" for an NSE share, "0.05 BTC"."""
    mark = _SIGNS.get(currency)
    return f"{mark}{x:,.2f}" if mark else f"{x:,.2f} {currency}"


def _pct(x: float) -> str:
    return f"{x:+.2f}%"


# ---------------------------------------------------------------------------------------------------
# Wrong answers: a number that is clearly wrong at the answer's precision, or another name.

def _wrong_numbers(rng: np.random.Generator, value: float, fmt, k: int, signed: bool = False) -> list[str]:
    out: list[str] = []
    right = fmt(value)
    tries = 0
    while len(out) < k and tries < 100:
        tries += 1
        if signed and rng.random() < 0.3:
            cand = -value if abs(value) > 0.05 else value + rng.choice([-1, 1]) * rng.uniform(1, 5)
        else:
            scale = rng.uniform(0.08, 0.4) * rng.choice([-1, 1])
            cand = value * (1 + scale) if abs(value) > 1e-9 else rng.uniform(1, 10)
        s = fmt(cand)
        if s != right and s not in out:
            out.append(s)
    return out


def _options(rng: np.random.Generator, right: str, wrong: list[str], n: int) -> tuple[list[str], int]:
    opts = [right, *wrong[: n - 1]]
    order = rng.permutation(len(opts))
    opts = [opts[i] for i in order]
    return opts, int(np.where(order == 0)[0][0])


# ---------------------------------------------------------------------------------------------------
# Market questions from the clean price table.

def _with_windows(prices: pl.DataFrame, cfg: GroundedConfig) -> pl.DataFrame:
    """Per ticker, the values each market question needs, computed once with rolling expressions."""
    splits = pl.col("splits") if "splits" in prices.columns else pl.lit(None, dtype=pl.Float64)
    df = (prices.select("ticker", "date", "close", "adj_close", split=splits).sort("ticker", "date")
          # Cumulative split factor (a 2:1 split on a day makes it 2 from that day on; its close is post-split).
          .with_columns(split_cum=pl.when(pl.col("split") > 0).then(pl.col("split")).otherwise(1.0)
                        .cum_prod().over("ticker")))
    exprs = [pl.col("date").shift(1).over("ticker").alias("prev_date")]
    for n in cfg.return_windows:
        exprs += [
            (pl.col("adj_close") / pl.col("adj_close").shift(n).over("ticker") * 100 - 100).alias(f"ret_{n}"),
            pl.col("date").shift(n).over("ticker").alias(f"ret_{n}_from"),
        ]
    for n in cfg.sma_windows:
        # In the bar's own units: the adjusted average rescaled by the day's close/adj_close factor.
        exprs += [
            (pl.col("adj_close").rolling_mean(n).over("ticker") * pl.col("close") / pl.col("adj_close")).alias(f"sma_{n}"),
            pl.col("date").shift(n - 1).over("ticker").alias(f"sma_{n}_from"),
        ]
    for n in cfg.high_windows:
        # Split-adjusted to the bar's own units: a 2:1 split inside the window must not leave the
        # pre-split (doubled) price as the "high". Without a split the high is a printed close.
        exprs += [((pl.col("close") * pl.col("split_cum")).rolling_max(n).over("ticker")
                   / pl.col("split_cum")).alias(f"high_{n}"),
                  pl.col("date").shift(n - 1).over("ticker").alias(f"high_{n}_from")]
    return df.with_columns(exprs)


class _Builder:
    def __init__(self, cfg: GroundedConfig):
        self.cfg = cfg
        self.rows: list[dict] = []

    def rng(self, kind: str, split: str) -> np.random.Generator:
        # One stream per (kind, split): adding a kind or changing one kind's data leaves the others alone.
        key = sum(ord(c) * (i + 1) for i, c in enumerate(f"{kind}/{split}"))
        return np.random.default_rng([self.cfg.seed, key])

    def split_of(self, first: dt.date, last: dt.date) -> str | None:
        if last < self.cfg.val_start:
            return "train"
        if first >= self.cfg.val_start:
            return "val"
        return None  # straddles the boundary

    def sample(self, df: pl.DataFrame, kind: str, first_col: str, last_col: str = "date"):
        """Rows of df per split, at most per_kind each, chosen by the (kind, split) stream."""
        for split in ("train", "val"):
            if split == "train":
                part = df.filter(pl.col(last_col) < self.cfg.val_start)
            else:
                part = df.filter(pl.col(first_col) >= self.cfg.val_start)
            if part.is_empty():
                continue
            rng = self.rng(kind, split)
            take = min(self.cfg.per_kind, part.height)
            idx = np.sort(rng.choice(part.height, size=take, replace=False))
            yield split, rng, part[idx.tolist()]

    def add(self, *, split: str, kind: str, subject: str, first: dt.date, as_of: dt.date, question: str,
            answer: str, value: float | None, right: str, wrong: list[str], rng: np.random.Generator) -> None:
        if not wrong:
            return
        choices, correct = _options(rng, right, wrong, self.cfg.n_choices)
        self.rows.append({
            "id": f"{kind}:{subject}:{as_of.isoformat()}:{len(self.rows)}", "split": split, "kind": kind,
            "subject": subject, "as_of": as_of, "first_date": first, "question": question, "answer": answer,
            "value": value, "wrong_answer": answer.replace(right, wrong[0], 1) if right in answer else wrong[0],
            "choices": choices, "correct_choice": correct,
        })


def _market(b: _Builder, prices: pl.DataFrame) -> None:
    cfg = b.cfg
    w = _with_windows(prices, cfg)
    if "close_on" in cfg.kinds:
        for split, rng, rows in b.sample(w, "close_on", "date"):
            for r in rows.iter_rows(named=True):
                money = functools.partial(_money, currency=quote_currency(r["ticker"]))
                right = money(r["close"])
                q = rng.choice([f"What was the closing price of {r['ticker']} on {_fmt_date(r['date'])}?",
                                f"At what price did {r['ticker']} close on {_fmt_date(r['date'])}?",
                                f"{r['ticker']} close on {r['date'].isoformat()}?"])
                b.add(split=split, kind="close_on", subject=r["ticker"], first=r["date"], as_of=r["date"],
                      question=str(q), answer=f"{r['ticker']} closed at {right} on {_fmt_date(r['date'])}.",
                      value=round(r["close"], 2), right=right,
                      wrong=_wrong_numbers(rng, r["close"], money, cfg.n_choices - 1), rng=rng)
    if "return" in cfg.kinds:
        for n in cfg.return_windows:
            src = w.filter(pl.col(f"ret_{n}").is_not_null())
            for split, rng, rows in b.sample(src, "return", f"ret_{n}_from"):
                for r in rows.iter_rows(named=True):
                    v, d0, d1 = r[f"ret_{n}"], r[f"ret_{n}_from"], r["date"]
                    right = _pct(v)
                    q = rng.choice([
                        f"What was the total return of {r['ticker']} over the {n} trading days to {_fmt_date(d1)}?",
                        f"By how much did {r['ticker']} move (adjusted close) from {_fmt_date(d0)} to {_fmt_date(d1)}?",
                        f"{r['ticker']}: {n}-day return ending {d1.isoformat()}?"])
                    b.add(split=split, kind="return", subject=r["ticker"], first=d0, as_of=d1, question=str(q),
                          answer=f"{r['ticker']} returned {right} from {_fmt_date(d0)} to {_fmt_date(d1)} "
                                 f"({n} trading days, adjusted close).",
                          value=round(v, 2), right=right,
                          wrong=_wrong_numbers(rng, v, _pct, cfg.n_choices - 1, signed=True), rng=rng)
    if "sma" in cfg.kinds:
        for n in cfg.sma_windows:
            src = w.filter(pl.col(f"sma_{n}").is_not_null())
            for split, rng, rows in b.sample(src, "sma", f"sma_{n}_from"):
                for r in rows.iter_rows(named=True):
                    money = functools.partial(_money, currency=quote_currency(r["ticker"]))
                    v, right = r[f"sma_{n}"], money(r[f"sma_{n}"])
                    rel = "above" if r["close"] > v else "below" if r["close"] < v else "at"
                    q = rng.choice([
                        f"What was the {n}-day simple moving average of {r['ticker']} on {_fmt_date(r['date'])}?",
                        f"Give {r['ticker']}'s {n}-day SMA as of the close of {_fmt_date(r['date'])}.",
                        f"{r['ticker']} SMA({n}) on {r['date'].isoformat()}?"])
                    b.add(split=split, kind="sma", subject=r["ticker"], first=r[f"sma_{n}_from"], as_of=r["date"],
                          question=str(q),
                          answer=f"The {n}-day SMA of {r['ticker']} was {right} on {_fmt_date(r['date'])}; "
                                 f"the close of {money(r['close'])} was {rel} it.",
                          value=round(v, 2), right=right,
                          wrong=_wrong_numbers(rng, v, money, cfg.n_choices - 1), rng=rng)
    if "range_high" in cfg.kinds:
        for n in cfg.high_windows:
            src = w.filter(pl.col(f"high_{n}").is_not_null())
            for split, rng, rows in b.sample(src, "range_high", f"high_{n}_from"):
                for r in rows.iter_rows(named=True):
                    money = functools.partial(_money, currency=quote_currency(r["ticker"]))
                    v, right = r[f"high_{n}"], money(r[f"high_{n}"])
                    q = rng.choice([
                        f"What was the highest close of {r['ticker']} in the {n} trading days to {_fmt_date(r['date'])}?",
                        f"{r['ticker']}: {n}-day closing high as of {r['date'].isoformat()}?"])
                    b.add(split=split, kind="range_high", subject=r["ticker"], first=r[f"high_{n}_from"],
                          as_of=r["date"], question=str(q),
                          answer=f"The highest close of {r['ticker']} in the {n} trading days to "
                                 f"{_fmt_date(r['date'])} was {right}.",
                          value=round(v, 2), right=right,
                          wrong=_wrong_numbers(rng, v, money, cfg.n_choices - 1), rng=rng)


def _rsi_signal(v: float) -> str:
    return "overbought (above 70)" if v > 70 else "oversold (below 30)" if v < 30 else "neutral (between 30 and 70)"


def _features(b: _Builder, features: pl.DataFrame) -> None:
    cfg = b.cfg
    f = features.rename({"instrument": "ticker"}) if "instrument" in features.columns else features
    f = f.sort("ticker", "date")  # sampling picks rows by position: same table in any row order, same questions
    # A reading depends on earlier bars too: RSI(14) on at least the 14 changes before it (15 closes),
    # a candlestick pattern on up to three bars. A held-out question must not lean on training days.
    f = f.with_columns(rsi_from=pl.col("date").shift(14).over("ticker"),
                       pattern_from=pl.col("date").shift(2).over("ticker").fill_null(pl.col("date")))
    if "rsi" in cfg.kinds and "rsi_14" in f.columns:
        src = f.filter(pl.col("rsi_14").is_not_null() & pl.col("rsi_14").is_finite())
        for split, rng, rows in b.sample(src, "rsi", "rsi_from"):
            for r in rows.iter_rows(named=True):
                v = r["rsi_14"]
                right = f"{v:.1f}"
                q = rng.choice([f"What was the 14-day RSI of {r['ticker']} on {_fmt_date(r['date'])}, and what did it signal?",
                                f"Read {r['ticker']}'s RSI(14) at the close of {r['date'].isoformat()}."])
                wrong = _wrong_numbers(rng, v, lambda x: f"{min(max(x, 0.0), 100.0):.1f}", cfg.n_choices - 1)
                b.add(split=split, kind="rsi", subject=r["ticker"], first=r["rsi_from"] or r["date"], as_of=r["date"],
                      question=str(q),
                      answer=f"The 14-day RSI of {r['ticker']} was {right} on {_fmt_date(r['date'])}: {_rsi_signal(v)}.",
                      value=round(v, 1), right=right, wrong=wrong, rng=rng)
    cols = [c for c in PATTERN_NAMES if c in f.columns]
    if "pattern" in cfg.kinds and cols:
        fired = pl.sum_horizontal([pl.col(c).fill_null(False).cast(pl.Int32) for c in cols])
        src = f.filter(fired == 1).with_columns(
            pattern=pl.coalesce([pl.when(pl.col(c)).then(pl.lit(c)) for c in cols]))
        for split, rng, rows in b.sample(src, "pattern", "pattern_from"):
            for r in rows.iter_rows(named=True):
                right = PATTERN_NAMES[r["pattern"]]
                others = [PATTERN_NAMES[c] for c in cols if c != r["pattern"]]
                wrong = [others[i] for i in rng.permutation(len(others))[: cfg.n_choices - 1]]
                q = rng.choice([f"Which candlestick pattern did {r['ticker']} print on {_fmt_date(r['date'])}?",
                                f"Name the candlestick pattern on {r['ticker']}'s {r['date'].isoformat()} bar."])
                b.add(split=split, kind="pattern", subject=r["ticker"], first=r["pattern_from"], as_of=r["date"],
                      question=str(q), answer=f"{r['ticker']} printed {right} on {_fmt_date(r['date'])}.",
                      value=None, right=right, wrong=wrong, rng=rng)


def _macro(b: _Builder, macro: pl.DataFrame) -> None:
    if "macro_change" not in b.cfg.kinds:
        return
    m = (macro.sort("series_id", "date")
         .with_columns(known=pl.max_horizontal("date", pl.col("realtime_start").fill_null(pl.col("date"))))
         .with_columns(prev_value=pl.col("value").shift(1).over("series_id"),
                       prev_date=pl.col("date").shift(1).over("series_id"),
                       prev_known=pl.col("known").shift(1).over("series_id"))
         .filter(pl.col("prev_value").is_not_null() & pl.col("value").is_not_null())
         # The question depends on both observations as published: split on the later of the two.
         .with_columns(as_of=pl.max_horizontal("known", "prev_known")))
    for split, rng, rows in b.sample(m, "macro_change", "prev_date", last_col="as_of"):
        for r in rows.iter_rows(named=True):
            units = r["units"] or ""
            delta = r["value"] - r["prev_value"]
            right = f"{delta:+,.2f}"
            q = rng.choice([
                f"How did {r['title']} change from {_fmt_date(r['prev_date'])} to {_fmt_date(r['date'])}?",
                f"{r['series_id']}: change between the {r['prev_date'].isoformat()} and {r['date'].isoformat()} observations?"])
            b.add(split=split, kind="macro_change", subject=r["series_id"], first=r["prev_date"],
                  as_of=r["as_of"], question=str(q),
                  # The change comes first: wrong answers and choice sentences replace the first
                  # occurrence of the figure, and a level can print the same (0.00 -> -0.25: -0.25).
                  answer=f"{r['title']} changed by {right}, from {r['prev_value']:,.2f} to {r['value']:,.2f} "
                         f"{units}".rstrip() + ".",
                  value=round(delta, 2), right=right,
                  wrong=_wrong_numbers(rng, delta, lambda x: f"{x:+,.2f}", b.cfg.n_choices - 1, signed=True), rng=rng)


def _filings(b: _Builder, filings: pl.DataFrame) -> None:
    f = filings.filter(pl.col("filed").is_not_null())
    f = f.sort([c for c in ("filed", "cik", "form", "accession", "period", "items") if c in f.columns], nulls_last=True)
    name = pl.coalesce(pl.col("company"), pl.col("ticker"), pl.col("cik"))
    if "filing_date" in b.cfg.kinds:
        periodic = f.filter(pl.col("form").is_in(["10-K", "10-Q"]) & pl.col("period").is_not_null()).with_columns(name=name)
        for split, rng, rows in b.sample(periodic, "filing_date", "period", last_col="filed"):
            for r in rows.iter_rows(named=True):
                right = r["filed"].isoformat()
                wrong = [(r["filed"] + dt.timedelta(days=int(d))).isoformat()
                         for d in rng.choice([-30, -14, -7, 7, 14, 30, 45], size=b.cfg.n_choices - 1, replace=False)]
                q = rng.choice([f"When did {r['name']} file its {r['form']} for the period ending {_fmt_date(r['period'])}?",
                                f"Filing date of {r['name']}'s {r['form']} for {r['period'].isoformat()}?"])
                b.add(split=split, kind="filing_date", subject=r["name"], first=r["period"], as_of=r["filed"],
                      question=str(q), answer=f"{r['name']} filed its {r['form']} for the period ending "
                                              f"{_fmt_date(r['period'])} on {right}.",
                      value=None, right=right, wrong=wrong, rng=rng)
    if "filing_items" in b.cfg.kinds:
        eight_k = f.filter((pl.col("form") == "8-K") & (pl.col("items").fill_null("") != "")).with_columns(name=name)
        all_items = sorted({i.strip() for s in eight_k["items"].to_list() for i in s.split(",") if i.strip()})
        for split, rng, rows in b.sample(eight_k, "filing_items", "filed", last_col="filed"):
            for r in rows.iter_rows(named=True):
                items = sorted({i.strip() for i in r["items"].split(",") if i.strip()})
                right = ", ".join(items)
                pool = [i for i in all_items if i not in items] or ["9.01", "8.01", "7.01", "5.02", "2.02"]
                wrong = []
                for _ in range(20):
                    cand = ", ".join(sorted(set(rng.choice(pool, size=min(len(items), len(pool)), replace=False))))
                    if cand != right and cand not in wrong:
                        wrong.append(cand)
                    if len(wrong) == b.cfg.n_choices - 1:
                        break
                q = rng.choice([f"Which items did {r['name']} report in its 8-K filed on {_fmt_date(r['filed'])}?",
                                f"Items of {r['name']}'s 8-K of {r['filed'].isoformat()}?"])
                b.add(split=split, kind="filing_items", subject=r["name"], first=r["filed"], as_of=r["filed"],
                      question=str(q), answer=f"{r['name']}'s 8-K filed on {_fmt_date(r['filed'])} reported "
                                              f"item(s) {right}.",
                      value=None, right=right, wrong=wrong, rng=rng)


def build_questions(cfg: GroundedConfig, *, prices: pl.DataFrame | None = None, features: pl.DataFrame | None = None,
                    macro: pl.DataFrame | None = None, filings: pl.DataFrame | None = None) -> pl.DataFrame:
    """All grounded questions from the tables given (any may be None), in QUESTION_SCHEMA."""
    unknown = set(cfg.kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown grounded question kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
    b = _Builder(cfg)
    if prices is not None and not prices.is_empty():
        _market(b, prices)
    if features is not None and not features.is_empty():
        _features(b, features)
    if macro is not None and not macro.is_empty():
        _macro(b, macro)
    if filings is not None and not filings.is_empty():
        _filings(b, filings)
    return pl.DataFrame(b.rows, schema=QUESTION_SCHEMA).sort("split", "kind", "id")


# ---------------------------------------------------------------------------------------------------
# Shapes for the post-training stages and for evaluation.

SYSTEM_PROMPT = "You are a financial analyst. Answer from the data, with the exact figure."


def sft_records(questions: pl.DataFrame, system: str | None = SYSTEM_PROMPT) -> list[dict]:
    """OpenAI-style ``messages`` records (what the SFT stage reads)."""
    head = [{"role": "system", "content": system}] if system else []
    return [{"messages": [*head, {"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in zip(questions["question"], questions["answer"])]


def preference_records(questions: pl.DataFrame, system: str | None = SYSTEM_PROMPT) -> list[dict]:
    """DPO pairs: the grounded answer is chosen, the same sentence with a wrong figure rejected."""
    head = [{"role": "system", "content": system}] if system else []
    return [{"messages": [*head, {"role": "user", "content": q}], "chosen": a, "rejected": w}
            for q, a, w in zip(questions["question"], questions["answer"], questions["wrong_answer"]) if a != w]


def write_jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?")


def numbers_in(text: str) -> list[float]:
    out = []
    for m in _NUMBER.findall(text):
        try:
            out.append(float(m.replace("$", "").replace(",", "")))
        except ValueError:
            pass
    return out


_DATE = re.compile(r"\b(?:January|February|March|April|May|June|July|August|September|October|November|December)"
                   r"\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}\b|\b\d{4}-\d{2}-\d{2}\b", re.IGNORECASE)
# A sign counts only at the start of a token ("-0.25", not the hyphen of "10-K" or "2012-01").
_FIGURE = re.compile(r"(?<![\w.])([-+\u2212]?)(\$?)(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\d])(\s*%)?")
_ITEM = re.compile(r"(?<![\w.])\d{1,2}\.\d{2}(?![\d])")


def figures_in(text: str) -> list[float]:
    """The figures stated in a text: numbers written with a decimal point, a currency sign, a percent
    sign or an explicit sign. Dates, window lengths ("20-day", "5 trading days", "RSI(14)") and the
    RSI thresholds ("between 30 and 70") are not figures, so they can't pass for the answer."""
    out = []
    for sign, cur, num, pct in _FIGURE.findall(_DATE.sub(" ", text)):
        if not (sign or cur or pct or "." in num):
            continue
        x = float(num.replace(",", ""))
        out.append(-x if sign in ("-", "\u2212") else x)
    return out


def answer_is_correct(generated: str, row: dict) -> bool:
    """Exact match after normalisation: the answer's figure (to its printed precision) is stated in the
    generated text, or for non-numeric answers the expected name/date/items text is, and no other option.

    Figures that the reference answer states besides the answer (an SMA's close, a macro change's two
    levels) don't count when the text restates them: "$24.00 ... the close of $31.99" is a wrong SMA of
    $31.99 however often the close is quoted."""
    value = row.get("value")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        choices = list(row.get("choices") or [])
        right = choices[row["correct_choice"]]
        if row.get("kind") == "filing_items":
            return set(_ITEM.findall(generated)) == set(_ITEM.findall(right))
        text = generated.lower()
        others = [c for c in choices if c != right and c.lower() not in right.lower()]
        return right.lower() in text and not any(c.lower() in text for c in others)
    decimals = 1 if row["kind"] == "rsi" else 2
    want = round(float(value), decimals)
    said = [round(x, decimals) for x in figures_in(generated)]
    hits = sum(x == want for x in said)
    if hits == 0:
        return False
    context = sum(round(x, decimals) == want for x in figures_in(row.get("answer") or "")) - 1
    return hits > max(context, 0) or all(x == want for x in said)
