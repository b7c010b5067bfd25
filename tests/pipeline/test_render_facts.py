"""What the rendered documents say: figures in one unit, change words that match the figures, periods
labelled as what they measure. Each test pins a fact a wrong rendering once taught the model."""

import datetime as dt
import re

import polars as pl

from tenali_pipeline.cleaning import clean
from tenali_pipeline.sources.sample import SampleMarketClient
from tenali_pipeline.text.render import money, render_macro, render_market

D = dt.date


def _dollars(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"\$([\d,]+\.\d\d)", text)]


def _split_month(already_adjusted: bool) -> pl.DataFrame:
    """XYZ trades near $100 until a 2-for-1 split on March 16, then near $50 (unadjusted, as the
    sample's Quandl prices are); or, with ``already_adjusted``, as Yahoo serves it (every raw price
    before the split already halved)."""
    days = [D(2020, 2, 28)] + [D(2020, 3, d) for d in (2, 3, 4, 13, 16, 17, 18, 31)]
    closes = [98.0, 100.0, 102.0, 101.0, 104.0, 52.5, 53.0, 52.0, 54.0]  # the month's low is Mar 2 (100 * 0.98)
    splits = [0.0, 0, 0, 0, 0, 2.0, 0, 0, 0]
    pre = [d < D(2020, 3, 16) for d in days]
    k = [0.5 if p and already_adjusted else 1.0 for p in pre]
    close = [c * f for c, f in zip(closes, k)]
    return pl.DataFrame({
        "ticker": "XYZ", "date": days,
        "open": [c * 0.99 for c in close], "high": [c * 1.01 for c in close], "low": [c * 0.98 for c in close],
        "close": close, "adj_close": [c * (0.5 if p else 1.0) for c, p in zip(closes, pre)],
        "volume": [1_000_000.0 if p and not already_adjusted else 2_000_000.0 for p in pre],
        "dividends": 0.0, "splits": splits, "source": "test"})


def test_market_month_with_a_split_quotes_every_price_in_post_split_shares():
    for already_adjusted in (False, True):
        prices = _split_month(already_adjusted)
        doc = render_market(prices).filter(pl.col("title") == "XYZ in March 2020").row(0, named=True)
        text = doc["text"]
        # month-end units: the pre-split $100-$104 trades are $50-$52 after the 2-for-1 split
        assert money(54.0) in text and money(50.0 * 0.99) in text, text  # close, and the month's open
        assert money(54.0 * 1.01) in text and money(50.0 * 0.98) in text, text  # high (Mar 31), low (Mar 2)
        assert max(_dollars(text)) < 60, text  # no pre-split price beside post-split ones
        assert "+10.2%" in text or "rose 10.2%" in text, text  # 49 (Feb 28, split-adjusted) -> 54
        # volume in post-split shares: 2,000,000 a day throughout
        assert "2,000,000" in text, text


def test_sample_market_split_months_match_the_post_split_range():
    market = clean("market", SampleMarketClient(["AAPL", "MSFT"], start="2000-01-01").fetch()).df
    docs = render_market(market)
    for title, ceiling in (("AAPL in February 2005", 50.0), ("AAPL in June 2000", 60.0), ("MSFT in February 2003", 26.0)):
        text = docs.filter(pl.col("title") == title)["text"].item()
        assert max(_dollars(text)) < ceiling, text


def test_market_change_is_never_stated_against_a_different_base_than_it_uses():
    # The monthly change runs close to close; the text must not call it the change "from" the open.
    prices = _split_month(False)
    for text in render_market(prices)["text"]:
        assert not re.search(r"from its \$[\d,.]+ open", text), text
        m = re.search(r"(rose|fell) [\d.]+%, from \$([\d,.]+) to \$([\d,.]+)", text)
        assert m is None, text


def test_market_best_and_worst_day_name_the_day_that_had_that_return():
    # First month in the data, every day down: the first bar has no return and must not be "the best day".
    days = [D(2020, 1, 2), D(2020, 1, 3), D(2020, 1, 6), D(2020, 1, 7)]
    closes = [10.0, 9.5, 9.2, 9.0]
    prices = pl.DataFrame({"ticker": "B", "date": days, "open": [10.0] * 4, "high": [11.0] * 4, "low": [8.0] * 4,
                           "close": closes, "adj_close": closes, "volume": 1.0, "source": "t"})
    text = render_market(prices)["text"].item()
    best = re.search(r"(?:best day was|largest daily gain came on) (January \d\d) \(([-+][\d.]+%)\)", text)
    worst = re.search(r"(?:worst was|largest loss on) (January \d\d) \(([-+][\d.]+%)\)", text)
    assert best and worst, text
    assert best.groups() == ("January 07", "-2.2%"), text  # 9.2 -> 9.0
    assert worst.groups() == ("January 03", "-5.0%"), text  # 10 -> 9.5


def _obs(rows):
    obs = pl.DataFrame(rows, schema=["series_id", "title", "units", "frequency", "date", "value", "realtime_start"],
                       orient="row")
    return obs.with_columns(source=pl.lit("test"))


