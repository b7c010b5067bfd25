"""Candlestick patterns on split-adjusted OHLC, as causal polars expressions per instrument.

``compute_features`` runs the same rules compiled (``pattern_kernel``, bit for bit these expressions); this module
states them and is the reference the kernel is tested against.

Each pattern is a boolean column that is true on the bar that *completes* it (the last candle), so a
note dated that bar can mention it and nothing earlier can. Prices are ``adj_open/high/low/close``
(raw OHLC times the snapped ``adj_close / close``, see features.py), so a split never shows as a giant
candle or a false gap. Sizes (body, shadows, averages) are compared with a margin of 1e-9 x price so
that ties on the price grid are decided the same way whatever the rounding of the adjustment.
A bar with zero range (a halt printed as O=H=L=C, often with zero volume) never forms a pattern.

Notation: for a bar, body = |C - O|, range = H - L, upper shadow = H - max(O, C), lower shadow =
min(O, C) - L; "[k]" is k bars earlier. Candle sizes are judged against the previous 10 bars, as
TA-Lib does: ``avg_body`` and ``avg_range`` are the means of body and range over bars [10]..[1].
A long body is > avg_body, a short body < avg_body, a doji body <= 0.1 x avg_range.

Trend context (causal): the trend before a pattern of m candles is read on the bar just before its
first candle, [m]: *up* if that close is above its 10-bar SMA, *down* if below. Reversal patterns
need the opposite prior trend; ``trend=False`` drops that condition (used to compare shapes with
TA-Lib, whose candle functions mostly ignore trend).

==============================  ===================================================================================
column                          the bar completing it, and what came before
==============================  ===================================================================================
cdl_doji                        doji body and range > 0 (TA-Lib CDLDOJI's rule; no trend).
cdl_hammer                      lower shadow >= 2 x body, upper shadow <= 0.1 x range, after a down trend.
cdl_hanging_man                 the hammer's shape after an up trend.
cdl_shooting_star               upper shadow >= 2 x body, lower shadow <= 0.1 x range, after an up trend.
cdl_engulfing_bull              [1] bearish, bar bullish, its body covers [1]'s body (one end may be equal, not both),
                                after a down trend.
cdl_engulfing_bear              mirror image after an up trend.
cdl_harami_bull                 [1] long bearish body, bar a short body strictly inside it, after a down trend.
cdl_harami_bear                 [1] long bullish body, bar a short body strictly inside it, after an up trend.
cdl_morning_star                [2] long bearish, [1] short body gapping below [2]'s body, bar bullish, not short,
                                closing above [2]'s close + 0.3 x [2]'s body (TA-Lib's rule), after a down trend.
cdl_evening_star                mirror image after an up trend.
cdl_three_white_soldiers        three bullish bars, each closing higher, each opening inside the previous body, each
                                with an upper shadow < 0.25 x its body, after a down trend.
cdl_three_black_crows           mirror image after an up trend.
==============================  ===================================================================================

Where TA-Lib differs (shape only, ``trend=False``): its hammer / hanging man also require the body
to be below / above the previous candle's extremes, judge shadows against trailing averages and only
ask the lower shadow to exceed the body (not twice it); its shooting star requires a gap up from the
previous body; its engulfing also accepts equal ends on both sides; its harami allows equal body
ends; its three white soldiers / black crows judge shadows and how near each open is to the previous
body against trailing averages. Agreement (both / either) on the bokeh sample, 5 stocks
2000-2013, 12,154 bars (``tests/pipeline/test_technical_references.py``, ``pytest -rP`` prints it):

    doji 1.00 (1,675 each) | engulfing bull 1.00, bear 0.97 | harami bull 0.98, bear 0.98 |
    morning star 0.96, evening star 1.00 | hammer 0.16, hanging man 0.24, shooting star 0.14 |
    three white soldiers 0.21 (16 vs 7), three black crows 0.14 (6 vs 2)
"""

from __future__ import annotations

import polars as pl

