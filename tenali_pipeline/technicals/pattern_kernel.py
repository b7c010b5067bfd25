"""The candlestick patterns of ``patterns`` as one compiled (numba) pass over the sorted bars.

Why: as polars expressions the twelve patterns cost three passes over the whole frame with about thirty
helper columns (0.37 CPU-s per million rows); here each bar is read once (about 0.05 CPU-s per million).

Exactness: every comparison reads the same floats the expressions of ``patterns`` compute, in the same order
(body, shadows, the 1e-9 x price margin, the 10-bar averages as polars' sliding Kahan sums, the trend's SMA 10),
and a condition that polars leaves null (an average still warming up) makes the pattern false, as
``fill_null(False)`` does, so the booleans are exactly ``patterns.add_patterns``' (tested on prices on a coarse
grid, where ties are common: ``tests/pipeline/test_technical_kernels.py``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .kernels import _rolling_mean

_EPS = 1e-9  # patterns._EPS
UP_BAND = 1 + _EPS  # the trend's bands around the SMA 10, as patterns computes them
DOWN_BAND = 1 - _EPS
AVG = 10  # bars in the trailing averages of body and range, and in the trend's SMA


@njit(cache=True, nogil=True)
def pattern_kernel(starts, o, h, l, c, use_trend):
    """``patterns.PATTERNS`` (in that order) as a (12, n) boolean array; ``starts``: each instrument's first row,
    then n. ``use_trend``: the ``trend`` parameter of ``add_patterns``."""
    n = c.size
    out = np.zeros((12, n), dtype=np.bool_)
    body = np.empty(n)
    rng = np.empty(n)
    for i in range(n):
        body[i] = abs(c[i] - o[i])
        rng[i] = h[i] - l[i]
    mean_body = np.empty(n)  # the mean of the 10 bars ending here; the average *before* bar i is mean_body[i-1]
    mean_range = np.empty(n)
    sma = np.empty(n)
    trend = np.zeros(n, dtype=np.int8)
    # per-bar candle properties
    bull = np.empty(n, dtype=np.bool_)
    bear = np.empty(n, dtype=np.bool_)
    long_body = np.empty(n, dtype=np.bool_)
    short_body = np.empty(n, dtype=np.bool_)
    soldier = np.empty(n, dtype=np.bool_)
    crow = np.empty(n, dtype=np.bool_)
    for g in range(starts.size - 1):
        a, b = starts[g], starts[g + 1]
        _rolling_mean(body, a, b, AVG, 0, mean_body)
        _rolling_mean(rng, a, b, AVG, 0, mean_range)
        _rolling_mean(c, a, b, AVG, 0, sma)
        for i in range(a, b):
            k = i - a  # bar number
            ci, oi = c[i], o[i]
            eps = _EPS * abs(ci)
            bd, rg = body[i], rng[i]
            top, bottom = max(oi, ci), min(oi, ci)
            upper, lower = h[i] - top, bottom - l[i]
            bull[i] = ci > oi
            bear[i] = ci < oi
            if k >= AVG - 1:
                s = sma[i]
                trend[i] = 1 if ci > s * UP_BAND else (-1 if ci < s * DOWN_BAND else 0)
            averaged = k >= AVG  # avg_body / avg_range exist (bars [10]..[1])
            if averaged:
                avg_body = mean_body[i - 1]
                long_body[i] = bd > avg_body + eps
                short_body[i] = avg_body > bd + eps
            else:
                long_body[i] = False
                short_body[i] = False
            ranged = rg > eps
            soldier[i] = bull[i] and 0.25 * bd > upper + eps
            crow[i] = bear[i] and 0.25 * bd > lower + eps
            # cdl_doji
            out[0, i] = averaged and ranged and 0.1 * mean_range[i - 1] >= bd - eps
            hammer = ranged and lower >= 2.0 * bd - eps and 0.1 * rg >= upper - eps
            star = ranged and upper >= 2.0 * bd - eps and 0.1 * rg >= lower - eps
            # the trend before a pattern of m candles: bar [m] (masked: the pattern needs bar >= m)
            if k >= 1:
                down1 = trend[i - 1] < 0 if use_trend else True
                up1 = trend[i - 1] > 0 if use_trend else True
                out[1, i] = hammer and down1
                out[2, i] = hammer and up1
                out[3, i] = star and up1
            elif not use_trend:  # without the trend the one-candle shapes need no earlier bar
                out[1, i] = hammer
                out[2, i] = hammer
                out[3, i] = star
            if k < 1 or (use_trend and k < 2):
                continue
            down2 = trend[i - 2] < 0 if use_trend else True
            up2 = trend[i - 2] > 0 if use_trend else True
            o1, c1 = o[i - 1], c[i - 1]
            out[4, i] = (bear[i - 1] and bull[i] and ci >= o1 and oi <= c1 and (ci > o1 or oi < c1) and down2)
            out[5, i] = (bull[i - 1] and bear[i] and oi >= c1 and ci <= o1 and (oi > c1 or ci < o1) and up2)
            if k >= AVG + 1:  # long_body[i-1] and short_body[i] are known
                out[6, i] = (long_body[i - 1] and bear[i - 1] and short_body[i] and top < o1 and bottom > c1
                             and down2)
                out[7, i] = (long_body[i - 1] and bull[i - 1] and short_body[i] and top < c1 and bottom > o1
                             and up2)
            if k < 2 or (use_trend and k < 3):
                continue
            down3 = trend[i - 3] < 0 if use_trend else True
            up3 = trend[i - 3] > 0 if use_trend else True
            o2, c2 = o[i - 2], c[i - 2]
            if k >= AVG + 2:  # long_body[i-2], short_body[i-1] and short_body[i] are known
                out[8, i] = (long_body[i - 2] and bear[i - 2] and short_body[i - 1] and max(o1, c1) < c2
                             and bull[i] and not short_body[i] and ci > c2 + 0.3 * body[i - 2] + eps and down3)
                out[9, i] = (long_body[i - 2] and bull[i - 2] and short_body[i - 1] and min(o1, c1) > c2
                             and bear[i] and not short_body[i] and ci < c2 - 0.3 * body[i - 2] - eps and up3)
            out[10, i] = (soldier[i] and soldier[i - 1] and soldier[i - 2] and ci > c1 and c1 > c2 and oi > o1
                          and oi <= c1 and o1 > o2 and o1 <= c2 and down3)
            out[11, i] = (crow[i] and crow[i - 1] and crow[i - 2] and ci < c1 and c1 < c2 and oi < o1
                          and oi >= c1 and o1 < o2 and o1 >= c2 and up3)
    return out