def test_macro_series_of_different_frequencies_get_their_own_period_labels():
    rows = [
        ("CPIAUCSL", "CPI", "Index 1982-1984=100", "Monthly", D(2020, 1, 1), 258.7, D(2020, 2, 13)),
        ("GDPC1", "Real GDP", "Billions of Chained 2012 Dollars", "Quarterly", D(2020, 1, 1), 18_951.0, D(2020, 4, 29)),
        ("DGS10", "10-Year Treasury", "Percent", "Daily", D(2020, 1, 2), 1.88, D(2020, 1, 3)),
        ("DGS10", "10-Year Treasury", "Percent", "Daily", D(2020, 1, 3), 1.80, D(2020, 1, 6)),
    ]
    docs = render_macro(_obs(rows))
    by_title = {r["title"]: r for r in docs.iter_rows(named=True)}
    assert set(by_title) == {"US economy January 2020", "US economy Q1 2020", "US economy January 2, 2020",
                             "US economy January 3, 2020"}, sorted(by_title)
    jan = by_title["US economy January 2020"]
    assert "CPIAUCSL" in jan["text"] and "GDPC1" not in jan["text"] and jan["date"] == D(2020, 2, 13)
    q1 = by_title["US economy Q1 2020"]
    assert "GDPC1" in q1["text"] and "CPIAUCSL" not in q1["text"] and q1["date"] == D(2020, 4, 29)
    assert by_title["US economy January 3, 2020"]["date"] == D(2020, 1, 6)
    assert "-0.08 points" in by_title["US economy January 3, 2020"]["text"]


def test_macro_change_of_a_negative_level_has_the_right_sign():
    # Net exports from -500 to -400 billion: a rise of 100, not "-20.0%".
    rows = [("NETEXP", "Net exports", "Billions of Dollars", "Quarterly", D(2020, 1, 1), -500.0, D(2020, 4, 29)),
            ("NETEXP", "Net exports", "Billions of Dollars", "Quarterly", D(2020, 4, 1), -400.0, D(2020, 7, 30))]
    text = render_macro(_obs(rows)).sort("date")["text"][1]
    assert "-20.0%" not in text and "+100.00 from the previous period" in text, text


# ---- fundamentals and on-chain notes ----------------------------------------------------------------
def test_defi_month_not_fully_covered_is_compared_per_day_and_not_said_to_have_ended():
    from tenali_pipeline.text.render_fundamentals import render_defi

    jan = [D(2024, 1, d) for d in range(1, 32)]
    feb = [D(2024, 2, d) for d in range(1, 11)]  # the data stops on February 10
    rows = [("fees", "chain", "Xchain", d, 1_000_000.0, "test") for d in jan + feb]
    rows += [("tvl", "chain", "Xchain", d, 5e9, "test") for d in jan + feb]
    metrics = pl.DataFrame(rows, schema=["metric", "scope", "entity", "date", "value", "source"], orient="row")
    text = render_defi(metrics).filter(pl.col("title") == "Xchain on-chain activity in February 2024")["text"].item()
    # fees ran at $1 million a day in both months: not a 67.7% fall
    assert "-67.7%" not in text and "+0.0%" in text, text
    assert "ended the month" not in text and "February 10, 2024" in text, text


def test_coin_prices_below_a_cent_keep_their_digits():
    from tenali_pipeline.text.render_fundamentals import render_coins

    days = [D(2024, 3, d) for d in range(1, 32)]
    coins = pl.DataFrame({"coin_id": "shiba-inu", "symbol": "shib", "date": days, "price_usd": 0.00002712,
                          "market_cap_usd": 1.6e10, "volume_usd": 1e9, "circulating_supply": 5.89e14,
                          "max_supply": None, "source": "test"}, schema_overrides={"max_supply": pl.Float64})
    text = render_coins(coins)["text"].item()
    assert "$0.00 " not in text and "$0.00002712" in text, text


def test_negative_eps_is_written_with_the_sign_before_the_dollar():
    from tenali_pipeline.sources.sample.xbrl import SampleXbrlClient
    from tenali_pipeline.text.render_fundamentals import render_earnings

    facts = SampleXbrlClient(("IBM",)).fetch()
    facts = facts.with_columns(value=pl.when(pl.col("item").str.starts_with("eps")).then(-pl.col("value"))
                               .otherwise(pl.col("value")))
    texts = render_earnings(facts)["text"].to_list()
    assert texts and not any("$-" in t for t in texts)
    assert all(re.search(r"Diluted earnings per share was -\$\d+\.\d\d", t) for t in texts)


def test_an_8k_header_gives_its_event_date_not_a_period_end():
    from tenali_pipeline.text.render import render_filings

    filings = pl.DataFrame({"cik": ["0000320193"] * 2, "ticker": ["AAPL"] * 2, "company": ["Apple Inc."] * 2,
                            "form": ["8-K", "10-Q"], "accession": ["a", "b"], "filed": [D(2011, 10, 31), D(2011, 11, 6)],
                            "period": [D(2011, 10, 30), D(2011, 9, 30)], "items": [None, None],
                            "document": ["<p>Item 8.01. Other Events</p><p>Something happened.</p>",
                                         "<p>Part I</p><p>Item 1. Financial Statements</p><p>Figures.</p>"],
                            "document_format": ["html", "html"], "source": ["test"] * 2})
    eight_k, ten_q = [t.splitlines()[0] for t in render_filings(filings)["text"]]
    assert "period ended" not in eight_k and "October 30, 2011" in eight_k, eight_k
    assert ten_q.endswith("for the period ended September 30, 2011."), ten_q
