"""Compiled (numba) kernels for the sequential parts of the technical features.

Why: recurrences (EMA, Wilder smoothing, OBV) and state machines (the first later bar that trades into a
gap, block or pool; equal-high / equal-low pools) are one pass over an instrument's bars, but as polars
window expressions or numpy range searches they cost several passes over the whole frame each. Here each
runs as one loop over the sorted rows, instrument by instrument (``starts``: each instrument's first row,
then the number of rows), without the GIL.

Exactness: every kernel reproduces the float operations of the polars expression it replaces, in the same
order, so the output is bit for bit the same (``tests/pipeline/test_technical_kernels.py`` compares each one
with the polars expression, and the whole feature frame with the previous implementation):

- ``rolling_mean``: polars' sliding Kahan sum (separate compensations for the values leaving and entering
  the window, leaving ones first), divided by the window length;
- ``ewm_mean``: polars' ``ewm_mean(adjust=False)`` update ``m += (x - m) * (alpha / ((1 - alpha) + alpha))``
  from the first value on, reported from ``min_samples`` values;
- ``wilder``: ``indicators.wilder``: the left-to-right mean of values 1..n as the seed, then the EWM above.

Nulls are NaN here (warm-up rows); the callers mask them back to nulls by bar number (a missing volume,
null or NaN, reaches OBV as 0).

Also here: the snapped adjustment factor, returns / true range / stochastic (``price_kernel``) and RSI / MACD
histogram / Bollinger (``oscillator_kernel``); the candlestick patterns and the market structure have their own
modules (``pattern_kernel``, ``structure_kernel``); ``batch`` assembles the columns. One polars habit to copy:
it evaluates ``x / 3`` (a division by a literal) as ``x * (1 / 3)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# ---- per-instrument helpers (rows a..b-1 of one instrument) ----------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _rolling_mean(x, a, b, w, skip, out):
    """Mean of the last ``w`` values from row a + skip on (earlier rows: NaN), as polars' rolling_mean."""
    s = 0.0
    err_add = 0.0
    err_sub = 0.0
    st = a + skip
    for i in range(a, min(b, st + w - 1)):
        out[i] = np.nan
    for i in range(st, b):
        if i - st >= w:
            y = -x[i - w] - err_sub
            t = s + y
            err_sub = (t - s) - y
            s = t
        y = x[i] - err_add
        t = s + y
        err_add = (t - s) - y
        s = t
        if i - st >= w - 1:
            out[i] = s / w


@njit(cache=True, nogil=True, inline="always")
def _ewm(x, a, b, alpha, min_samples, skip, out):
    """polars ``ewm_mean(alpha, adjust=False, min_samples)`` of x[a + skip:b] (earlier rows: NaN)."""
    st = a + skip
    m = 0.0
    for i in range(a, b):
        if i < st:
            out[i] = np.nan
            continue
        if i == st:
            m = x[i]
        else:
            old = 1.0 * (1.0 - alpha)
            m = m + (x[i] - m) * (alpha / (old + alpha))
        out[i] = m if i - st + 1 >= min_samples else np.nan


@njit(cache=True, nogil=True, inline="always")
def _wilder(x, a, b, n, out):
    """``indicators.wilder``: x[a] is null; seed = mean of x[a+1..a+n] (left to right), reported at row a + n,
    then ``ewm(alpha=1/n, adjust=False)`` (whose updates through the n copies of the seed leave it unchanged)."""
    for i in range(a, min(b, a + n)):
        out[i] = np.nan
    if b - a <= n:
        return
    alpha = 1.0 / n
    s = 0.0
    for i in range(a + 1, a + n + 1):
        s += x[i]
    m = s / n
    for _ in range(a + 2, a + n + 1):  # the seed's own updates, as the EWM sees n equal values
        old = 1.0 * (1.0 - alpha)
        m = m + (m - m) * (alpha / (old + alpha))
    out[a + n] = m
    for i in range(a + n + 1, b):
        old = 1.0 * (1.0 - alpha)
        m = m + (x[i] - m) * (alpha / (old + alpha))
        out[i] = m


