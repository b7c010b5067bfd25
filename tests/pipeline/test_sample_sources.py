"""Sample clients: exact schemas, determinism, provenance, and the facts recovered from the real sample data."""

import datetime as dt
import re

import polars as pl
import pytest

from tenali_pipeline.cleaning import KEYS, clean
from tenali_pipeline.sources.sample import (
    SampleCryptoClient,
    SampleDocumentsClient,
    SampleFilingsClient,
    SampleMacroClient,
    SampleMarketClient,
    SampleNewsClient,
)
from tenali_pipeline.sources.schema import SCHEMAS

D = dt.date

CLIENTS = {
    "market": SampleMarketClient,
    "macro": SampleMacroClient,
    "crypto": SampleCryptoClient,
    "filings": SampleFilingsClient,
    "news": SampleNewsClient,
    "documents": SampleDocumentsClient,
}


@pytest.fixture(scope="module")
def fetched() -> dict[str, pl.DataFrame]:
    return {name: cls().fetch() for name, cls in CLIENTS.items()}


@pytest.fixture(scope="module")
def market(fetched) -> pl.DataFrame:
    return fetched["market"]


@pytest.mark.parametrize("source", sorted(CLIENTS))
def test_output_conforms_exactly_to_the_schema(fetched, source):
    df = fetched[source]
    assert df.columns == list(SCHEMAS[source])
    assert dict(df.schema) == SCHEMAS[source]
    assert df.height > 0


@pytest.mark.parametrize("source", sorted(CLIENTS))
def test_fetch_is_deterministic(fetched, source):
    assert CLIENTS[source]().fetch().equals(fetched[source])


@pytest.mark.parametrize("source", sorted(CLIENTS))
def test_every_row_is_marked_as_sample(fetched, source):
    assert fetched[source]["source"].str.starts_with("sample:").all()


@pytest.mark.parametrize("source", sorted(CLIENTS))
def test_sample_data_is_already_clean(fetched, source):
    out = clean(source, fetched[source])
    assert sum(out.dropped.values()) == 0, out.dropped
    assert out.df.select(KEYS[source]).is_duplicated().sum() == 0


def test_market_tickers_and_range(market):
    assert set(market["ticker"]) == {"AAPL", "FB", "GOOG", "IBM", "MSFT"}
    assert market["date"].min() == D(2000, 3, 1)
    assert market.filter(pl.col("ticker") == "FB")["date"].min() == D(2012, 5, 18)


def test_market_splits_are_recovered(market):
    splits = market.filter(pl.col("splits") > 0).select("ticker", "date", "splits").sort("ticker", "date")
    assert splits.rows() == [("AAPL", D(2000, 6, 21), 2.0), ("AAPL", D(2005, 2, 28), 2.0), ("MSFT", D(2003, 2, 18), 2.0)]
    # a split day is not an ex-dividend day too
    assert market.filter(pl.col("splits") > 0)["dividends"].to_list() == [0.0, 0.0, 0.0]


def test_ibm_pays_positive_quarterly_dividends(market):
    ibm = market.filter(pl.col("ticker") == "IBM", pl.col("dividends") > 0)
    year_2000 = ibm.filter(pl.col("date").dt.year() == 2000)["dividends"]
    assert 2 <= year_2000.len() <= 4  # the data starts in March
    assert year_2000.min() > 0.10 and year_2000.max() < 0.16
    per_year = ibm.group_by(pl.col("date").dt.year().alias("y")).len().filter(pl.col("y").is_between(2001, 2012))
    assert (per_year["len"] == 4).all()
    assert not (market.filter(pl.col("ticker") == "GOOG")["dividends"] > 0).any()  # GOOG paid none before 2013


def test_market_filters(market):
    df = SampleMarketClient(["MSFT"], start="2010-01-01", end="2010-02-01").fetch()
    assert set(df["ticker"]) == {"MSFT"}
    assert df["date"].min() >= D(2010, 1, 1) and df["date"].max() < D(2010, 2, 1)
    assert df.height == 19  # trading days in January 2010
    full = market.filter(pl.col("ticker") == "MSFT", pl.col("date").is_between(D(2010, 1, 1), D(2010, 1, 31)))
    assert df.equals(full)


def test_macro_series_ids_and_publication_lag(fetched):
    macro = fetched["macro"]
    assert {"GDPC1", "CPIAUCSL", "UNRATE", "M1SL"} <= set(macro["series_id"])
    assert (macro["realtime_start"] > macro["date"].dt.offset_by("3mo")).all()  # published after the quarter ended
    assert macro["date"].dt.day().eq(1).all() and macro["date"].dt.month().is_in([1, 4, 7, 10]).all()
    only = SampleMacroClient(["UNRATE", "NOT_A_SERIES"]).fetch()
    assert set(only["series_id"]) == {"UNRATE"}
    assert SampleMacroClient(["NOT_A_SERIES"]).fetch().is_empty()


