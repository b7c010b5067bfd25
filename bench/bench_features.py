"""The full technical feature set (`compute_features`) versus the `ta` library, on the same rows.

    .venv/bin/python bench/bench_features.py [--instruments 4000] [--days 2500] [--ta-instruments N]

Generates a deterministic synthetic market (one random walk per instrument with intraday ranges,
gaps between open and previous close, occasional zero-volume bars and missing days, a 2:1 split in
every tenth instrument), then times

  (a) ``compute_features`` on all rows: every indicator, candlestick pattern and smart-money event;
  (b) ``ta`` 0.11 for the indicators both compute (RSI 14, MACD 12/26/9, Bollinger 20/2, ATR 14,
      stochastic 14/3, OBV), instrument by instrument (pandas groupby), on the first
      ``--ta-instruments`` instruments (all of them by default).

Prints rows/second for both (wall clock; CPU seconds too, since polars uses every core and ``ta`` one,
and the machine may be shared), the ratio (a)/(b), and peak memory (tracemalloc for Python/numpy
allocations, plus the process's peak RSS, which includes polars' native buffers). When
``--ta-instruments`` is below ``--instruments``, (b) runs on a subset and its rate is per row of that
subset: say so when quoting the ratio.
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
import pandas as pd
import polars as pl

from tenali_pipeline.technicals.features import COLUMNS, compute_features, event_counts


def synthetic(n_instruments: int, n_days: int, seed: int = 0) -> pl.DataFrame:
    """Deterministic daily OHLCV: ``n_instruments`` x ``n_days`` business days (minus ~0.5% missing days)."""
    rng = np.random.default_rng(seed)
    shape = (n_instruments, n_days)
    vol = rng.uniform(0.01, 0.04, size=(n_instruments, 1))
    log_ret = rng.normal(0.0002, 1.0, size=shape) * vol
    close = rng.uniform(5, 500, size=(n_instruments, 1)) * np.exp(np.cumsum(log_ret, axis=1))
    prev = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    open_ = prev * np.exp(rng.normal(0, 0.3, size=shape) * vol)
    span = np.abs(rng.normal(0, 0.6, size=shape)) * vol * close
    high = np.maximum(open_, close) + span * rng.uniform(0, 1, size=shape)
    low = np.minimum(open_, close) - span * rng.uniform(0, 1, size=shape)
    low = np.maximum(low, 0.5 * np.minimum(open_, close))
    volume = np.floor(rng.lognormal(13, 1, size=shape))
    volume[rng.uniform(size=shape) < 0.002] = 0  # zero-volume bars
    adj_close = close.copy()
    split_at = n_days // 2
    raw = close.copy(), open_.copy(), high.copy(), low.copy()
    for a in raw:  # every tenth instrument traded at twice the price before a 2:1 split
        a[::10, :split_at] *= 2
    close, open_, high, low = raw
    days = np.busday_offset(np.datetime64("2000-01-03"), np.arange(n_days), roll="forward")
    keep = rng.uniform(size=shape) >= 0.005  # missing days (halts, holidays)
    keep[:, 0] = True
    names = np.array([f"SYN{i:05d}" for i in range(n_instruments)])
    inst = np.repeat(names, n_days)
    mask = keep.ravel()
    return pl.DataFrame({
        "instrument": inst[mask],
        "date": np.tile(days, n_instruments)[mask].astype("datetime64[D]"),
        "open": open_.ravel()[mask], "high": high.ravel()[mask], "low": low.ravel()[mask],
        "close": close.ravel()[mask], "adj_close": adj_close.ravel()[mask], "volume": volume.ravel()[mask],
    })


def ta_reference(df: pd.DataFrame) -> int:
    """The overlapping indicators with ``ta``, one instrument at a time; returns the rows processed."""
    import ta

    rows = 0
    for _, g in df.groupby("instrument", sort=False):
        c, h, l, v = g["adj_close"], g["adj_high"], g["adj_low"], g["volume"]
        ta.momentum.RSIIndicator(c, 14).rsi()
        m = ta.trend.MACD(c, 26, 12, 9)
        m.macd(), m.macd_signal(), m.macd_diff()
        b = ta.volatility.BollingerBands(c, 20, 2)
        b.bollinger_hband(), b.bollinger_lband()
        ta.volatility.AverageTrueRange(h, l, c, 14).average_true_range()
        s = ta.momentum.StochasticOscillator(h, l, c, 14, 3)
        s.stoch(), s.stoch_signal()
        ta.volume.OnBalanceVolumeIndicator(c, v).on_balance_volume()
        rows += len(g)
    return rows


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instruments", type=int, default=4000)
    ap.add_argument("--days", type=int, default=2500)
    ap.add_argument("--ta-instruments", type=int, default=0, help="instruments for the ta run (default: all)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    df = synthetic(args.instruments, args.days)
    print(f"data: {df.height:,} rows, {args.instruments:,} instruments x {args.days:,} business days, "
          f"generated in {time.perf_counter() - t0:.1f} s", flush=True)

    tracemalloc.start()
    t0, c0 = time.perf_counter(), _cpu()
    features = compute_features(df)
    ours, ours_cpu = time.perf_counter() - t0, _cpu() - c0
    _, peak_py = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    rows = features.height
    print(f"compute_features: {rows:,} rows x {len(COLUMNS)} feature columns in {ours:.1f} s wall "
          f"({ours_cpu:.1f} s CPU) = {rows / ours:,.0f} rows/s; peak traced (Python/numpy) {peak_py / 2**20:,.0f} MiB, "
          f"peak RSS {rss:,.0f} MiB", flush=True)
    counts = event_counts(features)
    print("events: " + ", ".join(f"{k}={v:,}" for k, v in counts.items()), flush=True)

    n_ta = args.ta_instruments or args.instruments
    names = features["instrument"].unique(maintain_order=True).head(n_ta)
    sub = features.filter(pl.col("instrument").is_in(names.implode())).select(
        "instrument", "adj_high", "adj_low", "adj_close", "volume")
    del features
    pdf = sub.to_pandas()
    del sub
    t0, c0 = time.perf_counter(), _cpu()
    ta_rows = ta_reference(pdf)
    ref, ref_cpu = time.perf_counter() - t0, _cpu() - c0
    scope = "the same rows" if n_ta >= args.instruments else f"a subset of {n_ta:,} instruments (rate per row of it)"
    print(f"ta (RSI, MACD, Bollinger, ATR, stochastic, OBV; per-instrument groupby) on {scope}: "
          f"{ta_rows:,} rows in {ref:.1f} s wall ({ref_cpu:.1f} s CPU) = {ta_rows / ref:,.0f} rows/s", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"ratio, full feature set vs ta's six indicators: {(rows / ours) / (ta_rows / ref):.1f}x in rows per second "
          f"(wall), {(rows / ours_cpu) / (ta_rows / ref_cpu):.1f}x in rows per CPU-second")
    print(f"peak RSS of the whole run: {rss:,.0f} MiB")


if __name__ == "__main__":
    main()
