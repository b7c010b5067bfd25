"""Technical indicators: causality, per-instrument isolation, and values against plain numpy references
(conventions in technicals/indicators.py; library references in test_technical_references.py)."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from tenali_pipeline.technicals.features import compute_features
from tenali_pipeline.technicals.indicators import add_indicators

INDICATORS = ["ret_1d", "log_ret_1d", "sma_20", "sma_50", "sma_200", "rsi_14", "macd", "macd_signal", "macd_hist",
              "bb_upper", "bb_lower", "realised_vol_20"]
N, K = 260, 40


def _walk(seed: int, n: int, start: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return start * np.exp(np.cumsum(rng.normal(0.0003, 0.02, n)))


def _two_instruments(n: int = N + K) -> pl.DataFrame:
    """Two instruments on the same days, rows interleaved (A, B, A, B, ...) rather than grouped."""
    days = [dt.date(2010, 1, 1) + dt.timedelta(days=i) for i in range(n)]
    a, b = _walk(1, n, 100.0), _walk(2, n, 20.0)
    rows = []
    for i, day in enumerate(days):
        rows.append(("AAA", day, a[i]))
        rows.append(("BBB", day, b[i]))
    return pl.DataFrame(rows, schema={"instrument": pl.String, "date": pl.Date, "adj_close": pl.Float64}, orient="row")


def _assert_same(left: pl.DataFrame, right: pl.DataFrame, columns: list[str]) -> None:
    for c in columns:
        x, y = left[c], right[c]
        assert x.is_null().to_list() == y.is_null().to_list(), c
        np.testing.assert_allclose(x.to_numpy().astype(float), y.to_numpy().astype(float), rtol=1e-12, atol=1e-12,
                                   equal_nan=True, err_msg=c)


def _first_n_per_instrument(df: pl.DataFrame, n: int) -> pl.DataFrame:
    return df.sort("instrument", "date").filter(pl.int_range(pl.len()).over("instrument") < n)


def test_every_indicator_is_causal():
    full = _two_instruments()
    on_full = add_indicators(full, by="instrument")
    on_prefix = add_indicators(_first_n_per_instrument(full, N).sample(fraction=1.0, shuffle=True, seed=3),
                               by="instrument")
    head = _first_n_per_instrument(on_full, N)
    assert head.height == on_prefix.height == 2 * N
    assert head.select("instrument", "date").equals(on_prefix.select("instrument", "date"))
    # by the end of the prefix every indicator has values, so the comparison covers real numbers
    assert on_prefix.filter(pl.col("date") == on_prefix["date"].max()).null_count().sum_horizontal().item() == 0
    _assert_same(head, on_prefix, INDICATORS)


def test_changing_the_future_does_not_change_the_past():
    full = _two_instruments()
    cutoff = full["date"].sort()[2 * N]
    shocked = full.with_columns(
        adj_close=pl.when(pl.col("date") >= cutoff).then(pl.col("adj_close") * 50).otherwise(pl.col("adj_close")))
    a = add_indicators(full, by="instrument").filter(pl.col("date") < cutoff)
    b = add_indicators(shocked, by="instrument").filter(pl.col("date") < cutoff)
    _assert_same(a, b, INDICATORS)
    # and the shock is visible afterwards, so the indicators do read the price
    after = (add_indicators(full, by="instrument").filter(pl.col("date") == cutoff)["sma_20"]
             != add_indicators(shocked, by="instrument").filter(pl.col("date") == cutoff)["sma_20"])
    assert after.all()


def test_instruments_do_not_leak_into_each_other():
    both = add_indicators(_two_instruments(), by="instrument")
    for name in ("AAA", "BBB"):
        alone = add_indicators(_two_instruments().filter(pl.col("instrument") == name), by="instrument")
        _assert_same(both.filter(pl.col("instrument") == name), alone, INDICATORS)
    firsts = both.group_by("instrument").agg(pl.all().sort_by("date").first())
    assert firsts["ret_1d"].is_null().all()
    assert firsts["log_ret_1d"].is_null().all()


def _wilder_rsi(close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's RSI as he wrote it (and TA-Lib computes it): the first average gain / loss is the simple mean
    of the first n changes, reported on bar n; after that avg_t = avg_{t-1} + (change_t - avg_{t-1}) / n."""
    delta = np.diff(close)
    gain, loss = np.maximum(delta, 0), np.maximum(-delta, 0)
    out = np.full(close.size, np.nan)
    ag, al = gain[:n].mean(), loss[:n].mean()
    out[n] = 100 - 100 / (1 + ag / al)
    for t in range(n + 1, close.size):
        ag += (gain[t - 1] - ag) / n
        al += (loss[t - 1] - al) / n
        out[t] = 100.0 if al == 0 else 100 - 100 / (1 + ag / al)
    return out


