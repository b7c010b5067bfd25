"""Parallel, incremental shard building: partitions, reuse of unchanged ones, a new tokenizer re-encodes all;
with Tenali's sentencepiece model or a base model's tokenizer.json."""

import datetime as dt

import numpy as np
import polars as pl
import pytest
from tenali_model.data import read_shard

from tenali_pipeline.sharding import FINGERPRINT_METHOD, HF_BASE, TokenizerSource, as_source, build_shards, plan_partitions
from tenali_pipeline.tokenization import EOT, TokenizerConfig, load_tokenizer, train_tokenizer

WORDS = "the market rose fell shares price index inflation bond yield dollar percent quarter revenue".split()


def _docs(months: int, per_month: int = 30, seed: int = 0, start=dt.date(2010, 1, 1)) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(months):
        day = dt.date(start.year + (start.month - 1 + m) // 12, (start.month - 1 + m) % 12 + 1, 1)
        for i in range(per_month):
            text = " ".join(rng.choice(WORDS, size=rng.integers(20, 60))) + f" {rng.uniform(1, 999):.2f}%."
            rows.append({"doc_id": f"{day}-{i}", "date": day + dt.timedelta(days=int(i % 27)),
                         "domain": ["market", "economic"][i % 2], "text": text})
    return pl.DataFrame(rows).sort("date", "doc_id")


@pytest.fixture(scope="module")
def model_bytes():
    return train_tokenizer(_docs(6)["text"].to_list(), TokenizerConfig(vocab_size=300))


def _build(path, model_bytes, out, previous=None, previous_dir=None, workers=1, partition_bytes=20_000):
    parts = plan_partitions(path, "train", partition_bytes)
    sha = as_source(model_bytes).sha256  # bare bytes are a sentencepiece model
    out.mkdir(exist_ok=True)
    splits, report = build_shards(parts, model_bytes, sha, out, shard_tokens=3000, previous=previous,
                                  previous_dir=previous_dir, workers=workers)
    manifest = {"tokenizer": {"sha256": sha}, "fingerprint_method": FINGERPRINT_METHOD, "splits": splits}
    return parts, manifest, report


def _tokens(manifest, folder):
    return np.concatenate([read_shard(folder / e["file"]) for e in manifest["splits"]["train"]])


def test_partitions_are_whole_months_and_cover_the_file(tmp_path):
    docs = _docs(12)
    docs.write_parquet(tmp_path / "train.parquet")
    parts = plan_partitions(tmp_path / "train.parquet", "train", 20_000)
    assert len(parts) > 2
    assert sum(p.rows for p in parts) == docs.height
    assert parts[0].offset == 0 and all(a.offset + a.rows == b.offset for a, b in zip(parts, parts[1:]))
    for p in parts:
        months = docs.slice(p.offset, p.rows)["date"].dt.strftime("%Y-%m").unique().sort().to_list()
        assert p.label == f"{months[0]}_{months[-1]}"
        assert p.bytes >= 20_000 or p is parts[-1]
    docs.sample(fraction=1.0, shuffle=True, seed=1).write_parquet(tmp_path / "shuffled.parquet")
    with pytest.raises(ValueError, match="not sorted by date"):
        plan_partitions(tmp_path / "shuffled.parquet", "train", 20_000)


def test_shards_hold_every_document_in_order(tmp_path, model_bytes):
    docs = _docs(8)
    docs.write_parquet(tmp_path / "train.parquet")
    _, manifest, report = _build(tmp_path / "train.parquet", model_bytes, tmp_path / "s", workers=2)
    assert report.encoded == report.partitions > 1 and report.workers == 2
    sp = load_tokenizer(model_bytes)
    want = np.concatenate([np.array([*ids, sp.piece_to_id(EOT)]) for ids in sp.encode(docs["text"].to_list())])
    assert np.array_equal(_tokens(manifest, tmp_path / "s"), want)
    entries = manifest["splits"]["train"]
    assert sum(e["documents"] for e in entries) == docs.height
    assert sum(e["bytes"] for e in entries) == sum(len(t.encode()) for t in docs["text"])
    assert all(e["tokens"] <= 3000 for e in entries if e["documents"] > 1)


def test_parallel_and_one_process_give_the_same_shards(tmp_path, model_bytes):
    _docs(8).write_parquet(tmp_path / "train.parquet")
    _, a, _ = _build(tmp_path / "train.parquet", model_bytes, tmp_path / "a", workers=2)
    _, b, _ = _build(tmp_path / "train.parquet", model_bytes, tmp_path / "b", workers=1)
    assert a["splits"] == b["splits"]
    for e in a["splits"]["train"]:
        assert (tmp_path / "a" / e["file"]).read_bytes() == (tmp_path / "b" / e["file"]).read_bytes()


def test_appended_months_reuse_unchanged_partitions(tmp_path, model_bytes):
    old = _docs(8)
    old.write_parquet(tmp_path / "v1.parquet")
    parts1, m1, _ = _build(tmp_path / "v1.parquet", model_bytes, tmp_path / "s1")
    new = pl.concat([old, _docs(3, seed=5, start=dt.date(2010, 9, 1))])
    new.write_parquet(tmp_path / "v2.parquet")
    parts2, m2, report = _build(tmp_path / "v2.parquet", model_bytes, tmp_path / "s2", previous=m1,
                                previous_dir=tmp_path / "s1", workers=2)
    unchanged = {p.label for p in parts1[:-1]}  # the last partition may have grown
    assert report.reused >= len(unchanged) and report.encoded >= 1
    assert report.reused + report.encoded == report.partitions
    sp = load_tokenizer(model_bytes)
    want = np.concatenate([np.array([*ids, sp.piece_to_id(EOT)]) for ids in sp.encode(new["text"].to_list())])
    assert np.array_equal(_tokens(m2, tmp_path / "s2"), want)
    reused_files = [e["file"] for e in m2["splits"]["train"] if e["partition"] in unchanged]
    assert reused_files and all((tmp_path / "s2" / f).stat().st_ino == (tmp_path / "s1" / f).stat().st_ino
                                for f in reused_files)  # linked, not re-encoded


def test_changed_text_or_a_new_tokenizer_re_encodes(tmp_path, model_bytes):
    docs = _docs(6)
    docs.write_parquet(tmp_path / "v1.parquet")
    _, m1, _ = _build(tmp_path / "v1.parquet", model_bytes, tmp_path / "s1")
    edited = docs.with_columns(text=pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("edited text.")).otherwise("text"))
    edited.write_parquet(tmp_path / "v2.parquet")
    _, _, report = _build(tmp_path / "v2.parquet", model_bytes, tmp_path / "s2", previous=m1, previous_dir=tmp_path / "s1")
    assert report.encoded == 1 and report.reused == report.partitions - 1
    other = train_tokenizer(_docs(6, seed=9)["text"].to_list(), TokenizerConfig(vocab_size=330))
    _, _, report = _build(tmp_path / "v1.parquet", other, tmp_path / "s3", previous=m1, previous_dir=tmp_path / "s1")
    assert report.reused == 0 and report.encoded == report.partitions


