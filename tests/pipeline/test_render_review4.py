"""Facts the renderers state, checked against the input: a month that has not ended is not said to have
ended, a pair is quoted in its quote currency with its digits, sign words match signs, and a change "on
the month" compares with the month before."""

import datetime as dt
import json
import pathlib
import re

import polars as pl
import pytest

from tenali_pipeline.text.grounded import GroundedConfig, build_questions
from tenali_pipeline.text.render import render_macro, render_market
from tenali_pipeline.text.render_fundamentals import render_coins
from tenali_pipeline.text.technical import render_technical

D = dt.date
_THROUGH = re.compile(r"\bthrough (January|February|March|April|May|June|July|August|September|October|November"
                      r"|December) \d")
REAL = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


def _stock(ticker: str, days: list[dt.date], closes: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"ticker": ticker, "date": days, "open": closes, "high": [c * 1.01 for c in closes],
                         "low": [c * 0.99 for c in closes], "close": closes, "adj_close": closes,
                         "volume": 1000.0, "source": "test"})


def _pair(symbol: str, days: list[dt.date], closes: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"symbol": symbol, "timestamp": [dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc)
                                                         for d in days],
                         "open": closes, "high": [c * 1.01 for c in closes], "low": [c * 0.99 for c in closes],
                         "close": closes, "volume": 10.0, "source": "test"},
                        schema_overrides={"timestamp": pl.Datetime("us", "UTC")})


def _weekdays(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)
            if (start + dt.timedelta(days=i)).weekday() < 5]


