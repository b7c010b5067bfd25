"""One entry point for every technical feature: ``compute_features(df)``.

Input: one row per instrument and bar with ``open, high, low, close, volume`` and a time column
(``date`` by default; a Date, a Datetime, or ISO strings); ``adj_close`` is optional (taken as
``close`` when absent), and so is the instrument column (``instrument``, else ``symbol`` or
``ticker``, else the whole frame is one instrument). Other columns (adj_close included) pass through
untouched. Rows may come in any order and instruments interleaved. Parameters: ``swing_length`` (bars
each side of a swing), ``liquidity_tolerance`` (equal highs/lows within this many ATRs),
``liquidity_lookback`` (earlier swings a new one is compared with), ``periods_per_year`` (volatility
annualisation), ``trend`` (False drops the trend condition of the candlestick patterns), ``batch_rows``
(whole instruments are processed in batches of about this many rows; the result does not depend on it).
``iter_feature_batches`` yields those batches, ``compute_features_to_parquet`` / ``_to_file`` write them
to one file as they are computed.

Output: the kept rows sorted by instrument and time, the input columns first, then ``COLUMNS`` in
that order. Conventions (all in the module docstrings of ``indicators``, ``patterns`` and ``smc``):

- Causal: every value on a bar uses only that bar and earlier bars of the same instrument; events that
  need later bars (a swing, a mitigation) are stamped on the bar where they became knowable.
  Appending bars never changes an earlier row (tested for every column).
- Split-adjusted: ``adj_factor = adj_close / close`` scales open, high, low and close, so every feature
  reads ``adj_open/high/low`` and the adjusted close, and a split creates no false candle, gap or break.
  The factor is snapped: it only changes where it moves by more than ``FACTOR_NOISE`` (1e-6, relative) from
  the previous bar, so float noise in adj_close cannot break ties between equal raw prices (candle and
  swing rules compare prices for equality). Volume is as reported.
- Point-in-time units: back-adjusted prices embed every split and dividend up to the end of the data,
  so a 2005 bar's adj_close "knows" about a 2010 split. Price-level outputs (``LEVEL_COLUMNS``: moving
  averages, MACD, bands, ATR, VWAP, swing / structure / order-block / gap / pool prices) are therefore
  divided by the bar's ``adj_factor``: they are in the units of that bar's own open/high/low/close,
  compare directly with them, and do not change when a later corporate action re-bases adj_close.
  Multiply by ``adj_factor`` for adj_close units. Ratios (returns, RSI, %B, stochastic) need nothing.
- Bars, not days: windows count an instrument's bars; missing days (weekends, holidays, halts) are
  simply absent, ``days_since_prev_bar`` shows the gap (calendar dates in the time column's zone). A zero-volume
  bar is an ordinary bar (it adds nothing to OBV or VWAP), and so is one whose volume is missing (null or NaN:
  counted as 0); a zero-range bar forms no candlestick pattern.
- Dropped rows: a bar with a null, NaN or non-positive open/high/low/close (or adj_close) is no bar
  and is left out of the output. Duplicate (instrument, time) rows are an error.
- Warm-up: an indicator is null until its window is full (SMA 200 from the 200th bar); booleans
  and event codes are false / 0 there; event prices and dates are null except on event bars.
- Speed and memory (``bench/bench_features.py``): the output is about 440 bytes a row in memory. For large
  inputs use ``compute_features_to_parquet`` / ``compute_features_to_file`` (or ``iter_feature_batches``)
  with a path or a LazyFrame: the instrument and time columns are read once to check the order; a sorted
  input is then read in chunks (a Parquet file row group by row group) and cut into batches of whole
  instruments, an unsorted one is first sorted once to a temporary Parquet file; two batches are computed at
  once (``COMPUTE_THREADS``) and written on a writer thread, so peak memory is a few batches (and the longest instrument), neither the input
  nor the output. The result is exactly ``compute_features``' frame, whatever ``batch_rows``. Each batch is
  computed by compiled loops (``batch``: ``kernels``, ``pattern_kernel``, ``structure_kernel``, numba), bit
  for bit the polars expressions of ``indicators``, ``patterns`` and ``smc`` (``reference``); Parquet output
  writes the never-null columns (``NEVER_NULL``) as required fields and keeps min/max statistics for the
  instrument, time and ``bar_index`` columns only.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from . import batch
from .batch import LEVEL_COLUMNS
from .patterns import PATTERNS

REQUIRED = ("open", "high", "low", "close", "volume")

COLUMNS: dict[str, str] = {
    # bar bookkeeping and adjusted prices
    "bar_index": "0-based bar number within the instrument",
    "days_since_prev_bar": "whole calendar days since the instrument's previous bar (null on its first bar)",
    "adj_factor": "adj_close / close (1 without adj_close), snapped: splits and dividends",
    "adj_open": "open x adj_factor (adj_close units)",
    "adj_high": "high x adj_factor",
    "adj_low": "low x adj_factor",
    # indicators (technicals/indicators.py)
    "ret_1d": "simple return of the adjusted close over the previous bar (total return: dividends included)",
    "log_ret_1d": "log return of the adjusted close over the previous bar",
    "realised_vol_20": "annualised (x sqrt(periods_per_year), 252 by default) sample std of the last 20 log returns",
    "sma_20": "20-bar simple moving average of the adjusted close",
    "sma_50": "50-bar simple moving average of the adjusted close",
    "sma_200": "200-bar simple moving average of the adjusted close",
    "ema_12": "12-bar EMA of the adjusted close (seeded with the first close, null for 11 bars)",
    "ema_26": "26-bar EMA of the adjusted close",
    "ema_50": "50-bar EMA of the adjusted close",
    "rsi_14": "14-bar RSI, Wilder smoothing seeded with the SMA of the first 14 changes (TA-Lib)",
    "macd": "MACD line: ema_12 - ema_26",
    "macd_signal": "9-bar EMA of the MACD line",
    "macd_hist": "macd - macd_signal",
    "bb_upper": "Bollinger upper band: sma_20 + 2 population std (ddof=0)",
    "bb_lower": "Bollinger lower band: sma_20 - 2 population std",
    "bb_pct_b": "(close - bb_lower) / (bb_upper - bb_lower); 0.5 for zero-width bands",
    "atr_14": "14-bar average true range, Wilder smoothing seeded with an SMA (TA-Lib)",
    "stoch_k": "fast stochastic %K over 14 bars (0-100; 50 for a zero-range window)",
    "stoch_d": "3-bar SMA of stoch_k",
    "obv": "on-balance volume: 0 on the first bar, +/- volume on up / down closes",
    "vwap": "session VWAP of the typical price, intraday bars only (null for daily data)",
    # candlestick patterns (technicals/patterns.py), true on the bar completing the pattern
    "cdl_doji": "doji: body <= 0.1 x average range of the previous 10 bars",
    "cdl_hammer": "hammer: long lower shadow, tiny upper shadow, after a down trend",
    "cdl_hanging_man": "hanging man: the hammer's shape after an up trend",
    "cdl_shooting_star": "shooting star: long upper shadow, tiny lower shadow, after an up trend",
    "cdl_engulfing_bull": "bullish engulfing: a bullish body covering the previous bearish body, after a down trend",
    "cdl_engulfing_bear": "bearish engulfing: a bearish body covering the previous bullish body, after an up trend",
    "cdl_harami_bull": "bullish harami: a small body inside the previous long bearish body, after a down trend",
    "cdl_harami_bear": "bearish harami: a small body inside the previous long bullish body, after an up trend",
    "cdl_morning_star": "morning star (3 bars), after a down trend",
    "cdl_evening_star": "evening star (3 bars), after an up trend",
    "cdl_three_white_soldiers": "three white soldiers (3 bars), after a down trend",
    "cdl_three_black_crows": "three black crows (3 bars), after an up trend",
    # smart-money concepts (technicals/smc.py), stamped when knowable
    "swing_high": "a swing high was confirmed on this bar (swing_length bars after the swing bar)",
    "swing_high_index": "bar_index of the confirmed swing-high bar",
    "swing_high_date": "time of the confirmed swing-high bar",
    "swing_high_price": "adjusted high of the confirmed swing-high bar",
    "swing_low": "a swing low was confirmed on this bar",
    "swing_low_index": "bar_index of the confirmed swing-low bar",
    "swing_low_date": "time of the confirmed swing-low bar",
    "swing_low_price": "adjusted low of the confirmed swing-low bar",
    "bos": "break of structure: +1 bullish / -1 bearish close beyond the current swing, with the trend",
    "choch": "change of character: +1 / -1 break against the prevailing structure",
    "structure_level": "price of the swing broken by this bar's bos / choch",
    "structure_swing_date": "time of the swing bar broken by this bar's bos / choch",
    "market_structure": "direction of the latest break: +1 bullish, -1 bearish, 0 none yet",
    "ob": "order block formed by this bar's break: +1 bullish, -1 bearish",
    "ob_top": "top (high) of the order-block candle",
    "ob_bottom": "bottom (low) of the order-block candle",
    "ob_date": "time of the order-block candle",
    "ob_bull_mitigated": "number of bullish order blocks first traded into on this bar",
    "ob_bull_mitigated_date": "time of the bar that recorded the latest of them (its ob row)",
    "ob_bear_mitigated": "number of bearish order blocks first traded into on this bar",
    "ob_bear_mitigated_date": "time of the bar that recorded the latest of them",
    "fvg": "fair value gap completed on this bar: +1 bullish, -1 bearish",
    "fvg_top": "top of the gap",
    "fvg_bottom": "bottom of the gap",
    "fvg_bull_mitigated": "number of bullish gaps first traded back into on this bar",
    "fvg_bull_mitigated_date": "time of the bar that recorded the latest of them (its fvg row)",
    "fvg_bear_mitigated": "number of bearish gaps first traded back into on this bar",
    "fvg_bear_mitigated_date": "time of the bar that recorded the latest of them",
    "liquidity": "liquidity pool recorded on this bar: +1 equal highs (buy-side), -1 equal lows (sell-side)",
    "liquidity_level": "price of the pool (the higher of the equal highs / the lower of the equal lows)",
    "liquidity_date": "time of the earlier swing bar of the pool",
    "liq_sweep_high": "number of equal-high pools swept (high above their level) on this bar",
    "liq_sweep_high_date": "time of the bar that recorded the latest of them (its liquidity row)",
    "liq_sweep_low": "number of equal-low pools swept (low below their level) on this bar",
    "liq_sweep_low_date": "time of the bar that recorded the latest of them",
}

for _c in LEVEL_COLUMNS:
    COLUMNS[_c] += "; in this bar's own price units (see Point-in-time units)"

EVENT_COLUMNS = (*PATTERNS, "swing_high", "swing_low", "bos", "choch", "ob", "fvg", "fvg_bull_mitigated",
                 "fvg_bear_mitigated", "ob_bull_mitigated", "ob_bear_mitigated", "liquidity", "liq_sweep_high",
                 "liq_sweep_low")

_INSTRUMENT_FALLBACKS = ("instrument", "symbol", "ticker")


class FeatureInputError(ValueError):
    """The input frame cannot be turned into features (missing or unusable columns)."""


# ISO 8601 dates and datetimes (a space or T, optional seconds, fraction and offset): the only strings read as
# times, because "01/02/2024" is ambiguous (polars reads it day first, a US file means January 2).
_ISO_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$"


def _check_iso(values: pl.Series, time_col: str) -> None:
    """Refuse time strings that are not ISO 8601, naming the first one (instead of guessing day or month first)."""
    bad = values.drop_nulls().filter(~values.drop_nulls().str.contains(_ISO_TIME))
    if bad.len():
        raise FeatureInputError(f"time column {time_col!r} holds {bad[0]!r}, not an ISO 8601 date or datetime "
                                f"(YYYY-MM-DD, YYYY-MM-DD HH:MM[:SS][+HH:MM]): convert it to ISO (or to a date / "
                                f"datetime column)")


def _parse_time(df: pl.DataFrame, time_col: str) -> pl.DataFrame:
    dtype = df.schema[time_col]
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return df
    if dtype == pl.String:
        s = df[time_col]
        _check_iso(s, time_col)
        for parse in (lambda x: x.str.to_date(strict=True), lambda x: x.str.to_datetime(strict=True)):
            try:
                return df.with_columns(parse(s).alias(time_col))
            except Exception:  # noqa: BLE001 - try the next format
                continue
        bad = s.filter(s.str.to_date(strict=False).is_null() & s.str.to_datetime(strict=False).is_null()
                       & s.is_not_null())
        if bad.len():
            raise FeatureInputError(f"time column {time_col!r} holds {bad[0]!r}, which is not a valid date or time")
    raise FeatureInputError(f"time column {time_col!r} must be a date or datetime (got {dtype})")


def _csv_times_are_iso(path: str | Path, time_col: str) -> None:
    """polars' CSV date inference reads "01/02/2024" day first (February 1): check the raw strings of the first
    rows of a CSV's time column before letting it parse them."""
    try:
        head = pl.read_csv(path, columns=[time_col], n_rows=1000, infer_schema=False)
    except Exception:  # noqa: BLE001 - no such column or unreadable: reported where the whole file is read
        return
    _check_iso(head[time_col], time_col)


