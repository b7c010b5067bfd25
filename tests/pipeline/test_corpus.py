"""Corpus: quality filters with counts, special-token scrubbing, exact dedup, and the temporal split."""

import datetime as dt

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
from tenali_pipeline.text.render import DOCUMENT_SCHEMA

D = dt.date
PROSE = "The company reported quarterly revenue growth and a wider operating margin than analysts expected. "


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
    assert dropped == {"too_short": 1, "too_long": 1, "low_alpha_ratio": 1, "repeated_lines": 1}
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
    rows = [(f"d{i:03d}", D(2020, 1, 1) + dt.timedelta(days=i % 50), f"{PROSE} Document number {i}.",
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
    rows = [(f"d{i:03d}", D(2020, 1, 1) + dt.timedelta(days=i), f"{PROSE} Number {i}.") for i in range(100)]
    result = build_corpus(docs(rows))
    assert result.val_start == D(2020, 1, 1) + dt.timedelta(days=90)
    assert (result.train.height, result.val.height) == (90, 10)
    assert default_val_start(pl.Series([D(2020, 1, d) for d in (5, 1, 3, 2, 4, 6, 7, 8, 9, 10)])) == D(2020, 1, 10)


def test_dedup_happens_before_the_split_and_keeps_the_training_copy():
    rows = [(f"d{i:02d}", D(2020, 1, 1) + dt.timedelta(days=i), f"{PROSE} Number {i}.") for i in range(20)]
    rows.append(("late-copy", D(2020, 1, 30), f"{PROSE} Number 3."))
    result = build_corpus(docs(rows), val_start=D(2020, 1, 15))
    assert result.dropped["duplicate_exact"] == 1
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
