"""Cleaning rules: nulls, impossible OHLC, duplicate keys, ordering, and the counts reported per reason."""

import datetime as dt

import polars as pl
import pytest

from tenali_pipeline.cleaning import KEYS, REQUIRED, clean, null_counts, schema_mismatches
from tenali_pipeline.sources.schema import SCHEMAS, SchemaError

D = dt.date


def _market(rows: list[tuple]) -> pl.DataFrame:
    """rows: (ticker, date, open, high, low, close, volume); the other columns are filled in."""
    cols = ["ticker", "date", "open", "high", "low", "close", "volume"]
    df = pl.DataFrame(rows, schema=cols, orient="row")
    return df.with_columns(adj_close=pl.col("close"), dividends=pl.lit(0.0), splits=pl.lit(0.0),
                           source=pl.lit("test"))


GOOD = (10.0, 11.0, 9.0, 10.5, 1000.0)


def test_market_drops_each_bad_row_for_its_reason():
    raw = _market([
        ("MSFT", D(2020, 1, 3), *GOOD),
        ("AAPL", D(2020, 1, 3), *GOOD),
        ("AAPL", D(2020, 1, 2), *GOOD),
        (None, D(2020, 1, 6), *GOOD),                               # null ticker
        ("AAPL", None, *GOOD),                                       # null date
        ("AAPL", D(2020, 1, 7), 10.0, 11.0, 9.0, None, 1000.0),      # null close
        ("AAPL", D(2020, 1, 8), 10.0, 9.0, 11.0, 10.0, 1000.0),      # low > high
        ("AAPL", D(2020, 1, 9), 0.0, 11.0, 9.0, 10.0, 1000.0),       # open = 0
        ("AAPL", D(2020, 1, 10), 10.0, 11.0, -1.0, 10.0, 1000.0),    # negative low
        ("AAPL", D(2020, 1, 13), 10.0, 11.0, 9.0, 12.0, 1000.0),     # close above high
        ("AAPL", D(2020, 1, 14), 8.0, 11.0, 9.0, 10.0, 1000.0),      # open below low
        ("AAPL", D(2020, 1, 15), 10.0, 11.0, 9.0, 10.0, -5.0),       # negative volume
        ("MSFT", D(2020, 1, 3), 20.0, 21.0, 19.0, 20.5, 2000.0),     # duplicate key: this later row wins
    ])
    out = clean("market", raw)
    assert out.dropped == {"null_required": 3, "impossible_ohlc": 6, "duplicate_key": 1}
    assert raw.height - out.df.height == sum(out.dropped.values())
    assert out.df.select("ticker", "date").rows() == [("AAPL", D(2020, 1, 2)), ("AAPL", D(2020, 1, 3)),
                                                      ("MSFT", D(2020, 1, 3))]
    assert out.df.filter(pl.col("ticker") == "MSFT")["close"].item() == 20.5
    assert dict(out.df.schema) == SCHEMAS["market"]


def test_ohlc_on_the_boundary_is_kept():
    raw = _market([("A", D(2020, 1, 2), 11.0, 11.0, 9.0, 9.0, 0.0),     # open = high, close = low, volume 0
                   ("A", D(2020, 1, 3), 10.0, 10.0, 10.0, 10.0, 5.0)])  # a flat day
    out = clean("market", raw)
    assert out.df.height == 2
    assert out.dropped["impossible_ohlc"] == 0


def test_duplicates_keep_the_last_of_several():
    raw = _market([("A", D(2020, 1, 2), 10.0, 11.0, 9.0, c, 1.0) for c in (9.5, 10.0, 10.5)])
    out = clean("market", raw)
    assert out.dropped["duplicate_key"] == 2
    assert out.df["close"].to_list() == [10.5]


def test_clean_is_idempotent_and_order_independent():
    raw = _market([("B", D(2020, 1, d), *GOOD) for d in (6, 2, 3)] + [("A", D(2020, 1, d), *GOOD) for d in (3, 2)])
    once = clean("market", raw).df
    assert once.equals(clean("market", raw.reverse()).df)
    again = clean("market", once)
    assert again.df.equals(once)
    assert sum(again.dropped.values()) == 0
    assert once.select(KEYS["market"]).rows() == sorted(once.select(KEYS["market"]).rows())