@dataclass
class FeatureSummary:
    """What ``compute_features_to_file`` wrote: rows in and out, instruments, columns, and ``event_counts``."""

    input_rows: int
    rows: int
    instruments: int
    columns: int
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class _Prepared:
    df: pl.DataFrame  # valid rows, sorted by instrument and time, input columns (prices cast to Float64)
    by: str
    input_rows: int
    input_cols: list[str]
    has_adj: bool


def _scan(source: str | Path | pl.LazyFrame | pl.DataFrame, time_col: str) -> pl.LazyFrame:
    if isinstance(source, pl.LazyFrame):
        return source
    if isinstance(source, pl.DataFrame):
        return source.lazy()
    name = str(source).lower()
    if name.endswith((".csv", ".csv.gz")):
        _csv_times_are_iso(source, time_col)
        return pl.scan_csv(source, try_parse_dates=True)
    return pl.scan_parquet(source)


@dataclass
class _Plan:
    kept: pl.LazyFrame  # valid rows, prices cast to Float64, in input order
    keys: pl.LazyFrame  # (instrument, time) of every row with both, in input order: the sortedness check
    count: pl.LazyFrame  # the number of input rows
    by: str
    input_cols: list[str]
    has_adj: bool
    keep: Callable[[pl.LazyFrame], pl.LazyFrame]  # input rows -> kept rows (what ``kept`` applies to the source)
    parquet: Path | None = None  # the source file, when it is one Parquet file read as is (chunked by pyarrow)


