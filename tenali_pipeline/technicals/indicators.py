"""Causal indicators over daily OHLCV, grouped per instrument.

Every value at a bar uses only that bar and earlier ones, so text rendered from it never leaks the
future. Conventions: RSI uses Wilder's smoothing (``ewm_mean(alpha=1/n, adjust=False)``), Bollinger
Bands the population standard deviation (ddof=0), as TA-Lib and most charting packages do.
Returns are computed on the adjusted close so splits and dividends do not show as moves.
"""

from __future__ import annotations

import polars as pl


def rsi(close: pl.Expr, n: int = 14) -> pl.Expr:
    delta = close.diff()
    gain = delta.clip(lower_bound=0).ewm_mean(alpha=1 / n, adjust=False, min_samples=n)
    loss = (-delta).clip(lower_bound=0).ewm_mean(alpha=1 / n, adjust=False, min_samples=n)
    # No losses: 100 if there were gains, 50 on a perfectly flat window (0/0), as most charting
    # packages show it.
    return (
        pl.when(loss == 0).then(pl.when(gain == 0).then(50.0).otherwise(100.0))
        .otherwise(100 - 100 / (1 + gain / loss))
    )


def add_indicators(df: pl.DataFrame, *, by: str, price: str = "adj_close", time: str = "date") -> pl.DataFrame:
    """Add returns, moving averages, RSI, MACD, Bollinger Bands and realised volatility per `by`."""
    p = pl.col(price)
    ema12 = p.ewm_mean(span=12, adjust=False)
    ema26 = p.ewm_mean(span=26, adjust=False)
    sma20 = p.rolling_mean(20)
    std20 = p.rolling_std(20, ddof=0)
    out = df.sort(by, time).with_columns(
        ret_1d=(p / p.shift(1) - 1).over(by),
        log_ret_1d=(p / p.shift(1)).log().over(by),
        sma_20=sma20.over(by),
        sma_50=p.rolling_mean(50).over(by),
        sma_200=p.rolling_mean(200).over(by),
        rsi_14=rsi(p, 14).over(by),
        macd=(ema12 - ema26).over(by),
        bb_upper=(sma20 + 2 * std20).over(by),
        bb_lower=(sma20 - 2 * std20).over(by),
    )
    return out.with_columns(
        macd_signal=pl.col("macd").ewm_mean(span=9, adjust=False).over(by),
        realised_vol_20=(pl.col("log_ret_1d").rolling_std(20) * (252**0.5)).over(by),
    ).with_columns(macd_hist=pl.col("macd") - pl.col("macd_signal"))
