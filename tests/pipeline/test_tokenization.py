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


# ---- review fixes ------------------------------------------------------------------------------------

def test_tokenizer_file_does_not_depend_on_the_machines_cpu_count(monkeypatch):
    """The same corpus and settings give the same model bytes (its sha256 keys shard reuse and the warm
    start of training) on a 2-core laptop and a 16-core pod."""
    import os

    texts = _corpus(200, seed=8)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    one = train_tokenizer(texts, CFG)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    eight = train_tokenizer(texts, CFG)
    assert hashlib.sha256(one).hexdigest() == hashlib.sha256(eight).hexdigest()


def test_training_streams_its_texts():
    """An iterator over the corpus is read lazily: the Python side never holds the whole corpus."""
    import tracemalloc

    def texts():
        rng = random.Random(0)
        for _ in range(20_000):  # about 20 MB of text, made on the fly
            yield "\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(12))

    tracemalloc.start()
    try:
        model = train_tokenizer(texts(), TokenizerConfig(vocab_size=300, max_sentences=5_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert load_tokenizer(model).vocab_size() > 0
    assert peak < 5_000_000, f"{peak:,} bytes held while training"


def _eot_positions_are_document_ends(tokens: np.ndarray, eot: int, n_docs: int) -> None:
    assert int((tokens == eot).sum()) == n_docs
    assert tokens[-1] == eot


def test_special_token_strings_inside_documents_are_encoded_as_text(sp, tmp_path):
    """A document whose text holds "<|endoftext|>" or a chat marker (the corpus filter's single pass leaves
    one when removing a marker joins two halves) must not get the special ids: a fake end of document or turn."""
    texts = ["Shares rose.<|endoftext|>The index fell.", "quote: <|user|> hi <|assistant|> hello <|pad|><|system|>",
             "plain text."]
    entries = encode_split(sp, _docs(texts), tmp_path, "train", 10_000)
    tokens = np.concatenate([np.asarray(read_shard(tmp_path / e["file"])) for e in entries]).astype(np.int64)
    eot = sp.piece_to_id(EOT)
    _eot_positions_are_document_ends(tokens, eot, len(texts))
    specials = {sp.piece_to_id(t) for t in SPECIAL_TOKENS}
    docs = np.split(tokens, np.flatnonzero(tokens == eot) + 1)[:-1]
    for text, doc in zip(texts, docs):
        assert not specials & set(doc[:-1].tolist())
        assert sp.decode(doc[:-1].tolist()) == text  # the text survives exactly
    # the special pieces themselves still encode to one id each outside documents (chat markup)
    assert sp.encode(EOT)[-1] == eot


def test_a_base_tokenizers_special_strings_inside_documents_are_encoded_as_text(hf_tok, hf_source, tmp_path):
    """The corpus filter removes Tenali's markers only; a base's own specials ("</s>", an HTML strike-through
    close tag in a news page) must not end a document early."""
    enc = hf_source.load()
    texts = ["Price <s>was</s> is 12.", "</s></s>", "plain."]
    entries = encode_split(enc, _docs(texts), tmp_path, "train", 10_000)
    tokens = np.concatenate([np.asarray(read_shard(tmp_path / e["file"])) for e in entries]).astype(np.int64)
    _eot_positions_are_document_ends(tokens, enc.eot_id, len(texts))
    assert hf_tok.token_to_id("<s>") not in tokens.tolist()
    docs = np.split(tokens, np.flatnonzero(tokens == enc.eot_id) + 1)[:-1]
    assert [enc.decode(d[:-1]) for d in docs] == texts


def test_a_base_tokenizer_saved_with_truncation_and_padding_encodes_whole_documents(hf_tok, tmp_path):
    from tokenizers import Tokenizer

    from tenali_model.tokenizer import TextTokenizer

    cut = Tokenizer.from_str(hf_tok.to_str())
    cut.enable_truncation(8)
    cut.enable_padding(pad_id=0, pad_token="<unk>")
    texts = _corpus(5, seed=6) + ["short."]
    want = [hf_tok.encode(t, add_special_tokens=False).ids for t in texts]
    assert max(map(len, want)) > 8
    enc = TokenizerSource(HF_BASE, cut.to_str().encode(), eot_token="</s>").load()
    entries = encode_split(enc, _docs(texts), tmp_path, "train", 10_000)
    on_disk = np.concatenate([read_shard(tmp_path / e["file"]) for e in entries]).tolist()
    assert on_disk == [t for ids in want for t in [*ids, enc.eot_id]]
    # the model side's tokenizer (SFT, generation) too
    tok = TextTokenizer(hf=Tokenizer.from_str(cut.to_str()))
    assert tok.encode(texts[0]) == want[0]


def test_token_ids_above_uint16_are_not_wrapped(hf_tok, tmp_path):
    """A tokenizer.json whose ids have gaps: its entry count fits uint16 but an id does not; the shard must
    hold that id (uint32), not the id modulo 65,536 (another, valid-looking token)."""
    vocab_json = json.loads(hf_tok.to_str())
    vocab = vocab_json["model"]["vocab"]
    piece = max(vocab, key=vocab.get)
    text = hf_tok.decode([vocab[piece]])
    vocab[piece] = 65_536 + 5
    from tokenizers import Tokenizer

    gappy = Tokenizer.from_str(json.dumps(vocab_json))
    ids = gappy.encode(text, add_special_tokens=False).ids
    assert 65_541 in ids and gappy.get_vocab_size(with_added_tokens=True) < 65_536
    enc = TokenizerSource(HF_BASE, json.dumps(vocab_json).encode(), eot_token="</s>").load()
    entries = encode_split(enc, _docs([text]), tmp_path, "train", 10_000)
    tokens = read_shard(tmp_path / entries[0]["file"])
    assert tokens.dtype == np.uint32
    assert tokens.tolist() == [*ids, enc.eot_id]


def test_the_report_streams_batches_and_gives_the_whole_tables_figures(sp):
    texts = _corpus(30, seed=5)
    texts[0] += " 🚀"
    val = _docs(texts)
    whole = tokenizer_report(sp, val)
    seen = []
    batched = tokenizer_report(sp, iter(val.iter_slices(7)), each_batch=lambda t, ids: seen.append(len(t)))
    assert batched == whole
    assert seen == [7, 7, 7, 7, 2]


def test_tokenizer_and_shard_assets_on_a_small_lake(tmp_path):
    """The tokenizer asset (streaming the training split and the validation report) and the shards asset
    materialise together; every document lands in a shard once, documents end with the one end-of-text id."""
    import datetime as dt

    import dagster as dg
    from tenali_model.data import read_shard

    from tenali_pipeline.defs.shards.assets import token_shards
    from tenali_pipeline.defs.tokenizer.assets import tokenizer
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import CorpusResource, LakeResource

    texts = _corpus(120, seed=11)
    texts[5] += " (a quoted <|endoftext|> marker)"
    dates = [dt.date(2010, 1, 1) + dt.timedelta(days=3 * i) for i in range(len(texts))]
    docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "date": dates, "text": texts,
                         "domain": ["market", "economic", "technical"] * 40})
    train, val = docs.head(100), docs.tail(20)
    lake = Lake(str(tmp_path / "lake"))
    lake.write_parquet("corpus/train.parquet", train)
    lake.write_parquet("corpus/train_unique.parquet", train)
    lake.write_parquet("corpus/val.parquet", val)
    result = dg.materialize(
        [tokenizer, token_shards],
        resources={"lake": LakeResource(root=str(tmp_path / "lake"), cache_dir=str(tmp_path / "cache")),
                   "corpus_settings": CorpusResource(vocab_size=400, shard_tokens=500)},
        selection=[tokenizer.key, token_shards.key])
    assert result.success
    report = lake.read_json("tokenizer/report.json")
    assert report["val_documents"] == 20 and report["roundtrip_failures"] == 0 and report["hf_id_agreement"] > 0.9
    manifest = lake.read_json("shards/manifest.json")
    folder = tmp_path / "lake" / "shards"
    sp = load_tokenizer(lake.read_bytes("tokenizer/tenali.model"))
    eot = manifest["tokenizer"]["eot_id"]
    for split, frame in (("train", train), ("val", val)):
        tokens = np.concatenate([read_shard(folder / e["file"]) for e in manifest["splits"][split]]).astype(np.int64)
        assert int((tokens == eot).sum()) == frame.height == sum(e["documents"] for e in manifest["splits"][split])
        got = [sp.decode(d[:-1].tolist()) for d in np.split(tokens, np.flatnonzero(tokens == eot) + 1)[:-1]]
        want = frame["text"].to_list() if split == "train" else \
            frame.sort("domain", maintain_order=True)["text"].to_list()  # validation shards are per domain
        assert got == want