def _plan(source: pl.DataFrame | pl.LazyFrame, instrument_col: str, time_col: str, parquet: Path | None = None
          ) -> _Plan:
    """Check the columns and describe (lazily) the rows that are kept: valid prices, a time and an instrument.
    ``parquet``: the file ``source`` scans, if it is one Parquet file (read in bounded chunks by pyarrow)."""
    lf = source.lazy()
    schema = lf.collect_schema()
    names = schema.names()
    missing = [c for c in (time_col, *REQUIRED) if c not in names]
    if missing:
        raise FeatureInputError(f"missing column(s) {', '.join(map(repr, missing))}; have {', '.join(names)}")
    by = next((c for c in (instrument_col, *_INSTRUMENT_FALLBACKS) if c in names), None)
    input_cols = list(names)
    if by is None:
        by = "instrument__none"
        lf = lf.with_columns(pl.lit("").alias(by))
    dtype = schema[time_col]
    if not (dtype == pl.Date or isinstance(dtype, pl.Datetime)):
        lf = _parse_time(lf.collect(), time_col).lazy()  # strings: try a date, then a datetime (eager)
        parquet = None
    has_adj = "adj_close" in names
    prices = ("open", "high", "low", "close") + (("adj_close",) if has_adj else ())
    valid = pl.all_horizontal([pl.col(c).is_not_null() & pl.col(c).is_finite() & (pl.col(c) > 0) for c in prices])
    present = pl.col(time_col).is_not_null() & pl.col(by).is_not_null()
    no_instrument = by not in names

    def keep(rows: pl.LazyFrame) -> pl.LazyFrame:
        if no_instrument:
            rows = rows.with_columns(pl.lit("").alias(by))
        return rows.with_columns(pl.col(prices).cast(pl.Float64)).filter(valid & present)

    kept = keep(lf if not no_instrument else lf.drop(by))
    return _Plan(kept, lf.select(by, time_col).filter(present), lf.select(pl.len()), by, input_cols, has_adj, keep,
                 parquet)


