"""Analyst-style technical notes from ``technicals.compute_features`` output.

One note per instrument and calendar month, dated the last bar of that month in the data: what the
price did over the month, where it stands against its averages, what momentum, volatility and volume
indicators said at the close, which candlestick patterns and market-structure (smart-money) events
formed, each with its date. Causal: a note dated D reads only rows dated <= D, and the features on
those rows only used bars up to their own date, so nothing after D can leak into the text.

Prices are quoted in the units that were current on D (``money``: $1,234.56): ``adj_close`` and the
feature levels divide out the bar's ``adj_factor`` (see ``technicals/features.py``), so a note from
before a split quotes the prices that traded then, not back-adjusted ones that reveal the split.
Changes use ``pct`` (+1.2%). Phrasing varies by a hash of (instrument, month, sentence), so the same
data always gives the same text. Accepts the features frame, or raw OHLCV (features are computed).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from ..technicals.features import COLUMNS, compute_features
from ..technicals.patterns import PATTERNS
from .render import _doc, _frame, _pick, month_coverage, pct, price, quote_currency, span

__all__ = ["render_technical"]

_PATTERN_NAMES = {
    "cdl_hammer": "a hammer", "cdl_hanging_man": "a hanging man", "cdl_shooting_star": "a shooting star",
    "cdl_engulfing_bull": "a bullish engulfing pattern", "cdl_engulfing_bear": "a bearish engulfing pattern",
    "cdl_harami_bull": "a bullish harami", "cdl_harami_bear": "a bearish harami", "cdl_morning_star": "a morning star",
    "cdl_evening_star": "an evening star", "cdl_three_white_soldiers": "three white soldiers",
    "cdl_three_black_crows": "three black crows",
}
_BULLISH = {"cdl_hammer", "cdl_engulfing_bull", "cdl_harami_bull", "cdl_morning_star", "cdl_three_white_soldiers"}

_OPEN = [
    "{t} {verb} {chg} in {month}, closing at {close} on {day}.",
    "Over {month}, {t} {verb} {chg} to finish at {close} ({day}).",
    "{t} ended {month} at {close} on {day}, {ret} for the month.",
    "{month} review for {t}: the price {verb} {chg} and closed the period at {close} on {day}.",
]
# A month the bars do not cover end to end (the data's current month, or its first): what they cover.
_OPEN_PART = [
    "{t} {verb} {chg} {span}, closing at {close} on {day}.",
    "{Span}, {t} {verb} {chg} to {close} ({day}).",
]
_RANGE = [
    "It traded between {low} and {high} across {days} sessions.",
    "The month's range ran from {low} to {high} over {days} trading days.",
    "Across {days} sessions the low was {low} and the high {high}.",
]
_AVERAGES = [
    "The close sat {a50} its 50-day average of {sma50}{and200}.",
    "Price finished {a50} the 50-day moving average ({sma50}){and200}.",
]
_RSI = [
    "The 14-day RSI ended at {rsi}, {zone}.",
    "Momentum, by the 14-day RSI, read {rsi} at the close: {zone}.",
    "RSI(14) closed the month at {rsi}, {zone}.",
]
_MACD = [
    "MACD stood at {macd} against a signal line of {signal}, a {sign} histogram of {hist}.",
    "The MACD line ({macd}) was {side} its signal ({signal}), leaving the histogram {sign} at {hist}.",
]
_BANDS = [
    "Within its Bollinger Bands ({lower} to {upper}) the close sat {pos}% of the way up, {where}.",
    "The close was {where}: {pos}% of the way from the lower Bollinger Band ({lower}) to the upper ({upper}).",
]
_VOL = [
    "The 14-day average true range was {atr} ({atr_pct} of price) and 20-day realised volatility {rv} annualised.",
    "Volatility: ATR(14) of {atr}, or {atr_pct} of the price, and {rv} annualised realised volatility over 20 days.",
]
_STOCH = [
    "The stochastic oscillator read {k} (%K) against {d} (%D){zone}.",
    "Stochastics finished at %K {k} and %D {d}{zone}.",
]
_OBV = [
    "On-balance volume {obv_verb} over the month, {agree} the price move.",
    "Volume flow, by OBV, {obv_verb} during the month, {agree} price.",
]
_NO_PATTERNS = [
    "No notable candlestick reversal patterns formed this month.",
    "The candles printed no notable reversal patterns during the month.",
]
_PATTERNS_INTRO = ["Candlestick patterns: {items}.", "On the candles, the month produced {items}.",
                   "Pattern watch: {items}."]
_NO_STRUCTURE = ["Market structure saw no breaks during the month.",
                 "There was no break of market structure this month."]


def money(x: float, currency: str = "USD") -> str:
    """``render.price`` of ``x`` (in the instrument's quote currency) rounded to 10 significant digits first,
    so a price computed two ways (within float noise) always prints the same digits."""
    return price(float(f"{x:.10g}"), currency)


def _day(d: dt.date | dt.datetime, ref: dt.date | dt.datetime | None = None) -> str:
    s = f"{d:%B} {d.day}"
    return s if ref is not None and d.year == ref.year else f"{s}, {d.year}"


def _series(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _num(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}"


def _signed(x: float) -> str:
    return f"{x:+.2f}"


def _ensure_features(frame: pl.DataFrame, by: str, time: str) -> pl.DataFrame:
    if "bar_index" in frame.columns and "adj_factor" in frame.columns:
        return frame
    raw = [c for c in ("open", "high", "low", "close", "volume") if c not in frame.columns]
    if raw:
        raise ValueError(f"render_technical needs compute_features output or raw OHLCV; missing {', '.join(raw)}")
    keep = [c for c in frame.columns if c not in COLUMNS]
    return compute_features(frame.select(keep), instrument_col=by, time_col=time)


def _month_table(f: pl.DataFrame, by: str, time: str) -> pl.DataFrame:
    """One row per instrument-month: values at the last bar, month aggregates and event lists."""
    t = pl.col(time)
    factor = pl.col("adj_factor")
    f = f.with_columns(
        _day=t.cast(pl.Date),
        _close_adj=pl.col("close") * factor,  # the adjusted close with the snapped factor, like adj_open/high/low
        _sma_rel=(pl.col("sma_50") - pl.col("sma_200")).sign(),
        _macd_rel=pl.col("macd_hist").sign(),
    ).with_columns(
        _month=pl.col("_day").dt.truncate("1mo"),
        _golden=((pl.col("_sma_rel") > 0) & (pl.col("_sma_rel").shift(1) < 0)).over(by).fill_null(False),
        _death=((pl.col("_sma_rel") < 0) & (pl.col("_sma_rel").shift(1) > 0)).over(by).fill_null(False),
        _macd_up=((pl.col("_macd_rel") > 0) & (pl.col("_macd_rel").shift(1) < 0)).over(by).fill_null(False),
        _macd_dn=((pl.col("_macd_rel") < 0) & (pl.col("_macd_rel").shift(1) > 0)).over(by).fill_null(False),
        _last_break=pl.when((pl.col("bos") != 0) | (pl.col("choch") != 0)).then(
            pl.struct(day=t, kind=pl.when(pl.col("choch") != 0).then(pl.lit("change of character"))
                      .otherwise(pl.lit("break of structure")))).forward_fill().over(by),
        _prev_close=(pl.col("close") * factor).shift(1).over(by),
        _weekend=(pl.col("_day").dt.weekday() >= 6).cum_max().over(by),  # trades at weekends, as known so far
    )
    # levels of objects that later get resolved, looked up on the row that recorded them
    rec = f.filter(pl.col("liquidity") != 0).select(by, _rec=t, _rec_factor=factor, _pool=pl.col("liquidity_level"))
    for col, fields in (("liq_sweep_high_date", ("_pool",)), ("liq_sweep_low_date", ("_pool",))):
        part = rec.select(by, pl.col("_rec").alias(col), *[(pl.col(x) * pl.col("_rec_factor")).alias(col + x) for x in fields])
        f = f.join(part, on=[by, col], how="left", maintain_order="left")

    def events(cond: pl.Expr, **fields: pl.Expr) -> pl.Expr:
        return pl.struct(day=t, factor=factor, **fields).filter(cond)

    month_first_row = pl.col("bar_index").first()
    aggs = [
        pl.all().exclude("_month").last(),
        pl.col("adj_open").first().alias("m_open_adj"),
        pl.col("adj_high").max().alias("m_high_adj"),
        pl.col("adj_low").min().alias("m_low_adj"),
        pl.col("_prev_close").first().alias("m_prev_close_adj"),
        pl.len().alias("m_days"),
        pl.col("_day").first().alias("m_first_day"),
        month_first_row.alias("m_first_bar"),
        pl.col("obv").first().alias("m_obv_first"),
        pl.col("cdl_doji").sum().alias("m_doji"),
        events(pl.col("_golden")).alias("e_golden"),
        events(pl.col("_death")).alias("e_death"),
        events(pl.col("_macd_up")).alias("e_macd_up"),
        events(pl.col("_macd_dn")).alias("e_macd_dn"),
        events(pl.col("swing_high"), when=pl.col("swing_high_date"), price=pl.col("swing_high_price")).alias("e_sh"),
        events(pl.col("swing_low"), when=pl.col("swing_low_date"), price=pl.col("swing_low_price")).alias("e_sl"),
        events((pl.col("bos") != 0) | (pl.col("choch") != 0), bos=pl.col("bos"), choch=pl.col("choch"),
               level=pl.col("structure_level"), when=pl.col("structure_swing_date"), close=pl.col("_close_adj"),
               ob=pl.col("ob"), ob_top=pl.col("ob_top"), ob_bottom=pl.col("ob_bottom"), ob_day=pl.col("ob_date"))
        .alias("e_break"),
        events(pl.col("fvg") != 0, kind=pl.col("fvg"), top=pl.col("fvg_top"), bottom=pl.col("fvg_bottom")).alias("e_fvg"),
        events(pl.col("fvg_bull_mitigated") > 0, n=pl.col("fvg_bull_mitigated"), rec=pl.col("fvg_bull_mitigated_date"))
        .alias("e_fvg_fill_bull"),
        events(pl.col("fvg_bear_mitigated") > 0, n=pl.col("fvg_bear_mitigated"), rec=pl.col("fvg_bear_mitigated_date"))
        .alias("e_fvg_fill_bear"),
        events((pl.col("ob_bull_mitigated") + pl.col("ob_bear_mitigated")) > 0, bull=pl.col("ob_bull_mitigated"),
               bear=pl.col("ob_bear_mitigated")).alias("e_ob_test"),
        events(pl.col("liquidity") != 0, kind=pl.col("liquidity"), level=pl.col("liquidity_level"),
               first=pl.col("liquidity_date")).alias("e_pool"),
        events(pl.col("liq_sweep_high") > 0, level=pl.col("liq_sweep_high_date_pool"), close=pl.col("_close_adj"))
        .alias("e_sweep_high"),
        events(pl.col("liq_sweep_low") > 0, level=pl.col("liq_sweep_low_date_pool"), close=pl.col("_close_adj"))
        .alias("e_sweep_low"),
    ]
    aggs += [events(pl.col(p)).alias(f"e_{p}") for p in PATTERNS if p != "cdl_doji"]
    table = f.group_by(by, "_month").agg(aggs)
    return month_coverage(table, by, month="_month", first="m_first_day", last="_day", weekend="_weekend",
                          lookahead=False)


def render_technical(features: pl.DataFrame, *, by: str = "ticker", time: str = "date",
                     domain: str = "technical") -> pl.DataFrame:
    """Monthly analyst notes per instrument (``DOCUMENT_SCHEMA``), dated the last bar each describes."""
    if features.is_empty():
        return _frame([])
    f = _ensure_features(features, by, time)
    if f.is_empty():
        return _frame([])
    rows = []
    for r in _month_table(f, by, time).iter_rows(named=True):
        text = _note(r, by)
        if text:
            day = r[time].date() if isinstance(r[time], dt.datetime) else r[time]
            source = r.get("source") or "derived:technicals"
            rows.append(_doc(domain, source, r[by], day, f"{r[by]} technical analysis, {day:%B %Y}", text))
    return _frame(rows)


def _note(r: dict, by: str) -> str:
    t, month = r[by], r["_month"]
    end = r["_day"]
    fd = r["adj_factor"]  # prices quoted in the units current on the note's date
    cur = quote_currency(t)  # and in the pair's quote currency ("0.05234 BTC" for ETH/BTC)

    def px(adj_value: float) -> str:  # a value in adj_close units, in the note date's units
        return money(adj_value / fd, cur)

    def lvl(value: float, factor: float) -> str:  # a level in the units of the bar that carries it
        return money(value * factor / fd, cur)

    def pick(options: list[str], slot: str) -> str:
        return _pick(options, t, month, slot)

    base = r["m_prev_close_adj"] if r["m_prev_close_adj"] is not None else r["m_open_adj"]
    mret = r["_close_adj"] / base - 1
    f = dict(t=t, month=f"{month:%B %Y}", day=_day(end, end), close=px(r["_close_adj"]),
             verb="rose" if mret >= 0 else "fell", chg=f"{abs(mret) * 100:.1f}%", ret=pct(mret),
             low=px(r["m_low_adj"]), high=px(r["m_high_adj"]), days=r["m_days"])
    whole = r["started"] and r["ended"]
    sp = span(f["month"], r["m_first_day"], end, r["started"], r["ended"])
    opening = (pick(_OPEN, "open").format(**f) if whole
               else pick(_OPEN_PART, "open").format(**f, span=sp, Span=sp[0].upper() + sp[1:]))
    parts = [opening, pick(_RANGE, "range").format(**f)]

    close = r["close"]  # the note date's own units, like the level columns on that row

    def side(level: float) -> str:  # "at" where the two print the same (a flat stablecoin), not "below"
        same = money(close, cur) == money(level, cur)
        return "at" if same else "above" if close > level else "below"

    if r["sma_50"] is not None:
        and200 = ""
        if r["sma_200"] is not None:
            and200 = f" and {side(r['sma_200'])} the 200-day average of {money(r['sma_200'], cur)}"
        parts.append(pick(_AVERAGES, "avg").format(a50=side(r["sma_50"]),
                                                   sma50=money(r["sma_50"], cur), and200=and200))
    for e in r["e_golden"]:
        parts.append(f"A golden cross formed on {_day(e['day'], end)}: the 50-day average rose through the 200-day.")
    for e in r["e_death"]:
        parts.append(f"A death cross formed on {_day(e['day'], end)}: the 50-day average slipped below the 200-day.")

    if r["rsi_14"] is not None:
        v = r["rsi_14"]
        zone = ("overbought territory" if v >= 70 else "oversold territory" if v <= 30
                else "neutral with a bullish lean" if v >= 55 else "neutral with a bearish lean" if v <= 45
                else "a neutral reading")
        # "closed the month at" only once the month is over
        parts.append(pick(_RSI if r["ended"] else _RSI[:2], "rsi").format(rsi=_num(v), zone=zone))
    if r["macd_signal"] is not None:
        h = r["macd_hist"]
        parts.append(pick(_MACD, "macd").format(macd=_signed(r["macd"]), signal=_signed(r["macd_signal"]),
                                                hist=_signed(h), sign="positive" if h >= 0 else "negative",
                                                side="above" if h >= 0 else "below"))
        crosses = [(e["day"], "bullish") for e in r["e_macd_up"]] + [(e["day"], "bearish") for e in r["e_macd_dn"]]
        if crosses:
            crosses.sort()
            parts.append("MACD crossed its signal line: " + _series(
                [f"{kind} on {_day(d, end)}" for d, kind in crosses[-3:]]) + ".")
    if r["bb_pct_b"] is not None and r["bb_upper"] is not None:
        b = r["bb_pct_b"]
        where = ("above the upper band" if b > 1 else "below the lower band" if b < 0 else "near the upper band"
                 if b >= 0.8 else "near the lower band" if b <= 0.2 else "around the middle band")
        parts.append(pick(_BANDS, "bands").format(lower=money(r["bb_lower"], cur), upper=money(r["bb_upper"], cur),
                                                  pos=f"{b * 100:.0f}", where=where))
    if r["atr_14"] is not None and r["realised_vol_20"] is not None:
        parts.append(pick(_VOL, "vol").format(atr=money(r["atr_14"], cur), atr_pct=f"{r['atr_14'] / close * 100:.1f}%",
                                              rv=f"{r['realised_vol_20'] * 100:.1f}%"))
    if r["stoch_d"] is not None:
        k = r["stoch_k"]
        zone = " (overbought)" if k >= 80 else " (oversold)" if k <= 20 else ""
        parts.append(pick(_STOCH, "stoch").format(k=f"{k:.0f}", d=f"{r['stoch_d']:.0f}", zone=zone))
    if r["m_days"] > 1 and r["m_first_bar"] > 0:
        d_obv = r["obv"] - r["m_obv_first"]
        if d_obv != 0:
            agree = "confirming" if (d_obv > 0) == (mret >= 0) else "diverging from"
            parts.append(pick(_OBV, "obv").format(obv_verb="rose" if d_obv > 0 else "fell", agree=agree))

    # candlestick patterns, in date order (the latest few)
    found = sorted((e["day"], p) for p in _PATTERN_NAMES for e in r[f"e_{p}"])
    if found:
        items = [f"{_PATTERN_NAMES[p]} on {_day(d, end)}" + (
            "" if "bull" in p or "bear" in p else f" ({'bullish' if p in _BULLISH else 'bearish'} signal)")
            for d, p in found[-4:]]
        text = pick(_PATTERNS_INTRO, "patterns").format(items=_series(items))
        if r["m_doji"]:
            text = text[:-1] + f", alongside {r['m_doji']} doji session{'s' if r['m_doji'] > 1 else ''} of indecision."
        parts.append(text)
    else:
        text = pick(_NO_PATTERNS, "patterns")
        if r["m_doji"]:
            text = text[:-1] + f", though {r['m_doji']} doji session{'s' if r['m_doji'] > 1 else ''} signalled indecision."
        parts.append(text)

    parts += _structure(r, end, px, lvl, pick)
    return " ".join(parts)


def _structure(r: dict, end, px, lvl, pick) -> list[str]:
    """Smart-money sentences: swings, breaks with their order blocks, gaps, pools and sweeps."""
    out = []
    swings = [("high", e) for e in r["e_sh"]] + [("low", e) for e in r["e_sl"]]
    if swings:
        swings.sort(key=lambda x: x[1]["day"])
        items = [f"a swing {kind} at {lvl(e['price'], e['factor'])} ({_day(e['when'], end)}, confirmed "
                 f"{_day(e['day'], end)})" for kind, e in swings[-3:]]
        out.append("Structure: " + _series(items) + ".")
    breaks = r["e_break"]
    for e in breaks[-3:]:
        up = (e["bos"] or e["choch"]) > 0
        kind = "change of character" if e["choch"] else "break of structure"
        s = (f"On {_day(e['day'], end)} a {'bullish' if up else 'bearish'} {kind}: the close of "
             f"{px(e['close'])} "
             f"{'cleared' if up else 'broke below'} the {lvl(e['level'], e['factor'])} swing "
             f"{'high' if up else 'low'} from {_day(e['when'], end)}")
        if e["ob"] and e["ob_top"] is not None:
            s += (f", leaving a {'bullish' if up else 'bearish'} order block at {lvl(e['ob_bottom'], e['factor'])}"
                  f" to {lvl(e['ob_top'], e['factor'])} (the {_day(e['ob_day'], end)} candle)")
        out.append(s + ".")
    if not breaks:
        out.append(pick(_NO_STRUCTURE, "nobreak"))
    ms = r["market_structure"]
    lb = r["_last_break"]
    if ms and lb is not None:
        out.append(f"Market structure was {'bullish' if ms > 0 else 'bearish'} at the close, the last break being a "
                   f"{lb['kind']} on {_day(lb['day'], end)}.")
    tests = r["e_ob_test"]
    if tests:
        bull = sum(e["bull"] for e in tests)
        bear = sum(e["bear"] for e in tests)
        bits = ([f"{bull} bullish" if bull else None] + [f"{bear} bearish" if bear else None])
        last = tests[-1]["day"]
        out.append(f"Price traded back into {' and '.join(b for b in bits if b)} order block"
                   f"{'s' if bull + bear > 1 else ''}, most recently on {_day(last, end)}.")
    gaps = r["e_fvg"]
    if gaps:
        up = sum(1 for e in gaps if e["kind"] > 0)
        g = gaps[-1]
        filled_later = {e["rec"] for e in r["e_fvg_fill_bull"] + r["e_fvg_fill_bear"]}
        state = "was filled before month-end" if g["day"] in filled_later else "was still open at the close"
        out.append(f"{len(gaps)} fair value gap{'s' if len(gaps) > 1 else ''} opened ({up} bullish, {len(gaps) - up} "
                   f"bearish); the latest, a {'bullish' if g['kind'] > 0 else 'bearish'} gap between "
                   f"{lvl(g['bottom'], g['factor'])} and {lvl(g['top'], g['factor'])} on {_day(g['day'], end)}, {state}.")
    fills = r["e_fvg_fill_bull"] + r["e_fvg_fill_bear"]
    if fills:
        n = sum(e["n"] for e in fills)
        last = max(fills, key=lambda e: e["day"])
        out.append(f"Price traded back into {n} earlier gap{'s' if n > 1 else ''}, the last on {_day(last['day'], end)} "
                   f"(a gap from {_day(last['rec'], end)}).")
    for e in r["e_pool"][-2:]:
        side = "equal highs" if e["kind"] > 0 else "equal lows"
        out.append(f"{side.capitalize()} near {lvl(e['level'], e['factor'])} (a swing on {_day(e['first'], end)}, "
                   f"matched by one confirmed {_day(e['day'], end)}) marked a pool of "
                   f"{'buy' if e['kind'] > 0 else 'sell'}-side liquidity.")
    for name, e_list in (("high", r["e_sweep_high"]), ("low", r["e_sweep_low"])):
        for e in e_list[-2:]:
            if e["level"] is None:
                continue
            closed_back = (e["close"] < e["level"]) if name == "high" else (e["close"] > e["level"])
            out.append(f"On {_day(e['day'], end)} price swept the {'equal highs' if name == 'high' else 'equal lows'} "
                       f"at {px(e['level'])}, " + ("closing back inside the range (a liquidity grab)."
                                                  if closed_back else "and closed beyond them (a breakout)."))
    return out
