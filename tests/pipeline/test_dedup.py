"""Near-duplicate detection: planted near-copies found, distinct documents kept, validation wins across the split,
the earliest training copy kept, counts per domain, batches and queries."""

import datetime as dt
import random

import polars as pl
import pytest

from datasketch import MinHash

from tenali_pipeline.text.dedup import (MinHasher, NearDupConfig, candidate_pairs, drop_near_duplicates,
                                        near_duplicate_pairs, shingle_hashes)
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
    hashes, counts = shingle_hashes(["The  Quick, brown\nfox jumps!", "the quick brown fox jumps", "Two words", "",
                                     "fox jumps brown"], 3)
    assert counts.tolist() == [3, 3, 1, 0, 1]
    assert hashes[:3].tolist() == hashes[3:6].tolist()  # case, spacing and punctuation do not matter
    assert len(set(hashes[:3].tolist())) == 3 and hashes[7] not in hashes[:3]  # word order does


def test_signatures_equal_datasketch_minhash_of_the_shingles():
    texts = [text(i, n) for i, n in enumerate((0, 1, 4, 5, 6, 40, 300))] + ["", "Ünïcode wörds ça va"]
    hasher = MinHasher(NearDupConfig(num_perm=64, seed=3))
    sigs = hasher.signatures(texts)
    hashes, counts = shingle_hashes(texts, 5)
    ends = counts.cumsum()
    for k in range(len(texts)):
        expected = MinHash(num_perm=64, seed=3, hashfunc=int)
        expected.update_batch(hashes[ends[k] - counts[k]:ends[k]].tolist())
        assert (expected.hashvalues == sigs[k]).all(), k


def matches(docs: list[str], config: NearDupConfig | None = None) -> set[tuple[int, int]]:
    pairs = near_duplicate_pairs(list(range(len(docs))), docs, config)
    return set(pairs.select("a", "b").iter_rows())


def test_planted_near_duplicates_are_found_and_distinct_documents_are_not():
    originals = [text(i) for i in range(20)]
    queries = [edit(originals[i], 2, seed=i) for i in (0, 7, 19)]  # two words of 200 changed
    queries += [originals[i].upper() for i in (0, 7, 19)]  # case does not matter
    distinct = [text(1000 + i) for i in range(20)]
    found = matches(originals + queries + distinct)
    assert found == {(i, 20 + k) for k, i in enumerate((0, 7, 19))} | {(i, 23 + k) for k, i in enumerate((0, 7, 19))} \
        | {(20, 23), (21, 24), (22, 25)}  # an edited copy and an upper-cased copy of one original match too
    # heavily edited (true Jaccard 0.59): not a near-duplicate at the default 0.8 ...
    far = edit(originals[5], 10, seed=5)
    assert matches([originals[5], far]) == set()
    # ... but is at a looser threshold
    assert matches([originals[5], far], NearDupConfig(threshold=0.4)) == {(0, 1)}


def test_candidates_share_a_band_and_batches_sign_alike():
    hasher = MinHasher(NearDupConfig(num_perm=64))
    a = text(1)
    docs = [a, edit(a, 1), text(2), edit(a, 2, seed=9)]
    sigs = hasher.signatures(docs)
    assert sigs.shape == (4, 64) and sigs.dtype.name == "uint32"
    assert (hasher.signatures(docs[2:]) == sigs[2:]).all()  # a document's signature does not depend on its batch
    pairs = candidate_pairs(hasher.band_rows([10, 11, 12, 13], sigs))
    assert set(pairs.iter_rows()) == {(10, 11), (10, 13), (11, 13)}
    with pytest.raises(ValueError, match="threshold"):
        MinHasher(NearDupConfig(threshold=0))


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
