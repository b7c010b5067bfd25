"""Corpus assembly at scale (review 4): a template shared by hundreds of documents is deduplicated with work
that grows with the documents, not their pairs, and drops exactly what listing every pair drops."""

import datetime as dt
import random

import numpy as np
import polars as pl
import pytest

from tenali_pipeline.text import dedup, stream
from tenali_pipeline.text.corpus import build_corpus, dedup_exact
from tenali_pipeline.text.dedup import MinHasher, NearDupConfig, candidate_pairs, decide, drop_near_duplicates
from tenali_pipeline.text.render import DOCUMENT_SCHEMA

WORDS = "revenue margin earnings guidance quarter growth dividend buyback cash flow debt yield spread".split()
STOP = "the of and to is that for".split()


def boilerplate(n: int, changes: int, seed: int = 0, day0=dt.date(2015, 1, 1)) -> pl.DataFrame:
    """``n`` documents of one 200-word template, each with 0 to ``changes`` words replaced: pairs range
    from identical to a Jaccard of about 0.7, around the 0.8 threshold. Some share a (date, doc_id)."""
    rng = random.Random(seed)
    base = [rng.choice(STOP) if rng.random() < 0.3 else f"{rng.choice(WORDS)}{rng.randrange(50)}" for _ in range(200)]
    rows = []
    for i in range(n):
        words = list(base)
        for _ in range(rng.randint(0, changes)):
            words[rng.randrange(len(words))] = f"x{rng.randrange(10**6)}"
        rows.append(dict(doc_id=f"d{rng.randrange(n // 2):05d}", domain=rng.choice(["market", "news_filings"]),
                         source="s", instrument="X", date=day0 + dt.timedelta(days=rng.randrange(60)), title="t",
                         text=" ".join(words)))
    return pl.DataFrame(rows, schema=DOCUMENT_SCHEMA)


def every_pair(train: pl.DataFrame, val: pl.DataFrame, cfg=NearDupConfig()):
    """The policy over every verified pair listed (how dedup decided before large keys): the reference."""
    both = pl.concat([val.with_columns(is_val=pl.lit(True)), train.with_columns(is_val=pl.lit(False))])
    both = both.with_row_index("id").with_columns(pl.col("id").cast(pl.Int64))
    hasher = MinHasher(cfg)
    sigs = hasher.signatures(both["text"].to_list())
    pairs = candidate_pairs(hasher.band_rows(both["id"].to_numpy(), sigs))
    sim = dedup.similarity(sigs[pairs["a"].to_numpy()], sigs[pairs["b"].to_numpy()])
    verified = pairs.with_columns(similarity=pl.Series(sim)).filter(pl.col("similarity") >= cfg.threshold)
    dropped, report = decide(verified, both)
    return train.filter(~both.filter(~pl.col("is_val"))["id"].is_in(list(dropped))), report


@pytest.fixture()
def compared(monkeypatch):
    """Counts the signature pairs compared (dedup.similarity's rows), in dedup and in stream."""
    count = [0]
    real = dedup.similarity

    def counting(a, b):
        out = real(a, b)
        count[0] += len(out)
        return out

    monkeypatch.setattr(dedup, "similarity", counting)
    monkeypatch.setattr(stream, "similarity", counting)
    return count


@pytest.mark.parametrize("changes, val_from", [(3, dt.date(2015, 2, 20)), (6, dt.date(2016, 1, 1)),
                                                (2, dt.date(2015, 2, 1))])
def test_a_template_shared_by_hundreds_drops_what_every_pair_drops_comparing_few(changes, val_from, compared):
    docs = boilerplate(400, changes, seed=changes)
    train, val = docs.filter(pl.col("date") < val_from), docs.filter(pl.col("date") >= val_from)
    expected, expected_report = every_pair(train, val)
    compared[0] = 0
    kept, report = drop_near_duplicates(train, val)
    assert kept.equals(expected) and report.to_dict() == expected_report.to_dict()
    assert expected_report.near_duplicate_val + expected_report.near_duplicate_train > 100
    assert compared[0] <= 40 * docs.height, compared[0]  # every pair: about 80,000


def test_the_streamed_build_deduplicates_a_large_template_alike_comparing_few(compared):
    docs = boilerplate(600, 3, seed=11)
    val_start = dt.date(2015, 2, 20)
    compared[0] = 0
    result = build_corpus(docs, val_start=val_start, batch_rows=128)
    assert compared[0] <= 40 * docs.height, compared[0]  # every pair: about 180,000
    unique, _ = dedup_exact(docs)
    train, val = unique.filter(pl.col("date") < val_start), unique.filter(pl.col("date") >= val_start)
    expected, report = every_pair(train, val)
    assert result.train["doc_id"].sort().to_list() == expected["doc_id"].sort().to_list()
    assert result.near_duplicates.to_dict() == report.to_dict()
    assert result.val.height == val.height and report.near_duplicate_val > 100


def test_an_undated_document_is_counted_not_lost():
    docs = boilerplate(40, 30, seed=2).with_columns(doc_id=pl.format("d{}", pl.int_range(pl.len())))
    docs = docs.with_columns(date=pl.when(pl.col("doc_id").is_in(["d3", "d4"])).then(None).otherwise(pl.col("date")))
    result = build_corpus(docs, val_start=dt.date(2015, 2, 1), near_dup=False)
    assert result.dropped["undated"] == 2
    assert result.train.height + result.val.height + sum(result.dropped.values()) == docs.height