def test_shards_rebuild_after_an_upload_that_died_part_way_on_s3(s3, tmp_path, monkeypatch):
    """A rebuild whose S3 upload dies after replacing one shard leaves that shard newer than the folder's
    checksums; the next run must still build (re-encoding what it cannot trust), not fail on the
    checksum of the very folder it is asked to replace, run after run."""
    import datetime as dt

    import dagster as dg

    from tenali_pipeline.defs.shards.assets import shard_counts_match, token_shards
    from tenali_pipeline.defs.tokenizer.assets import tokenizer
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import CorpusResource, LakeResource

    endpoint, _ = s3
    lake = Lake(f"s3://{BUCKET}/lake", s3_endpoint_url=endpoint)
    texts = _corpus(60, seed=12)
    dates = [dt.date(2010, 1, 1) + dt.timedelta(days=3 * i) for i in range(len(texts))]

    def write_corpus(texts):
        docs = pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "date": dates, "text": texts,
                             "domain": ["market", "economic"] * 30})
        lake.write_parquet("corpus/train.parquet", docs.head(50))
        lake.write_parquet("corpus/train_unique.parquet", docs.head(50))
        lake.write_parquet("corpus/val.parquet", docs.tail(10))

    resources = {"lake": LakeResource(root=f"s3://{BUCKET}/lake", s3_endpoint_url=endpoint,
                                      cache_dir=str(tmp_path / "cache")),
                 "corpus_settings": CorpusResource(vocab_size=400, shard_tokens=500)}

    def run(*assets):
        return dg.materialize(list(assets), resources=resources, selection=[a.key for a in assets],
                              raise_on_error=False)

    write_corpus(texts)
    assert run(tokenizer, token_shards).success
    # The cleaning changed one old document: its partition keeps its label (the same shard names) and is
    # re-encoded; the upload dies after the first shard went up.
    write_corpus(["Rewritten. " + texts[0], *texts[1:]])
    real_put, puts = Lake._put_file, []

    def dying_put(self, local, key):
        if puts:
            raise ConnectionError("the network went away")
        puts.append(key)
        return real_put(self, local, key)

    monkeypatch.setattr(Lake, "_put_file", dying_put)
    assert not run(token_shards).success
    monkeypatch.setattr(Lake, "_put_file", real_put)
    assert puts and puts[0].endswith(".bin")

    result = run(token_shards)
    assert result.success
    check = dg.materialize([token_shards, shard_counts_match], resources=resources,
                           selection=dg.AssetSelection.checks(shard_counts_match))
    assert check.get_asset_check_evaluations()[0].passed
    manifest = lake.read_json("shards/manifest.json")
    local = lake.download_dir("shards", tmp_path / "check")
    sp = load_tokenizer(lake.read_bytes("tokenizer/tenali.model"))
    tokens = np.concatenate([read_shard(local / e["file"]) for e in manifest["splits"]["train"]]).astype(np.int64)
    first = tokens[:int(np.flatnonzero(tokens == manifest["tokenizer"]["eot_id"])[0])]
    assert sp.decode(first.tolist()) == "Rewritten. " + texts[0]
