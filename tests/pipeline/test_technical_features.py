"""compute_features: documented columns, causality of every column, splits, gaps, halts, intraday VWAP, and
input handling."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from tenali_pipeline.sources.sample import SampleMarketClient
from tenali_pipeline.technicals.features import (
    COLUMNS,
    FeatureInputError,
    compute_features,
    compute_features_to_file,
    compute_features_to_parquet,
    event_counts,
    iter_feature_batches,
)
from tenali_pipeline.technicals.patterns import PATTERNS

RAW = ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume", "source"]


@pytest.fixture(scope="module")
def market() -> pl.DataFrame:
    """Five real stocks 2000-2013, rows shuffled so instruments are interleaved."""
    return SampleMarketClient().fetch().select(RAW).sample(fraction=1.0, shuffle=True, seed=11)


@pytest.fixture(scope="module")
def full(market) -> pl.DataFrame:
    return compute_features(market, instrument_col="ticker")


def _assert_frames_equal(a: pl.DataFrame, b: pl.DataFrame, context: str = "", rtol: float = 1e-12,
                         atol: float = 0.0) -> None:
    assert a.columns == b.columns
    assert a.height == b.height
    for c in a.columns:
        x, y = a[c], b[c]
        assert x.is_null().to_list() == y.is_null().to_list(), (context, c)
        if x.dtype.is_float():
            np.testing.assert_allclose(x.to_numpy(), y.to_numpy(), rtol=rtol, atol=atol, equal_nan=True,
                                       err_msg=f"{context} {c}")
        else:
            assert x.equals(y), (context, c)


def test_output_columns_are_the_documented_ones(market, full):
    assert full.columns == RAW + list(COLUMNS)
    assert full.height == market.height
    assert full.select("ticker", "date").equals(market.select("ticker", "date").sort("ticker", "date"))
    assert all(COLUMNS.values())
    for p in PATTERNS:
        assert full.schema[p] == pl.Boolean and full[p].null_count() == 0
    for c in ("bos", "choch", "ob", "fvg", "liquidity", "market_structure"):
        assert full.schema[c] == pl.Int8 and set(full[c].unique()) <= {-1, 0, 1}
    for c in COLUMNS:
        if c.endswith("_date"):
            assert full.schema[c] == pl.Date, c
    # once warmed up, every indicator has a value on every bar (vwap is for intraday data only)
    warm = full.filter(pl.col("bar_index") >= 200)
    indicators = [c for c in list(COLUMNS)[:list(COLUMNS).index("vwap")] if c != "days_since_prev_bar"]
    assert warm.select(indicators).null_count().sum_horizontal().item() == 0
    assert full["vwap"].null_count() == full.height
    counts = event_counts(full)
    assert all(counts[k] > 0 for k in counts), counts


@pytest.fixture(scope="module")
def segments(market) -> pl.DataFrame:
    """60 instruments cut from the real histories (5 tickers x 12 start offsets, up to 600 bars each), rows
    interleaved: many instruments, so every truncation below tests many last bars at once."""
    parts = []
    for k in range(12):
        part = market.sort("ticker", "date").filter(pl.int_range(pl.len()).over("ticker").is_between(40 * k, 40 * k + 599))
        parts.append(part.with_columns(ticker=pl.col("ticker") + f"_{k}"))
    return pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=1)


def test_appending_future_bars_never_changes_the_past(segments):
    """Every column: each instrument cut at its own random length gives exactly the full run's first rows.
    A look-ahead of even one bar shows on the last kept bar of some of the 60 instruments."""
    full = compute_features(segments, instrument_col="ticker")
    position = pl.int_range(pl.len()).over("ticker", order_by="date")
    rng = np.random.default_rng(2)
    for trial in range(4):
        keep = pl.DataFrame({"ticker": full["ticker"].unique().sort()}).with_columns(
            n=pl.Series(rng.integers(20, 600, full["ticker"].n_unique())))
        def cut(df):
            return df.join(keep, on="ticker").filter(position < pl.col("n")).drop("n")
        prefix = compute_features(cut(segments), instrument_col="ticker")
        _assert_frames_equal(prefix, cut(full), f"trial {trial}")


def test_changing_the_future_does_not_change_the_past(market, full):
    cutoff = dt.date(2008, 1, 2)
    rng = np.random.default_rng(0)
    noise = pl.Series(rng.uniform(0.5, 3.0, market.height))
    later = pl.col("date") >= cutoff
    shocked = market.with_columns(noise.alias("k")).with_columns(
        [pl.when(later).then(pl.col(c) * pl.col("k")).otherwise(pl.col(c)) for c in ("open", "high", "low", "close",
                                                                                      "adj_close")]
        + [pl.when(later).then(pl.col("volume") * 7).otherwise(pl.col("volume"))]).drop("k")
    # high/low stay consistent because every price of a bar is scaled by the same factor
    other = compute_features(shocked, instrument_col="ticker")
    _assert_frames_equal(other.filter(~later), full.filter(~later), "shock")
    assert not other.filter(later)["sma_20"].equals(full.filter(later)["sma_20"])


def test_instruments_do_not_leak_into_each_other(market, full):
    for ticker in ("FB", "GOOG"):
        alone = compute_features(market.filter(pl.col("ticker") == ticker), instrument_col="ticker")
        _assert_frames_equal(alone, full.filter(pl.col("ticker") == ticker), ticker)


def _walk(n: int, seed: int, start: float = 50.0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    prev = np.concatenate([[close[0]], close[:-1]])
    open_ = prev * np.exp(rng.normal(0, 0.01, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, n))
    days = [dt.date(2015, 1, 1) + dt.timedelta(days=i) for i in range(n)]
    return pl.DataFrame({"date": days, "open": open_, "high": high, "low": low, "close": close,
                         "volume": rng.integers(1_000, 50_000, n).astype(float)})


def test_a_split_creates_no_false_pattern_or_event():
    """A 2:1 split in raw prices (with adj_close) gives the same features as the same series never split."""
    cont = _walk(400, 3).with_columns(instrument=pl.lit("X"))
    split_at = 250
    raw = cont.with_columns(
        [pl.when(pl.int_range(pl.len()) < split_at).then(pl.col(c) * 2).otherwise(pl.col(c)).alias(c)
         for c in ("open", "high", "low", "close")],
        adj_close=pl.col("close"),
        volume=pl.when(pl.int_range(pl.len()) < split_at).then(pl.col("volume") / 2).otherwise(pl.col("volume")))
    a, b = compute_features(raw), compute_features(cont)
    events = [c for c in COLUMNS if c.startswith("cdl_") or c in (
        "swing_high", "swing_low", "bos", "choch", "ob", "fvg", "liquidity", "fvg_bull_mitigated", "fvg_bear_mitigated",
        "ob_bull_mitigated", "ob_bear_mitigated", "liq_sweep_high", "liq_sweep_low", "swing_high_date", "ob_date")]
    for c in events:
        assert a[c].equals(b[c]), c
    ratios = ["ret_1d", "log_ret_1d", "rsi_14", "stoch_k", "bb_pct_b", "realised_vol_20"]
    for c in ratios:
        np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=1e-9, equal_nan=True, err_msg=c)
    # levels are quoted in each bar's own units: twice the continuous series before the split
    unit = np.where(np.arange(400) < split_at, 2.0, 1.0)
    for c in ("sma_50", "atr_14", "bb_upper", "macd"):
        np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy() * unit, rtol=1e-9, equal_nan=True, err_msg=c)
    assert (a["close"] > 0).all() and abs(a["ret_1d"][split_at]) < 0.2  # no -50% "crash" on the split day


def test_a_later_split_does_not_leak_into_earlier_features():
    """After a 3:1 split, back-adjusted prices of earlier bars shrink to a third; the features of those bars
    must read exactly as they did when the split had not happened yet (only the adj_* columns change)."""
    cont = _walk(400, 4).with_columns(instrument=pl.lit("X"))
    split_at = 300
    before = pl.int_range(pl.len()) < split_at
    traded = cont.with_columns([pl.when(before).then(pl.col(c) * 3).otherwise(pl.col(c)).alias(c)
                                for c in ("open", "high", "low", "close")])
    known_then = traded.head(split_at).with_columns(adj_close=pl.col("close"))  # as published before the split
    known_later = traded.with_columns(adj_close=cont["close"])  # back-adjusted after it
    a = compute_features(known_then)
    b = compute_features(known_later).head(split_at)
    assert b["adj_factor"].to_list() == pytest.approx([1 / 3] * split_at)
    adjusted = ("adj_close", "adj_factor", "adj_open", "adj_high", "adj_low")
    # the same numbers computed from prices a third as large: equal up to rounding
    _assert_frames_equal(a.drop(adjusted), b.drop(adjusted), "split later", rtol=1e-9, atol=1e-12)


def test_gaps_halts_and_zero_volume():
    df = _walk(120, 5).with_columns(instrument=pl.lit("X"))
    df = df.filter(~pl.int_range(pl.len()).is_in([30, 31, 32, 70]))  # missing days
    halt = 50
    df = df.with_columns([  # a halted day printed flat with no volume
        pl.when(pl.int_range(pl.len()) == halt).then(pl.col("close").shift(1)).otherwise(pl.col(c)).alias(c)
        for c in ("open", "high", "low", "close")]).with_columns(
        volume=pl.when(pl.int_range(pl.len()) == halt).then(0.0).otherwise(pl.col("volume")))
    out = compute_features(df)
    assert out["bar_index"].to_list() == list(range(out.height))
    assert out["days_since_prev_bar"].to_list()[30] == 4 and out["days_since_prev_bar"].drop_nulls().min() == 1
    closes = out["adj_close"].to_numpy()
    np.testing.assert_allclose(out["sma_20"][40], closes[21:41].mean())  # 20 bars, across the gap
    h = out.row(halt, named=True)
    assert h["obv"] == out["obv"][halt - 1]
    assert not any(h[p] for p in PATTERNS)  # a zero-range bar forms no pattern
    assert not any(out.select(pl.selectors.float().is_nan().any()).row(0))


def test_session_vwap_on_intraday_bars_only():
    rng = np.random.default_rng(6)
    stamps = [dt.datetime(2024, 3, d, h) for d in (4, 5, 6) for h in range(10, 16)]
    n = len(stamps)
    close = 100 + np.cumsum(rng.normal(0, 0.5, n))
    hourly = pl.DataFrame({"symbol": "BTC", "timestamp": stamps, "open": close, "high": close + 1, "low": close - 1,
                           "close": close, "volume": rng.uniform(1, 5, n)})
    hourly = hourly.with_columns(volume=pl.when(pl.int_range(pl.len()) == 6).then(0.0).otherwise(pl.col("volume")))
    daily = pl.DataFrame({"symbol": "ETH", "timestamp": [dt.datetime(2024, 3, d) for d in range(1, 9)],
                          "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 3.0})
    out = compute_features(pl.concat([daily, hourly]), time_col="timestamp")
    assert out.filter(pl.col("symbol") == "ETH")["vwap"].null_count() == 8
    btc = out.filter(pl.col("symbol") == "BTC")
    tp, vol = (btc["high"] + btc["low"] + btc["close"]).to_numpy() / 3, btc["volume"].to_numpy()
    want = []
    for i in range(n):
        same = [j for j in range(i + 1) if stamps[j].date() == stamps[i].date()]
        v = vol[same].sum()
        want.append(np.nan if v == 0 else (tp[same] * vol[same]).sum() / v)
    want[0] = np.nan  # intraday only known from the second bar of a day on
    got = btc["vwap"].to_numpy().astype(float)
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    assert np.isnan(got[6])  # the session's first bar had no volume


def test_input_handling():
    base = _walk(30, 7)
    with pytest.raises(FeatureInputError, match=r"missing column\(s\) 'high', 'volume'"):
        compute_features(base.drop("high", "volume"))
    with pytest.raises(FeatureInputError, match="'date'"):
        compute_features(base.rename({"date": "day"}))
    # no instrument column: one instrument, and no column is added
    alone = compute_features(base)
    assert "instrument" not in alone.columns and alone["bar_index"].to_list() == list(range(30))
    # symbol as the instrument, ISO date strings, any row order
    strings = base.with_columns(symbol=pl.lit("S"), date=pl.col("date").cast(pl.String)).reverse()
    out = compute_features(strings)
    assert out.schema["date"] == pl.Date and out["date"].is_sorted()
    np.testing.assert_allclose(out["rsi_14"].to_numpy(), alone["rsi_14"].to_numpy(), equal_nan=True)
    # bars without a valid price are left out; duplicates are an error
    bad = base.with_columns(close=pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("close")),
                            low=pl.when(pl.int_range(pl.len()) == 9).then(0.0).otherwise(pl.col("low")))
    assert compute_features(bad).height == 28
    with pytest.raises(FeatureInputError, match="duplicate"):
        compute_features(pl.concat([base, base.head(1)]))
    with pytest.raises(FeatureInputError, match="date or datetime"):
        compute_features(base.with_columns(date=pl.lit("not a date")))


def test_batches_of_instruments_give_the_same_result(segments):
    one = compute_features(segments, instrument_col="ticker", batch_rows=10**9)
    many = compute_features(segments, instrument_col="ticker", batch_rows=1_000)  # about 60 batches
    _assert_frames_equal(one, many, "batches")


def _synthetic_market(n_instruments: int = 37, n_bars: int = 300) -> pl.DataFrame:
    """Random walks of varying length, one with a 2:1 split, a few invalid rows, rows interleaved."""
    parts = []
    for i in range(n_instruments):
        w = _walk(n_bars - 5 * i, seed=100 + i, start=10.0 + i).with_columns(
            instrument=pl.lit(f"I{i:03d}"), adj_close=pl.col("close"))
        if i % 10 == 3:
            w = w.with_columns([pl.when(pl.int_range(pl.len()) < 120).then(pl.col(c) * 2).otherwise(pl.col(c)).alias(c)
                                for c in ("open", "high", "low", "close")])
        parts.append(w)
    df = pl.concat(parts)
    df = df.with_columns(low=pl.when(pl.int_range(pl.len()) % 997 == 5).then(-1.0).otherwise(pl.col("low")))
    return df.sample(fraction=1.0, shuffle=True, seed=4)


@pytest.mark.parametrize("batch_rows", [1, 2_000, 10**9])
def test_streaming_to_parquet_is_compute_features(tmp_path, market, full, batch_rows):
    """The streaming entry point writes exactly compute_features' frame, from a frame, a lazy frame or a path."""
    want = compute_features(market, instrument_col="ticker", batch_rows=batch_rows)
    _assert_frames_equal(want, full, "batch_rows", rtol=1e-15)  # at most float-summation noise from the layout
    out = tmp_path / "f.parquet"
    summary = compute_features_to_parquet(market, out, instrument_col="ticker", batch_rows=batch_rows)
    got = pl.read_parquet(out)
    assert got.equals(want, null_equal=True) and got.schema == want.schema
    assert (summary.input_rows, summary.rows, summary.instruments, summary.columns) == (
        market.height, want.height, 5, want.width)
    assert summary.counts == event_counts(want)
    src = tmp_path / "in.parquet"
    market.write_parquet(src)
    compute_features_to_parquet(src, out, instrument_col="ticker", batch_rows=batch_rows)
    assert pl.read_parquet(out).equals(want, null_equal=True)
    parts = list(iter_feature_batches(market.lazy(), "ticker", batch_rows=batch_rows))
    assert pl.concat(parts).equals(want, null_equal=True)
    assert all(p["ticker"].n_unique() == (p["bar_index"] == 0).sum() for p in parts)  # whole instruments


