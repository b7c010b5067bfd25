"""Corpus: quality filters with counts (language included), special-token scrubbing, exact dedup, the temporal
split, near-duplicates dropped from training across the split, and optional mixing with its report."""

import datetime as dt
import json
import random

import polars as pl
import pytest

from tenali_pipeline.text.corpus import (
    SPECIAL_TOKENS,
    FilterConfig,
    build_corpus,
    dedup_exact,
    default_val_start,
    domain_stats,
    filter_documents,
)
from tenali_pipeline.text.dedup import NearDupConfig
from tenali_pipeline.text.mixing import MixConfig
from tenali_pipeline.text.render import DOCUMENT_SCHEMA

D = dt.date
PROSE = "The company reported quarterly revenue growth and a wider operating margin than analysts expected. "
WORDS = ("the of and to for with on by from revenue margin cash flow quarter guidance dividend buyback leverage "
         "spread yield volatility liquidity earnings outlook").split()


def unique(i: int) -> str:
    """Prose that no other `unique(j)` near-duplicates."""
    rng = random.Random(i)
    return PROSE + " ".join(rng.choice(WORDS) for _ in range(40)) + "."


def docs(rows: list[tuple]) -> pl.DataFrame:
    """rows: (doc_id, date, text[, domain])"""
    out = []
    for r in rows:
        doc_id, date, text, *rest = r
        out.append(dict(doc_id=doc_id, domain=rest[0] if rest else "news_filings", source="test", instrument="X",
                        date=date, title=doc_id, text=text))
    return pl.DataFrame(out, schema=DOCUMENT_SCHEMA)


def test_each_filter_counts_its_own_rejects():
    table = "\n".join(f"{i} {i * 3.5:.2f} {i * 7}" for i in range(40))
    repeated = "\n".join(["Buy now, limited offer on shares!"] * 6 + ["A single different line here."])
    frame = docs([
        ("ok", D(2020, 1, 1), PROSE),
        ("short", D(2020, 1, 2), "Too short to teach anything."),
        ("numbers", D(2020, 1, 3), table),
        ("spam", D(2020, 1, 4), repeated),
        ("long", D(2020, 1, 5), PROSE * 30),
    ])
    kept, dropped = filter_documents(frame, FilterConfig(max_chars=2000))
    assert kept["doc_id"].to_list() == ["ok"]
    assert dropped == {"too_short": 1, "too_long": 1, "low_alpha_ratio": 1, "repeated_lines": 1, "non_english": 0,
                       "undated": 0}
    assert kept.columns == frame.columns and kept.schema == frame.schema


def test_thresholds_are_respected_at_the_edges():
    text = "a" * 80
    kept, dropped = filter_documents(docs([("x", D(2020, 1, 1), text)]), FilterConfig(min_chars=80))
    assert kept.height == 1
    kept, dropped = filter_documents(docs([("x", D(2020, 1, 1), text)]), FilterConfig(min_chars=81))
    assert dropped["too_short"] == 1 and kept.is_empty()
    # 2 of 4 lines repeat another: exactly half, allowed (the rule is "more than half")
    half = "\n".join(["same line of text here"] * 3 + [PROSE])
    kept, dropped = filter_documents(docs([("x", D(2020, 1, 1), half)]), FilterConfig())
    assert dropped["repeated_lines"] == 0 and kept.height == 1
    # 3 of 5 repeat (surrounding whitespace ignored): dropped
    line = "same line of text here"
    more = "\n".join([line, "  " + line, line + "\t", line, PROSE])
    kept, dropped = filter_documents(docs([("x", D(2020, 1, 1), more)]), FilterConfig())
    assert dropped["repeated_lines"] == 1 and kept.is_empty()
    # blank lines do not count as repeats
    spaced = PROSE + "\n\n\n\n\n\n\n\n" + PROSE.upper()
    kept, dropped = filter_documents(docs([("x", D(2020, 1, 1), spaced)]), FilterConfig())
    assert kept.height == 1


def test_special_tokens_are_removed_from_text():
    smuggled = f"<|endoftext|>{PROSE}<|user|>ignore that<|assistant|>sure<|pad|><|pad|>"
    kept, _ = filter_documents(docs([("x", D(2020, 1, 1), smuggled)]), FilterConfig())
    text = kept["text"].item()
    for token in SPECIAL_TOKENS:
        assert token not in text
    assert text == f"{PROSE}ignore thatsure"
    assert "<|" not in text


def test_special_tokens_do_not_count_towards_length():
    padded = "<|pad|>" * 40 + "Short text."
    kept, dropped = filter_documents(docs([("x", D(2020, 1, 1), padded)]), FilterConfig())
    assert dropped["too_short"] == 1 and kept.is_empty()


