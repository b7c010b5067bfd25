"""Tokenizer training and shard encoding: determinism, exact round trips, digits, special tokens, shards."""

import hashlib
import json
import random

import numpy as np
import polars as pl
import pytest
from tenali_model.data import read_shard

from tenali_pipeline.text.corpus import SPECIAL_TOKENS
from tenali_pipeline.tokenization import (
    EOT,
    HF_BASE,
    MANIFEST_VERSION,
    TokenizerConfig,
    TokenizerSource,
    base_eot_token,
    base_name,
    build_manifest,
    encode_split,
    fetch_base,
    load_tokenizer,
    read_base_tokenizer,
    tokenizer_report,
    train_tokenizer,
)

from launcher_fakes import BUCKET, s3  # noqa: F401  (the moto S3 fixture)

WORDS = ("the market rose fell shares price index inflation bond yield dollar percent quarter revenue "
         "earnings company closed opened volume traded analysts expected growth rate federal reserve").split()


def _corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "."
                     for _ in range(rng.randint(2, 5))]
        texts.append(" ".join(sentences) + f"\nIt closed at ${rng.uniform(1, 5000):,.2f}, {rng.uniform(-9, 9):+.1f}%.")
    return texts


CFG = TokenizerConfig(vocab_size=512)


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return train_tokenizer(_corpus(400), CFG)


@pytest.fixture(scope="module")
def sp(model_bytes):
    return load_tokenizer(model_bytes)


def test_training_is_deterministic(model_bytes):
    again = train_tokenizer(_corpus(400), CFG)
    assert hashlib.sha256(again).hexdigest() == hashlib.sha256(model_bytes).hexdigest()
    other = train_tokenizer(_corpus(400, seed=1), CFG)
    assert other != model_bytes  # the comparison can tell models apart


def test_vocabulary_and_reserved_ids(sp):
    assert 300 < sp.vocab_size() <= 512  # hard_vocab_limit=False: a small corpus may stop early
    assert sp.unk_id() == 0
    assert sp.bos_id() == -1 and sp.eos_id() == -1 and sp.pad_id() == -1
    assert sum(sp.is_byte(i) for i in range(sp.vocab_size())) == 256


@pytest.mark.parametrize("text", [
    "The market rose 3.5% to $1,234.56.",
    "  two leading spaces, three trailing   ",
    "tabs\tand\t\tmore tabs\t",
    "lines\n\n\nwith blank lines\n",
    "\n\nstarts with newlines",
    "windows\r\nline endings\r\n",
    "runs of      spaces    inside",
    "unicode: café, naïve, Zürich, €1.5bn, ½, ﬁnance, １２３ (full width), 日本銀行, 🚀📉",
    " ",
    "",
])
def test_exact_round_trip(sp, text):
    assert sp.decode(sp.encode(text)) == text


def test_no_unknown_ids_on_unseen_characters(sp):
    text = "日本銀行の金利 🚀📉 Ωμέγα ₿ 𝔽𝕚𝕟"
    ids = sp.encode(text)
    assert sp.unk_id() not in ids
    assert any(sp.is_byte(i) for i in ids)  # fell back to bytes
    assert sp.decode(ids) == text
    # one emoji: four UTF-8 bytes, four byte pieces
    rocket = [i for i in sp.encode("🚀") if sp.is_byte(i)]
    assert [sp.id_to_piece(i) for i in rocket] == ["<0xF0>", "<0x9F>", "<0x9A>", "<0x80>"]


def test_digits_are_one_per_token(sp):
    text = "Revenue of $12,345,678.90 in 2013, up 1024% from 99 and 1000000 units."
    pieces = [sp.id_to_piece(i) for i in sp.encode(text)]
    digit_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
    assert all(len(p) == 1 for p in digit_pieces), digit_pieces
    assert "".join(digit_pieces) == "".join(c for c in text if c.isdigit())


