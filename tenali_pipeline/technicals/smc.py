"""Smart-money concepts (market structure) on split-adjusted OHLC, causal by construction.

Every event is stamped on the bar at whose close it became knowable, never earlier; where an event
refers to an earlier bar (the swing bar, the candle of an order block, the bar that recorded a gap),
that bar's index / date / price are recorded in columns, so text can say "a swing high of $105.20
formed on March 3 (confirmed March 10)". Bars are counted per instrument (a missing day is not a
bar). ``L`` is ``swing_length`` (5 by default).

Swings. Bar s is a swing high if its high is strictly above the L highs before it and at least the
L highs after it (ties: the first of equal highs wins); swing lows mirror that. It is only known at
s + L, so ``swing_high`` is true on bar s + L and ``swing_high_index`` / ``_date`` / ``_price`` give
bar s. ``smartmoneyconcepts.swing_highs_lows`` marks bar s itself (looking L bars ahead), uses L-1
bars before and L after, then drops the lower of two consecutive highs (which needs the next swing,
i.e. more future) and forces marks on the first and last bars; compare it only after shifting by L.

Structure. The *current* swing high is the latest confirmed one. The first close above it is a
bullish break (once per swing); the first close below the current swing low a bearish break. A
break in the direction of the prevailing structure (the direction of the previous break) is a
break of structure (``bos`` = +1/-1); against it, a change of character (``choch`` = +1/-1); the
first break of an instrument counts as a BOS. ``market_structure`` is the direction of the latest
break (0 before any). ``structure_level`` / ``structure_swing_date`` are the broken swing's price
and bar date. (``smartmoneyconcepts.bos_choch`` instead reads patterns of four swings and keeps
only breaks it later sees confirmed, i.e. it uses the future.)

Order blocks. On a bullish break of swing high s at bar t, the order block is the candle with the
lowest low in (s, t) (the last one on ties), as in LuxAlgo / smartmoneyconcepts: ``ob`` = +1 on bar t
with ``ob_top`` / ``ob_bottom`` = that candle's high / low and ``ob_date`` its date. Bearish: the
highest high in (s, t) of a broken swing low, ``ob`` = -1. A bullish block is mitigated on the first
later bar whose low trades into it (low <= top), a bearish one when high >= bottom.

Fair value gaps. Three candles i-2, i-1, i with high[i-2] < low[i] and a bullish middle candle form a
bullish gap (bottom = high[i-2], top = low[i]); low[i-2] > high[i] with a bearish middle candle a
bearish one (top = low[i-2], bottom = high[i]). ``fvg`` is stamped on bar i, which completes it
(smartmoneyconcepts stamps the middle candle, one bar early; otherwise identical). A bullish gap is
mitigated on the first bar after i whose low <= its top (price trades back into it), a bearish one
when high >= its bottom - the same rule as smartmoneyconcepts' ``MitigatedIndex``.

Liquidity. When a swing high is confirmed within ``liquidity_tolerance`` x ATR(14) (at the
confirmation bar) of one of the previous ``liquidity_lookback`` swing highs, and no swing high in
between rose above the higher of the two (any higher high in between would itself be a confirmed
swing high, so this means the earlier high was not taken out), the pair is a pool of equal highs
(buy-side liquidity, ``liquidity`` = +1) recorded on the confirmation bar, at ``liquidity_level`` =
the higher of the two; ``liquidity_date`` is the earlier swing's bar date. Equal lows mirror it
(sell-side, -1, the lower of the two). A bar confirming both kinds keeps the pool of highs. A pool is
swept on the first later bar whose high goes strictly above (for lows: low strictly below) its
level. smartmoneyconcepts sizes its tolerance from the whole series' range (future data) and marks
pools on the first swing of the cluster.

Units. Everything here reads the adjusted prices; ``features.compute_features`` then quotes the
price columns (``*_price``, ``structure_level``, ``ob_top/bottom``, ``fvg_top/bottom``,
``liquidity_level``) in the units of the bar that carries them.

Resolutions (mitigations, sweeps) are stamped on the bar where they happen: ``*_mitigated`` /
``liq_sweep_*`` count the objects resolved on that bar and ``*_date`` gives the date of the bar
that recorded the most recent of them (its ``fvg`` / ``ob`` / ``liquidity`` row). Every open object
is tracked until resolved (not only the latest): ``kernels.resolution_kernel`` keeps the open objects of
an instrument on a heap ordered by level and pops those each bar reaches, one pass, O(n log n). (``first_hit``
below, the earlier vectorised search, is kept as the reference the kernel is tested against.)

Implementation. ``compute_features`` runs the compiled version of everything here (``structure_kernel`` for
swings, gaps, structure and order blocks, ``kernels`` for pools and resolutions, assembled by ``batch``); the
polars / numpy code below is the reference it is tested against bit for bit (``reference.reference_features``).
The frame is sorted by instrument and time, each instrument's rows contiguous, so
shifts, short rolling extremes, forward fills and "first in segment" flags run on the whole frame
and are masked where they would reach into the previous instrument (exact, and several times
cheaper than ``.over`` window expressions); the order-block candle search uses sparse tables in numpy;
the equal-high / equal-low pools and the resolutions are compiled loops (``kernels``, numba), bit for bit
the previous polars / numpy code (``tests/pipeline/test_technical_kernels.py``).
``tests/pipeline/test_technical_smc.py`` checks every column against a bar-by-bar loop written from this
docstring.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from . import kernels

# ---- range searches on sorted, contiguous instruments (numpy) ---------------------------------------


def _chunks(group_starts: np.ndarray, n: int, chunk_rows: int) -> list[tuple[int, int]]:
    """Row ranges of whole instruments, each about ``chunk_rows`` long, to bound the sparse tables' memory."""
    bounds = [0]
    for g in group_starts[1:]:
        if g - bounds[-1] >= chunk_rows:
            bounds.append(int(g))
    bounds.append(n)
    return list(zip(bounds[:-1], bounds[1:]))