def _ascending(by: str, time_col: str, *, ties: bool = False) -> pl.Expr:
    """Each row after the previous one in (instrument, time) order (``ties``: equal times allowed)."""
    key, t = pl.col(by), pl.col(time_col)
    later = (t >= t.shift(1)) if ties else (t > t.shift(1))
    return ((key > key.shift(1)) | ((key == key.shift(1)) & later)).slice(1).all()


def _check_duplicates(df: pl.DataFrame, by: str, time_col: str) -> None:
    key, t = pl.col(by), pl.col(time_col)
    repeated = (key == key.shift(1)) & (t == t.shift(1))
    if df.select(repeated.any()).item():
        dup = df.filter(repeated).select(by, time_col).head(3).rows()
        raise FeatureInputError(f"duplicate ({by}, {time_col}) rows, e.g. {dup}")


def _parquet_path(source: object) -> Path | None:
    """The path of a single local Parquet file (read in chunks by pyarrow), else None."""
    if isinstance(source, (str, Path)) and not str(source).lower().endswith((".csv", ".csv.gz")):
        path = Path(source)
        return path if path.is_file() else None
    return None


def _prepare(source: pl.DataFrame | pl.LazyFrame, instrument_col: str, time_col: str) -> _Prepared:
    """Check the columns, drop the rows without valid prices, sort by instrument and time (one materialised
    copy of the input columns only), reject duplicates."""
    plan = _plan(source, instrument_col, time_col)
    counted, df = pl.collect_all([plan.count, plan.kept])
    if not df.select(_ascending(plan.by, time_col)).item():  # inputs often come sorted already: skip the sort
        df = df.sort(plan.by, time_col)
    _check_duplicates(df, plan.by, time_col)
    return _Prepared(df, plan.by, counted.item(), plan.input_cols, plan.has_adj)