# ---- indicators -------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def indicator_kernel(starts, close, delta, tr, volume):
    """SMA 20/50/200, EMA 12/26/50, the MACD signal, Wilder gain / loss / ATR 14 and OBV, per instrument.

    ``delta`` (close change) and ``tr`` (true range) are NaN on each instrument's first bar; ``volume`` has
    nulls and NaNs as 0. Returns a (12, n) array in the order of ``INDICATOR_ROWS``."""
    n = close.size
    out = np.empty((12, n))
    for g in range(starts.size - 1):
        a, b = starts[g], starts[g + 1]
        _rolling_mean(close, a, b, 20, 0, out[0])
        _rolling_mean(close, a, b, 50, 0, out[1])
        _rolling_mean(close, a, b, 200, 0, out[2])
        _ewm(close, a, b, 2.0 / 13.0, 12, 0, out[3])
        _ewm(close, a, b, 2.0 / 27.0, 26, 0, out[4])
        _ewm(close, a, b, 2.0 / 51.0, 50, 0, out[5])
        for i in range(a, b):
            out[6, i] = out[3, i] - out[4, i]  # MACD line (NaN until EMA 26 exists)
        _ewm(out[6], a, b, 2.0 / 10.0, 9, 25, out[7])
        for i in range(a, b):
            d = delta[i]
            out[11, i] = d if d > 0.0 else 0.0  # gain, then loss, scratch rows
            out[10, i] = -d if -d > 0.0 else 0.0
        _wilder(out[11], a, b, 14, out[8])
        _wilder(out[10], a, b, 14, out[9])
        _wilder(tr, a, b, 14, out[10])
        if b > a:
            obv = 0.0 * volume[a]  # the first bar has no change: sign 0 (NaN if its volume is NaN)
            out[11, a] = obv
            for i in range(a + 1, b):
                d = delta[i]
                obv += (1.0 if d > 0.0 else (-1.0 if d < 0.0 else 0.0)) * volume[i]
                out[11, i] = obv
    return out


INDICATOR_ROWS = ("sma_20", "sma_50", "sma_200", "ema_12", "ema_26", "ema_50", "macd", "macd_signal",
                  "_gain", "_loss", "atr_14", "obv")
# the first bar (within its instrument) where each row is defined
INDICATOR_WARMUP = (19, 49, 199, 11, 25, 49, 25, 33, 14, 14, 14, 0)


# ---- smart-money concepts -----------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _push(keys, vals, size, key, val):
    """Max-heap on ``keys`` (ties: any order; every popped object is counted, so the order never matters)."""
    i = size
    keys[i] = key
    vals[i] = val
    while i > 0:
        p = (i - 1) >> 1
        if keys[p] >= keys[i]:
            break
        keys[p], keys[i] = keys[i], keys[p]
        vals[p], vals[i] = vals[i], vals[p]
        i = p
    return size + 1


@njit(cache=True, nogil=True, inline="always")
def _pop(keys, vals, size):
    size -= 1
    keys[0] = keys[size]
    vals[0] = vals[size]
    i = 0
    while True:
        left = 2 * i + 1
        if left >= size:
            break
        c = left
        if left + 1 < size and keys[left + 1] > keys[left]:
            c = left + 1
        if keys[i] >= keys[c]:
            break
        keys[c], keys[i] = keys[i], keys[c]
        vals[c], vals[i] = vals[i], vals[c]
        i = c
    return size


@njit(cache=True, nogil=True)
def resolution_kernel(starts, values, created, level, strict, below):
    """Objects created on rows where ``created`` (at ``level``) resolve on the first later row of their
    instrument whose ``values`` reach the level: ``values <= level`` when ``below`` (``<`` where ``strict``),
    else ``values >= level`` (``>``). Returns, per row, how many resolved there and the latest creating row
    among them (-1: none). Each object is pushed on a heap once and popped once: O(n log n)."""
    n = values.size
    count = np.zeros(n, dtype=np.int32)
    latest = np.full(n, -1, dtype=np.int64)
    keys = np.empty(n)
    vals = np.empty(n, dtype=np.int64)
    sign = 1.0 if below else -1.0  # reached from below: a max-heap of -level
    for g in range(starts.size - 1):
        a, b = starts[g], starts[g + 1]
        size = 0
        for j in range(a, b):
            v = sign * values[j]
            while size > 0 and (keys[0] > v if strict else keys[0] >= v):
                src = vals[0]
                count[j] += 1
                if src > latest[j]:
                    latest[j] = src
                size = _pop(keys, vals, size)
            if created[j] and not np.isnan(level[j]):  # a NaN level is never reached
                size = _push(keys, vals, size, sign * level[j], j)
    return count, latest


