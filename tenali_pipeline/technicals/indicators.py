"""Causal indicators over OHLCV bars, as polars expressions evaluated per instrument (``.over(by)``).

Every value at a bar uses only that bar and earlier ones, so text rendered from it never leaks the
future. Prices are the split/dividend-adjusted ones (``features.compute_features`` builds ``adj_open``,
``adj_high``, ``adj_low`` from ``adj_close / close``); bars are counted per instrument, so a missing
day (holiday, halt) is simply not a bar: a 20-bar window spans 20 bars, and ``ret_1d`` after a gap is
the return over the whole gap.

Conventions, and where the reference libraries disagree
-------------------------------------------------------
=================  ==========================================================================================
indicator          convention here (and how ``ta`` 0.11 / TA-Lib 0.8.2 differ)
=================  ==========================================================================================
SMA                simple rolling mean, null until the window is full (all agree).
EMA / MACD         ``ewm(span, adjust=False)`` seeded with the first price and null until ``span`` bars
                   (``ta`` identical). MACD 12/26, signal = EMA 9 of the MACD line started at its first
                   value, histogram = line - signal; identical to ``ta``. TA-Lib seeds each EMA with the SMA
                   of its first ``span`` values instead; the difference decays as (1 - 2/(span+1))^t.
RSI (14)           Wilder's original: average gain/loss seeded with the simple mean of the first 14 changes,
                   then ``avg += (x - avg)/14``; first value on the 15th bar (index 14). Identical to TA-Lib.
                   ``ta`` runs ``ewm(alpha=1/14, adjust=False)`` from a zero "change" on the first bar and
                   reports from index 13, so early values differ; after ~250 bars the gap is below 1e-6.
                   No losses in the window gives 100, a perfectly flat window 50.
ATR (14)           Wilder smoothing of the true range max(H-L, |H-C[-1]|, |L-C[-1]|) with the same SMA seed
                   as RSI: the first bar has no previous close, so the first ATR is the mean of the true
                   ranges of bars 1..14, reported on bar 14 (0-based). Identical to TA-Lib. ``ta`` seeds at
                   bar 13 with bars 0..13 (bar 0's TR = H-L) and reports 0 before; converged after warm-up
                   (relative gap < 1e-5 after 250 bars on the sample data).
Bollinger (20, 2)  SMA 20 +/- 2 population standard deviations (ddof=0) - ``ta`` and TA-Lib agree. ``bb_pct_b`` is
                   (close - lower) / (upper - lower), 0.5 when the bands have zero width.
Stochastic (14,3)  fast %K = 100 (C - LL14) / (HH14 - LL14), %D = SMA 3 of %K (``ta`` ``stoch`` /
                   ``stoch_signal``, TA-Lib ``STOCHF(14, 3)``). A zero-range window gives 50 (``ta``: NaN/inf,
                   TA-Lib: 0).
OBV                0 on an instrument's first bar, then +volume on an up close, -volume on a down close, 0 when
                   unchanged (Granville; TA-Lib starts at the first bar's volume instead, ``ta`` also
                   starts there and *adds* volume on an unchanged close). Missing volume (null or NaN, as
                   pandas writes it) counts as 0: a NaN would make every later OBV NaN.
Realised vol (20)  sample std (ddof=1) of 20 log returns x sqrt(periods_per_year): 252 (the default) for
                   equities' trading days; pass 365 for crypto's daily bars, or its "annualised" volatility
                   is that of 252 days (0.69 of a year) and reads about 17% low against an equity's.
VWAP               only for intraday bars: a session VWAP of the typical price (H+L+C)/3 weighted by volume,
                   reset at each calendar day of the time column, per instrument. It is reported from the
                   first time an instrument shows two bars on one calendar day (known to be intraday, causally);
                   a daily series never gets one (it would just be the typical price). Null while the
                   session's cumulative volume is 0.
=================  ==========================================================================================

Volume is used as reported (not split-adjusted): only OBV and VWAP read it, OBV's level is arbitrary and
VWAP's volume scale cancels.
"""

from __future__ import annotations

import polars as pl


def _idx() -> pl.Expr:
    return pl.int_range(pl.len())


def lag(x: pl.Expr, k: int, bar: pl.Expr | None = None) -> pl.Expr:
    """``x`` k bars earlier in the same instrument. With ``bar`` (the 0-based bar number per instrument) the
    shift runs on the whole frame, sorted by instrument and time, and is masked where it would reach into the
    previous instrument: exact, and much cheaper than a window expression. Without it, evaluate ``.over``."""
    return x.shift(k) if bar is None else pl.when(bar >= k).then(x.shift(k))


def rolling_extreme(x: pl.Expr, n: int, fn: str, bar: pl.Expr | None = None) -> pl.Expr:
    """Rolling max / min over n bars; with ``bar``, on the whole sorted frame and masked like ``lag``."""
    out = x.rolling_max(n) if fn == "max" else x.rolling_min(n)
    return out if bar is None else pl.when(bar >= n - 1).then(out)


def sma(x: pl.Expr, n: int) -> pl.Expr:
    return x.rolling_mean(n)