def _every_day(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def _crypto_docs(prices: pl.DataFrame) -> dict[str, str]:
    docs = render_market(prices, domain="crypto_forex", by="symbol", time="timestamp", unit="coins")
    return dict(docs.select("title", "text").iter_rows())


# ---- a month that has not ended ---------------------------------------------------------------------
def test_market_month_still_running_is_described_up_to_its_last_bar_not_as_ended():
    days = _weekdays(D(2025, 12, 1), D(2026, 1, 14))  # the data stops on Wednesday January 14
    docs = dict(render_market(_stock("XYZ", days, [100.0 + i for i in range(len(days))]))
                .select("title", "text").iter_rows())
    jan, dec = docs["XYZ in January 2026"], docs["XYZ in December 2025"]
    assert "through January 14" in jan and "ended January" not in jan and "monthly change" not in jan, jan
    assert "opened the month at" in jan or "opening the month at" in jan, jan
    assert not _THROUGH.search(dec), dec  # December is over: described as a whole month


def test_market_month_whose_last_weekday_is_in_the_data_has_ended_for_stocks_not_for_crypto():
    # January 31, 2026 is a Saturday: a stock's January ended on Friday the 30th, a coin's did not.
    stock = dict(render_market(_stock("XYZ", _weekdays(D(2026, 1, 1), D(2026, 1, 30)), [10.0] * 22))
                 .select("title", "text").iter_rows())
    assert not _THROUGH.search(stock["XYZ in January 2026"]), stock
    days = _every_day(D(2026, 1, 1), D(2026, 1, 30))
    coin = _crypto_docs(_pair("BTC/USDT", days, [90_000.0] * len(days)))["BTC/USDT in January 2026"]
    assert "through January 30" in coin and "ended January" not in coin, coin


def test_first_month_of_data_starting_mid_month_is_not_called_the_whole_month():
    days = _weekdays(D(2026, 1, 15), D(2026, 2, 27))
    text = dict(render_market(_stock("NEW", days, [20.0 + i for i in range(len(days))]))
                .select("title", "text").iter_rows())["NEW in January 2026"]
    assert "from January 15" in text and "opened the month" not in text and "opening the month" not in text, text


def test_technical_note_of_a_month_still_running_does_not_say_it_closed_the_month():
    days = _weekdays(D(2025, 1, 1), D(2026, 1, 14))
    closes = [100.0 + (i % 17) - (i % 5) * 0.7 for i in range(len(days))]
    raw = _stock("XYZ", days, closes)
    notes = render_technical(raw, by="ticker")
    last = notes.filter(pl.col("date") == D(2026, 1, 14))["text"].item()
    assert "through January 14" in last and "ended January" not in last and "closed the month" not in last, last
    full = notes.filter(pl.col("date") == D(2025, 12, 31))["text"].item()
    assert not _THROUGH.search(full), full


def test_coin_month_still_running_says_where_it_stood_not_how_it_ended():
    days = _every_day(D(2024, 3, 1), D(2024, 4, 10))
    coins = pl.DataFrame({"coin_id": "bitcoin", "symbol": "btc", "date": days, "price_usd": 60_000.0,
                          "market_cap_usd": [1.2e12 + 1e9 * i for i in range(len(days))], "volume_usd": 1e9,
                          "circulating_supply": 1.96e7, "max_supply": 2.1e7, "source": "test"})
    texts = render_coins(coins)["text"].to_list()
    assert "ended March 2024" in texts[0], texts[0]
    assert "ended April" not in texts[1] and "April 10, 2024" in texts[1] and "on the month" not in texts[1], texts[1]


# ---- currency and digits ----------------------------------------------------------------------------
def test_pairs_are_quoted_in_their_quote_currency_and_indian_shares_in_rupees():
    days = _every_day(D(2024, 1, 1), D(2024, 1, 31))
    eth_btc = _crypto_docs(_pair("ETH/BTC", days, [0.05 + 0.0001 * i for i in range(31)]))["ETH/BTC in January 2024"]
    assert "$" not in eth_btc and "0.05300 BTC" in eth_btc, eth_btc  # the last close, 0.053
    btc_eur = _crypto_docs(_pair("BTC/EUR", days, [40_000.0] * 31))["BTC/EUR in January 2024"]
    assert "$" not in btc_eur and "€40,000.00" in btc_eur, btc_eur
    btc_usdt = _crypto_docs(_pair("BTC/USDT", days, [40_000.0] * 31))["BTC/USDT in January 2024"]
    assert "$40,000.00" in btc_usdt, btc_usdt
    yahoo = _crypto_docs(_pair("BTC-EUR", days, [40_000.0] * 31))["BTC-EUR in January 2024"]
    assert "$" not in yahoo and "€40,000.00" in yahoo, yahoo
    ns = render_market(_stock("RELIANCE.NS", _weekdays(D(2024, 1, 1), D(2024, 1, 31)), [2_950.1] * 23))
    assert "$" not in ns["text"].item() and "₹2,950.10" in ns["text"].item(), ns["text"].item()
    brk = render_market(_stock("BRK-B", _weekdays(D(2024, 1, 1), D(2024, 1, 31)), [360.0] * 23))
    assert "$360.00" in brk["text"].item()  # a share class, not a currency


def test_technical_notes_of_a_btc_quoted_pair_have_no_dollar_sign_and_do_not_call_it_a_stock():
    days = _every_day(D(2022, 1, 1), D(2024, 12, 31))
    closes = [0.06 + 0.01 * ((i % 23) - (i % 7)) / 23 for i in range(len(days))]
    notes = render_technical(_pair("ETH/BTC", days, closes).rename({"symbol": "instrument"}), by="instrument",
                             time="timestamp")
    text = " ".join(notes["text"])
    assert "$" not in text and re.search(r"\b0\.0\d{4} BTC\b", text), text[:500]
    assert "the stock" not in text


def test_sub_cent_pair_keeps_its_digits():
    days = _every_day(D(2024, 1, 1), D(2024, 1, 31))
    text = _crypto_docs(_pair("SHIB/USDT", days, [0.00001234] * 31))["SHIB/USDT in January 2024"]
    assert "$0.00 " not in text and "$0.00," not in text and "$0.00001234" in text, text


def test_real_btc_quoted_minute_candles_rendered_as_daily_bars_in_btc():
    path = REAL / "crypto" / "freqtrade_UNITTEST_BTC-1m.json"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared real-data captures are not in this checkout)")
    bars = pl.DataFrame(json.loads(path.read_text()), schema=["ms", "open", "high", "low", "close", "volume"],
                        orient="row")
    daily = (bars.with_columns(timestamp=pl.from_epoch("ms", time_unit="ms").dt.replace_time_zone("UTC")
                               .dt.truncate("1d")).sort("ms")
             .group_by("timestamp").agg(pl.col("open").first(), pl.col("high").max(), pl.col("low").min(),
                                        pl.col("close").last(), pl.col("volume").sum())
             .with_columns(symbol=pl.lit("UNITTEST/BTC"), source=pl.lit("freqtrade")))
    text = _crypto_docs(daily)["UNITTEST/BTC in November 2017"]
    last = daily.sort("timestamp")["close"][-1]
    assert 0.001 < last < 0.01 and "$" not in text and f"{last:.6f} BTC" in text, text  # four significant digits
    assert "from November 4 through November 14" in text, text