def test_crypto_is_a_daily_series_of_made_up_coins(fetched):
    crypto = fetched["crypto"]
    assert set(crypto["symbol"]) == {"XSMP/USD", "XDEM/USD", "XALP/USD", "XBET/USD"}
    assert (crypto["timeframe"] == "1d").all()
    for _, g in crypto.group_by("symbol"):
        assert g["timestamp"].diff().drop_nulls().dt.total_days().eq(1).all()
    assert ((crypto["low"] <= crypto[["open", "close"]].min_horizontal())
            & (crypto["high"] >= crypto[["open", "close"]].max_horizontal())).all()
    other = SampleCryptoClient(seed=8).fetch()
    assert not other.equals(crypto)  # the seed matters, so equality above is meaningful


def test_filings_dates_and_forms(fetched):
    filings = fetched["filings"]
    assert set(filings["form"]) == {"10-K", "10-Q", "8-K"}
    assert (filings["filed"] >= filings["period"]).all()
    assert filings["accession"].n_unique() == filings.height
    assert filings["document"].str.contains(r"<h2>(Part I+\. )?Item \d").all()
    assert (filings["document_format"] == "html").all()


def test_documents_are_lessons_within_the_date_range(fetched):
    docs = fetched["documents"]
    assert docs.height == 400
    assert docs["date"].min() >= D(2005, 1, 1) and docs["date"].max() < D(2013, 3, 1)
    assert docs["text"].str.starts_with("# Lesson").all()
    assert docs["doc_id"].n_unique() == 400


@pytest.fixture(scope="module")
def all_news() -> pl.DataFrame:
    return SampleNewsClient(start=None).fetch()


def test_news_does_not_report_a_split_day_as_a_crash(all_news, market):
    aapl_split = all_news.filter(pl.col("link") == "sample://market-wire/AAPL/2000-06-21")
    # AAPL really rose about 10% on its 2000 split day: reported as a gain, not a 45% fall
    assert re.fullmatch(r"AAPL (shares jump|rallies|climbs) 9\.\d%.*", aapl_split["title"].item())
    for ticker, day in (("AAPL", "2000-06-21"), ("AAPL", "2005-02-28"), ("MSFT", "2003-02-18")):
        item = all_news.filter(pl.col("link") == f"sample://market-wire/{ticker}/{day}")
        assert not item["title"].str.contains(r"fall|slides|drops").any(), item["title"].to_list()
        assert not item["summary"].str.contains(r"4\d\.\d%|5\d\.\d%").any()


def test_news_moves_match_adjusted_prices(all_news, market):
    adj = market.sort("ticker", "date").with_columns(
        ret=pl.col("adj_close") / pl.col("adj_close").shift(1).over("ticker") - 1)
    for r in all_news.sample(60, seed=0).iter_rows(named=True):
        _, _, ticker, day = r["link"].rsplit("/", 3)
        ret = adj.filter(pl.col("ticker") == ticker, pl.col("date") == D.fromisoformat(day))["ret"].item()
        assert abs(ret) >= 0.04
        stated = float(re.search(r"(\d+\.\d)%", r["title"]).group(1))
        assert stated == pytest.approx(abs(ret) * 100, abs=0.051)
        assert r["published"].date() == D.fromisoformat(day) and r["published"].hour == 21


def test_news_summary_prices_agree_with_the_stated_move(all_news):
    # "closed at $C ..., up/down P% from the previous close of $PC": C / PC must be that move
    pattern = re.compile(r"closed at \$([\d,]+\.\d\d) on .*?, (up|down) ([\d.]+)% from the previous close of "
                         r"\$([\d,]+\.\d\d)")
    checked = 0
    for summary in all_news["summary"]:
        m = pattern.search(summary)
        if not m:
            continue
        close, direction, p, prev = float(m[1].replace(",", "")), m[2], float(m[3]), float(m[4].replace(",", ""))
        move = (close / prev - 1) * 100
        assert (move > 0) == (direction == "up"), summary
        assert abs(abs(move) - p) < 0.6, summary  # rounding of the prices, and a dividend at most
        checked += 1
    assert checked > 50


def test_news_window_and_threshold():
    recent = SampleNewsClient(["IBM"], start="2012-01-01", threshold=0.03).fetch()
    assert recent["link"].str.contains("/IBM/").all()
    assert recent["published"].min() >= dt.datetime(2012, 1, 1, tzinfo=dt.timezone.utc)
    assert SampleNewsClient(["IBM"], start="2012-01-01", threshold=0.5).fetch().is_empty()
