"""Swings, fair value gaps, breaks of structure and order blocks (``smc``) as one compiled (numba) pass.

Why: as polars expressions (shifts, forward fills, "first in segment" cumulative sums) and numpy range searches
these cost about 0.55 CPU-s per million rows; one loop over each instrument's bars, keeping the current swing
high / low and whether it was broken yet, does the same in about 0.03.

Exactness: no arithmetic, only comparisons of the adjusted prices, so every flag, code and price is exactly what
``smc.add_smc``'s expressions give (its module docstring states the rules; ``tests/pipeline/test_technical_smc.py``
checks them against a bar-by-bar reference, ``test_technical_kernels.py`` against the expressions).
The order-block candle is searched bar by bar between the broken swing and the break: each swing is broken at most
once and only while it is the current one, so the searches add up to about one pass.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def structure_kernel(starts, o, h, l, c, swing_length):
    """Per row (``starts``: each instrument's first row, then n; ``swing_length`` >= 1):

    - ``flags`` (2, n) bool: swing high / swing low confirmed on this bar;
    - ``codes`` (5, n) int8: fvg, bos, choch, market_structure, ob;
    - ``prices`` (3, n) float, NaN where none: fvg_top, fvg_bottom, structure_level (the swings' prices and the
      order-block candle's high and low are read through ``rows``);
    - ``rows`` (4, n) int64, -1 where none: the confirmed swing-high bar, the confirmed swing-low bar, the broken
      swing's bar (structure_swing_date), the order-block candle.
    """
    n = c.size
    L = swing_length
    flags = np.zeros((2, n), dtype=np.bool_)
    codes = np.zeros((5, n), dtype=np.int8)
    prices = np.full((3, n), np.nan)
    rows = np.full((4, n), -1, dtype=np.int64)
    for g in range(starts.size - 1):
        a, b = starts[g], starts[g + 1]
        sh = -1  # row of the current (latest confirmed) swing-high bar
        sl = -1
        up_done = False  # the current swing high was already closed above
        dn_done = False
        trend = 0
        for i in range(a, b):
            k = i - a
            if k >= 2 * L:
                s = i - L
                hs, ls = h[s], l[s]
                is_high = True
                is_low = True
                for j in range(s - L, s):  # strictly beyond the L bars before
                    if not h[j] < hs:
                        is_high = False
                    if not l[j] > ls:
                        is_low = False
                for j in range(s + 1, i + 1):  # at least the L bars after
                    if not hs >= h[j]:
                        is_high = False
                    if not ls <= l[j]:
                        is_low = False
                if is_high:
                    flags[0, i] = True
                    rows[0, i] = s
                    sh = s
                    up_done = False
                if is_low:
                    flags[1, i] = True
                    rows[1, i] = s
                    sl = s
                    dn_done = False
            if k >= 2:
                if h[i - 2] < l[i] and c[i - 1] > o[i - 1]:
                    codes[0, i] = 1
                    prices[0, i] = l[i]
                    prices[1, i] = h[i - 2]
                elif l[i - 2] > h[i] and c[i - 1] < o[i - 1]:
                    codes[0, i] = -1
                    prices[0, i] = l[i - 2]
                    prices[1, i] = h[i]
            up = False
            dn = False
            if sh >= 0 and not up_done and c[i] > h[sh]:
                up = True
                up_done = True
            if sl >= 0 and not dn_done and c[i] < l[sl]:
                dn = True
                dn_done = True
            bull = up and not dn
            bear = dn and not up
            prev = trend
            if bull:
                trend = 1
            elif bear:
                trend = -1
            codes[3, i] = trend
            if bull:
                codes[1, i] = 1 if prev >= 0 else 0
                codes[2, i] = 1 if prev < 0 else 0
                codes[4, i] = 1
                prices[2, i] = h[sh]
                rows[2, i] = sh
                best = -1  # the lowest low strictly between the swing bar and the break, the last on ties
                for j in range(sh + 1, i):
                    if best < 0 or l[j] <= l[best]:
                        best = j
                rows[3, i] = best
            elif bear:
                codes[1, i] = -1 if prev <= 0 else 0
                codes[2, i] = -1 if prev > 0 else 0
                codes[4, i] = -1
                prices[2, i] = l[sl]
                rows[2, i] = sl
                best = -1  # the highest high, the last on ties
                for j in range(sl + 1, i):
                    if best < 0 or h[j] >= h[best]:
                        best = j
                rows[3, i] = best
    return flags, codes, prices, rows