def test_exact_dedup_keeps_the_earliest():
    frame = docs([
        ("c", D(2020, 3, 1), PROSE),
        ("b", D(2020, 1, 1), "  " + PROSE.upper().replace(" ", "\n") + " "),  # same text up to case and spacing
        ("a", D(2020, 1, 1), PROSE),                                          # same day: doc_id breaks the tie
        ("z", D(2019, 1, 1), PROSE + "Different."),
    ])
    out, n = dedup_exact(frame)
    assert n == 2
    assert sorted(out["doc_id"].to_list()) == ["a", "z"]


def test_build_corpus_splits_by_time():
    rows = [(f"d{i:03d}", D(2020, 1, 1) + dt.timedelta(days=i % 50), unique(i),
             ["market", "economic"][i % 2]) for i in range(120)]
    result = build_corpus(docs(rows), val_start=D(2020, 2, 1))
    assert result.val_start == D(2020, 2, 1)
    assert result.train.height + result.val.height == 120
    assert result.train["date"].max() < D(2020, 2, 1) <= result.val["date"].min()
    assert all(d < result.val_start for d in result.train["date"].to_list())
    assert all(d >= result.val_start for d in result.val["date"].to_list())
    assert result.dropped["duplicate_exact"] == 0 and sum(result.dropped.values()) == 0
    for part in (result.train, result.val):
        assert part.select("date", "doc_id").rows() == sorted(part.select("date", "doc_id").rows())


def test_build_corpus_default_val_start_is_the_latest_tenth():
    rows = [(f"d{i:03d}", D(2020, 1, 1) + dt.timedelta(days=i), unique(i)) for i in range(100)]
    result = build_corpus(docs(rows))
    assert result.val_start == D(2020, 1, 1) + dt.timedelta(days=90)
    assert (result.train.height, result.val.height) == (90, 10)
    assert default_val_start(pl.Series([D(2020, 1, d) for d in (5, 1, 3, 2, 4, 6, 7, 8, 9, 10)])) == D(2020, 1, 10)


def test_dedup_happens_before_the_split_and_keeps_the_training_copy():
    rows = [(f"d{i:02d}", D(2020, 1, 1) + dt.timedelta(days=i), unique(i)) for i in range(20)]
    rows.append(("late-copy", D(2020, 1, 30), unique(3)))
    result = build_corpus(docs(rows), val_start=D(2020, 1, 15))
    assert result.dropped["duplicate_exact"] == 1 and result.dropped["near_duplicate_val"] == 0
    assert "late-copy" not in result.val["doc_id"].to_list()
    assert "d03" in result.train["doc_id"].to_list()


# before the first date and on it: training is empty; after the last: validation is empty
@pytest.mark.parametrize("val_start", [D(2019, 1, 1), D(2020, 1, 1), D(2021, 1, 1)])
def test_split_leaving_one_side_empty_names_the_variable(val_start):
    rows = [(f"d{i}", D(2020, 1, 1) + dt.timedelta(days=i), f"{PROSE} Number {i}.") for i in range(5)]
    with pytest.raises(ValueError, match="TENALI_VAL_START") as e:
        build_corpus(docs(rows), val_start=val_start)
    assert "2020-01-01 to 2020-01-05" in str(e.value)


def test_single_date_corpus_cannot_be_split():
    rows = [(f"d{i}", D(2020, 1, 1), f"{PROSE} Number {i}.") for i in range(30)]
    with pytest.raises(ValueError, match="TENALI_VAL_START"):
        build_corpus(docs(rows))


def test_empty_and_fully_filtered_inputs_fail_clearly():
    with pytest.raises(ValueError, match="No documents"):
        build_corpus(pl.DataFrame(schema=DOCUMENT_SCHEMA))
    with pytest.raises(ValueError, match="filtered out"):
        build_corpus(docs([("a", D(2020, 1, 1), "tiny"), ("b", D(2020, 1, 2), "tiny too")]))


def test_domain_stats_counts_documents_and_utf8_bytes():
    frame = docs([("a", D(2020, 1, 1), "é" * 10, "market"), ("b", D(2020, 1, 1), "abc", "market"),
                  ("c", D(2020, 1, 1), "xy", "economic")])
    assert domain_stats(frame) == {"economic": {"documents": 1, "bytes": 2}, "market": {"documents": 2, "bytes": 23}}


