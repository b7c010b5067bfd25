"""``tenali features INPUT OUTPUT`` (technicals/cli.py), through its own parser as tenali_pipeline/cli.py wires it."""

import argparse
import subprocess
import sys

import polars as pl
import pytest

from tenali_pipeline.sources.sample import SampleMarketClient
from tenali_pipeline.technicals import cli
from tenali_pipeline.technicals.features import COLUMNS, compute_features


def tenali(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="tenali")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.fn(args)


@pytest.fixture(scope="module")
def prices() -> pl.DataFrame:
    return SampleMarketClient(["IBM", "MSFT"], start="2010-01-01").fetch().select(
        "ticker", "date", "open", "high", "low", "close", "adj_close", "volume")


def test_csv_in_parquet_out(tmp_path, prices, capsys):
    src, dst = tmp_path / "prices.csv", tmp_path / "out" / "features.parquet"
    prices.write_csv(src)
    assert tenali("features", str(src), str(dst)) == 0
    out = pl.read_parquet(dst)
    assert out.columns == prices.columns + list(COLUMNS)
    assert out.equals(compute_features(prices, instrument_col="ticker"))
    said = capsys.readouterr().out
    assert f"wrote {prices.height:,} rows" in said and "2 instruments" in said
    assert [p.name for p in dst.parent.iterdir()] == ["features.parquet"]  # no temporary left behind


def test_parquet_in_csv_out_with_options(tmp_path, prices):
    src, dst = tmp_path / "bars.parquet", tmp_path / "f.csv"
    prices.rename({"ticker": "symbol", "date": "day"}).write_parquet(src)
    assert tenali("features", str(src), str(dst), "--time-col", "day", "--swing-length", "3") == 0
    out = pl.read_csv(dst, try_parse_dates=True)
    assert out.height == prices.height and "symbol" in out.columns
    want = compute_features(prices, instrument_col="ticker", swing_length=3)
    assert out["swing_high"].sum() == want["swing_high"].sum()


def test_errors_name_the_problem(tmp_path, prices, capsys):
    src = tmp_path / "p.csv"
    prices.drop("high", "volume").write_csv(src)
    assert tenali("features", str(src), str(tmp_path / "o.parquet")) == 2
    err = capsys.readouterr().err
    assert "missing column(s) 'high', 'volume'" in err and str(src) in err
    assert not (tmp_path / "o.parquet").exists()
    assert tenali("features", str(src), str(tmp_path / "o.json")) == 2
    assert "expected one of .csv, .parquet, .pq" in capsys.readouterr().err
    assert tenali("features", str(tmp_path / "nope.csv"), str(tmp_path / "o.csv")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_module_does_not_import_polars_until_run():
    code = "import sys, tenali_pipeline.technicals.cli; print('polars' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