def ema(x: pl.Expr, span: int) -> pl.Expr:
    """EMA seeded with the first value, reported once ``span`` values have been seen (``ta`` convention)."""
    return x.ewm_mean(span=span, adjust=False, min_samples=span)


def wilder(x: pl.Expr, n: int, bar: pl.Expr | None = None) -> pl.Expr:
    """Wilder smoothing of a series whose first value is null (a change or a true range); evaluate ``.over``.

    Seeded with the simple mean of values 1..n and reported from bar n on (TA-Lib, Wilder 1978): the first
    n values are replaced by their mean, so ``ewm(alpha=1/n, adjust=False)`` sits on the seed at bar n and
    follows Wilder's recursion after it. Only bars up to n feed the seed, so it stays causal. ``bar``: the
    bar number within the instrument, if there is such a column (saves computing it)."""
    seeded = pl.when((_idx() if bar is None else bar).is_between(1, n)).then(x.slice(1, n).mean()).otherwise(x)
    return seeded.ewm_mean(alpha=1 / n, adjust=False, min_samples=n)


def rsi_from_averages(gain: pl.Expr, loss: pl.Expr) -> pl.Expr:
    # No losses: 100 if there were gains, 50 on a perfectly flat window (0/0), as most charting
    # packages show it.
    return (
        pl.when(loss == 0).then(pl.when(gain == 0).then(50.0).otherwise(100.0))
        .otherwise(100 - 100 / (1 + gain / loss))
    )


def rsi(close: pl.Expr, n: int = 14) -> pl.Expr:
    """RSI of a close series; evaluate ``.over``. (compute_features keeps the averages as columns instead.)"""
    delta = close.diff()
    return rsi_from_averages(wilder(delta.clip(lower_bound=0), n), wilder((-delta).clip(lower_bound=0), n))


def true_range(high: pl.Expr, low: pl.Expr, prev_close: pl.Expr) -> pl.Expr:
    """Null on an instrument's first bar (no previous close), as TA-Lib."""
    return pl.when(prev_close.is_not_null()).then(
        pl.max_horizontal(high - low, (high - prev_close).abs(), (low - prev_close).abs()))


def atr(high: pl.Expr, low: pl.Expr, close: pl.Expr, n: int = 14) -> pl.Expr:
    return wilder(true_range(high, low, close.shift(1)), n)


def stochastic_k(close: pl.Expr, highest: pl.Expr, lowest: pl.Expr) -> pl.Expr:
    """Fast %K from the window's highest high and lowest low; 50 for a zero-range window."""
    return pl.when(highest > lowest).then(100 * (close - lowest) / (highest - lowest)).when(highest.is_not_null()).then(50.0)


def obv_from_change(delta: pl.Expr, volume: pl.Expr) -> pl.Expr:
    return (delta.sign().fill_null(0) * volume.cast(pl.Float64).fill_nan(0).fill_null(0)).cum_sum()


def bollinger(mid: pl.Expr, std: pl.Expr, price: pl.Expr) -> dict[str, pl.Expr]:
    upper, lower = mid + 2 * std, mid - 2 * std
    return {"bb_upper": upper, "bb_lower": lower,
            "bb_pct_b": pl.when(upper > lower).then((price - lower) / (upper - lower)).when(upper.is_not_null()).then(0.5)}


def session_vwap(high: str = "adj_high", low: str = "adj_low", close: str = "adj_close",
                 volume: str = "volume") -> pl.Expr:
    """Cumulative VWAP of the typical price within a session; evaluate ``.over([instrument, day])``."""
    typical = (pl.col(high) + pl.col(low) + pl.col(close)) / 3
    v = pl.col(volume).cast(pl.Float64).fill_nan(0).fill_null(0)  # a NaN would poison the rest of the session
    cum_v = v.cum_sum()
    return pl.when(cum_v > 0).then((typical * v).cum_sum() / cum_v)


def add_indicators(df: pl.DataFrame, *, by: str, price: str = "adj_close", time: str = "date") -> pl.DataFrame:
    """Close-only indicators per ``by``: returns, SMAs, RSI, MACD, Bollinger, realised volatility.

    The subset of ``features.compute_features`` that needs only one price column; same conventions."""
    p = pl.col(price)
    out = df.sort(by, time).with_columns(**{k: e.over(by) for k, e in {
        "ret_1d": p / p.shift(1) - 1,
        "log_ret_1d": (p / p.shift(1)).log(),
        "realised_vol_20": (p / p.shift(1)).log().rolling_std(20) * (252**0.5),
        "sma_20": sma(p, 20),
        "sma_50": sma(p, 50),
        "sma_200": sma(p, 200),
        "rsi_14": rsi(p, 14),
        "macd": ema(p, 12) - ema(p, 26),
        "_std_20": p.rolling_std(20, ddof=0),
    }.items()})
    signal = pl.col("macd").ewm_mean(span=9, adjust=False, min_samples=9).over(by)
    out = out.with_columns(**bollinger(pl.col("sma_20"), pl.col("_std_20"), p), macd_signal=signal)
    return out.with_columns(macd_hist=pl.col("macd") - pl.col("macd_signal")).drop("_std_20")