def test_strings_that_do_not_parse_become_nulls_and_are_dropped():
    raw = _market([("A", D(2020, 1, 2), *GOOD)]).with_columns(pl.col("close").cast(pl.String))
    raw = pl.concat([raw, raw.with_columns(close=pl.lit("n/a"), date=pl.lit(D(2020, 1, 3)))])
    out = clean("market", raw)
    assert out.df.height == 1 and out.dropped["null_required"] == 1
    assert out.df.schema["close"] == pl.Float64


def test_macro_drops_non_finite_values_and_keeps_vintages():
    raw = pl.DataFrame({
        "series_id": ["GDP", "GDP", "GDP", "GDP", "GDP"],
        "title": ["Real GDP"] * 5, "units": ["Billions"] * 5, "frequency": ["Quarterly"] * 5,
        "date": [D(2020, 1, 1), D(2020, 1, 1), D(2020, 4, 1), D(2020, 7, 1), D(2020, 10, 1)],
        "value": [100.0, 101.0, float("nan"), float("inf"), None],
        "realtime_start": [D(2020, 4, 30), D(2020, 5, 28), D(2020, 7, 30), D(2020, 10, 29), D(2021, 1, 28)],
        "source": ["test"] * 5,
    })
    out = clean("macro", raw)
    assert out.dropped == {"null_required": 1, "non_finite_value": 2, "duplicate_key": 0}
    # two vintages of one date differ in realtime_start: both are observations
    assert out.df["value"].to_list() == [100.0, 101.0]


def test_crypto_keys_include_the_exchange():
    ts = dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)
    raw = pl.DataFrame({
        "exchange": ["kraken", "binance", "kraken"], "symbol": ["BTC/USD"] * 3, "timeframe": ["1d"] * 3,
        "timestamp": [ts, ts, ts], "open": [1.0, 1.0, 1.0], "high": [2.0, 2.0, 2.0], "low": [0.5, 0.5, 3.0],
        "close": [1.5, 1.5, 1.5], "volume": [1.0, 1.0, 1.0], "source": ["t"] * 3,
    })
    out = clean("crypto", raw)
    assert out.dropped == {"null_required": 0, "impossible_ohlc": 1, "duplicate_key": 0}
    assert out.df["exchange"].to_list() == ["binance", "kraken"]


def test_documents_and_filings_drop_blank_text():
    docs = pl.DataFrame({"doc_id": ["b", "a", "c", "d"], "uri": ["u"] * 4, "title": [None] * 4,
                         "text": ["hello", "  \n\t ", None, "world"], "date": [D(2020, 1, 1)] * 4, "source": ["t"] * 4})
    out = clean("documents", docs)
    assert out.dropped == {"null_required": 1, "empty_text": 1, "duplicate_key": 0}
    assert out.df["doc_id"].to_list() == ["b", "d"]
    filings = pl.DataFrame({c: ["x"] for c in SCHEMAS["filings"]}).with_columns(
        filed=pl.lit(D(2020, 1, 1)), period=pl.lit(None, pl.Date), document=pl.lit(" "))
    out = clean("filings", filings)
    assert out.dropped["empty_document"] == 1 and out.df.is_empty()


def test_news_duplicates_on_entry_id():
    t = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    raw = pl.DataFrame({"feed": ["f"] * 3, "entry_id": ["1", "2", "1"], "link": ["l"] * 3,
                        "title": ["old", "b", "new"], "summary": [None] * 3, "published": [t] * 3, "source": ["s"] * 3,
                        "article": [None] * 3})
    out = clean("news", raw)
    assert out.dropped["duplicate_key"] == 1
    assert out.df.select("entry_id", "title").rows() == [("1", "new"), ("2", "b")]


@pytest.mark.parametrize("source", sorted(SCHEMAS))
def test_missing_column_raises_schema_error_naming_it(source):
    dropped_col = REQUIRED[source][-1]
    raw = pl.DataFrame({c: pl.Series([], dtype=t) for c, t in SCHEMAS[source].items() if c != dropped_col})
    with pytest.raises(SchemaError, match=dropped_col) as e:
        clean(source, raw)
    assert f"raw {source}" in str(e.value)


def test_extra_columns_are_dropped_and_order_conformed():
    raw = _market([("A", D(2020, 1, 2), *GOOD)]).with_columns(extra=pl.lit(1))
    out = clean("market", raw.select(reversed(raw.columns)))
    assert out.df.columns == list(SCHEMAS["market"])