def _by_chunk(rows: np.ndarray, chunks: list[tuple[int, int]]):
    """(a, b, query positions) for the queries whose ``rows`` fall in each chunk."""
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    for a, b in chunks:
        lo, hi = np.searchsorted(sorted_rows, a), np.searchsorted(sorted_rows, b)
        if lo < hi:
            yield a, b, order[lo:hi]


SCAN = 16  # bars searched one by one (in one vectorised gather) before anything cleverer
BLOCK = 64  # block size of the block minima used for the queries still open after that


def _hits(window: np.ndarray, level: np.ndarray, strict: np.ndarray) -> np.ndarray:
    if not strict.any():
        return window <= level[:, None]
    if strict.all():
        return window < level[:, None]
    return np.where(strict[:, None], window < level[:, None], window <= level[:, None])


def _lift(values: np.ndarray, start: np.ndarray, level: np.ndarray, end: np.ndarray, strict: np.ndarray) -> np.ndarray:
    """First j in [start, end] with values[j] <= level (< where strict), else -1: a sparse table of minima over
    blocks of 2^k, then binary lifting (from pos, skip a block when nothing in it hits, largest blocks first)."""
    out = np.full(start.size, -1, dtype=np.int64)
    if start.size == 0:
        return out
    n = values.size
    levels = max(1, (int(np.max(end - start)) + 1).bit_length())
    tables = [values]
    for k in range(1, levels):
        prev, step = tables[-1], 1 << (k - 1)
        t = np.empty_like(prev)
        if step < n:
            np.minimum(prev[:-step], prev[step:], out=t[:-step])
            t[-step:] = prev[-step:]
        else:
            t[:] = prev
        tables.append(t)
    pos = start.astype(np.int64)
    for k in range(levels - 1, -1, -1):
        block = tables[k][np.minimum(pos, n - 1)]
        hit = np.where(strict, block < level, block <= level)
        pos[~hit & (pos < n)] += 1 << k
    inside = np.flatnonzero(pos <= end)
    v = values[pos[inside]]
    ok = np.where(strict[inside], v < level[inside], v <= level[inside])
    out[inside[ok]] = pos[inside[ok]]
    return out


