"""Every feature column of one batch of whole instruments, from the compiled kernels.

Why: the polars expressions of ``indicators``, ``patterns`` and ``smc`` (kept as the reference, ``reference.py``)
cost about 1.8 CPU-seconds per million rows, most of it in helper columns materialised over the whole frame;
the kernels read numpy views of the adjusted prices once each and the columns are assembled from their arrays
(nulls from a validity mask, no copy of the values), about 0.6 CPU-seconds per million rows.

The result is bit for bit ``reference.reference_features`` (``tests/pipeline/test_technical_kernels.py``): the
kernels repeat the float operations of the expressions in the same order, and the two rolling standard
deviations (Bollinger's and the realised volatility's) still come from polars, whose sliding variance is not
reproduced. The bookkeeping columns (bar numbers, the snapped adjustment factor, adjusted prices, day gaps) and the
intraday VWAP stay polars expressions, as in the reference.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from . import kernels
from .pattern_kernel import pattern_kernel
from .patterns import PATTERNS
from .structure_kernel import structure_kernel

FACTOR_NOISE = 1e-6  # see features.FACTOR_NOISE

# Price-level outputs, quoted in each bar's own units (features.LEVEL_COLUMNS)
LEVEL_COLUMNS = ("sma_20", "sma_50", "sma_200", "ema_12", "ema_26", "ema_50", "macd", "macd_signal", "macd_hist",
                 "bb_upper", "bb_lower", "atr_14", "vwap", "swing_high_price", "swing_low_price", "structure_level",
                 "ob_top", "ob_bottom", "fvg_top", "fvg_bottom", "liquidity_level")


def arrow_masked(values: np.ndarray, valid: np.ndarray | None, dtype: pa.DataType | None = None) -> pa.Array:
    """``values`` (a numpy array) as an Arrow array of ``dtype`` (by default numpy's), null where ``valid`` is false:
    the values are not copied, the validity becomes a bitmap."""
    values = np.ascontiguousarray(values)
    dtype = dtype or pa.from_numpy_dtype(values.dtype)
    if valid is None:
        return pa.Array.from_buffers(dtype, values.size, [None, pa.py_buffer(values)], null_count=0)
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(dtype, values.size, [bitmap, pa.py_buffer(values)],
                                 null_count=int(values.size - np.count_nonzero(valid)))


def masked(values: np.ndarray, valid: np.ndarray | None) -> pl.Series:
    """``arrow_masked`` as a polars Series."""
    return pl.from_arrow(arrow_masked(values, valid))  # type: ignore[return-value]


def prepare(part: pl.DataFrame, *, by: str, time_col: str, has_adj: bool) -> pl.DataFrame:
    """Bar numbers, the snapped adjustment factor, adjusted prices and day gaps, from numpy views of the sorted
    rows (``_gid``: the number of the instrument's run of rows, for the window expressions left in polars). The
    float operations are the expressions' of the module docstring of ``features``: ``adj_close / close``, a new
    factor where ``|f / f[-1] - 1| > FACTOR_NOISE`` (or on an instrument's first bar), forward filled, times each
    price."""
    n = part.height
    key = part[by]
    first = (key != key.shift(1)).fill_null(True).to_numpy() if n else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first)
    lengths = np.diff(np.append(starts, n))
    gid = np.repeat(np.arange(1, starts.size + 1, dtype=np.uint32), lengths)
    bars = np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)
    close = part["close"].to_numpy()
    raw = part["adj_close"].to_numpy() / close if has_adj else np.ones(n)
    factor = kernels.snap_factor(first, raw, FACTOR_NOISE)
    t = part[time_col]
    # Calendar days: the dates in the column's own time zone. Not elapsed time // 24 h, which reads a weekend
    # across a DST change (yfinance's daily bars at local midnight: Fri 05:00 UTC to Mon 04:00 UTC) or an
    # overnight gap of intraday bars (Fri 16:00 to Mon 09:30) as a day short.
    days = (t.dt.date() if isinstance(t.dtype, pl.Datetime) else t).to_physical().to_numpy().astype(np.int64)
    gap = np.zeros(n, dtype=np.int64)
    gap[1:] = days[1:] - days[:-1]
    if has_adj:
        part = part.rename({"adj_close": "adj_close__input"})
    return part.with_columns(
        pl.Series("_gid", gid), pl.Series("bar_index", bars), pl.Series("adj_factor", factor),
        masked(gap, bars >= 1).alias("days_since_prev_bar"),
        *(pl.Series(f"adj_{c}", part[c].to_numpy() * factor) for c in ("open", "high", "low")),
        pl.Series("adj_close", close * factor),
    )


def _vwap(part: pl.DataFrame, time_col: str) -> pl.Series:
    """Session VWAP for intraday bars (``indicators.session_vwap``), null for daily data."""
    if not isinstance(part.schema[time_col], pl.Datetime):
        return pl.repeat(None, part.height, dtype=pl.Float64, eager=True).alias("vwap")
    from .indicators import session_vwap

    day = pl.col(time_col).dt.date()
    intraday_so_far = (day == day.shift(1)).fill_null(False).cum_max().over("_gid")
    return part.with_columns(_day=day).select(
        vwap=pl.when(intraday_so_far).then(session_vwap().over("_gid", "_day"))).to_series()


def feature_columns(part: pl.DataFrame, *, time_col: str, swing_length: int, liquidity_tolerance: float,
                    liquidity_lookback: int, periods_per_year: int, trend: bool) -> dict[str, pl.Series]:
    """The indicator, pattern and smart-money columns of ``features.COLUMNS`` for ``part`` (``prepare``'s output)."""
    n = part.height
    bars = part["bar_index"].to_numpy()
    starts = np.append(np.flatnonzero(bars == 0), n).astype(np.int64)
    o, h, l, c = (part[x].to_numpy() for x in ("adj_open", "adj_high", "adj_low", "adj_close"))
    factor = part["adj_factor"].to_numpy()
    cols: dict[str, pl.Series] = {}
    arrays: dict[str, pa.Array] = {}  # columns with nulls, turned into polars at once at the end
    levels: dict[str, np.ndarray] = {}  # price levels in adjusted units, divided by the factor at the end

    def put(name: str, values: np.ndarray, valid: np.ndarray | None) -> None:
        if name in LEVEL_COLUMNS:
            levels[name] = values
            values = values / factor
        arrays[name] = arrow_masked(values, valid)

    # indicators
    price = kernels.price_kernel(starts, h, l, c)
    rows = dict(zip(kernels.PRICE_ROWS, price))
    volume = part["volume"].cast(pl.Float64).fill_nan(0).fill_null(0).to_numpy()  # missing (null or NaN): 0
    ind = kernels.indicator_kernel(starts, c, rows["_delta"], rows["_tr"], volume)
    rows.update(zip(kernels.INDICATOR_ROWS, ind))
    std = pl.DataFrame({"g": part["_gid"], "c": c, "r": masked(rows["log_ret_1d"], bars >= 1)}).select(
        realised_vol_20=(pl.col("r").rolling_std(20) * (periods_per_year**0.5)).over("g"),
        std_20=pl.col("c").rolling_std(20, ddof=0).over("g"))
    rows["realised_vol_20"] = std["realised_vol_20"].to_numpy()
    osc = kernels.oscillator_kernel(c, rows["_gain"], rows["_loss"], rows["macd"], rows["macd_signal"], rows["sma_20"],
                                    std["std_20"].to_numpy())
    rows.update(zip(kernels.OSCILLATOR_ROWS, osc))
    warmup = dict(zip(kernels.PRICE_ROWS, kernels.PRICE_WARMUP)) | dict(
        zip(kernels.INDICATOR_ROWS, kernels.INDICATOR_WARMUP)) | {
        "realised_vol_20": 20, "rsi_14": 14, "macd_hist": 33, "bb_upper": 19, "bb_lower": 19, "bb_pct_b": 19}
    for name, values in rows.items():
        if not name.startswith("_"):
            put(name, values, bars >= warmup[name] if warmup[name] else None)
    cols["vwap"] = (_vwap(part, time_col) / part["adj_factor"]).alias("vwap")  # a level too
    del price, ind, osc, rows

    # candlestick patterns
    for name, values in zip(PATTERNS, pattern_kernel(starts, o, h, l, c, trend)):
        cols[name] = pl.Series(name, values)

    # smart-money concepts: swings, gaps, structure, order blocks
    t = part[time_col]
    t_phys = t.to_physical().to_numpy()
    t_type = t.head(0).to_arrow().type

    def dates(name: str, at: np.ndarray) -> None:
        arrays[name] = arrow_masked(kernels.gather(t_phys, at), at >= 0, t_type)

    flags, codes, prices, at = structure_kernel(starts, o, h, l, c, swing_length)
    for side, (flag, price_of) in enumerate((("swing_high", h), ("swing_low", l))):
        has = flags[side]
        cols[flag] = pl.Series(flag, has)
        swing_row = at[side]
        arrays[f"{flag}_index"] = arrow_masked(bars - swing_length, has)
        dates(f"{flag}_date", swing_row)
        put(f"{flag}_price", np.where(has, price_of[np.where(has, swing_row, 0)], np.nan), has)
    fvg, bos, choch, structure, ob = codes
    for name, values in (("bos", bos), ("choch", choch), ("market_structure", structure), ("ob", ob),
                         ("fvg", fvg)):
        cols[name] = pl.Series(name, values)
    broke = ob != 0
    put("structure_level", prices[2], broke)
    dates("structure_swing_date", np.where(broke, at[2], -1))
    has_ob = at[3] >= 0
    ob_at = np.where(has_ob, at[3], 0)
    put("ob_top", np.where(has_ob, h[ob_at], np.nan), has_ob)
    put("ob_bottom", np.where(has_ob, l[ob_at], np.nan), has_ob)
    dates("ob_date", at[3])
    gap = fvg != 0
    put("fvg_top", prices[0], gap)
    put("fvg_bottom", prices[1], gap)

    # liquidity pools (the earlier swing's date: that swing's bar, read through its confirmation row)
    tol = levels["atr_14"] * liquidity_tolerance  # the ATR in adjusted units, NaN while warming up: no pool
    pool_level = np.full(n, np.nan)
    side = np.zeros(n, dtype=np.int8)
    pool_swing = np.full(n, -1, dtype=np.int64)
    for flag_row, price_of, sign, highs in ((0, h, 1, True), (1, l, -1, False)):
        swing_price = np.where(flags[flag_row], price_of[np.maximum(at[flag_row], 0)], np.nan)
        lvl, earlier = kernels.liquidity_kernel(starts, flags[flag_row], swing_price, tol, max(liquidity_lookback, 1),
                                                highs)
        if liquidity_lookback < 1:
            earlier[:] = -1
        new = np.flatnonzero((earlier >= 0) & (side == 0))  # a bar confirming both keeps the pool of highs
        pool_level[new] = lvl[new]
        side[new] = sign
        pool_swing[new] = at[flag_row][earlier[new]]
    cols["liquidity"] = pl.Series("liquidity", side)
    put("liquidity_level", pool_level, side != 0)
    dates("liquidity_date", pool_swing)

    # resolutions: mitigations of gaps and order blocks, sweeps of pools
    ob_levels = {1: levels["ob_top"], -1: levels["ob_bottom"]}
    fvg_levels = {1: levels["fvg_top"], -1: levels["fvg_bottom"]}
    specs = (("fvg_bull_mitigated", fvg, 1, fvg_levels[1], False, l, True),
             ("ob_bull_mitigated", ob, 1, ob_levels[1], False, l, True),
             ("liq_sweep_low", side, -1, pool_level, True, l, True),
             ("fvg_bear_mitigated", fvg, -1, fvg_levels[-1], False, h, False),
             ("ob_bear_mitigated", ob, -1, ob_levels[-1], False, h, False),
             ("liq_sweep_high", side, 1, pool_level, True, h, False))
    for name, kind, sign, level, strict, reached_by, below in specs:
        count, latest = kernels.resolution_kernel(starts, reached_by, kind == sign, level, strict, below)
        cols[name] = pl.Series(name, count)
        dates(f"{name}_date", latest)
    with_nulls = pl.from_arrow(pa.table(arrays))
    assert isinstance(with_nulls, pl.DataFrame)
    return cols | {s.name: s for s in with_nulls.iter_columns()}