def test_grounded_answers_for_an_indian_share_are_in_rupees():
    days = _weekdays(D(2023, 1, 2), D(2023, 12, 29))
    prices = _stock("TCS.NS", days, [3_300.0 + i for i in range(len(days))]).with_columns(
        dividends=pl.lit(0.0), splits=pl.lit(0.0))
    q = build_questions(GroundedConfig(val_start=D(2023, 7, 1), per_kind=5, kinds=("close_on", "sma", "range_high")),
                        prices=prices)
    assert q.height and not any("$" in a for a in q["answer"]), q["answer"].to_list()[:3]
    assert all("₹" in a for a in q["answer"])


# ---- words that match the numbers -------------------------------------------------------------------
def test_largest_gain_and_loss_words_are_used_only_for_a_gain_and_a_loss():
    # Every day up: the worst day is still a rise, never "its largest loss (+0.1%)".
    texts = []
    for k in range(12):
        days = _weekdays(D(2024, 1, 1), D(2024, 1, 31))
        texts += render_market(_stock(f"UP{k}", days, [10.0 * 1.001 ** i for i in range(len(days))]))["text"].to_list()
        texts += render_market(_stock(f"DN{k}", days, [10.0 * 0.999 ** i for i in range(len(days))]))["text"].to_list()
    for text in texts:
        assert not re.search(r"largest loss on \w+ \d+ \(\+", text), text
        assert not re.search(r"largest daily gain came on \w+ \d+ \(-", text), text


def test_coin_change_on_the_month_is_against_the_calendar_month_before():
    # No February data: March's cap is not "on the month" against January's.
    days = _every_day(D(2024, 1, 1), D(2024, 1, 31)) + _every_day(D(2024, 3, 1), D(2024, 3, 31))
    coins = pl.DataFrame({"coin_id": "bitcoin", "symbol": "btc", "date": days, "price_usd": 60_000.0,
                          "market_cap_usd": [1e12] * 31 + [1.5e12] * 31, "volume_usd": 1e9,
                          "circulating_supply": [1.9e7] * 31 + [1.95e7] * 31, "max_supply": 2.1e7, "source": "test"})
    march = render_coins(coins).filter(pl.col("title") == "BTC tokenomics March 2024")["text"].item()
    assert "+50.0%" not in march and "on the month" not in march and "a month earlier" not in march, march


def test_coin_day_without_a_price_does_not_crash_the_month():
    days = _every_day(D(2024, 3, 1), D(2024, 3, 31))
    coins = pl.DataFrame({"coin_id": "bitcoin", "symbol": "btc", "date": days,
                          "price_usd": [60_000.0] * 30 + [None], "market_cap_usd": 1.2e12, "volume_usd": 1e9,
                          "circulating_supply": 2e7, "max_supply": 2.1e7, "source": "test"},
                         schema_overrides={"price_usd": pl.Float64})
    text = render_coins(coins)["text"].item()
    assert "$60,000.00" in text and "March 30, 2024" in text and "ended March" not in text, text