def _ewm_rsi(close: np.ndarray, n: int = 14) -> np.ndarray:
    """The ``ta`` library's convention: ewm(alpha=1/n, adjust=False) started from a zero change on the first
    bar, reported from bar n-1."""
    delta = np.concatenate([[0.0], np.diff(close)])
    gain, loss = np.maximum(delta, 0), np.maximum(-delta, 0)
    out = np.full(close.size, np.nan)
    ag, al = gain[0], loss[0]
    for t in range(1, close.size):
        ag += (gain[t] - ag) / n
        al += (loss[t] - al) / n
        if t >= n - 1:
            out[t] = 100 - 100 / (1 + ag / al)
    return out


def _one(close: np.ndarray) -> pl.DataFrame:
    days = [dt.date(2010, 1, 1) + dt.timedelta(days=i) for i in range(close.size)]
    return add_indicators(pl.DataFrame({"t": "X", "date": days, "adj_close": close}), by="t")


def test_rsi_matches_a_written_out_wilder_rsi():
    close = _walk(7, 300, 50.0)
    got = _one(close)["rsi_14"].to_numpy()
    want = _wilder_rsi(close)
    assert np.isnan(got[:14]).all() and not np.isnan(got[14:]).any()
    np.testing.assert_allclose(got[14:], want[14:], rtol=1e-10)
    assert ((got[14:] > 0) & (got[14:] < 100)).all()


def test_rsi_converges_to_the_ewm_convention():
    close = _walk(8, 400, 50.0)
    got = _one(close)["rsi_14"].to_numpy()
    ewm = _ewm_rsi(close)
    assert abs(got[14] - ewm[14]) > 1e-3  # the seeds differ...
    np.testing.assert_allclose(got[250:], ewm[250:], atol=1e-4)  # ...and the difference decays away


def test_rsi_extremes():
    up = _one(np.linspace(10, 20, 40))["rsi_14"].to_numpy()
    down = _one(np.linspace(20, 10, 40))["rsi_14"].to_numpy()
    assert np.allclose(up[14:], 100.0) and np.allclose(down[14:], 0.0)