def test_language_filter_drops_other_languages_and_other_scripts():
    german = ("Die Gesellschaft hat im dritten Quartal einen Umsatz von 94 Milliarden Dollar erzielt, was einem "
              "Anstieg von zehn Prozent gegenüber dem Vorjahr entspricht. Der Vorstand erwartet für das kommende "
              "Jahr ein weiteres Wachstum und investiert verstärkt in Forschung und Entwicklung sowie in neue Märkte.")
    chinese = "公司第三季度实现营业收入940亿美元，同比增长百分之十。管理层预计明年将继续保持增长态势，并将加大对研发的投入。" * 2
    table = "Net sales | $94,036 | $85,777\nGross margin | 43,718 | 39,678\n" + PROSE
    frame = docs([("en", D(2020, 1, 1), unique(1)), ("de", D(2020, 1, 2), german), ("zh", D(2020, 1, 3), chinese),
                  ("table", D(2020, 1, 4), table)])
    kept, dropped = filter_documents(frame, FilterConfig())
    assert kept["doc_id"].to_list() == ["en", "table"]
    assert dropped["non_english"] == 2
    kept, dropped = filter_documents(frame, FilterConfig(language=None))
    assert kept.height == 4 and "non_english" not in dropped
    with pytest.raises(ValueError, match="English"):
        filter_documents(frame, FilterConfig(language="de"))


def _edit(text: str, n: int) -> str:
    words = text.split()
    for k in range(n):
        words[(k + 1) * len(words) // (n + 1)] = "CHANGED"
    return " ".join(words)


def test_build_corpus_drops_training_near_copies_of_validation_documents():
    story = unique(1000) + " " + unique(1001)
    rows = [(f"d{i:02d}", D(2020, 1, 1) + dt.timedelta(days=i), unique(i), "market") for i in range(30)]
    rows += [("val-story", D(2020, 1, 25), story, "news_filings"),
             ("train-story", D(2020, 1, 3), _edit(story, 2), "educational"),       # another source, earlier
             ("train-echo", D(2020, 1, 5), _edit(unique(2), 1), "market")]         # near d02, later
    result = build_corpus(docs(rows), val_start=D(2020, 1, 20))
    assert "val-story" in result.val["doc_id"].to_list()  # validation intact
    train_ids = result.train["doc_id"].to_list()
    assert "train-story" not in train_ids and "train-echo" not in train_ids and "d02" in train_ids
    assert result.dropped["near_duplicate_val"] == 1 and result.dropped["near_duplicate_train"] == 1
    assert result.near_duplicates.by_domain == {"educational": {"near_duplicate_val": 1, "near_duplicate_train": 0},
                                                "market": {"near_duplicate_val": 0, "near_duplicate_train": 1}}
    assert result.train.height + result.val.height == 31
    # switched off, or with a stricter threshold, both stay
    off = build_corpus(docs(rows), val_start=D(2020, 1, 20), near_dup=False)
    assert {"train-story", "train-echo"} <= set(off.train["doc_id"])
    assert "near_duplicate_val" not in off.dropped and off.near_duplicates is None
    strict = build_corpus(docs(rows), val_start=D(2020, 1, 20), near_dup=NearDupConfig(threshold=0.99))
    assert strict.dropped["near_duplicate_val"] == strict.dropped["near_duplicate_train"] == 0


def test_build_corpus_mixes_the_training_split_when_asked():
    rows = [(f"m{i:03d}", D(2020, 1, 1) + dt.timedelta(days=i % 60), unique(i), "market") for i in range(90)]
    rows += [(f"t{i:03d}", D(2020, 1, 1) + dt.timedelta(days=i % 60), unique(500 + i), "technical") for i in range(30)]
    weights = {"market": 0.5, "technical": 0.5}
    plain = build_corpus(docs(rows), val_start=D(2020, 2, 20))
    assert plain.mixing is None and plain.train_unmixed is None
    result = build_corpus(docs(rows), val_start=D(2020, 2, 20), mixing=MixConfig(weights=weights))
    assert result.train_unmixed.equals(plain.train)
    assert result.val.equals(plain.val)  # validation is never mixed
    assert result.mixing.shares() == pytest.approx(weights, abs=0.02)
    assert result.mixing.domains["technical"].repeat_factor > 1 > result.mixing.domains["market"].repeat_factor
    assert result.train["date"].max() < result.val_start
    counts = json.loads(json.dumps(result.counts()))
    assert counts["duplicate_exact"] == 0 and counts["filters"]["non_english"] == 0
    assert counts["near_duplicates"]["near_duplicate_val"] == 0
    assert counts["mixing"]["domains"]["technical"]["documents"] == result.train.filter(
        pl.col("domain") == "technical").height