PATTERNS = ("cdl_doji", "cdl_hammer", "cdl_hanging_man", "cdl_shooting_star", "cdl_engulfing_bull",
            "cdl_engulfing_bear", "cdl_harami_bull", "cdl_harami_bear", "cdl_morning_star", "cdl_evening_star",
            "cdl_three_white_soldiers", "cdl_three_black_crows")

_HELPERS = ("_body", "_rng", "_upper", "_lower", "_avg_body", "_avg_range", "_trend", "_eps", "_bull", "_bear", "_long",
            "_short", "_top", "_bottom", "_hammer", "_star", "_soldier", "_crow", "_ranged")
# Bars each pattern looks back (with the trend condition, which reads the bar before the first candle).
_LOOKBACK = {"cdl_doji": 0, "cdl_hammer": 1, "cdl_hanging_man": 1, "cdl_shooting_star": 1, "cdl_engulfing_bull": 2,
             "cdl_engulfing_bear": 2, "cdl_harami_bull": 2, "cdl_harami_bear": 2, "cdl_morning_star": 3,
             "cdl_evening_star": 3, "cdl_three_white_soldiers": 3, "cdl_three_black_crows": 3}
_EPS = 1e-9  # relative margin for comparing sizes, see _candle_exprs


def _candle_exprs(o: pl.Expr, h: pl.Expr, l: pl.Expr, c: pl.Expr) -> dict[str, pl.Expr]:
    """Per-bar candle properties, from the sizes computed in the first pass.

    Sizes (body, shadows, averages) are differences of prices: they are compared with a margin of 1e-9 x
    price, so a tie on the price grid (a lower shadow exactly twice the body) is decided the same way
    whatever the rounding of the adjustment factor. Prices themselves are compared exactly (the snapped
    factor keeps equal raw prices equal)."""
    body, rng, upper, lower = pl.col("_body"), pl.col("_rng"), pl.col("_upper"), pl.col("_lower")
    avg_body, avg_range, eps = pl.col("_avg_body"), pl.col("_avg_range"), pl.col("_eps")

    def ge(a: pl.Expr, b: pl.Expr) -> pl.Expr:
        return a >= b - eps

    def gt(a: pl.Expr, b: pl.Expr) -> pl.Expr:
        return a > b + eps

    ranged = gt(rng, pl.lit(0.0))
    return {
        "_bull": c > o,
        "_bear": c < o,
        "_long": gt(body, avg_body),
        "_short": gt(avg_body, body),
        "_top": pl.max_horizontal(o, c),
        "_bottom": pl.min_horizontal(o, c),
        "_ranged": ranged,
        "_hammer": ranged & ge(lower, 2 * body) & ge(0.1 * rng, upper),
        "_star": ranged & ge(upper, 2 * body) & ge(0.1 * rng, lower),
        "_soldier": (c > o) & gt(0.25 * body, upper),
        "_crow": (c < o) & gt(0.25 * body, lower),
        "cdl_doji": ranged & ge(0.1 * avg_range, body),
    }


