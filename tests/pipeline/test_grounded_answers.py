"""Grounded answers: scoring that can't be fooled, rejected answers that are really wrong, the time split."""

import datetime as dt

import polars as pl
import pytest

from tenali_pipeline.grounded_eval import option_sentences
from tenali_pipeline.text.grounded import GroundedConfig, answer_is_correct, build_questions


@pytest.fixture(scope="module")
def tables():
    from tenali_pipeline.cleaning import clean
    from tenali_pipeline.sources.sample import SampleFilingsClient, SampleMacroClient, SampleMarketClient
    from tenali_pipeline.technicals.features import compute_features

    prices = clean("market", SampleMarketClient().fetch()).df
    return {"prices": prices, "macro": clean("macro", SampleMacroClient().fetch()).df,
            "filings": clean("filings", SampleFilingsClient().fetch()).df,
            "features": compute_features(prices.rename({"ticker": "instrument"}), instrument_col="instrument",
                                         time_col="date")}


def _row(kind, value, answer, choices=(), correct=0):
    return {"kind": kind, "value": value, "answer": answer, "choices": list(choices), "correct_choice": correct}


def test_exact_match_is_not_fooled_by_dates_windows_or_restated_figures():
    close = _row("close_on", 19.0, "FB closed at $19.00 on October 19, 2012.")
    assert answer_is_correct("FB closed at $19.00 on October 19, 2012.", close)
    assert answer_is_correct("It closed at $19.", close)
    assert not answer_is_correct("FB closed at $25.72 on October 19, 2012.", close)
    ret = _row("return", 5.0, "GOOG returned +5.00% from February 1, 2012 to February 8, 2012 (5 trading days, adjusted close).")
    assert not answer_is_correct("GOOG returned +6.98% from February 1, 2012 to February 8, 2012 (5 trading days).", ret)
    assert answer_is_correct("GOOG returned 5.00% over the week.", ret)
    down = _row("return", -1.0, "X returned -1.00% from January 3, 2012 to January 5, 2012 (2 trading days, adjusted close).")
    assert not answer_is_correct("X: 2-day return ending 2012-01-05 was +3.10%.", down)  # "-01" of the date
    assert answer_is_correct("X: 2-day return ending 2012-01-05 was -1.00%.", down)
    rsi = _row("rsi", 70.0, "The 14-day RSI of FB was 70.0 on December 4, 2012: neutral (between 30 and 70).")
    assert not answer_is_correct("The 14-day RSI of FB was 59.3 on December 4, 2012: neutral (between 30 and 70).", rsi)
    sma = _row("sma", 31.99, "The 20-day SMA of MSFT was $31.99 on March 20, 2012; the close of $31.99 was above it.")
    assert not answer_is_correct("The 20-day SMA of MSFT was $24.00 on March 20, 2012; the close of $31.99 was above it.", sma)
    assert answer_is_correct(sma["answer"], sma) and answer_is_correct("The SMA was $31.99.", sma)
    macro = _row("macro_change", 0.25, "TB3MS changed by +0.25, from 0.25 to 0.50 Percent.")
    assert not answer_is_correct("TB3MS changed by +0.31, from 0.25 to 0.50 Percent.", macro)
    assert answer_is_correct(macro["answer"], macro) and answer_is_correct("It rose by 0.25.", macro)


def test_exact_match_of_names_and_items_does_not_credit_hedges_or_supersets():
    pattern = _row("pattern", None, "X printed a doji on May 1, 2012.", ["a hammer", "a doji", "an evening star"], 1)
    assert answer_is_correct("X printed a doji.", pattern)
    assert not answer_is_correct("Either a hammer or a doji.", pattern)
    items = _row("filing_items", None, "X's 8-K reported item(s) 2.02.", ["5.02, 9.01", "2.02", "7.01"], 1)
    assert answer_is_correct("It reported item 2.02.", items)
    assert not answer_is_correct("It reported items 2.02, 9.01.", items)


def test_no_rejected_answer_is_scored_correct(tables):
    q = build_questions(GroundedConfig(val_start=dt.date(2012, 1, 1), per_kind=200), **tables)
    credited = [(r["answer"], r["wrong_answer"]) for r in q.iter_rows(named=True) if answer_is_correct(r["wrong_answer"], r)]
    assert not credited, credited[:5]
    missed = [r["answer"] for r in q.iter_rows(named=True) if not answer_is_correct(r["answer"], r)]
    assert not missed, missed[:5]