def test_moving_averages_bollinger_and_volatility_against_numpy():
    close = _walk(9, 260, 30.0)
    out = _one(close)
    sma20 = np.array([close[t - 19: t + 1].mean() if t >= 19 else np.nan for t in range(close.size)])
    pop_std = np.array([close[t - 19: t + 1].std(ddof=0) if t >= 19 else np.nan for t in range(close.size)])
    sample_std = np.array([close[t - 19: t + 1].std(ddof=1) if t >= 19 else np.nan for t in range(close.size)])
    np.testing.assert_allclose(out["sma_20"].to_numpy(), sma20, rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(out["bb_upper"].to_numpy(), sma20 + 2 * pop_std, rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(out["bb_lower"].to_numpy(), sma20 - 2 * pop_std, rtol=1e-10, equal_nan=True)
    # ddof matters by more than the tolerance, so the comparison above pins ddof=0
    assert not np.allclose(out["bb_upper"].to_numpy()[19:], (sma20 + 2 * sample_std)[19:], rtol=1e-6)
    sma200 = np.array([close[t - 199: t + 1].mean() if t >= 199 else np.nan for t in range(close.size)])
    np.testing.assert_allclose(out["sma_200"].to_numpy(), sma200, rtol=1e-10, equal_nan=True)

    log_ret = np.concatenate([[np.nan], np.diff(np.log(close))])
    np.testing.assert_allclose(out["log_ret_1d"].to_numpy(), log_ret, rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(out["ret_1d"].to_numpy()[1:], close[1:] / close[:-1] - 1, rtol=1e-10)
    vol = np.array([log_ret[t - 19: t + 1].std(ddof=1) * np.sqrt(252) if t >= 20 else np.nan
                    for t in range(close.size)])
    np.testing.assert_allclose(out["realised_vol_20"].to_numpy(), vol, rtol=1e-9, equal_nan=True)


def _ema(x: np.ndarray, span: int) -> np.ndarray:
    alpha, out = 2 / (span + 1), np.empty_like(x)
    out[0] = x[0]
    for t in range(1, x.size):
        out[t] = alpha * x[t] + (1 - alpha) * out[t - 1]
    return out


def test_macd_against_numpy():
    close = _walk(10, 200, 30.0)
    out = _one(close)
    macd = _ema(close, 12) - _ema(close, 26)
    macd[:25] = np.nan  # reported once the slow EMA has 26 prices, as ``ta`` does
    signal = np.full(close.size, np.nan)
    signal[25:] = _ema(macd[25:], 9)  # the signal EMA starts at the first MACD value...
    signal[:33] = np.nan  # ...and is reported from its 9th
    np.testing.assert_allclose(out["macd"].to_numpy(), macd, rtol=1e-9, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(out["macd_signal"].to_numpy(), signal, rtol=1e-9, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(out["macd_hist"].to_numpy(), macd - signal, rtol=1e-9, atol=1e-12, equal_nan=True)


def _bars(seed: int, n: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = _walk(seed, n, 40.0)
    if n > 50:
        close[50] = close[49]  # an unchanged close
    open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0, 0.01, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, n))
    volume = rng.integers(0, 1000, n).astype(float)
    days = [dt.date(2010, 1, 1) + dt.timedelta(days=i) for i in range(n)]
    return pl.DataFrame({"date": days, "open": open_, "high": high, "low": low, "close": close, "volume": volume})


def test_atr_stochastic_obv_and_emas_against_numpy():
    bars = _bars(12, 260)
    out = compute_features(bars)
    o, h, l, c, v = (bars[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    tr = np.maximum(h[1:] - l[1:], np.maximum(abs(h[1:] - c[:-1]), abs(l[1:] - c[:-1])))
    atr = np.full(c.size, np.nan)
    atr[14] = tr[:14].mean()  # bars 1..14: bar 0 has no previous close
    for t in range(15, c.size):
        atr[t] = atr[t - 1] + (tr[t - 1] - atr[t - 1]) / 14
    np.testing.assert_allclose(out["atr_14"].to_numpy(), atr, rtol=1e-10, equal_nan=True)
    k = np.full(c.size, np.nan)
    for t in range(13, c.size):
        hh, ll = h[t - 13:t + 1].max(), l[t - 13:t + 1].min()
        k[t] = 100 * (c[t] - ll) / (hh - ll)
    np.testing.assert_allclose(out["stoch_k"].to_numpy(), k, rtol=1e-10, equal_nan=True)
    d = np.array([k[t - 2:t + 1].mean() if t >= 15 else np.nan for t in range(c.size)])
    np.testing.assert_allclose(out["stoch_d"].to_numpy(), d, rtol=1e-10, equal_nan=True)
    obv = np.concatenate([[0.0], np.cumsum(np.sign(np.diff(c)) * v[1:])])
    np.testing.assert_allclose(out["obv"].to_numpy(), obv, rtol=1e-12)
    assert out["obv"][50] == out["obv"][49]
    for span in (12, 26, 50):
        e = _ema(c, span)
        e[:span - 1] = np.nan
        np.testing.assert_allclose(out[f"ema_{span}"].to_numpy(), e, rtol=1e-10, equal_nan=True)
    lower, upper = out["bb_lower"].to_numpy(), out["bb_upper"].to_numpy()
    np.testing.assert_allclose(out["bb_pct_b"].to_numpy(), (c - lower) / (upper - lower), rtol=1e-9, equal_nan=True)


def test_flat_prices_give_neutral_oscillators():
    bars = _bars(13, 40).with_columns(open=10.0, high=10.0, low=10.0, close=10.0)
    out = compute_features(bars).tail(10)
    assert out["rsi_14"].to_list() == [50.0] * 10
    assert out["stoch_k"].to_list() == [50.0] * 10
    assert out["bb_pct_b"].to_list() == [0.5] * 10
    assert out["atr_14"].to_list() == [0.0] * 10


def test_other_price_and_time_columns_and_row_count():
    df = pl.DataFrame({"symbol": ["X"] * 30, "timestamp": [dt.datetime(2020, 1, 1) + dt.timedelta(days=i) for i in range(30)],
                       "close": np.linspace(1, 2, 30)})
    out = add_indicators(df.reverse(), by="symbol", price="close", time="timestamp")
    assert out.height == 30
    assert out["timestamp"].is_sorted()
    assert out["sma_20"].to_numpy()[19] == pytest.approx(np.linspace(1, 2, 30)[:20].mean())
    assert set(INDICATORS) <= set(out.columns)
