"""The compiled kernels (technicals/kernels.py, pattern_kernel.py, structure_kernel.py) equal, bit for bit, what
they replaced.

Each kernel is compared on random instruments (lengths from 1 bar to past every warm-up) with the polars
expression or numpy search of the previous implementation; floats are compared as bit patterns, so even a
last-digit difference (or -0.0 for 0.0) fails. The whole batch (``batch.feature_columns``, what compute_features
runs) is compared with the polars-expression implementation (``reference.reference_features``) on every column,
on markets with prices on a coarse grid (ties everywhere), splits, one-bar and short instruments, and several
parameter sets. Further checks: the bar-by-bar reference of test_technical_smc.py and the reference libraries of
test_technical_references.py; the streaming path is compared with the in-memory one at the end.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tenali_pipeline.technicals import indicators as ind
from tenali_pipeline.technicals import kernels
from tenali_pipeline.technicals import features
from tenali_pipeline.technicals.features import compute_features, compute_features_to_parquet, iter_feature_batches
from tenali_pipeline.technicals.pattern_kernel import pattern_kernel
from tenali_pipeline.technicals.patterns import PATTERNS, add_patterns
from tenali_pipeline.technicals.reference import reference_features
from tenali_pipeline.technicals.smc import first_hit


def _same_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, what
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: null / NaN positions differ"
    ok = ~np.isnan(want)
    diff = np.flatnonzero(got[ok].view(np.int64) != want[ok].view(np.int64))
    assert diff.size == 0, f"{what}: {diff.size} values differ, e.g. {got[ok][diff[:3]]} vs {want[ok][diff[:3]]}"


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    rng = np.random.default_rng(11)
    sizes = np.concatenate([[1, 2, 13, 14, 15, 26, 34, 200, 201], rng.integers(1, 700, 40)])
    g = np.repeat(np.arange(sizes.size), sizes)
    n = g.size
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    close = np.where(rng.random(n) < 0.05, np.round(close, 0), close)  # repeated closes: zero changes
    span = np.abs(rng.normal(0, 0.5, n))
    volume = np.floor(rng.lognormal(10, 1, n))
    volume[rng.random(n) < 0.02] = 0
    df = pl.DataFrame({"g": g, "close": close, "high": close + span, "low": close - span,
                       "volume": pl.Series(volume).set(pl.Series(rng.random(n) < 0.01), None)})
    df = df.with_columns(bar_index=pl.int_range(pl.len()).over("g"))
    c, bar = pl.col("close"), pl.col("bar_index")
    prev = ind.lag(c, 1, bar)
    return df.with_columns(_delta=c - prev, _tr=ind.true_range(pl.col("high"), pl.col("low"), prev))


def test_indicator_kernel_is_the_polars_expressions(frame):
    c, delta = pl.col("close"), pl.col("_delta")
    want = frame.select(**{k: e.over("g") for k, e in {
        "sma_20": ind.sma(c, 20), "sma_50": ind.sma(c, 50), "sma_200": ind.sma(c, 200),
        "ema_12": ind.ema(c, 12), "ema_26": ind.ema(c, 26), "ema_50": ind.ema(c, 50),
        "_gain": ind.wilder(delta.clip(lower_bound=0), 14, pl.col("bar_index")),
        "_loss": ind.wilder((-delta).clip(lower_bound=0), 14, pl.col("bar_index")),
        "atr_14": ind.wilder(pl.col("_tr"), 14, pl.col("bar_index")),
        "obv": ind.obv_from_change(delta, pl.col("volume")),
    }.items()}).with_columns(macd=pl.col("ema_12") - pl.col("ema_26"))
    want = want.with_columns(macd_signal=pl.col("macd").ewm_mean(span=9, adjust=False, min_samples=9)
                             .over(frame["g"]))
    bars = frame["bar_index"].to_numpy()
    starts = np.append(np.flatnonzero(bars == 0), bars.size).astype(np.int64)
    got = kernels.indicator_kernel(starts, frame["close"].to_numpy(), frame["_delta"].to_numpy(),
                                   frame["_tr"].to_numpy(), frame["volume"].cast(pl.Float64).fill_null(0).to_numpy())
    for i, (name, warm) in enumerate(zip(kernels.INDICATOR_ROWS, kernels.INDICATOR_WARMUP)):
        expected = want[name].to_numpy()
        assert np.isnan(expected[bars < warm]).all(), name  # the warm-up the caller masks to null
        _same_bits(np.where(bars >= warm, got[i], np.nan), expected, name)


@pytest.mark.parametrize("below", [True, False])
def test_resolution_kernel_is_the_first_hit_search(frame, below):
    rng = np.random.default_rng(3 + below)
    values = frame["low" if below else "high"].to_numpy()
    n = values.size
    bars = frame["bar_index"].to_numpy()
    starts = np.append(np.flatnonzero(bars == 0), n).astype(np.int64)
    end = np.repeat(starts[1:] - 1, np.diff(starts))
    created = rng.random(n) < 0.2
    level = frame["close"].to_numpy() * rng.uniform(0.9, 1.1, n)
    level[::97] = values[::97]  # exact ties: strict and non-strict must differ there
    for strict in (False, True):
        count, latest = kernels.resolution_kernel(starts, values, created, level, strict, below)
        src = np.flatnonzero(created)
        hit = first_hit(values, src + 1, level[src], end[src], starts[:-1], below=below, strict=strict)
        ok = hit >= 0
        want_latest = np.full(n, -1)
        np.maximum.at(want_latest, hit[ok], src[ok])
        np.testing.assert_array_equal(count, np.bincount(hit[ok], minlength=n))
        np.testing.assert_array_equal(latest, want_latest)


def _liquidity_polars(frame: pl.DataFrame, price: np.ndarray, flag: np.ndarray, tol: np.ndarray, lookback: int,
                      highs: bool) -> tuple[np.ndarray, np.ndarray]:
    """The previous implementation (polars, shifts over the swing events of each instrument)."""
    edge_of, sign = (pl.max_horizontal, 1) if highs else (pl.min_horizontal, -1)
    ev = pl.DataFrame({"g": frame["g"], "p": price, "tol": tol, "flag": flag}).with_columns(
        _row=pl.int_range(pl.len()), tol=pl.col("tol").fill_nan(None)).filter("flag")
    p = pl.col("p")
    candidates, between = [], None
    for k in range(1, lookback + 1):
        pk = p.shift(k)
        edge = edge_of(p, pk)
        untaken = pl.lit(True) if between is None else (sign * (between - edge) <= 0)
        candidates.append(pl.when(((p - pk).abs() <= pl.col("tol")) & untaken)
                          .then(pl.struct(lvl=edge, at=pl.col("_row").shift(k))))
        between = pk if between is None else edge_of(between, pk)
    pools = ev.with_columns(m=pl.coalesce(candidates).over("g")).filter(pl.col("m").is_not_null()).unnest("m")
    level, earlier = np.full(price.size, np.nan), np.full(price.size, -1)
    level[pools["_row"].to_numpy()] = pools["lvl"].to_numpy()
    earlier[pools["_row"].to_numpy()] = pools["at"].to_numpy()
    return level, earlier


@pytest.mark.parametrize("highs", [True, False])
def test_liquidity_kernel_is_the_polars_shifts(frame, highs):
    rng = np.random.default_rng(5 + highs)
    n = frame.height
    bars = frame["bar_index"].to_numpy()
    starts = np.append(np.flatnonzero(bars == 0), n).astype(np.int64)
    flag = rng.random(n) < 0.3
    price = np.round(frame["close"].to_numpy() * rng.uniform(0.98, 1.02, n), 1)  # near-equal and equal levels
    tol = np.where(rng.random(n) < 0.1, np.nan, rng.uniform(0, 1.5, n))  # NaN: the ATR still warming up
    for lookback in (1, 3, 5):
        level, earlier = kernels.liquidity_kernel(starts, flag, price, tol, lookback, highs)
        want_level, want_earlier = _liquidity_polars(frame, price, flag, tol, lookback, highs)
        np.testing.assert_array_equal(earlier, want_earlier)
        _same_bits(level, want_level, f"lookback {lookback}")


def test_streamed_sorted_file_is_the_in_memory_frame(tmp_path):
    """A sorted Parquet file is read in chunks (instruments cut across chunks carried over) and gives exactly
    the in-memory result; so does an unsorted one, sorted once to a temporary file."""
    rng = np.random.default_rng(2)
    parts = []
    for i, n in enumerate([1, 300, 40, 1_000, 7]):
        close = 20 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        span = np.abs(rng.normal(0, 0.3, n))
        parts.append(pl.DataFrame({"instrument": f"S{i}", "date": pl.date_range(pl.date(2020, 1, 1), pl.date(2030, 1, 1),
                                                                                 eager=True).head(n),
                                   "open": close + rng.normal(0, 0.1, n).clip(-span, span), "high": close + span,
                                   "low": close - span, "close": close, "volume": rng.integers(0, 10_000, n)}))
    df = pl.concat(parts)
    want = compute_features(df)
    src = tmp_path / "sorted.parquet"
    df.write_parquet(src, row_group_size=97)
    for batch_rows in (1, 250, 10**6):
        batches = list(iter_feature_batches(src, batch_rows=batch_rows))
        assert pl.concat(batches).equals(want, null_equal=True)
        assert all(p["instrument"].n_unique() == (p["bar_index"] == 0).sum() for p in batches)
    shuffled = tmp_path / "shuffled.parquet"
    df.sample(fraction=1.0, shuffle=True, seed=1).write_parquet(shuffled)
    out = tmp_path / "out.parquet"
    summary = compute_features_to_parquet(shuffled, out, batch_rows=100)
    assert pl.read_parquet(out).equals(want, null_equal=True) and summary.rows == want.height
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial file left


def _market(seed: int, grid: float | None) -> pl.DataFrame:
    """Random instruments (1 bar to 900), some with a 2:1 split, prices optionally rounded to ``grid`` (equal
    highs, lows, opens and closes everywhere: the ties every rule must break as the expressions do), flat bars."""
    rng = np.random.default_rng(seed)
    parts = []
    for i, n in enumerate(np.concatenate([[1, 2, 3, 11, 12, 13, 20, 34, 35, 200], rng.integers(1, 900, 25)])):
        close = 30 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0, 0.01, n))
        span = np.abs(rng.normal(0, 0.4, n))
        high = np.maximum(open_, close) + span * rng.uniform(0, 1, n)
        low = np.minimum(open_, close) - span * rng.uniform(0, 1, n)
        flat = rng.random(n) < 0.02  # halts: O = H = L = C
        open_, high, low = np.where(flat, close, open_), np.where(flat, close, high), np.where(flat, close, low)
        if grid:
            open_, high, low, close = (np.round(x / grid) * grid for x in (open_, high, low, close))
        adj = close * np.where((i % 3 == 0) & (np.arange(n) < n // 2), 0.5, 1.0)  # a 2:1 split halfway
        parts.append(pl.DataFrame({"instrument": f"I{i:02d}", "date": pl.date_range(
            pl.date(2001, 1, 1), pl.date(2010, 1, 1), eager=True).head(n), "open": open_, "high": high,
            "low": np.maximum(low, grid or 0.01), "close": close, "adj_close": adj,
            "volume": rng.integers(0, 50_000, n).astype(float)}))
    return pl.concat(parts)


@pytest.mark.parametrize("grid", [None, 0.1, 1.0])
@pytest.mark.parametrize("params", [{}, {"swing_length": 1, "trend": False, "liquidity_lookback": 0},
                                    {"swing_length": 3, "liquidity_tolerance": 0.5, "liquidity_lookback": 5},
                                    {"swing_length": 10, "periods_per_year": 365}])
def test_compiled_batch_is_the_polars_reference(grid, params):
    """Every column of the compiled path equals the polars-expression implementation, bit for bit."""
    prep = features._prepare(_market(7, grid), "instrument", "date")
    order = list(dict.fromkeys(prep.input_cols + list(features.COLUMNS)))
    kw = dict(by=prep.by, time_col="date", has_adj=prep.has_adj, order=order, **params)
    got, want = features._features_of(prep.df, **kw), reference_features(prep.df, **kw)
    assert got.columns == want.columns and got.schema == want.schema
    for c in got.columns:
        x, y = got[c], want[c]
        assert x.is_null().equals(y.is_null()), c
        if x.dtype.is_float():
            _same_bits(x.to_numpy(), y.to_numpy(), c)
        else:
            assert x.equals(y, null_equal=True), c
    assert sum(got[p].sum() for p in PATTERNS) > 0 and got["ob"].abs().sum() > 0


@pytest.mark.parametrize("trend", [True, False])
def test_pattern_kernel_is_add_patterns(trend):
    """The twelve patterns on prices on a 0.05 grid (equal bodies, shadows and closes are common)."""
    df = features._prepare(_market(3, 0.05), "instrument", "date").df
    df = df.with_columns(bar_index=pl.int_range(pl.len()).over("instrument"))
    o, h, l, c = (df[x].to_numpy() for x in ("open", "high", "low", "close"))
    want = add_patterns(df, by="instrument", trend=trend, open_="open", high="high", low="low", close="close")
    bars = df["bar_index"].to_numpy()
    got = pattern_kernel(np.append(np.flatnonzero(bars == 0), bars.size).astype(np.int64), o, h, l, c, trend)
    for i, name in enumerate(PATTERNS):
        np.testing.assert_array_equal(got[i], want[name].to_numpy(), err_msg=name)
    assert got.sum(axis=1).min() > 0  # every pattern occurs


def test_parquet_layout(tmp_path):
    """Never-null feature columns are required fields, statistics are kept for the instrument, time and bar
    columns only, and reading the file back gives the frame."""
    import pyarrow.parquet as pq

    df = _market(1, None)
    out = tmp_path / "f.parquet"
    compute_features_to_parquet(df, out, batch_rows=2_000)
    f = pq.ParquetFile(out)
    schema = f.schema_arrow
    assert all(not schema.field(c).nullable for c in features.NEVER_NULL)
    assert schema.field("sma_20").nullable and schema.field("close").nullable
    rg = f.metadata.row_group(0)
    with_stats = {rg.column(i).path_in_schema for i in range(rg.num_columns) if rg.column(i).is_stats_set}
    assert with_stats == {"instrument", "date", "bar_index"} and f.metadata.num_row_groups > 1
    assert pl.read_parquet(out).equals(compute_features(df), null_equal=True)