def test_macro_daily_note_after_a_leap_year_states_each_series_once():
    # February 28 and 29, 2024 both fall on February 28, 2025 a year later: one line, against the 28th.
    rows = [("DEXUSEU", "USD per EUR", "U.S. Dollars to One Euro", "Daily", d, v, d + dt.timedelta(days=1))
            for d, v in ((D(2024, 2, 28), 1.00), (D(2024, 2, 29), 1.25), (D(2025, 2, 27), 1.05), (D(2025, 2, 28), 1.10))]
    obs = pl.DataFrame(rows, schema=["series_id", "title", "units", "frequency", "date", "value", "realtime_start"],
                       orient="row").with_columns(source=pl.lit("test"))
    text = render_macro(obs).filter(pl.col("title") == "US economy February 28, 2025")["text"].item()
    assert text.count("DEXUSEU") == 1 and "+10.0% from a year earlier" in text, text


def test_central_bank_decision_keeps_an_eighth_of_a_point():
    from tenali_pipeline.sources.live.centralbank import parse_decision
    from tenali_pipeline.text.render_centralbank import decision_sentence

    text = ("The Federal Open Market Committee decided today to raise its target for the federal funds rate "
            "by 1/8 percentage point to 5-7/8 percent.")
    d = parse_decision(text, "fed")
    assert d is not None and d.rate_low == 5.875, d
    sentence = decision_sentence({"decision": d.action, "change_bps": d.change_bps, "rate_low": d.rate_low,
                                  "rate_high": d.rate_high, "rate_name": d.rate_name})
    assert sentence.endswith("to 5.875%.") and "12.5 basis points" in sentence, sentence
    assert decision_sentence({"decision": "cut", "change_bps": -25.0, "rate_low": 4.25, "rate_high": 4.5,
                              "rate_name": None}).endswith("to 4.25-4.50%."), "two decimals stay two"


def test_close_equal_to_its_averages_is_at_them_not_below():
    # A stablecoin pinned at 1.0000: the close is at its 50- and 200-day averages.
    days = _every_day(D(2023, 1, 1), D(2023, 12, 31))
    notes = render_technical(_pair("USDC/USDT", days, [1.0] * len(days)).rename({"symbol": "instrument"}),
                             by="instrument", time="timestamp")
    text = notes.filter(pl.col("date") == D(2023, 12, 31))["text"].item()
    assert "below" not in text and re.search(r"\bat (its|the) 50-day", text), text
    assert "at the 200-day average of $1.00" in text, text


def test_crypto_documents_describe_daily_bars_only(monkeypatch):
    """Hourly candles in the lake next to the daily ones were rendered as extra 'sessions' of the month
    (the features asset already kept timeframe 1d only)."""
    import datetime as dt

    import polars as pl

    from tenali_pipeline.defs.corpus import assets as corpus_assets

    daily = [dict(timestamp=dt.datetime(2024, 3, d), symbol="BTC/USD", timeframe="1d", open=100.0 + d,
                  high=102.0 + d, low=99.0 + d, close=101.0 + d, volume=10.0, source="ccxt") for d in range(1, 32)]
    hourly = [dict(r, timestamp=r["timestamp"] + dt.timedelta(hours=h), timeframe="1h", high=500.0)
              for r in daily[:3] for h in range(1, 24)]
    monkeypatch.setattr(corpus_assets, "read_clean", lambda store, source, name: pl.DataFrame(daily + hourly))
    docs = corpus_assets._crypto_documents(None)
    assert docs.height == 1
    text = docs["text"][0]
    assert "31 " in text and "$500" not in text  # 31 sessions, and no hourly high