def test_helpers_report_nulls_and_mismatches():
    df = pl.DataFrame({"ticker": ["A", None], "date": ["2020-01-01", "x"]})
    assert null_counts(df, ["ticker", "date"]) == {"ticker": 1}
    problems = schema_mismatches(df, "market")
    assert "missing close" in problems
    assert any(p.startswith("date:") for p in problems)
    assert schema_mismatches(clean("market", _market([("A", D(2020, 1, 2), *GOOD)])).df, "market") == []


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("bad", [
    (NAN, NAN, NAN, NAN, NAN),          # Yahoo's empty bar: every field NaN (numpy gives NaN, not null)
    (10.0, NAN, 9.0, 10.0, 100.0),      # NaN high: every comparison with it is false in polars
    (10.0, INF, 9.0, 10.0, 100.0),
    (10.0, 11.0, 9.0, 10.0, NAN),       # NaN volume
    (10.0, 11.0, 9.0, 10.0, INF),
    (10.0, 11.0, -INF, 10.0, 100.0),
])
def test_non_finite_prices_or_volume_are_impossible_ohlc(bad):
    raw = _market([("A", D(2020, 1, 2), *GOOD), ("A", D(2020, 1, 3), *bad)])
    out = clean("market", raw)
    assert out.df["date"].to_list() == [D(2020, 1, 2)]
    assert out.dropped["impossible_ohlc"] == 1


def test_penny_stock_prices_and_zero_volume_are_kept():
    raw = _market([("P", D(2020, 1, 2), 0.0001, 0.0001, 0.0001, 0.0001, 0.0),
                   ("P", D(2020, 1, 3), 0.0001, 0.0002, 0.0001, 0.0002, 5.0)])
    assert clean("market", raw).df.height == 2


@pytest.mark.parametrize("price", [NAN, INF])
def test_coingecko_drops_a_non_finite_price(price):
    raw = pl.DataFrame({"coin_id": ["bitcoin"] * 2, "symbol": ["btc"] * 2, "date": [D(2021, 1, 1), D(2021, 1, 2)],
                        "price_usd": [30000.0, price], "market_cap_usd": [1.0, 1.0], "volume_usd": [1.0, 1.0],
                        "circulating_supply": [1.0, 1.0], "max_supply": [None, None], "source": ["t"] * 2})
    out = clean("coingecko", raw)
    assert out.df["date"].to_list() == [D(2021, 1, 1)]
    assert out.dropped["non_positive_price"] == 1


def test_conform_takes_the_calendar_date_where_a_zoned_timestamp_was_stamped():
    """An NSE bar stamped midnight IST is 18:30 UTC the day before: its date is the IST day."""
    from zoneinfo import ZoneInfo

    from tenali_pipeline.sources.schema import conform

    raw = _market([("RELIANCE.NS", D(2020, 1, 2), *GOOD)]).with_columns(
        date=pl.lit(dt.datetime(2020, 1, 2, tzinfo=ZoneInfo("Asia/Kolkata"))))
    assert conform(raw, SCHEMAS["market"], what="t")["date"].to_list() == [D(2020, 1, 2)]


def test_conform_reads_iso_date_strings_and_nulls_the_rest():
    from tenali_pipeline.sources.schema import conform

    raw = pl.concat([_market([("A", D(2020, 1, 2), *GOOD)]).with_columns(pl.col("date").cast(pl.String))] * 2)
    raw = raw.with_columns(date=pl.Series(["2020-01-02", "02/01/2020"]))
    assert conform(raw, SCHEMAS["market"], what="t")["date"].to_list() == [D(2020, 1, 2), None]


def test_conform_refuses_epoch_numbers_for_a_timestamp_naming_the_column():
    """A number has no unit: cast as microseconds, ccxt's milliseconds would land in January 1970."""
    from tenali_pipeline.sources.schema import conform

    raw = pl.DataFrame({"exchange": ["k"], "symbol": ["BTC/USD"], "timeframe": ["1d"], "timestamp": [1577923200000],
                        "open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1.0], "source": ["t"]})
    with pytest.raises(SchemaError, match="timestamp"):
        conform(raw, SCHEMAS["crypto"], what="raw crypto")