@njit(cache=True, nogil=True)
def liquidity_kernel(starts, is_swing, price, tol, lookback, highs):
    """Pools of equal swing highs (``highs``) or lows: on each confirmation row, the nearest of the previous
    ``lookback`` swings of the instrument within ``tol`` (NaN: none) whose level was not taken out by a swing
    in between. Returns (pool level, row of the earlier swing), NaN / -1 where no pool."""
    n = price.size
    level = np.full(n, np.nan)
    earlier = np.full(n, -1, dtype=np.int64)
    prev_rows = np.empty(lookback, dtype=np.int64)
    for g in range(starts.size - 1):
        a, b = starts[g], starts[g + 1]
        seen = 0  # swings of this instrument so far, the latest at prev_rows[(seen - 1) % lookback]
        for r in range(a, b):
            if not is_swing[r]:
                continue
            p, t = price[r], tol[r]
            between = 0.0
            for k in range(1, min(lookback, seen) + 1):
                q = prev_rows[(seen - k) % lookback]
                pk = price[q]
                edge = max(p, pk) if highs else min(p, pk)
                untaken = True
                if k > 1:
                    untaken = (between - edge <= 0.0) if highs else (edge - between <= 0.0)
                if abs(p - pk) <= t and untaken:
                    level[r] = edge
                    earlier[r] = q
                    break
                if k == 1:
                    between = pk
                else:
                    between = max(between, pk) if highs else min(between, pk)
            prev_rows[seen % lookback] = r
            seen += 1
    return level, earlier


# ---- bookkeeping and the rest of the indicators -----------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def snap_factor(first, raw, noise):
    """The adjustment factor, snapped: ``raw[i]`` where an instrument starts (``first``) or where
    ``|raw[i] / raw[i-1] - 1| > noise``, else the previous bar's factor (so float noise in adj_close never moves it)."""
    n = raw.size
    out = np.empty(n)
    for i in range(n):
        if first[i] or abs(raw[i] / raw[i - 1] - 1) > noise:
            out[i] = raw[i]
        else:
            out[i] = out[i - 1]
    return out


@njit(cache=True, nogil=True)
def gather(values, at):
    """``values[at]``, 0 where ``at`` is -1 (the caller masks those rows to null)."""
    out = np.zeros(at.size, dtype=values.dtype)
    for i in range(at.size):
        if at[i] >= 0:
            out[i] = values[at[i]]
    return out


@njit(cache=True, nogil=True)
def price_kernel(starts, high, low, close):
    """Per instrument, from the previous close and the 14-bar extremes: ``PRICE_ROWS`` as a (6, n) array, NaN where
    ``features`` reports null (``PRICE_WARMUP``). The float operations are those of ``indicators``' expressions
    (``c / prev - 1``, ``log(c / prev)``, ``100 * (c - ll) / (hh - ll)``, ``(k + k[1] + k[2]) / 3``, which polars
    evaluates as a product with 1/3, the true range
    as the largest of ``h - l``, ``|h - prev|``, ``|l - prev|``), so the values are theirs bit for bit."""
    n = close.size
    out = np.full((6, n), np.nan)
    for g in range(starts.size - 1):
        a, b = starts[g], starts[g + 1]
        for i in range(a + 1, b):
            c, prev = close[i], close[i - 1]
            ratio = c / prev
            out[0, i] = ratio - 1
            out[1, i] = np.log(ratio)
            out[2, i] = c - prev
            h, lo = high[i], low[i]
            out[3, i] = max(h - lo, abs(h - prev), abs(lo - prev))
        for i in range(a + 13, b):
            hh = high[i]
            ll = low[i]
            for j in range(i - 13, i):
                hh = max(hh, high[j])
                ll = min(ll, low[j])
            out[4, i] = 100 * (close[i] - ll) / (hh - ll) if hh > ll else 50.0
        for i in range(a + 15, b):
            out[5, i] = (out[4, i] + out[4, i - 1] + out[4, i - 2]) * (1.0 / 3.0)  # polars' "/ 3" multiplies
    return out


PRICE_ROWS = ("ret_1d", "log_ret_1d", "_delta", "_tr", "stoch_k", "stoch_d")
PRICE_WARMUP = (1, 1, 1, 1, 13, 15)


@njit(cache=True, nogil=True)
def oscillator_kernel(close, gain, loss, macd, signal, mid, std):
    """RSI from the Wilder averages, the MACD histogram and the Bollinger bands (``OSCILLATOR_ROWS``), row by row,
    as ``indicators.rsi_from_averages`` / ``bollinger`` compute them; NaN inputs (warm-up) give NaN."""
    n = close.size
    out = np.full((5, n), np.nan)
    for i in range(n):
        g, lo = gain[i], loss[i]
        if not (np.isnan(g) or np.isnan(lo)):
            out[0, i] = (50.0 if g == 0 else 100.0) if lo == 0 else 100 - 100 / (1 + g / lo)
        out[1, i] = macd[i] - signal[i]
        m, s = mid[i], std[i]
        if not (np.isnan(m) or np.isnan(s)):
            upper, lower = m + 2 * s, m - 2 * s
            out[2, i] = upper
            out[3, i] = lower
            out[4, i] = (close[i] - lower) / (upper - lower) if upper > lower else 0.5
    return out


OSCILLATOR_ROWS = ("rsi_14", "macd_hist", "bb_upper", "bb_lower", "bb_pct_b")
