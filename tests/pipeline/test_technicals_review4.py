"""Review 4: technical features on awkward real-world inputs (time zones, missing volume, ...), each checked
against a written-out reference."""

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tenali_pipeline.technicals import cli
from tenali_pipeline.technicals.features import FeatureInputError, compute_features, compute_features_to_parquet

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"


def tenali(*argv: str) -> int:
    """``tenali features ...`` through the subcommand's own parser, as tenali_pipeline/cli.py wires it."""
    parser = argparse.ArgumentParser(prog="tenali")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.fn(args)


def _walk(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    prev = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(prev, close) * 1.01
    low = np.minimum(prev, close) * 0.99
    days = [dt.date(2015, 1, 1) + dt.timedelta(days=i) for i in range(n)]
    return pl.DataFrame({"date": days, "open": prev, "high": high, "low": low, "close": close,
                         "volume": rng.integers(1_000, 50_000, n).astype(float)})


def test_days_since_prev_bar_counts_calendar_days_across_dst():
    """yfinance stamps daily bars at local midnight: Fri 2024-03-08 00:00 EST is 05:00 UTC, Mon 2024-03-11
    00:00 EDT is 04:00 UTC, 2 days 23 hours apart: that weekend is 3 calendar days, not 2."""
    local = [dt.datetime(2024, 3, d) for d in (6, 7, 8, 11, 12)]
    df = pl.DataFrame({"date": local, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.0, "volume": 1.0})
    for zone in ("America/New_York", "UTC"):
        stamped = df.with_columns(pl.col("date").dt.replace_time_zone("America/New_York").dt.convert_time_zone(zone))
        out = compute_features(stamped)
        assert out["days_since_prev_bar"].to_list() == [None, 1, 1, 3, 1], zone
    # intraday bars: the same day is 0, Friday's close to Monday's open is 3 days
    bars = pl.DataFrame({"date": [dt.datetime(2024, 3, 8, 9, 30), dt.datetime(2024, 3, 8, 16),
                                  dt.datetime(2024, 3, 11, 9, 30)],
                         "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.0, "volume": 1.0})
    assert compute_features(bars)["days_since_prev_bar"].to_list() == [None, 0, 3]


def test_days_since_prev_bar_on_real_yfinance_daily_bars():
    path = REALDATA / "ohlcv" / "yfinance_CALM-1d-no-bad-divs.csv"
    if not path.is_file():
        pytest.skip(f"real data not available at {path}")
    df = pl.read_csv(path, try_parse_dates=True).rename(lambda c: c.lower().replace(" ", "_"))
    out = compute_features(df, time_col="datetime")
    # the exchange's calendar dates (the offsets in the file are New York's)
    local = out["datetime"].dt.convert_time_zone("America/New_York").dt.date()
    want = [None] + [(b - a).days for a, b in zip(local[:-1], local[1:])]
    assert out["days_since_prev_bar"].to_list() == want


@pytest.mark.parametrize("missing", [float("nan"), None])
def test_missing_volume_counts_as_zero_in_obv_and_vwap(missing, tmp_path):
    """pandas writes a missing volume as NaN: it must not turn every later OBV (or the session's VWAP) into NaN."""
    df = _walk(60, 4)
    gap = 10
    df = df.with_columns(volume=pl.when(pl.int_range(pl.len()) == gap).then(pl.lit(missing, pl.Float64))
                         .otherwise(pl.col("volume")))
    out = compute_features(df)
    c, v = out["adj_close"].to_numpy(), np.nan_to_num(out["volume"].to_numpy(), nan=0.0)
    want = np.concatenate([[0.0], np.cumsum(np.sign(np.diff(c)) * v[1:])])  # Granville, missing volume as 0
    np.testing.assert_allclose(out["obv"].to_numpy(), want, rtol=1e-12)
    compute_features_to_parquet(df, tmp_path / "f.parquet")  # the streamed path agrees
    np.testing.assert_allclose(pl.read_parquet(tmp_path / "f.parquet")["obv"].to_numpy(), want, rtol=1e-12)

    stamps = [dt.datetime(2024, 3, 4, h) for h in range(10, 16)]
    hourly = pl.DataFrame({"date": stamps, "open": 10.0, "high": [11.0, 12, 13, 14, 15, 16], "low": 9.0,
                           "close": 10.0, "volume": [1.0, 2.0, missing, 3.0, 1.0, 1.0]})
    vwap = compute_features(hourly)["vwap"].to_list()
    tp = (np.array([11.0, 12, 13, 14, 15, 16]) + 9 + 10) / 3
    vol = np.array([1.0, 2, 0, 3, 1, 1])
    want = [None] + [float((tp[:i + 1] * vol[:i + 1]).sum() / vol[:i + 1].sum()) for i in range(1, 6)]
    assert vwap[0] is None and np.allclose(vwap[1:], want[1:], rtol=1e-12)


US_DATES = ["01/02/2024", "01/03/2024", "01/04/2024"]  # January 2-4 in a US file; polars reads them day first


def _bars(dates: list) -> pl.DataFrame:
    n = len(dates)
    return pl.DataFrame({"date": dates, "open": [10.0] * n, "high": [11.0] * n, "low": [9.0] * n,
                         "close": [10.0] * n, "volume": [1.0] * n})


def test_non_iso_date_strings_are_refused_not_read_day_first(tmp_path):
    with pytest.raises(FeatureInputError, match="'01/02/2024', not an ISO 8601 date or datetime"):
        compute_features(_bars(US_DATES))  # was: 2024-02-01, 2024-03-01, 2024-04-01
    with pytest.raises(FeatureInputError, match="'2024-13-01', which is not a valid date"):
        compute_features(_bars(["2024-01-02", "2024-13-01"]))
    _bars(US_DATES).write_csv(tmp_path / "us.csv")
    with pytest.raises(FeatureInputError, match="'01/02/2024', not an ISO 8601 date or datetime"):
        compute_features_to_parquet(tmp_path / "us.csv", tmp_path / "f.parquet")
    assert not (tmp_path / "f.parquet").exists()
    # ISO strings (dates, datetimes with offsets) are still read
    assert compute_features(_bars(["2024-01-02", "2024-01-03"]))["date"].to_list() == [dt.date(2024, 1, 2),
                                                                                         dt.date(2024, 1, 3)]
    zoned = compute_features(_bars(["2022-01-03 00:00:00-05:00", "2022-01-04T00:00:00-05:00"]))["date"]
    assert zoned.dt.convert_time_zone("America/New_York").dt.date().to_list() == [dt.date(2022, 1, 3),
                                                                                 dt.date(2022, 1, 4)]


def test_cli_refuses_a_us_format_csv(tmp_path, capsys):
    src = tmp_path / "us.csv"
    _bars(US_DATES).write_csv(src)
    assert tenali("features", str(src), str(tmp_path / "o.parquet")) == 2
    assert "'01/02/2024', not an ISO 8601 date or datetime" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet").exists()


def test_the_features_asset_annualises_crypto_over_365_days_and_stocks_over_252(tmp_path, monkeypatch):
    """Stocks and crypto went through one compute_features call at 252 periods a year: crypto's
    'annualised' volatility was that of 0.69 of a year, about 17% low against a stock's."""
    import math
    import datetime as dt

    import numpy as np
    import polars as pl

    from tenali_pipeline.defs.features import assets as features_assets
    from tenali_pipeline.resources import LakeResource

    rng = np.random.default_rng(7)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 40)))
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(40)]
    bars = dict(open=closes, high=closes * 1.01, low=closes * 0.99, close=closes, volume=np.full(40, 1e6))
    stocks = pl.DataFrame({"date": days, "ticker": "AAA", **bars, "adj_close": closes, "source": "t"})
    crypto = pl.DataFrame({"timestamp": [dt.datetime(d.year, d.month, d.day) for d in days], "symbol": "BTC/USD",
                           "timeframe": "1d", **bars, "source": "t"})
    monkeypatch.setattr(features_assets, "read_clean",
                        lambda store, source, name: stocks if source == "market" else crypto)
    features_assets.technical_features(lake=LakeResource(root=str(tmp_path)))
    out = pl.read_parquet(tmp_path / features_assets.FEATURES_KEY)
    logs = np.diff(np.log(closes))[-20:]
    std = float(np.std(logs, ddof=1))
    last = out.sort("date").group_by("instrument", maintain_order=True).last()
    vol = dict(zip(last["instrument"], last["realised_vol_20"]))
    assert math.isclose(vol["AAA"], std * math.sqrt(252), rel_tol=1e-9)
    assert math.isclose(vol["BTC/USD"], std * math.sqrt(365), rel_tol=1e-9)