def test_streaming_synthetic_instruments_and_csv(tmp_path):
    df = _synthetic_market()
    want = compute_features(df, swing_length=3, batch_rows=1_000)
    assert want["instrument"].n_unique() == 37 and want.height < df.height  # invalid rows left out
    out = tmp_path / "f.parquet"
    summary = compute_features_to_parquet(df.lazy(), out, batch_rows=1_000, swing_length=3)
    assert pl.read_parquet(out).equals(want, null_equal=True)
    assert (summary.input_rows, summary.rows, summary.instruments) == (df.height, want.height, 37)
    csv = tmp_path / "f.csv"
    compute_features_to_file(df, csv, file_format="csv", batch_rows=1_000, swing_length=3)
    back = pl.read_csv(csv, try_parse_dates=True)
    assert back.height == want.height and back.columns == want.columns
    assert back["swing_high"].sum() == want["swing_high"].sum()
    # one instrument without an instrument column, and errors before anything is written
    alone = _walk(50, 1)
    compute_features_to_parquet(alone, out)
    assert pl.read_parquet(out).equals(compute_features(alone), null_equal=True)
    with pytest.raises(FeatureInputError, match="duplicate"):
        compute_features_to_parquet(pl.concat([df, df.head(1)]), tmp_path / "dup.parquet")
    assert not (tmp_path / "dup.parquet").exists()


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 40, 1000])
@pytest.mark.parametrize("batch_rows", [1, 9, 10**9])
def test_chunks_are_regrouped_into_batches_of_whole_instruments(chunk, batch_rows):
    """The streamed path reads chunks of at least 65,536 rows, so the sample data never crosses one: the
    regrouping of chunks into batches is checked here on its own, with an instrument spanning many chunks."""
    from tenali_pipeline.technicals.features import _batch_bounds, _whole_instruments

    lengths = {"A": 1, "B": 23, "C": 2, "D": 11}
    df = pl.DataFrame({"instrument": [k for k, n in lengths.items() for _ in range(n)],
                       "date": [dt.date(2020, 1, 1) + dt.timedelta(days=i) for n in lengths.values() for i in range(n)]})
    parts = list(_whole_instruments((df.slice(i, chunk) for i in range(0, df.height, chunk)), "instrument", "date",
                                    batch_rows))
    assert pl.concat(parts).equals(df)
    starts = [p["instrument"][0] for p in parts]
    for p in parts:  # whole instruments, a batch ending with the one that reaches batch_rows (as _batch_bounds)
        assert all(p.filter(pl.col("instrument") == k).height == lengths[k] for k in p["instrument"].unique())
        assert p.height - lengths[p["instrument"][-1]] < batch_rows
    # however it is chunked, the batches are those of the in-memory path
    assert [p.height for p in parts] == [b - a for a, b in _batch_bounds(df, "instrument", batch_rows)]
    assert len(starts) == len(set(starts))
    if batch_rows == 1:
        assert [p["instrument"].n_unique() for p in parts] == [1] * 4
    dup = pl.concat([df.head(20), df.slice(19)])  # B's 20th row twice, maybe across a chunk boundary
    with pytest.raises(FeatureInputError, match="duplicate"):
        list(_whole_instruments((dup.slice(i, chunk) for i in range(0, dup.height, chunk)), "instrument", "date",
                                batch_rows))
