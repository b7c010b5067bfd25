"""The polars-expression implementation of one batch's features: the reference the compiled path is tested against.

``batch.feature_columns`` (the kernels) must give exactly this frame, bit for bit
(``tests/pipeline/test_technical_kernels.py``); it is slower (about 1.8 against 0.6 CPU-seconds per million rows)
and easier to read: each column is the expression of ``indicators``, ``patterns`` or ``smc``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from . import indicators as ind
from . import kernels
from .batch import LEVEL_COLUMNS, prepare
from .patterns import add_patterns
from .smc import add_smc


def reference_features(part: pl.DataFrame, *, by: str, time_col: str, has_adj: bool, order: list[str],
                       swing_length: int = 5, liquidity_tolerance: float = 0.1, liquidity_lookback: int = 3,
                       periods_per_year: int = 252, trend: bool = True) -> pl.DataFrame:
    """Every feature for ``part`` (whole instruments, sorted by instrument and time), with polars expressions."""
    part = prepare(part, by=by, time_col=time_col, has_adj=has_adj)
    by = "_gid"
    part = _add_indicators(part, by=by, time_col=time_col, periods_per_year=periods_per_year)
    part = add_patterns(part, by=by, trend=trend)
    part = add_smc(part, by=by, time=time_col, swing_length=swing_length, liquidity_tolerance=liquidity_tolerance,
                   liquidity_lookback=liquidity_lookback)
    part = part.with_columns([pl.col(c) / pl.col("adj_factor") for c in LEVEL_COLUMNS])
    if has_adj:
        part = part.with_columns(adj_close=pl.col("adj_close__input"))
    return part.select(order)


def _add_indicators(df: pl.DataFrame, *, by: str, time_col: str, periods_per_year: int) -> pl.DataFrame:
    """The indicators of ``COLUMNS``: shifts and rolling extrema on the whole sorted frame (masked at
    instrument boundaries), the recurrences and moving averages in one compiled pass per instrument
    (``kernels.indicator_kernel``, bit for bit the polars expressions of ``indicators``), the two rolling
    standard deviations ``.over(by)``, then plain arithmetic."""
    bar = pl.col("bar_index")
    h, l, c = pl.col("adj_high"), pl.col("adj_low"), pl.col("adj_close")
    df = df.with_columns(_prev_c=ind.lag(c, 1, bar), _hh=ind.rolling_extreme(h, 14, "max", bar),
                         _ll=ind.rolling_extreme(l, 14, "min", bar))
    prev_c = pl.col("_prev_c")
    df = df.with_columns(
        ret_1d=c / prev_c - 1,
        log_ret_1d=(c / prev_c).log(),
        stoch_k=ind.stochastic_k(c, pl.col("_hh"), pl.col("_ll")),
        _delta=c - prev_c,
        _tr=ind.true_range(h, l, prev_c),
    )
    bars = df["bar_index"].to_numpy()
    starts = np.append(np.flatnonzero(bars == 0), bars.size).astype(np.int64)
    out = kernels.indicator_kernel(starts, df["adj_close"].to_numpy(), df["_delta"].to_numpy(), df["_tr"].to_numpy(),
                                   df["volume"].cast(pl.Float64).fill_nan(0).fill_null(0).to_numpy())
    computed = {name: pl.Series(out[i]) if warm == 0 else pl.when(bar >= warm).then(pl.Series(out[i]))
                for i, (name, warm) in enumerate(zip(kernels.INDICATOR_ROWS, kernels.INDICATOR_WARMUP))}
    del out
    df = df.with_columns(
        realised_vol_20=(pl.col("log_ret_1d").rolling_std(20) * (periods_per_year**0.5)).over(by),
        _std_20=c.rolling_std(20, ddof=0).over(by),
        **computed,
    )
    k = pl.col("stoch_k")  # %D: the mean of three %K values, all of this instrument from bar 15 on
    df = df.with_columns(stoch_d=pl.when(bar >= 15).then((k + k.shift(1) + k.shift(2)) / 3),
                         rsi_14=ind.rsi_from_averages(pl.col("_gain"), pl.col("_loss")),
                         macd_hist=pl.col("macd") - pl.col("macd_signal"),
                         **ind.bollinger(pl.col("sma_20"), pl.col("_std_20"), c))
    t = pl.col(time_col)
    if isinstance(df.schema[time_col], pl.Datetime):
        day = t.dt.date()
        intraday_so_far = (day == day.shift(1)).fill_null(False).cum_max().over(by)
        df = df.with_columns(_day=day).with_columns(
            vwap=pl.when(intraday_so_far).then(ind.session_vwap().over(by, "_day"))).drop("_day")
    else:
        df = df.with_columns(vwap=pl.lit(None, dtype=pl.Float64))
    return df.drop("_prev_c", "_hh", "_ll", "_delta", "_tr", "_std_20", "_gain", "_loss")