def test_validation_partitions_filter_one_domain(tmp_path, model_bytes):
    docs = _docs(4)
    docs.write_parquet(tmp_path / "val.parquet")
    parts = plan_partitions(tmp_path / "val.parquet", "val_market", 10_000, domain="market")
    assert sum(p.rows for p in parts) == docs.filter(pl.col("domain") == "market").height
    out = tmp_path / "v"
    out.mkdir()
    splits, _ = build_shards(parts, model_bytes, "x", out, 3000, workers=1)
    assert all(set(e["domains"]) == {"market"} for e in splits["val_market"])


@pytest.fixture(scope="module")
def hf_source():
    from hf_helpers import byte_level_tokenizer

    tok = byte_level_tokenizer(_docs(6)["text"].to_list(), vocab_size=350)
    return TokenizerSource(HF_BASE, tok.to_str().encode(), eot_token="</s>")


def test_a_base_tokenizer_encodes_in_parallel_and_reuses_by_its_sha256(tmp_path, hf_source, model_bytes):
    from tokenizers import Tokenizer

    docs = _docs(8)
    docs.write_parquet(tmp_path / "train.parquet")
    _, a, report = _build(tmp_path / "train.parquet", hf_source, tmp_path / "a", workers=2)
    assert report.workers == 2 and report.encoded == report.partitions > 1
    _, b, _ = _build(tmp_path / "train.parquet", hf_source, tmp_path / "b", workers=1)
    assert a["splits"] == b["splits"]
    hf = Tokenizer.from_str(hf_source.data.decode())
    eot = hf.token_to_id("</s>")  # the base has no <|endoftext|>: its eos ends documents
    want = [t for e in hf.encode_batch(docs["text"].to_list(), add_special_tokens=False) for t in [*e.ids, eot]]
    assert _tokens(a, tmp_path / "a").tolist() == want
    # reuse is keyed on the tokenizer's sha256: the same base reuses all, a switch of tokenizer re-encodes all
    _, _, same = _build(tmp_path / "train.parquet", hf_source, tmp_path / "c", previous=a, previous_dir=tmp_path / "a")
    assert same.reused == same.partitions
    _, _, other = _build(tmp_path / "train.parquet", model_bytes, tmp_path / "d", previous=a, previous_dir=tmp_path / "a")
    assert other.reused == 0 and other.encoded == other.partitions


def test_the_same_tokenizer_json_with_another_end_of_text_token_re_encodes(tmp_path, hf_source):
    """A base's tokenizer.json is the reuse key's sha256, but its end-of-text token comes from
    tokenizer_config.json / config.json: switching it (a sibling base naming another eos) must not reuse
    shards whose documents end with the old id beside new ones ending with the new id."""
    docs = _docs(8)
    docs.write_parquet(tmp_path / "train.parquet")
    _, a, _ = _build(tmp_path / "train.parquet", hf_source, tmp_path / "a", workers=1)
    a["tokenizer"]["eot_token"] = hf_source.eot_token  # as build_manifest records it
    other = TokenizerSource(HF_BASE, hf_source.data, eot_token="<s>")
    assert other.sha256 == hf_source.sha256
    _, b, report = _build(tmp_path / "train.parquet", other, tmp_path / "b", previous=a, previous_dir=tmp_path / "a")
    assert report.reused == 0 and report.encoded == report.partitions
    eot = other.load().eot_id
    tokens = _tokens(b, tmp_path / "b")
    assert int((tokens == eot).sum()) == docs.height and hf_source.load().eot_id not in set(tokens.tolist())