def _macro(values, dates, published):
    return pl.DataFrame({"series_id": "TB3MS", "title": "3-Month Treasury Bill", "units": "Percent",
                         "frequency": "Monthly", "date": dates, "value": values, "realtime_start": published,
                         "source": "test"})


def test_macro_rejected_answer_and_choices_replace_the_change_not_a_level():
    dates = [dt.date(2010, m, 1) for m in range(1, 7)]
    m = _macro([0.0, -0.25, -0.5, -0.25, 0.0, 0.25], dates, [d + dt.timedelta(days=40) for d in dates])
    q = build_questions(GroundedConfig(val_start=dt.date(2015, 1, 1), kinds=("macro_change",)), macro=m)
    assert q.height == 5
    for r in q.iter_rows(named=True):
        i = dates.index(r["first_date"])
        levels = f"from {m['value'][i]:,.2f} to {m['value'][i + 1]:,.2f}"
        assert levels in r["answer"] and levels in r["wrong_answer"], r
        assert all(levels in s for s in option_sentences(r)), r
        assert not answer_is_correct(r["wrong_answer"], r)


def test_macro_question_is_split_on_the_later_publication():
    val_start = dt.date(2012, 1, 1)
    # The earlier observation was (re)published after the validation start: its change is not training data.
    m = _macro([1.0, 2.0, 3.0], [dt.date(2011, 10, 1), dt.date(2011, 11, 1), dt.date(2011, 12, 1)],
               [dt.date(2011, 11, 5), dt.date(2012, 1, 20), None])
    q = build_questions(GroundedConfig(val_start=val_start, kinds=("macro_change",)), macro=m)
    train = q.filter(pl.col("split") == "train")
    assert (train["as_of"] < val_start).all(), train.select("first_date", "as_of")
    assert train.height == 0  # both changes depend on the 2012-01-20 publication


def test_range_high_is_split_adjusted():
    days = [dt.date(2011, 1, 3) + dt.timedelta(days=i) for i in range(30)]
    close = [100.0 + i for i in range(10)] + [55.0 + i * 0.1 for i in range(20)]  # 2:1 split on day 10
    prices = pl.DataFrame({"ticker": "AAA", "date": days, "close": close, "adj_close": [c / 10 for c in close],
                           "splits": [2.0 if i == 10 else 0.0 for i in range(30)]})
    prices = prices.with_columns(adj_close=pl.col("close") * pl.when(pl.int_range(30) < 10).then(0.5).otherwise(1.0))
    q = build_questions(GroundedConfig(val_start=dt.date(2020, 1, 1), kinds=("range_high",), high_windows=(20,)),
                        prices=prices)
    assert q.height == 11
    for r in q.iter_rows(named=True):
        i, j = days.index(r["as_of"]), days.index(r["first_date"])
        adjusted = [c / 2 if k < 10 else c for k, c in enumerate(close)]
        assert r["value"] == pytest.approx(round(max(adjusted[j:i + 1]), 2)), r
        assert r["value"] <= 60  # never the pre-split $109 while the stock trades near $56


def test_same_questions_whatever_the_row_order(tables):
    cfg = GroundedConfig(val_start=dt.date(2012, 1, 1), per_kind=30)
    base = build_questions(cfg, **tables)
    shuffled = {k: v.sample(fraction=1.0, shuffle=True, seed=7) for k, v in tables.items()}
    again = build_questions(cfg, **shuffled)
    assert again.drop("id").equals(base.drop("id")), "same tables in another row order gave other questions"


def test_held_out_rsi_and_patterns_do_not_lean_on_training_days(tables):
    val_start = dt.date(2012, 1, 3)  # the first trading day of 2012
    q = build_questions(GroundedConfig(val_start=val_start, per_kind=400, kinds=("rsi", "pattern")),
                        features=tables["features"])
    val = q.filter(pl.col("split") == "val")
    assert not val.is_empty() and (val["first_date"] >= val_start).all()
    dates = sorted(set(tables["prices"]["date"].to_list()))
    # RSI(14) needs the 14 changes before the day: the first 14 trading days of the window have none in it.
    assert val.filter(pl.col("kind") == "rsi")["as_of"].min() >= dates[dates.index(val_start) + 14]