def _read_chunks(plan: _Plan, chunk_rows: int, *, keys: bool = False, parquet: Path | None = None
                 ) -> Iterator[pl.DataFrame]:
    """The kept rows (``keys``: the instrument and time of every row) in input order, ``chunk_rows`` at a time.

    A Parquet file is read with pyarrow's ``iter_batches``, which reads one row group after another as the
    chunks are consumed, so memory holds a row group and a chunk. Other sources go through polars'
    ``collect_batches`` (which may read ahead of the consumer)."""
    path = parquet or plan.parquet
    if path is None:
        yield from (plan.keys if keys else plan.kept).collect_batches(chunk_size=chunk_rows)
        return
    import pyarrow.parquet as pq

    key_cols = plan.keys.collect_schema().names()  # the instrument and time columns
    with pq.ParquetFile(path, pre_buffer=False) as pf:  # pre-buffering keeps every row group read so far
        columns = [c for c in key_cols if c in pf.schema_arrow.names] if keys else None
        for record_batch in pf.iter_batches(batch_size=chunk_rows, columns=columns, use_threads=False):
            rows = pl.from_arrow(record_batch)
            assert isinstance(rows, pl.DataFrame)
            if not keys:
                yield plan.keep(rows.lazy()).collect()
                continue
            if plan.by not in rows.columns:  # no instrument column: one instrument
                rows = rows.with_columns(pl.lit("").alias(plan.by))
            yield rows.select(key_cols).filter(pl.all_horizontal(pl.col(key_cols).is_not_null()))


def _keys_sorted(plan: _Plan, by: str, time_col: str, chunk_rows: int) -> bool:
    """Whether (instrument, time) never goes backwards, read in chunks of two columns (constant memory)."""
    last = None
    for part in _read_chunks(plan, chunk_rows, keys=True):
        if last is not None:
            part = pl.concat([last, part])
        if part.height > 1 and not part.select(_ascending(by, time_col, ties=True)).item():
            return False
        if part.height:
            last = part.tail(1)
    return True


def _whole_instruments(chunks: Iterator[pl.DataFrame], by: str, time_col: str, batch_rows: int
                       ) -> Iterator[pl.DataFrame]:
    """``chunks`` of rows sorted by instrument and time, cut into the batches ``_batch_bounds`` gives the whole
    input, however it is chunked: memory holds a chunk, the instrument in progress and finished instruments of
    fewer than ``batch_rows`` rows. The instrument in progress is kept as a list of pieces and concatenated once,
    when it ends: concatenating each chunk onto it copied it once per chunk, quadratic in an instrument many
    chunks long (48 s for 17,000 rows read a row at a time)."""
    pending: list[pl.DataFrame] = []  # finished instruments not yet a batch, then the one in progress

    def batches(df: pl.DataFrame, final: bool) -> Iterator[pl.DataFrame]:
        bounds = _batch_bounds(df, by, batch_rows) if df.height else []
        for i, (a, b) in enumerate(bounds):
            if not final and i == len(bounds) - 1 and b - a < batch_rows:
                pending.append(df.slice(a, b - a))  # too small yet: the next instruments join it
                return
            _check_duplicates(df.slice(a, b - a), by, time_col)
            yield df.slice(a, b - a)

    for chunk in chunks:
        if chunk.height == 0:
            continue
        tail = chunk.select((pl.col(by) == pl.col(by).last()).sum()).item()  # rows of the chunk's last instrument
        if tail == chunk.height and pending and pending[-1][by][-1] == chunk[by][0]:
            pending.append(chunk)  # the instrument in progress goes on
            continue
        done = pl.concat([*pending, chunk.slice(0, chunk.height - tail)], rechunk=True)
        pending = []
        yield from batches(done, final=False)
        pending.append(chunk.slice(chunk.height - tail))
    if pending:
        yield from batches(pl.concat(pending, rechunk=True), final=True)


