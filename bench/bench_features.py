"""The full technical feature set versus the `ta` library, on the same rows.

    .venv/bin/python bench/bench_features.py [--instruments 4000] [--days 2500] [--ta-instruments N]
                                             [--batch-rows 131072] [--in-memory]

Generates a deterministic synthetic market (one random walk per instrument with intraday ranges,
gaps between open and previous close, occasional zero-volume bars and missing days, a 2:1 split in
every tenth instrument) and writes it to a temporary Parquet file, then times, each phase in a fresh
process so that its peak RSS is its own (``ru_maxrss`` of that process, imports included; the RSS
after the imports is printed too):

  (a) ``compute_features_to_parquet``: the input file read lazily, every indicator, candlestick pattern
      and smart-money event computed batch by batch of whole instruments, and written to a temporary
      Parquet file as it goes. The main figure.
  (b) with ``--in-memory``: ``compute_features`` (default batches) on the whole frame, in memory (not
      written), for comparison with the figures before streaming.
  (c) ``ta`` 0.11 for the indicators both compute (RSI 14, MACD 12/26/9, Bollinger 20/2, ATR 14,
      stochastic 14/3, OBV), instrument by instrument (pandas groupby), on the adjusted prices of (a)'s
      output for the first ``--ta-instruments`` instruments (all of them by default).

Prints rows/second (wall clock; CPU seconds too, since polars uses every core and ``ta`` one, and the
machine may be shared), the ratio (a)/(c), and peak RSS per phase. When ``--ta-instruments`` is below
``--instruments``, (c) runs on a subset and its rate is per row of that subset: say so when quoting
the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import polars as pl

from tenali_pipeline.technicals.features import COLUMNS, compute_features, compute_features_to_parquet


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


def _rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's high-water
    mark (it survives fork and exec), so it would report the generator's memory, not the phase's."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(x.split()[1]) for x in fh if x.startswith("VmHWM:")) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _phase(args) -> dict:
    """Run one phase in this (fresh) process; returns its timings and peak RSS."""
    base_rss = _rss_mib()
    if args.phase == "stream":
        t0, c0 = time.perf_counter(), _cpu()
        summary = compute_features_to_parquet(args.input, args.output, batch_rows=args.batch_rows)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        return {"rows": summary.rows, "wall": wall, "cpu": cpu, "base_rss": base_rss, "rss": _rss_mib(),
                "bytes": os.path.getsize(args.output), "counts": summary.counts}
    if args.phase == "memory":
        df = pl.read_parquet(args.input)
        base_rss = _rss_mib()
        t0, c0 = time.perf_counter(), _cpu()
        features = compute_features(df)  # its own default batch size
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
        return {"rows": features.height, "wall": wall, "cpu": cpu, "base_rss": base_rss, "rss": _rss_mib()}
    # ta, on the adjusted prices of the streamed output
    lf = pl.scan_parquet(args.output).select("instrument", "adj_high", "adj_low", "adj_close", "volume")
    if args.ta_instruments:
        names = lf.select(pl.col("instrument").unique(maintain_order=True).head(args.ta_instruments))
        lf = lf.filter(pl.col("instrument").is_in(names.collect().to_series().implode()))
    pdf = lf.collect().to_pandas()
    base_rss = _rss_mib()
    t0, c0 = time.perf_counter(), _cpu()
    rows = ta_reference(pdf)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"rows": rows, "wall": wall, "cpu": cpu, "base_rss": base_rss, "rss": _rss_mib()}


def _run_phase(phase: str, args, tmp: str) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--input", f"{tmp}/input.parquet", "--output",
           f"{tmp}/features.parquet", "--batch-rows", str(args.batch_rows)]
    if args.ta_instruments:
        cmd += ["--ta-instruments", str(args.ta_instruments)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instruments", type=int, default=4000)
    ap.add_argument("--days", type=int, default=2500)
    ap.add_argument("--ta-instruments", type=int, default=0, help="instruments for the ta run (default: all)")
    ap.add_argument("--batch-rows", type=int, default=1 << 17, help="rows per batch of whole instruments")
    ap.add_argument("--in-memory", action="store_true", help="also time compute_features on the frame in memory")
    ap.add_argument("--tmp", default=None, help="directory for the input and output Parquet files")
    ap.add_argument("--phase", choices=("stream", "memory", "ta"), help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(_phase(args)))
        return

    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench_features_") as tmp:
        t0 = time.perf_counter()
        df = synthetic(args.instruments, args.days)
        df.write_parquet(f"{tmp}/input.parquet")
        height = df.height
        del df
        print(f"data: {height:,} rows, {args.instruments:,} instruments x {args.days:,} business days, "
              f"generated and written to Parquet in {time.perf_counter() - t0:.1f} s", flush=True)

        a = _run_phase("stream", args, tmp)
        print(f"compute_features_to_parquet (read Parquet, compute, write Parquet; batches of {args.batch_rows:,} "
              f"rows): {a['rows']:,} rows x {len(COLUMNS)} feature columns in {a['wall']:.1f} s wall "
              f"({a['cpu']:.1f} s CPU) = {a['rows'] / a['wall']:,.0f} rows/s; output {a['bytes'] / 2**30:.2f} GiB; "
              f"peak RSS {a['rss']:,.0f} MiB (after imports {a['base_rss']:,.0f} MiB)", flush=True)
        print("events: " + ", ".join(f"{k}={v:,}" for k, v in a["counts"].items()), flush=True)
        if args.in_memory:
            m = _run_phase("memory", args, tmp)
            print(f"compute_features (in memory, not written): {m['rows']:,} rows in {m['wall']:.1f} s wall "
                  f"({m['cpu']:.1f} s CPU) = {m['rows'] / m['wall']:,.0f} rows/s; peak RSS {m['rss']:,.0f} MiB "
                  f"(with the input frame loaded {m['base_rss']:,.0f} MiB)", flush=True)
        r = _run_phase("ta", args, tmp)
    n_ta = args.ta_instruments or args.instruments
    scope = "the same rows" if n_ta >= args.instruments else f"a subset of {n_ta:,} instruments (rate per row of it)"
    print(f"ta (RSI, MACD, Bollinger, ATR, stochastic, OBV; per-instrument groupby) on {scope}: "
          f"{r['rows']:,} rows in {r['wall']:.1f} s wall ({r['cpu']:.1f} s CPU) = {r['rows'] / r['wall']:,.0f} rows/s; "
          f"peak RSS {r['rss']:,.0f} MiB (with the pandas frame loaded {r['base_rss']:,.0f} MiB)", flush=True)
    print(f"ratio, full feature set (streamed to Parquet) vs ta's six indicators: "
          f"{(a['rows'] / a['wall']) / (r['rows'] / r['wall']):.1f}x in rows per second (wall), "
          f"{(a['rows'] / a['cpu']) / (r['rows'] / r['cpu']):.1f}x in rows per CPU-second")


if __name__ == "__main__":
    main()