def _first_at_or_below(values: np.ndarray, start: np.ndarray, level: np.ndarray, end: np.ndarray,
                       strict: np.ndarray) -> np.ndarray:
    """For each query the first j in [start, end] with values[j] <= level (< where ``strict``), else -1.

    The next ``SCAN`` bars of every query are checked at once (most gaps are filled within days). For the
    rest: the remainder of the query's block of ``BLOCK`` bars, then the first later block whose minimum
    hits (``_lift`` on the block minima, a table 64 times smaller), then the bars of that block."""
    out = np.full(start.size, -1, dtype=np.int64)
    n = values.size
    cols = start[:, None] + np.arange(SCAN)
    hits = _hits(values[np.minimum(cols, n - 1)], level, strict) & (cols <= end[:, None])
    found = hits.any(axis=1)
    out[found] = start[found] + hits[found].argmax(axis=1)
    q = np.flatnonzero(~found & (start + SCAN <= end))
    if q.size == 0:
        return out
    nb = -(-n // BLOCK)
    padded = np.full(nb * BLOCK, np.inf)
    padded[:n] = values
    block_min = padded.reshape(nb, BLOCK).min(axis=1)
    pos, last, lvl, st = start[q] + SCAN, end[q], level[q], strict[q]
    block = pos // BLOCK
    # 1. the rest of the current block
    cols = pos[:, None] + np.arange(BLOCK)
    block_last = np.minimum(last, block * BLOCK + BLOCK - 1)
    hits = _hits(padded[np.minimum(cols, nb * BLOCK - 1)], lvl, st) & (cols <= block_last[:, None])
    found = hits.any(axis=1)
    out[q[found]] = pos[found] + hits[found].argmax(axis=1)
    # 2. the first later block whose minimum hits, 3. the first hit inside it (it may lie beyond ``end``)
    rest = np.flatnonzero(~found & (block < last // BLOCK))
    if rest.size:
        b = _lift(block_min, block[rest] + 1, lvl[rest], last[rest] // BLOCK, st[rest])
        rest, b = rest[b >= 0], b[b >= 0]
        cols = b[:, None] * BLOCK + np.arange(BLOCK)
        hits = _hits(padded[cols], lvl[rest], st[rest]) & (cols <= last[rest][:, None])
        found = hits.any(axis=1)
        out[q[rest[found]]] = cols[found, hits[found].argmax(axis=1)]
    return out


def first_hit(values: np.ndarray, start: np.ndarray, level: np.ndarray, end: np.ndarray, group_starts: np.ndarray,
              *, below: bool, strict: np.ndarray | bool = False, chunk_rows: int = 1 << 21) -> np.ndarray:
    """First row j in [start, end] where ``values[j]`` reaches ``level``: from above when ``below``
    (v <= level, or v < level where ``strict``), else from below (v >= level / v > level); -1 where none.
    [start, end] must lie within one instrument (``group_starts``: each instrument's first row)."""
    v, lv = (values, level) if below else (-values, -level)
    strict = np.broadcast_to(np.asarray(strict, dtype=bool), start.shape)
    out = np.full(start.size, -1, dtype=np.int64)
    for a, b, q in _by_chunk(start, _chunks(group_starts, values.size, chunk_rows)):
        local = _first_at_or_below(v[a:b], start[q] - a, lv[q], np.minimum(end[q], b - 1) - a, strict[q])
        out[q] = np.where(local >= 0, local + a, -1)
    return out


def range_argext(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, group_starts: np.ndarray, *, lowest: bool,
                 chunk_rows: int = 1 << 21) -> np.ndarray:
    """Row of the lowest (``lowest``) or highest value in rows [lo, hi] (within one instrument, lo <= hi),
    the last one on ties. Ranges up to ``4 * SCAN`` bars are scanned bar by bar (all queries at once);
    longer ones use a sparse table of arg-extremes, two overlapping blocks per query."""
    v = values if lowest else -values
    out = np.full(lo.size, -1, dtype=np.int64)
    length = hi - lo + 1
    short = np.flatnonzero(length <= 4 * SCAN)
    if short.size:
        width = int(length[short].max())
        cols = lo[short][:, None] + np.arange(width)
        inside = cols <= hi[short][:, None]
        window = np.where(inside, v[np.where(inside, cols, lo[short][:, None])], np.inf)
        last = width - 1 - window[:, ::-1].argmin(axis=1)  # the last of equal extremes
        out[short] = lo[short] + last
    long_ = np.flatnonzero(length > 4 * SCAN)
    for a, b, q in _by_chunk(lo[long_], _chunks(group_starts, values.size, chunk_rows)):
        q = long_[q]
        x = v[a:b]
        n = x.size
        ql, qh = lo[q] - a, hi[q] - a
        levels = max(1, (int(np.max(qh - ql)) + 1).bit_length())
        tables = [np.arange(n, dtype=np.int64)]
        best = x  # best[i]: the extreme value of the block starting at i (x at tables[k][i])
        for k in range(1, levels):
            prev, step = tables[-1], 1 << (k - 1)
            t = prev.copy()
            if step < n:
                right_wins = best[step:] <= best[:-step]
                t[:-step] = np.where(right_wins, prev[step:], prev[:-step])
                nb = best.copy()
                nb[:-step] = np.where(right_wins, best[step:], best[:-step])
                best = nb
            tables.append(t)
        k = np.floor(np.log2(qh - ql + 1)).astype(np.int64)
        left = np.empty(q.size, dtype=np.int64)
        right = np.empty(q.size, dtype=np.int64)
        for lev in np.unique(k):
            sel = k == lev
            left[sel] = tables[lev][ql[sel]]
            right[sel] = tables[lev][qh[sel] - (1 << lev) + 1]
        out[q] = np.where(x[right] <= x[left], right, left) + a
    return out


# ---- the features --------------------------------------------------------------------------------------

SMC_COLUMNS = (
    "swing_high", "swing_high_index", "swing_high_date", "swing_high_price",
    "swing_low", "swing_low_index", "swing_low_date", "swing_low_price",
    "bos", "choch", "structure_level", "structure_swing_date", "market_structure",
    "ob", "ob_top", "ob_bottom", "ob_date", "ob_bull_mitigated", "ob_bull_mitigated_date",
    "ob_bear_mitigated", "ob_bear_mitigated_date",
    "fvg", "fvg_top", "fvg_bottom", "fvg_bull_mitigated", "fvg_bull_mitigated_date",
    "fvg_bear_mitigated", "fvg_bear_mitigated_date",
    "liquidity", "liquidity_level", "liquidity_date",
    "liq_sweep_high", "liq_sweep_high_date", "liq_sweep_low", "liq_sweep_low_date",
)


def _ffill_within(x: pl.Expr, row: pl.Expr, start: pl.Expr) -> pl.Expr:
    """Forward fill on the whole sorted frame, kept only where the filled value comes from a row >= ``start``
    (the instrument's first row): exact, without a window expression."""
    src = pl.when(x.is_not_null()).then(row).forward_fill()
    return pl.when(src >= start).then(x.forward_fill())


def _first_in_segment(flag: str, seg_start: str) -> pl.Expr:
    """True on the first row of each segment where ``flag`` holds (a segment: rows from a ``seg_start`` on)."""
    f = pl.col(flag).cast(pl.UInt32)
    cs = f.cum_sum()
    before = pl.when(pl.col(seg_start)).then(cs - f).forward_fill()
    return pl.col(flag) & (cs - before == 1)


def add_smc(df: pl.DataFrame, *, by: str, time: str, swing_length: int = 5, liquidity_tolerance: float = 0.1,
            liquidity_lookback: int = 3) -> pl.DataFrame:
    """Add ``SMC_COLUMNS`` to ``df``: sorted by (``by``, ``time``), with ``adj_open/high/low/close``,
    ``bar_index`` (0-based bar number per instrument) and ``atr_14``.

    Data must be sorted by instrument and time with each instrument's rows contiguous, so shifts, rolling
    extrema, forward fills and cumulative sums run on the whole frame, masked where they would reach into
    the previous instrument (exact, and several times cheaper than window expressions); the searches over
    variable ranges (order-block candles, mitigations, sweeps) use sparse tables in numpy."""
    L = swing_length
    o, h, l, c = pl.col("adj_open"), pl.col("adj_high"), pl.col("adj_low"), pl.col("adj_close")
    t, idx = pl.col(time), pl.col("bar_index")
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    start = row - idx  # the instrument's first row

    # 1. swings (confirmed L bars late; need bar >= 2L so no window reaches the previous instrument) and gaps
    out = df.with_columns(_hmax=pl.max_horizontal([h.shift(k) for k in range(L)]) if L <= 8 else h.rolling_max(L),
                          _lmin=pl.min_horizontal([l.shift(k) for k in range(L)]) if L <= 8 else l.rolling_min(L))
    hmax, lmin = pl.col("_hmax"), pl.col("_lmin")
    cand_h, cand_l = h.shift(L), l.shift(L)
    out = out.with_columns(
        swing_high=((idx >= 2 * L) & (cand_h > hmax.shift(L + 1)) & (cand_h >= hmax)).fill_null(False),
        swing_low=((idx >= 2 * L) & (cand_l < lmin.shift(L + 1)) & (cand_l <= lmin)).fill_null(False),
        _fvg_up=((idx >= 2) & (h.shift(2) < l) & (c.shift(1) > o.shift(1))).fill_null(False),
        _fvg_dn=((idx >= 2) & (l.shift(2) > h) & (c.shift(1) < o.shift(1))).fill_null(False),
    )
    sh, sl, up_gap, dn_gap = pl.col("swing_high"), pl.col("swing_low"), pl.col("_fvg_up"), pl.col("_fvg_dn")
    out = out.with_columns(
        swing_high_index=pl.when(sh).then(idx - L),
        swing_high_date=pl.when(sh).then(t.shift(L)),
        swing_high_price=pl.when(sh).then(cand_h),
        swing_low_index=pl.when(sl).then(idx - L),
        swing_low_date=pl.when(sl).then(t.shift(L)),
        swing_low_price=pl.when(sl).then(cand_l),
        fvg=pl.when(up_gap).then(1).when(dn_gap).then(-1).otherwise(0).cast(pl.Int8),
        fvg_top=pl.when(up_gap).then(l).when(dn_gap).then(l.shift(2)),
        fvg_bottom=pl.when(up_gap).then(h.shift(2)).when(dn_gap).then(h),
        _sh_new=sh | (idx == 0),  # segments: from a confirmation (or the first bar) to the next
        _sl_new=sl | (idx == 0),
    )

    # 2. the current (latest confirmed) swings, and the first close beyond each: the row of the latest swing,
    #    forward filled on the whole frame, counts only if it lies in the same instrument
    out = out.with_columns(_sh_row=pl.when(sh).then(row).forward_fill(), _sl_row=pl.when(sl).then(row).forward_fill())
    has_sh, has_sl = pl.col("_sh_row") >= start, pl.col("_sl_row") >= start
    out = out.with_columns(
        _sh_level=pl.when(has_sh).then(pl.col("swing_high_price").forward_fill()),
        _sh_index=pl.when(has_sh).then(pl.col("swing_high_index").forward_fill()),
        _sh_date=pl.when(has_sh).then(pl.col("swing_high_date").forward_fill()),
        _sl_level=pl.when(has_sl).then(pl.col("swing_low_price").forward_fill()),
        _sl_index=pl.when(has_sl).then(pl.col("swing_low_index").forward_fill()),
        _sl_date=pl.when(has_sl).then(pl.col("swing_low_date").forward_fill()),
    ).with_columns(
        _cross_up=(c > pl.col("_sh_level")).fill_null(False),
        _cross_dn=(c < pl.col("_sl_level")).fill_null(False),
    ).with_columns(
        _up=_first_in_segment("_cross_up", "_sh_new"),
        _dn=_first_in_segment("_cross_dn", "_sl_new"),
    )

    # 3. BOS / CHoCH against the prevailing structure (the direction of the previous break)
    bull = pl.col("_up") & ~pl.col("_dn")
    bear = pl.col("_dn") & ~pl.col("_up")
    out = out.with_columns(_bull=bull, _bear=bear, _event=bull.cast(pl.Int8) - bear.cast(pl.Int8))
    bull, bear = pl.col("_bull"), pl.col("_bear")
    out = out.with_columns(
        _trend=_ffill_within(pl.when(pl.col("_event") != 0).then(pl.col("_event")), row, start).fill_null(0))
    prev = pl.when(idx >= 1).then(pl.col("_trend").shift(1)).fill_null(0)
    out = out.with_columns(
        market_structure=pl.col("_trend").cast(pl.Int8),
        bos=pl.when(bull & (prev >= 0)).then(1).when(bear & (prev <= 0)).then(-1).otherwise(0).cast(pl.Int8),
        choch=pl.when(bull & (prev < 0)).then(1).when(bear & (prev > 0)).then(-1).otherwise(0).cast(pl.Int8),
        structure_level=pl.when(bull).then(pl.col("_sh_level")).when(bear).then(pl.col("_sl_level")),
        structure_swing_date=pl.when(bull).then(pl.col("_sh_date")).when(bear).then(pl.col("_sl_date")),
        ob=pl.when(bull).then(1).when(bear).then(-1).otherwise(0).cast(pl.Int8),
    )
    out = _add_order_blocks(out, time=time)
    out = _add_liquidity(out, by=by, time=time, tolerance=liquidity_tolerance, lookback=liquidity_lookback)
    out = _add_resolutions(out, by=by, time=time)
    return out.drop([c for c in out.columns if c.startswith("_")])


def _group_starts(bar_index: np.ndarray) -> np.ndarray:
    return np.flatnonzero(bar_index == 0)


def _add_order_blocks(df: pl.DataFrame, *, time: str) -> pl.DataFrame:
    """The candle with the lowest low (bullish) / highest high (bearish) strictly between the broken swing bar
    and the breaking bar, last one on ties. The swing is confirmed L bars after it and the break comes after
    the confirmation, so the range is never empty."""
    n = df.height
    bar = df["bar_index"].to_numpy()
    starts = _group_starts(bar)
    first_row = np.arange(n, dtype=np.int64) - bar
    ob = df["ob"].to_numpy()
    at = np.full(n, -1, dtype=np.int64)
    for sign, swing_index, values, lowest in ((1, "_sh_index", "adj_low", True), (-1, "_sl_index", "adj_high", False)):
        rows = np.flatnonzero(ob == sign)
        if rows.size:
            lo = first_row[rows] + df[swing_index].to_numpy()[rows].astype(np.int64) + 1
            at[rows] = range_argext(df[values].to_numpy(), lo, rows - 1, starts, lowest=lowest)
    pick = pl.Series(np.where(at >= 0, at, 0))
    has = pl.Series(at >= 0)
    return df.with_columns(
        ob_top=pl.when(has).then(df["adj_high"].gather(pick)),
        ob_bottom=pl.when(has).then(df["adj_low"].gather(pick)),
        ob_date=pl.when(has).then(df[time].gather(pick)),
    )


def _add_liquidity(df: pl.DataFrame, *, by: str, time: str, tolerance: float, lookback: int) -> pl.DataFrame:
    """Pools of equal swing highs / lows, stamped on the confirmation bar of the later swing (one compiled pass
    per instrument and side, ``kernels.liquidity_kernel``)."""
    n = df.height
    starts = _starts(df["bar_index"].to_numpy())
    tol = (df["atr_14"] * tolerance).to_numpy()  # NaN where the ATR is still warming up: no pool
    level = np.full(n, np.nan)
    side = np.zeros(n, dtype=np.int8)
    at = np.zeros(n, dtype=np.int64)  # the earlier swing's confirmation row (its swing_*_date is the date)
    for flag, price, sign, highs in (("swing_high", "swing_high_price", 1, True),
                                     ("swing_low", "swing_low_price", -1, False)):
        lvl, earlier = kernels.liquidity_kernel(starts, df[flag].to_numpy(), df[price].to_numpy(), tol,
                                                max(lookback, 1), highs)
        if lookback < 1:
            earlier[:] = -1
        rows = np.flatnonzero((earlier >= 0) & (side == 0))  # a bar confirming both keeps the pool of highs
        level[rows] = lvl[rows]
        side[rows] = sign
        at[rows] = earlier[rows]
    out = df.with_columns(liquidity=pl.Series(side, dtype=pl.Int8), liquidity_level=pl.Series(level).fill_nan(None))
    s = pl.Series(side)
    pick = pl.Series(at)
    return out.with_columns(liquidity_date=pl.when(s == 1).then(df["swing_high_date"].gather(pick))
                            .when(s == -1).then(df["swing_low_date"].gather(pick)))


def _starts(bar_index: np.ndarray) -> np.ndarray:
    """Each instrument's first row, then the number of rows (the kernels' ``starts``)."""
    return np.append(np.flatnonzero(bar_index == 0), bar_index.size).astype(np.int64)


def _add_resolutions(df: pl.DataFrame, *, by: str, time: str) -> pl.DataFrame:
    """Mitigations of gaps and order blocks, sweeps of pools: the first later bar that trades into them
    (``kernels.resolution_kernel``: a heap of the open objects per instrument, one pass)."""
    starts = _starts(df["bar_index"].to_numpy())
    times = df[time]
    # (kind column, sign, level column, strict, output name): bullish objects below price are reached by lows
    specs = [("fvg", 1, "fvg_top", False, "fvg_bull_mitigated", "adj_low", True),
             ("fvg", -1, "fvg_bottom", False, "fvg_bear_mitigated", "adj_high", False),
             ("ob", 1, "ob_top", False, "ob_bull_mitigated", "adj_low", True),
             ("ob", -1, "ob_bottom", False, "ob_bear_mitigated", "adj_high", False),
             ("liquidity", 1, "liquidity_level", True, "liq_sweep_high", "adj_high", False),
             ("liquidity", -1, "liquidity_level", True, "liq_sweep_low", "adj_low", True)]
    values = {c: df[c].to_numpy() for c in ("adj_low", "adj_high")}
    columns = {}
    for kind, sign, level, strict, name, reached_by, below in specs:
        count, latest = kernels.resolution_kernel(starts, values[reached_by], df[kind].to_numpy() == sign,
                                                  df[level].to_numpy(), strict, below)
        has = pl.Series(latest >= 0)
        columns[name] = pl.Series(name, count)
        columns[f"{name}_date"] = pl.select(pl.when(has).then(times.gather(pl.Series(np.maximum(latest, 0))))
                                            ).to_series().alias(f"{name}_date")
    # the output order of the previous implementation: the "below" kinds first, then the "above" ones
    order = ("fvg_bull_mitigated", "ob_bull_mitigated", "liq_sweep_low", "fvg_bear_mitigated", "ob_bear_mitigated",
             "liq_sweep_high")
    return df.with_columns([columns[c] for name in order for c in (name, f"{name}_date")])