def _iter_streamed(plan: _Plan, *, time_col: str, batch_rows: int, **params) -> Iterator[pl.DataFrame]:
    """``_iter_prepared`` for a file or lazy source, without holding the input: read it in chunks when it is
    sorted by instrument and time (checked first on those two columns), else sort it once to a temporary
    Parquet file (polars' streaming sort) and read that in chunks."""
    order = list(dict.fromkeys(plan.input_cols + (["adj_close"] if "adj_close" not in plan.input_cols else [])
                               + list(COLUMNS)))
    tmp = None
    try:
        chunk_rows = max(batch_rows, 1 << 16)  # reading is per chunk; batches are cut to batch_rows after
        if _keys_sorted(plan, plan.by, time_col, chunk_rows):
            chunks = _read_chunks(plan, chunk_rows)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="tenali-features-sort-"))
            plan.kept.sort(plan.by, time_col).sink_parquet(tmp / "sorted.parquet")
            sorted_plan = _Plan(pl.scan_parquet(tmp / "sorted.parquet"), plan.keys, plan.count, plan.by,
                                plan.input_cols + [plan.by], plan.has_adj, lambda rows: rows)
            chunks = _read_chunks(sorted_plan, chunk_rows, parquet=tmp / "sorted.parquet")
        kept = plan.kept
        empty = True
        for out in _computed(_whole_instruments(chunks, plan.by, time_col, batch_rows), lambda part: _features_of(
                part, by=plan.by, time_col=time_col, has_adj=plan.has_adj, order=order, **params)):
            empty = False
            yield out
        if empty:
            yield _features_of(kept.head(0).collect(), by=plan.by, time_col=time_col, has_adj=plan.has_adj,
                               order=order, **params)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _batch_bounds(df: pl.DataFrame, by: str, batch_rows: int) -> list[tuple[int, int]]:
    """Row ranges of whole instruments (``df`` sorted by ``by``), each about ``batch_rows`` long."""
    key = pl.col(by)
    starts = df.select(pl.arg_where((key != key.shift(1)).fill_null(True))).to_series().to_list()
    bounds = [0]
    for g in starts[1:]:
        if g - bounds[-1] >= batch_rows:
            bounds.append(g)
    bounds.append(df.height)
    return list(zip(bounds[:-1], bounds[1:]))


def _features_of(part: pl.DataFrame, *, by: str, time_col: str, has_adj: bool, order: list[str], swing_length: int = 5,
                 liquidity_tolerance: float = 0.1, liquidity_lookback: int = 3, periods_per_year: int = 252,
                 trend: bool = True) -> pl.DataFrame:
    """Every feature for ``part``: whole instruments, sorted by instrument and time (``batch``: the compiled
    kernels, bit for bit ``reference.reference_features``)."""
    part = batch.prepare(part, by=by, time_col=time_col, has_adj=has_adj)
    cols = batch.feature_columns(part, time_col=time_col, swing_length=swing_length,
                                 liquidity_tolerance=liquidity_tolerance, liquidity_lookback=liquidity_lookback,
                                 periods_per_year=periods_per_year, trend=trend)
    if has_adj:
        cols["adj_close"] = part["adj_close__input"].alias("adj_close")
    return pl.DataFrame([cols[c] if c in cols else part[c] for c in order])  # no copy: the columns as they are


def _iter_prepared(prep: _Prepared, *, time_col: str, batch_rows: int, **params) -> Iterator[pl.DataFrame]:
    order = list(dict.fromkeys(prep.input_cols + (["adj_close"] if "adj_close" not in prep.input_cols else [])
                               + list(COLUMNS)))
    # Whole instruments in batches of about batch_rows: the same result, with working sets that fit in cache
    # and a peak memory that does not grow with the number of instruments.
    yield from _computed((prep.df.slice(a, b - a) for a, b in _batch_bounds(prep.df, prep.by, batch_rows)),
                         lambda part: _features_of(part, by=prep.by, time_col=time_col, has_adj=prep.has_adj,
                                                   order=order, **params))


COMPUTE_THREADS = 2  # batches computed at once