def _pattern_exprs(o: pl.Expr, c: pl.Expr, *, trend: bool) -> dict[str, pl.Expr]:
    """Multi-bar conditions on the candle columns; ``shift`` may cross instruments and is masked by the caller."""
    col = pl.col
    body, eps = col("_body"), col("_eps")
    bull, bear, long_body, short_body = col("_bull"), col("_bear"), col("_long"), col("_short")
    top, bottom = col("_top"), col("_bottom")

    def down(m: int) -> pl.Expr:
        return col("_trend").shift(m) < 0 if trend else pl.lit(True)

    def up(m: int) -> pl.Expr:
        return col("_trend").shift(m) > 0 if trend else pl.lit(True)

    def s(x: pl.Expr, k: int) -> pl.Expr:
        return x.shift(k)

    soldier, crow = col("_soldier"), col("_crow")
    return {
        "cdl_hammer": col("_hammer") & down(1),
        "cdl_hanging_man": col("_hammer") & up(1),
        "cdl_shooting_star": col("_star") & up(1),
        "cdl_engulfing_bull": s(bear, 1) & bull & (c >= s(o, 1)) & (o <= s(c, 1)) & ((c > s(o, 1)) | (o < s(c, 1)))
        & down(2),
        "cdl_engulfing_bear": s(bull, 1) & bear & (o >= s(c, 1)) & (c <= s(o, 1)) & ((o > s(c, 1)) | (c < s(o, 1)))
        & up(2),
        "cdl_harami_bull": s(long_body, 1) & s(bear, 1) & short_body & (top < s(o, 1)) & (bottom > s(c, 1)) & down(2),
        "cdl_harami_bear": s(long_body, 1) & s(bull, 1) & short_body & (top < s(c, 1)) & (bottom > s(o, 1)) & up(2),
        "cdl_morning_star": s(long_body, 2) & s(bear, 2) & s(short_body, 1) & (s(top, 1) < s(c, 2)) & bull & ~short_body
        & (c > s(c, 2) + 0.3 * s(body, 2) + eps) & down(3),
        "cdl_evening_star": s(long_body, 2) & s(bull, 2) & s(short_body, 1) & (s(bottom, 1) > s(c, 2)) & bear & ~short_body
        & (c < s(c, 2) - 0.3 * s(body, 2) - eps) & up(3),
        "cdl_three_white_soldiers": soldier & s(soldier, 1) & s(soldier, 2) & (c > s(c, 1)) & (s(c, 1) > s(c, 2))
        & (o > s(o, 1)) & (o <= s(c, 1)) & (s(o, 1) > s(o, 2)) & (s(o, 1) <= s(c, 2)) & down(3),
        "cdl_three_black_crows": crow & s(crow, 1) & s(crow, 2) & (c < s(c, 1)) & (s(c, 1) < s(c, 2))
        & (o < s(o, 1)) & (o >= s(c, 1)) & (s(o, 1) < s(o, 2)) & (s(o, 1) >= s(c, 2)) & up(3),
    }


def add_patterns(df: pl.DataFrame, *, by: str, trend: bool = True, open_: str = "adj_open", high: str = "adj_high",
                 low: str = "adj_low", close: str = "adj_close") -> pl.DataFrame:
    """Add the ``PATTERNS`` columns (booleans, never null) to ``df`` sorted by ``by`` and time.

    Trailing averages and the trend run ``.over(by)``; the candle comparisons shift the whole sorted frame
    and are masked on each instrument's first bars (``bar_index`` below the pattern's look-back)."""
    o, h, l, c = pl.col(open_), pl.col(high), pl.col(low), pl.col(close)
    temp_bar = "bar_index" not in df.columns
    if temp_bar:
        df = df.with_columns(bar_index=pl.int_range(pl.len()).over(by))
    body, rng = (c - o).abs(), h - l
    sma10 = c.rolling_mean(10)
    out = df.with_columns(_body=body, _rng=rng, _upper=h - pl.max_horizontal(o, c), _lower=pl.min_horizontal(o, c) - l,
                          _eps=_EPS * c.abs(),
                          **{k: e.over(by) for k, e in {
                              "_avg_body": body.shift(1).rolling_mean(10),
                              "_avg_range": rng.shift(1).rolling_mean(10),
                              "_trend": pl.when(c > sma10 * (1 + _EPS)).then(1).when(c < sma10 * (1 - _EPS)).then(-1)
                              .otherwise(0),
                          }.items()})
    out = out.with_columns(**_candle_exprs(o, h, l, c))
    bar = pl.col("bar_index")
    exprs = {"cdl_doji": pl.col("cdl_doji"), **_pattern_exprs(o, c, trend=trend)}
    out = out.with_columns(**{k: ((bar >= _LOOKBACK[k] - (0 if trend or k == "cdl_doji" else 1)) & e).fill_null(False)
                              for k, e in exprs.items()})
    return out.drop(*_HELPERS, *(["bar_index"] if temp_bar else []))
