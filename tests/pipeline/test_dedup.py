"""Near-duplicate detection: planted near-copies found, distinct documents kept, validation wins across the split,
the earliest training copy kept, counts per domain, batches and queries."""

import datetime as dt
import random

import polars as pl
import pytest

from tenali_pipeline.text.dedup import NearDupConfig, NearDupIndex, drop_near_duplicates, shingles
from tenali_pipeline.text.render import DOCUMENT_SCHEMA

D = dt.date
VOCAB = [f"{a}{b}" for a in ("rev", "mar", "cap", "div", "bon", "yie", "spr", "vol", "liq", "fut")
         for b in ("enue", "gin", "ital", "idend", "d", "ld", "ead", "atility", "uidity", "ures", "ex", "ix")]


def text(seed: int, n: int = 200) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def edit(doc: str, changes: int, seed: int = 0) -> str:
    """Replace `changes` words spread over the document."""
    words = doc.split()
    rng = random.Random(seed)
    for k in range(changes):
        words[(k + 1) * len(words) // (changes + 1)] = f"changed{rng.randrange(10**6)}"
    return " ".join(words)


def frame(rows) -> pl.DataFrame:
    """rows: (doc_id, date, text, domain, source)"""
    return pl.DataFrame([dict(doc_id=i, domain=d, source=s, instrument="X", date=day, title=i, text=t)
                         for i, day, t, d, s in rows], schema=DOCUMENT_SCHEMA)


def test_shingles_are_normalised_word_ngrams():
    assert shingles("The  Quick, brown\nfox jumps!", 3) == {b"the quick brown", b"quick brown fox", b"brown fox jumps"}
    assert shingles("Two words", 5) == {b"two words"}
    assert shingles("", 5) == set()


def test_planted_near_duplicates_are_found_and_distinct_documents_are_not():
    index = NearDupIndex()
    originals = [text(i) for i in range(20)]
    index.add([f"doc{i}" for i in range(20)], originals)
    assert len(index) == 20 and "doc3" in index
    for i in (0, 7, 19):
        assert index.query(edit(originals[i], 2, seed=i)) == [f"doc{i}"]  # two words of 200 changed
        assert index.query(originals[i].upper()) == [f"doc{i}"]  # case does not matter
    assert [index.query(text(1000 + i)) for i in range(20)] == [[]] * 20
    # heavily edited (true Jaccard 0.59): not a near-duplicate at the default 0.8 ...
    far = edit(originals[5], 10, seed=5)
    assert index.query(far) == []
    # ... but is at a looser threshold
    loose = NearDupIndex(NearDupConfig(threshold=0.4))
    loose.add(["doc5"], [originals[5]])
    assert loose.query(far) == ["doc5"]


def test_index_batches_and_in_batch_order():
    index = NearDupIndex(NearDupConfig(num_perm=64))
    a = text(1)
    hits = index.filter_batch(["a", "a2", "b", "a3"], [a, edit(a, 1), text(2), edit(a, 2, seed=9)])
    assert hits == [[], ["a"], [], ["a"]]  # later copies in the same batch see the first
    assert len(index) == 2
    assert index.query_batch([edit(text(2), 1), text(3)]) == [["b"], []]
    with pytest.raises(ValueError, match="already indexed"):
        index.add(["a"], [a])


def test_training_copies_of_validation_documents_are_dropped_from_training():
    val_doc, train_doc, other = text(1), text(2), text(3)
    val = frame([("v1", D(2021, 1, 5), val_doc, "news_filings", "rss:a"),
                 ("v2", D(2021, 1, 6), edit(other, 1), "news_filings", "rss:b")])
    train = frame([
        # the same story from another source, a few words changed, dated earlier: dropped from TRAINING
        ("t-copy-of-v1", D(2020, 6, 1), edit(val_doc, 3), "educational", "local:docs"),
        ("t1", D(2020, 1, 1), train_doc, "market", "sample"),
        ("t-copy-of-t1", D(2020, 2, 1), edit(train_doc, 2), "market", "sample"),
        ("t-other", D(2020, 3, 1), other, "news_filings", "rss:a"),  # near-identical to v2: dropped
    ])
    kept, report = drop_near_duplicates(train, val)
    assert kept["doc_id"].to_list() == ["t1"]
    assert report.near_duplicate_val == 2 and report.near_duplicate_train == 1
    assert report.by_domain == {"educational": {"near_duplicate_val": 1, "near_duplicate_train": 0},
                                "market": {"near_duplicate_val": 0, "near_duplicate_train": 1},
                                "news_filings": {"near_duplicate_val": 1, "near_duplicate_train": 0}}
    assert {"dropped": "t-copy-of-v1", "domain": "educational", "matches": "v1",
            "matched_split": "val"} in report.examples
    assert val.height == 2  # validation is only read


def test_the_earliest_training_copy_is_kept_whatever_the_row_order():
    doc = text(4)
    train = frame([("late", D(2020, 5, 1), edit(doc, 1), "market", "s"),
                   ("early", D(2020, 1, 1), doc, "market", "s"),
                   ("unrelated", D(2020, 3, 1), text(5), "technical", "s")])
    kept, report = drop_near_duplicates(train, frame([("v", D(2021, 1, 1), text(6), "market", "s")]))
    assert kept["doc_id"].to_list() == ["early", "unrelated"]  # input row order preserved
    assert report.to_dict()["near_duplicate_train"] == 1


def test_batching_does_not_change_the_result():
    docs = [text(i, 120) for i in range(30)]
    rows = [(f"t{i:02d}", D(2020, 1, 1) + dt.timedelta(days=i), docs[i % 20] if i < 20 else edit(docs[i - 20], 1),
             "market", "s") for i in range(30)]
    val = frame([("v", D(2021, 1, 1), docs[0], "market", "s")])
    small, r1 = drop_near_duplicates(frame(rows), val, NearDupConfig(batch_size=7))
    large, r2 = drop_near_duplicates(frame(rows), val, NearDupConfig(batch_size=1000))
    assert small.equals(large) and r1.to_dict() == r2.to_dict()
    assert r1.near_duplicate_val == 2 and r1.near_duplicate_train == 9  # t00 and its copy t20 match v
    assert small.height == 19


def test_empty_inputs():
    empty = pl.DataFrame(schema=DOCUMENT_SCHEMA)
    kept, report = drop_near_duplicates(empty, empty)
    assert kept.is_empty() and report.near_duplicate_val == report.near_duplicate_train == 0
    with pytest.raises(ValueError, match="threshold"):
        NearDupIndex(NearDupConfig(threshold=0))