def _computed(parts: Iterator[pl.DataFrame], compute: Callable[[pl.DataFrame], pl.DataFrame]
              ) -> Iterator[pl.DataFrame]:
    """``compute`` of each part, in order, with up to ``COMPUTE_THREADS`` parts computing at once on threads: the
    kernels (numba, ``nogil``), polars and pyarrow release the GIL, so two batches really run in parallel (one
    thread's compute no longer leaves a core idle while the other waits for the writer). Memory: that many more
    batches."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(COMPUTE_THREADS, thread_name_prefix="features") as pool:
        pending: deque = deque()
        for part in parts:
            pending.append(pool.submit(compute, part))
            if len(pending) >= COMPUTE_THREADS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def iter_feature_batches(source: pl.DataFrame | pl.LazyFrame | str | Path, instrument_col: str = "instrument",
                         time_col: str = "date", *, swing_length: int = 5, liquidity_tolerance: float = 0.1,
                         liquidity_lookback: int = 3, periods_per_year: int = 252, trend: bool = True,
                         batch_rows: int = 1 << 17) -> Iterator[pl.DataFrame]:
    """``compute_features`` one batch of whole instruments at a time (in instrument order; at least one batch,
    possibly empty): concatenated, the batches are exactly ``compute_features``' result. ``source``: a frame, a
    LazyFrame, or a CSV / Parquet path. A frame is sorted in memory; a LazyFrame or a path is streamed (see
    ``_iter_streamed``): memory holds a few batches, not the input. Missing columns are reported at once, a
    duplicate (instrument, time) when its batch is reached."""
    params = dict(swing_length=swing_length, liquidity_tolerance=liquidity_tolerance,
                  liquidity_lookback=liquidity_lookback, periods_per_year=periods_per_year, trend=trend)
    if isinstance(source, pl.DataFrame):
        return _iter_prepared(_prepare(source, instrument_col, time_col), time_col=time_col, batch_rows=batch_rows,
                              **params)
    return _iter_streamed(_plan(_scan(source, time_col), instrument_col, time_col, _parquet_path(source)),
                          time_col=time_col, batch_rows=batch_rows, **params)


def compute_features(df: pl.DataFrame, instrument_col: str = "instrument", time_col: str = "date", *,
                     swing_length: int = 5, liquidity_tolerance: float = 0.1, liquidity_lookback: int = 3,
                     periods_per_year: int = 252, trend: bool = True, batch_rows: int = 1 << 19) -> pl.DataFrame:
    """Every feature of ``COLUMNS`` per instrument; see the module docstring for the conventions."""
    parts = list(iter_feature_batches(df, instrument_col, time_col, swing_length=swing_length,
                                      liquidity_tolerance=liquidity_tolerance, liquidity_lookback=liquidity_lookback,
                                      periods_per_year=periods_per_year, trend=trend, batch_rows=batch_rows))
    return parts[0] if len(parts) == 1 else pl.concat(parts, rechunk=False)


# Feature columns that are never null (booleans, codes, counts, bookkeeping): written as required Parquet fields,
# which spares the writer their definition levels.
NEVER_NULL = ("bar_index", "adj_factor", "adj_open", "adj_high", "adj_low", "obv", *PATTERNS, "swing_high",
              "swing_low", "bos", "choch", "market_structure", "ob", "ob_bull_mitigated", "ob_bear_mitigated", "fvg",
              "fvg_bull_mitigated", "fvg_bear_mitigated", "liquidity", "liq_sweep_high", "liq_sweep_low")


class _BackgroundWriter:
    """Writes batches to one Parquet (pyarrow ``ParquetWriter``, a row group per batch) or CSV file on a thread,
    so that encoding and compressing a batch overlaps computing the next; at most one batch waits in line.

    Parquet layout, chosen by measuring the writer (``docs/benchmarks.md``): no dictionaries (the features are
    floats and codes; dictionaries doubled the time for no smaller file), ``NEVER_NULL`` columns as required
    fields, and min/max statistics only for ``statistics`` (the instrument, time and bar-number columns, what
    readers filter on): together about 15% less writer time than nullable fields with statistics everywhere."""

    def __init__(self, output: str | Path, file_format: str, compression: str, statistics: list[str]) -> None:
        self.output, self.file_format, self.compression = output, file_format, compression
        self.statistics = statistics
        self.error: BaseException | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.thread = threading.Thread(target=self._run, name="features-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        writer = None
        try:
            while (part := self.queue.get()) is not None:
                if self.error is not None:
                    continue  # drain
                if self.file_format == "csv":
                    if writer is None:
                        writer = open(self.output, "wb")  # noqa: SIM115 - closed below
                        part.write_csv(writer)
                    else:
                        part.write_csv(writer, include_header=False)
                else:
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    table = part.to_arrow()
                    if writer is None:
                        schema = pa.schema([f.with_nullable(f.name not in NEVER_NULL) for f in table.schema])
                        writer = pq.ParquetWriter(self.output, schema, compression=self.compression,
                                                  use_dictionary=False,
                                                  write_statistics=[c for c in self.statistics if c in schema.names])
                    writer.write_table(table.cast(writer.schema), row_group_size=max(table.num_rows, 1))
                del part
        except BaseException as e:  # noqa: BLE001 - handed to the producer
            self.error = e
            while self.queue.get() is not None:  # let the producer finish putting
                pass
        finally:
            if writer is not None:
                try:
                    writer.close()
                except BaseException as e:  # noqa: BLE001
                    self.error = self.error or e

    def put(self, part: pl.DataFrame) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(part)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


def compute_features_to_file(source: pl.DataFrame | pl.LazyFrame | str | Path, output: str | Path, *,
                             instrument_col: str = "instrument", time_col: str = "date", file_format: str = "parquet",
                             compression: str = "snappy", batch_rows: int = 1 << 17, **params) -> FeatureSummary:
    """``compute_features`` written batch by batch to ``output`` (``file_format`` "parquet" or "csv"). From a path
    or a LazyFrame the input is streamed too (``_iter_streamed``), so peak memory is a few batches of whole
    instruments, neither the input nor the output (438 bytes a row); a DataFrame is sorted in memory first.
    Parquet is written with one pyarrow ``ParquetWriter``, a row group per batch (layout: ``_BackgroundWriter``),
    to a temporary name renamed to ``output`` once complete (nothing is left on an error); reading it back gives exactly
    ``compute_features``' frame. Returns a ``FeatureSummary`` (rows, instruments, event counts)."""
    if file_format not in ("parquet", "csv"):
        raise ValueError(f"file_format must be 'parquet' or 'csv', got {file_format!r}")
    if isinstance(source, pl.DataFrame):  # in memory already: sort it there
        prep = _prepare(source, instrument_col, time_col)
        batches = _iter_prepared(prep, time_col=time_col, batch_rows=batch_rows, **params)
        summary = FeatureSummary(prep.input_rows, 0, 0, 0)
        by = prep.by
        del prep  # the generator keeps the sorted input alive only while it runs
    else:
        plan = _plan(_scan(source, time_col), instrument_col, time_col, _parquet_path(source))
        summary = FeatureSummary(plan.count.collect().item(), 0, 0, 0)
        by = plan.by
        batches = _iter_streamed(plan, time_col=time_col, batch_rows=batch_rows, **params)
    output = Path(output)
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")  # renamed once complete
    sink = _BackgroundWriter(partial, file_format, compression, statistics=[by, time_col, "bar_index"])
    try:
        for part in batches:
            sink.put(part)
            summary.rows += part.height
            summary.columns = part.width
            if part.height:
                summary.instruments += int(part.select((pl.col("bar_index") == 0).sum()).item())
                for k, v in event_counts(part).items():
                    summary.counts[k] = summary.counts.get(k, 0) + v
            del part
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            sink.close()
        partial.unlink(missing_ok=True)
        raise
    try:
        sink.close()
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return summary


def compute_features_to_parquet(source: pl.DataFrame | pl.LazyFrame | str | Path, output: str | Path, *,
                                instrument_col: str = "instrument", time_col: str = "date", batch_rows: int = 1 << 17,
                                **params) -> FeatureSummary:
    """``compute_features_to_file`` with Parquet output."""
    return compute_features_to_file(source, output, instrument_col=instrument_col, time_col=time_col,
                                    file_format="parquet", batch_rows=batch_rows, **params)


def event_counts(features: pl.DataFrame) -> dict[str, int]:
    """How many times each pattern / event column fired (for asset metadata and reports)."""
    exprs = []
    for c in EVENT_COLUMNS:
        col = pl.col(c)
        dtype = features.schema[c]
        if dtype == pl.Boolean:
            exprs.append(col.sum().alias(c))
        elif c in ("bos", "choch", "ob", "fvg", "liquidity"):
            exprs += [(col == 1).sum().alias(f"{c}_bull"), (col == -1).sum().alias(f"{c}_bear")]
        else:
            exprs.append(col.sum().alias(c))
    return {k: int(v or 0) for k, v in features.select(exprs).row(0, named=True).items()}