@pytest.mark.parametrize("token", SPECIAL_TOKENS)
def test_special_tokens_are_single_pieces(sp, token):
    tid = sp.piece_to_id(token)
    assert tid != sp.unk_id()
    assert sp.id_to_piece(tid) == token
    ids = sp.encode(f"before{token}after")
    assert ids.count(tid) == 1
    assert sp.decode(ids) == f"before{token}after"
    assert [i for i in sp.encode(token) if i != sp.piece_to_id("▁")] == [tid]


def test_newline_is_its_own_piece(sp):
    nl = sp.piece_to_id("\n")
    assert nl != sp.unk_id()
    assert sp.encode("a\nb").count(nl) == 1


def test_empty_training_text_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        train_tokenizer(["", "\n  \n"], CFG)


def _docs(texts: list[str], domains: list[str] | None = None) -> pl.DataFrame:
    domains = domains or ["market", "economic", "technical"] * (len(texts) // 3 + 1)
    return pl.DataFrame({"text": texts, "domain": domains[: len(texts)]})


def test_encode_split_shards_end_at_document_boundaries(sp, tmp_path):
    texts = _corpus(60, seed=3) + ["emoji 🚀 and café"]
    docs = _docs(texts)
    eot = sp.piece_to_id(EOT)
    encoded = [sp.encode(t) for t in texts]
    shard_tokens = 200
    entries = encode_split(sp, docs, tmp_path, "train", shard_tokens)

    assert len(entries) > 3
    assert [e["file"] for e in entries] == [f"train_{i:05d}.bin" for i in range(len(entries))]
    shards = [np.asarray(read_shard(tmp_path / e["file"])) for e in entries]
    # the whole stream is every document followed by <|endoftext|>, in order
    expected = np.asarray([t for ids in encoded for t in [*ids, eot]])
    assert np.array_equal(np.concatenate(shards), expected)
    assert shards[0].dtype == np.uint16

    doc = 0
    for entry, tokens in zip(entries, shards):
        assert tokens[-1] == eot  # a shard ends where a document ends
        n_docs = int((tokens == eot).sum())
        assert entry["documents"] == n_docs
        assert entry["tokens"] == tokens.size
        assert entry["bytes"] == sum(len(t.encode()) for t in texts[doc: doc + n_docs])
        assert sum(entry["domains"].values()) == entry["tokens"]
        assert list(entry["domains"]) == sorted(entry["domains"])
        # greedy packing: full up to the limit, and the next document would not have fitted
        assert tokens.size <= shard_tokens
        if doc + n_docs < len(texts):
            assert tokens.size + len(encoded[doc + n_docs]) + 1 > shard_tokens
        doc += n_docs
    assert doc == len(texts)
    assert sum(e["documents"] for e in entries) == docs.height
    assert sum(e["bytes"] for e in entries) == sum(len(t.encode()) for t in texts)


def test_a_document_longer_than_a_shard_gets_its_own_shard(sp, tmp_path):
    long = " ".join(WORDS) * 4
    docs = _docs(["short one.", long, "short two."])
    entries = encode_split(sp, docs, tmp_path, "val", shard_tokens=20)
    assert [e["documents"] for e in entries] == [1, 1, 1]
    assert entries[1]["tokens"] == len(sp.encode(long)) + 1 > 20


def test_encode_split_of_nothing_writes_nothing(sp, tmp_path):
    assert encode_split(sp, _docs([]), tmp_path, "val", 100) == []
    assert list(tmp_path.iterdir()) == []


def test_manifest_totals_and_tokenizer_identity(sp, model_bytes, tmp_path):
    docs = _docs(_corpus(20, seed=4))
    splits = {"train": encode_split(sp, docs.head(15), tmp_path, "train", 150),
              "val": encode_split(sp, docs.tail(5), tmp_path, "val", 150)}
    manifest = build_manifest(model_bytes, sp, splits, {"documents": 20}, CFG)
    assert manifest["format_version"] == MANIFEST_VERSION
    assert manifest["tokenizer"]["sha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert manifest["tokenizer"]["eot_id"] == sp.piece_to_id(EOT)
    assert manifest["tokenizer"]["config"]["vocab_size"] == 512
    for split, entries in splits.items():
        on_disk = sum(read_shard(tmp_path / e["file"]).size for e in entries)
        assert manifest["totals"][split] == on_disk


def test_tokenizer_report(sp):
    texts = _corpus(30, seed=5)
    texts[0] += " 🚀"
    val = _docs(texts)
    report = tokenizer_report(sp, val)
    ids = [sp.encode(t) for t in texts]
    n_tokens = sum(map(len, ids))
    n_bytes = sum(len(t.encode()) for t in texts)
    assert report["vocab_size"] == sp.vocab_size()
    assert report["val_documents"] == 30
    assert report["val_tokens"] == n_tokens
    assert report["roundtrip_failures"] == 0
    assert report["bytes_per_token"] == round(n_bytes / n_tokens, 3)
    assert 1.0 < report["bytes_per_token"] < 8.0
    assert set(report["bytes_per_token_by_domain"]) == {"market", "economic", "technical"}
    assert all(v > 1.0 for v in report["bytes_per_token_by_domain"].values())
    n_byte_tokens = sum(sp.is_byte(i) for x in ids for i in x)
    assert n_byte_tokens >= 4
    assert report["byte_fallback_rate"] == pytest.approx(n_byte_tokens / n_tokens)
    used = len({i for x in ids for i in x})
    assert report["vocab_used_fraction"] == round(used / sp.vocab_size(), 4)
    assert 0 < report["vocab_used_fraction"] <= 1


# ---- a Hugging Face base model's tokenizer (continued pretraining) ----------------------------------

@pytest.fixture(scope="module")
def hf_tok():
    from hf_helpers import byte_level_tokenizer

    return byte_level_tokenizer(_corpus(200), vocab_size=400)


@pytest.fixture(scope="module")
def hf_source(hf_tok):
    return TokenizerSource(HF_BASE, hf_tok.to_str().encode(), eot_token="</s>")


def test_base_tokenizer_report_shards_and_manifest(hf_tok, hf_source, tmp_path):
    enc = hf_source.load()
    texts = _corpus(30, seed=5)
    texts[0] += " 🚀 naïve café"
    ids = [hf_tok.encode(t, add_special_tokens=False).ids for t in texts]
    eot = hf_tok.token_to_id("</s>")
    report = tokenizer_report(enc, _docs(texts))
    assert (report["kind"], report["sha256"]) == (HF_BASE, hashlib.sha256(hf_source.data).hexdigest())
    assert (report["eot_token"], report["eot_id"], report["vocab_size"]) == ("</s>", eot, hf_tok.get_vocab_size())
    assert report["val_tokens"] == sum(map(len, ids))
    assert report["roundtrip_failures"] == 0  # byte-level BPE: every text, emoji included, comes back
    assert report["byte_fallback_rate"] == 0.0  # no <0xNN> pieces in a byte-level vocabulary
    assert report["bytes_per_token"] == round(sum(len(t.encode()) for t in texts) / sum(map(len, ids)), 3)

    docs = _docs(texts)
    splits = {"train": encode_split(enc, docs, tmp_path, "train", 200)}
    assert len(splits["train"]) > 1
    on_disk = np.concatenate([read_shard(tmp_path / e["file"]) for e in splits["train"]])
    assert on_disk.tolist() == [t for x in ids for t in [*x, eot]]  # no BOS, the base's eos ends each document
    base = {"name": "tiny", "uri": "/models/tiny"}
    manifest = build_manifest(hf_source, enc, splits, {"documents": 30}, base=base)
    assert manifest["tokenizer"] == {"kind": HF_BASE, "sha256": hf_source.sha256, "vocab_size": hf_tok.get_vocab_size(),
                                     "eot_id": eot, "eot_token": "</s>", "config": None, "base": base}
    assert manifest["totals"]["train"] == on_disk.size


def test_sentencepiece_manifest_records_its_kind(sp, model_bytes, tmp_path):
    manifest = build_manifest(model_bytes, sp, {"train": []}, {})
    assert manifest["tokenizer"]["kind"] == "sentencepiece" and "base" not in manifest["tokenizer"]
    assert tokenizer_report(sp, _docs(_corpus(3)))["kind"] == "sentencepiece"


def test_a_base_tokenizer_that_changes_text_is_reported_not_hidden(hf_tok):
    from tokenizers import Tokenizer, normalizers

    lower = Tokenizer.from_str(hf_tok.to_str())
    lower.normalizer = normalizers.Lowercase()
    texts = ["Shares ROSE today.", "shares fell.", "The Fed met."]
    report = tokenizer_report(TokenizerSource(HF_BASE, lower.to_str().encode(), "</s>").load(), _docs(texts))
    assert report["roundtrip_failures"] == 2


def _base_files(tok, config: dict | None = None, tokenizer_config: dict | None = None) -> dict:
    files = {"tokenizer.json": tok.to_str().encode(), "config.json": json.dumps(config or {}).encode()}
    if tokenizer_config is not None:
        files["tokenizer_config.json"] = json.dumps(tokenizer_config).encode()
    return files


def test_end_of_text_token_of_a_base(hf_tok):
    from hf_helpers import byte_level_tokenizer

    with_eot = byte_level_tokenizer(_corpus(20), vocab_size=300, specials=("<unk>", "</s>", EOT))
    assert base_eot_token(_base_files(with_eot, tokenizer_config={"eos_token": "</s>"})) == EOT  # the document separator
    assert base_eot_token(_base_files(hf_tok, tokenizer_config={"eos_token": "</s>"})) == "</s>"
    assert base_eot_token(_base_files(hf_tok, tokenizer_config={"eos_token": {"content": "</s>"}})) == "</s>"
    eos_id = hf_tok.token_to_id("</s>")
    assert base_eot_token(_base_files(hf_tok, config={"eos_token_id": [eos_id, 0]})) == "</s>"
    with pytest.raises(ValueError, match="eos_token"):
        base_eot_token(_base_files(hf_tok, tokenizer_config={"eos_token": "<|not-there|>"}))
    with pytest.raises(ValueError, match="has no '<|endoftext|>' token"):
        TokenizerSource(HF_BASE, hf_tok.to_str().encode()).load()  # default eot is <|endoftext|>


def test_base_folder_must_hold_config_and_tokenizer_json(hf_tok, tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        read_base_tokenizer(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="no tokenizer.json.*save_pretrained"):
        read_base_tokenizer(str(tmp_path))
    hf_tok.save(str(tmp_path / "tokenizer.json"))
    assert set(read_base_tokenizer(str(tmp_path))) == {"config.json", "tokenizer.json"}
    assert fetch_base(str(tmp_path), tmp_path / "unused") == tmp_path  # a local base is read where it is
    with pytest.raises(ValueError, match="not a folder"):
        fetch_base(str(tmp_path / "nowhere"), tmp_path / "unused")


def test_base_on_s3_is_read_and_fetched_through_the_lake_filesystem(hf_tok, s3, tmp_path):
    endpoint, client = s3
    files = {"config.json": b'{"model_type": "llama"}', "tokenizer.json": hf_tok.to_str().encode(),
             "tokenizer_config.json": b'{"eos_token": "</s>"}', "model.safetensors": b"\x00" * 1000}
    for name, data in files.items():
        client.put_object(Bucket=BUCKET, Key=f"models/tiny/{name}", Body=data)
    uri = f"s3://{BUCKET}/models/tiny"
    got = read_base_tokenizer(uri, endpoint)
    assert got == {k: v for k, v in files.items() if k != "model.safetensors"}
    assert base_eot_token(got) == "</s>"
    folder = fetch_base(uri, tmp_path / "cache", endpoint)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files
    assert base_name(uri + "/") == "tiny"
