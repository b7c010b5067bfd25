"""``tenali features INPUT OUTPUT``: every technical feature for an OHLCV file.

    tenali features prices.csv features.parquet
    tenali features bars.parquet out.csv --instrument-col symbol --time-col timestamp

INPUT is CSV or Parquet (by extension; ``.csv.gz`` too) with columns open, high, low, close, volume,
a time column (``date``) and optionally adj_close and an instrument column (``instrument``, else
``symbol`` or ``ticker``). OUTPUT is Parquet (``.parquet``/``.pq``) or CSV (``.csv``), written
atomically; its columns are the input's followed by ``technicals.features.COLUMNS``. The input is read
lazily and the output written batch by batch (``features.compute_features_to_file``), so memory stays
at the input plus one batch of whole instruments however large the output.

Wired into the ``tenali`` command by ``tenali_pipeline/cli.py`` through ``add_parser``; this module
imports polars only when the command runs, so the other commands start without it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

READ_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
WRITE_SUFFIXES = (".csv", ".parquet", ".pq")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "features", help="compute technical features (indicators, candlestick patterns, smart-money events) for an "
                         "OHLCV file",
        description="Compute every technical feature (technicals.features.COLUMNS) per instrument from a CSV or "
                    "Parquet file of OHLCV bars, and write Parquet or CSV (by OUTPUT's extension).")
    p.add_argument("input", metavar="INPUT", help="CSV or Parquet file with open, high, low, close, volume and a time column")
    p.add_argument("output", metavar="OUTPUT", help="where to write: .parquet / .pq or .csv")
    p.add_argument("--instrument-col", default="instrument",
                   help="instrument column (default: instrument, else symbol or ticker, else one instrument)")
    p.add_argument("--time-col", default="date", help="time column, a date or a datetime (default: date)")
    p.add_argument("--swing-length", type=int, default=5, help="bars each side of a swing high / low (default: 5)")
    p.add_argument("--liquidity-tolerance", type=float, default=0.1,
                   help="equal highs / lows within this many ATR(14) form a liquidity pool (default: 0.1)")
    p.set_defaults(fn=run)
    return p


def _suffix(path: Path, allowed: tuple[str, ...]) -> str | None:
    name = path.name.lower()
    return next((s for s in sorted(allowed, key=len, reverse=True) if name.endswith(s)), None)


def _fail(message: str) -> int:
    print(f"tenali features: error: {message}", file=sys.stderr)
    return 2


def run(args) -> int:
    src, dst = Path(args.input), Path(args.output)
    read_as = _suffix(src, READ_SUFFIXES)
    write_as = _suffix(dst, WRITE_SUFFIXES)
    if read_as is None:
        return _fail(f"cannot read {src}: expected one of {', '.join(READ_SUFFIXES)}")
    if write_as is None:
        return _fail(f"cannot write {dst}: expected one of {', '.join(WRITE_SUFFIXES)}")
    if not src.is_file():
        return _fail(f"{src} does not exist")
    if args.swing_length < 1:
        return _fail("--swing-length must be at least 1")

    import polars as pl

    from .features import COLUMNS, FeatureInputError, _csv_times_are_iso, compute_features_to_file

    if read_as in (".csv", ".csv.gz"):
        try:
            _csv_times_are_iso(src, args.time_col)  # before polars' inference reads 01/02/2024 as February 1
        except FeatureInputError as e:
            return _fail(f"{src}: {e}")
    # Read lazily (Parquet, plain CSV) and write batch by batch as the features are computed: peak memory is
    # the input columns plus one batch of instruments, not the whole output.
    try:
        if read_as == ".csv.gz":
            source = pl.read_csv(src, try_parse_dates=True).lazy()
        elif read_as == ".csv":
            source = pl.scan_csv(src, try_parse_dates=True)
        else:
            source = pl.scan_parquet(src)
        source.collect_schema()
    except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
        return _fail(f"cannot read {src}: {e}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        summary = compute_features_to_file(source, tmp, instrument_col=args.instrument_col, time_col=args.time_col,
                                           file_format="csv" if write_as == ".csv" else "parquet",
                                           swing_length=args.swing_length,
                                           liquidity_tolerance=args.liquidity_tolerance)
        os.replace(tmp, dst)
    except FeatureInputError as e:
        return _fail(f"{src}: {e}")
    except pl.exceptions.PolarsError as e:
        return _fail(f"cannot read {src}: {e}")
    finally:
        tmp.unlink(missing_ok=True)
    counts, n_inst = summary.counts, summary.instruments
    dropped = summary.input_rows - summary.rows
    print(f"wrote {summary.rows:,} rows x {summary.columns} columns ({len(COLUMNS)} features) for {n_inst:,} "
          f"instrument{'s' if n_inst != 1 else ''} to {dst}"
          + (f"; left out {dropped:,} rows without valid prices" if dropped else ""))
    print(f"patterns: {sum(v for k, v in counts.items() if k.startswith('cdl_')):,}, "
          f"smart-money events: {sum(v for k, v in counts.items() if not k.startswith('cdl_')):,}")
    return 0
