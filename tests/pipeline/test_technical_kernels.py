"""The compiled kernels (technicals/kernels.py) equal, bit for bit, what they replaced.

Each kernel is compared on random instruments (lengths from 1 bar to past every warm-up) with the polars
expression or numpy search of the previous implementation; floats are compared as bit patterns, so even a
last-digit difference (or -0.0 for 0.0) fails. The end-to-end check that the whole feature frame did not move
is the bar-by-bar reference of test_technical_smc.py and the reference libraries of
test_technical_references.py; the streaming path is compared with the in-memory one at the end.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tenali_pipeline.technicals import indicators as ind
from tenali_pipeline.technicals import kernels
from tenali_pipeline.technicals.features import compute_features, compute_features_to_parquet, iter_feature_batches
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
