"""The streamed corpus build (text/stream.py): batches, buckets and several input tables give the result of one
batch and one bucket; duplicates are found across tables and buckets; outputs appear whole or not at all."""

import datetime as dt
import random

import polars as pl
import pytest

from tenali_pipeline.lake import Lake
from tenali_pipeline.text.dedup import NearDupConfig
from tenali_pipeline.text.mixing import MixConfig, mix
from tenali_pipeline.text.render import DOCUMENT_SCHEMA
from tenali_pipeline.text.stream import CorpusKeys, StreamConfig, build_corpus_stream

KEYS = CorpusKeys(train="out/train.parquet", train_unique="out/train_unique.parquet", val="out/val.parquet")
WORDS = ("the revenue of the company rose and margins widened while the board raised its dividend for the "
         "quarter as demand for chips grew in every market it serves and cash flow covered the buyback").split()
DOMAINS = ("market", "economic", "news_filings", "technical", "educational", "crypto_forex")


def prose(seed: int, n: int = 120) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + (str(rng.randrange(100)) if rng.random() < 0.3 else "") for _ in range(n))


def near_copy(text: str, seed: int) -> str:
    words = text.split()
    words[len(words) // 2] = f"changed{seed}"
    return " ".join(words)


def documents(n: int, offset: int = 0) -> list[dict]:
    day0 = dt.date(2020, 1, 1)
    return [dict(doc_id=f"d{offset + i:05d}", domain=DOMAINS[i % 6], source="test", instrument=f"X{i % 7}",
                 date=day0 + dt.timedelta(days=(offset + i) % 400), title=f"doc {offset + i}", text=prose(offset + i))
            for i in range(n)]


@pytest.fixture()
def lake(tmp_path):
    """Three document tables with exact and near copies inside and across them, some across the split."""
    lake = Lake(str(tmp_path / "lake"))
    a, b, c = documents(120), documents(100, offset=1000), documents(90, offset=2000)
    b[0] = {**b[0], "text": a[5]["text"], "date": a[5]["date"] + dt.timedelta(days=3)}  # exact copy, later, other table
    b[1] = {**b[1], "text": near_copy(a[7]["text"], 1)}  # near copy in another table
    c[0] = {**c[0], "text": near_copy(a[8]["text"], 2), "date": dt.date(2019, 6, 1)}  # earlier than its original
    c[1] = {**c[1], "text": "x" * 10}  # too short
    late = dt.date(2021, 6, 1)
    c[2] = {**c[2], "text": prose(9999), "date": late}  # validation document ...
    a[9] = {**a[9], "text": near_copy(prose(9999), 3), "date": dt.date(2020, 1, 2)}  # ... and its training near copy
    for name, rows in zip("abc", (a, b, c)):
        lake.write_parquet(f"documents/{name}.parquet", pl.DataFrame(rows, schema=DOCUMENT_SCHEMA), row_group_size=16)
    return lake


INPUTS = ["documents/a.parquet", "documents/b.parquet", "documents/c.parquet"]


def build(lake, tmp_path, **kw):
    summary = build_corpus_stream(lake, INPUTS, KEYS, work=tmp_path / "work", val_start=dt.date(2021, 1, 1), **kw)
    tables = {name: lake.read_parquet(getattr(KEYS, name)) for name in ("train", "train_unique", "val")}
    return summary, tables


def rows(df: pl.DataFrame) -> list[tuple]:
    return sorted(df.select("doc_id", "date", "text").rows())


def test_batches_and_buckets_do_not_change_the_result(lake, tmp_path):
    one, t1 = build(lake, tmp_path, stream=StreamConfig(batch_rows=10_000, bucket_docs=10_000))
    # many batches and buckets, and spill files of 30 hash-bucket rows (several per input table)
    many, t2 = build(lake, tmp_path, stream=StreamConfig(batch_rows=7, bucket_docs=40, spill_rows=30))
    assert one.buckets == 1 and many.buckets == 8
    assert one.dropped == many.dropped and one.counts() == many.counts()
    for name in t1:
        assert rows(t1[name]) == rows(t2[name]), name
    assert one.stats == many.stats and one.samples.keys() == many.samples.keys()
    assert not (tmp_path / "work").exists()  # the scratch folder goes
    pooled, t3 = build(lake, tmp_path, stream=StreamConfig(batch_rows=7, bucket_docs=40, workers=2, spill_rows=30))
    assert pooled.counts() == many.counts() and all(rows(t3[name]) == rows(t2[name]) for name in t2)


def test_duplicates_are_found_across_tables_and_the_split(lake, tmp_path):
    summary, t = build(lake, tmp_path, stream=StreamConfig(batch_rows=7, bucket_docs=40), mixing=None)
    assert summary.input_documents == 310
    assert summary.dropped["too_short"] == 1
    assert summary.dropped["duplicate_exact"] == 1
    ids = set(t["train_unique"]["doc_id"]) | set(t["val"]["doc_id"])
    assert "d00005" in ids and "d01000" not in ids  # the earlier exact copy stays
    assert "d02000" in ids and "d00008" not in ids  # the earlier near copy stays, whatever the table order
    assert "d01001" not in ids  # near copy of d00007
    assert "d00009" not in ids and "d02002" in set(t["val"]["doc_id"])  # validation wins across the split
    report = summary.near_duplicates
    assert (report.near_duplicate_val, report.near_duplicate_train) == (1, 2)
    assert t["train"].equals(t["train_unique"])  # no mixing: the same table
    assert summary.total("train") + summary.total("val") == 310 - 1 - 1 - 3
    assert t["train_unique"]["date"].max() < dt.date(2021, 1, 1) <= t["val"]["date"].min()


def test_streamed_mixing_equals_mixing_in_memory(lake, tmp_path):
    cfg = MixConfig(max_repeats=3)
    summary, t = build(lake, tmp_path, stream=StreamConfig(batch_rows=9, bucket_docs=50), mixing=cfg)
    expected, report = mix(t["train_unique"], cfg)
    assert summary.mixing.to_dict() == report.to_dict()
    assert sorted(t["train"].rows()) == sorted(expected.rows())
    assert summary.total("train") == t["train"].height
    assert t["train"]["doc_id"].is_duplicated().any()  # up-sampled domains repeat documents


def test_a_failed_build_leaves_no_output_and_no_scratch(lake, tmp_path):
    with pytest.raises(ValueError, match="TENALI_VAL_START"):
        build_corpus_stream(lake, INPUTS, KEYS, work=tmp_path / "work", val_start=dt.date(2030, 1, 1))
    assert not lake.exists(KEYS.val) and not lake.exists(KEYS.train)
    assert not (tmp_path / "work").exists()
    with pytest.raises(RuntimeError, match="boom"):
        with lake.parquet_writer("out/half.parquet") as w:
            w.write(pl.DataFrame({"x": [1]}))
            raise RuntimeError("boom")
    assert lake.list("out") == []  # no half table, no temporary file


def test_near_duplicates_off_and_a_strict_threshold(lake, tmp_path):
    off, _ = build(lake, tmp_path, near_dup=False)
    assert "near_duplicate_val" not in off.dropped and off.near_duplicates is None
    strict, _ = build(lake, tmp_path, near_dup=NearDupConfig(threshold=0.999))
    assert strict.dropped["near_duplicate_val"] == strict.dropped["near_duplicate_train"] == 0


def test_the_leak_check_holds_the_tables_to_the_recorded_split_date_a_column_at_a_time(tmp_path, monkeypatch):
    """The blocking check compares every table with the split date the build recorded (not with the earliest
    validation date, which may come later), covers the unique training table the tokenizer learns from, and
    reads only the date column a row group at a time (the corpus is larger than memory)."""
    from tenali_pipeline.defs.corpus.assets import SPLIT_KEY, TRAIN_KEY, TRAIN_UNIQUE_KEY, VAL_KEY, no_temporal_leak
    from tenali_pipeline.resources import LakeResource

    lake = Lake(str(tmp_path / "lake"))
    resource = LakeResource(root=str(tmp_path / "lake"), cache_dir=str(tmp_path / "cache"))
    day = dt.date(2021, 1, 1)
    table = lambda dates: pl.DataFrame([{**documents(1)[0], "doc_id": f"x{i}", "date": d}  # noqa: E731
                                        for i, d in enumerate(dates)], schema=DOCUMENT_SCHEMA)
    lake.write_json(SPLIT_KEY, {"val_start": day.isoformat()})
    lake.write_parquet(VAL_KEY, table([day + dt.timedelta(days=10), day + dt.timedelta(days=20)]))
    monkeypatch.setattr(Lake, "read_parquet", lambda *a, **k: pytest.fail("the check read a whole table"))
    clean = table([day - dt.timedelta(days=3), day - dt.timedelta(days=1)])
    lake.write_parquet(TRAIN_KEY, clean)
    lake.write_parquet(TRAIN_UNIQUE_KEY, clean)
    assert no_temporal_leak(lake=resource).passed
    # dated after the split date but before the first validation document: still a leak
    lake.write_parquet(TRAIN_UNIQUE_KEY, table([day - dt.timedelta(days=1), day + dt.timedelta(days=5)]))
    result = no_temporal_leak(lake=resource)
    assert not result.passed and result.metadata["leaking_documents"].value == 1
