"""Tokenizer: a choice. By default a sentencepiece BPE trained on the corpus's training split (logic in
tokenization.py); with ``TENALI_BASE_MODEL`` set, the base model's own tokenizer.json, copied into the
lake, so its shards feed continued pretraining of that base.

The whole ``tokenizer/`` folder is written at once, so a switch of kind leaves no file of the other
kind behind (a stale ``tenali.model`` next to a base lineage would give later stages wrong ids).
``tokenizer/report.json`` says which tokenizer the folder holds (``kind``, ``sha256`` of its file,
vocabulary size, end-of-text token); `lake_tokenizer` reads it back for the stages that encode.

A base model's tokenizer has no chat markup, so beside it the folder holds ``base/chat/``: the same
tokenizer.json with the missing ``<|endoftext|>``, ``<|user|>``, ``<|assistant|>``, ``<|pad|>`` and
``<|system|>`` added as special tokens after the base's last id (every other id unchanged, so the
shards, encoded with the base's own file, stay valid), and a tokenizer_config.json with the chat
template. The chat stages read it (`chat_tokenizer_file`); the first of them grows the model's
embeddings to it (`tenali_model.posttrain.vocab`); the release of a chat model exports it.
"""

import hashlib
import json

import dagster as dg
from tenali_model.hf import ConversionError, model_config_from_hf, write_tokenizer
from tenali_model.tokenizer import add_chat_tokens
from tokenizers import Tokenizer

from ...resources import CorpusResource, LakeResource
from ...tokenization import (HF_BASE, SENTENCEPIECE, TokenizerConfig, TokenizerSource, base_eot_token, base_name,
                             load_tokenizer, read_base_tokenizer, tokenizer_report, train_tokenizer)
from ..corpus.assets import TRAIN_UNIQUE_KEY, VAL_KEY, corpus

TOKENIZER_KEY = "tokenizer"
MODEL_KEY, REPORT_KEY = "tokenizer/tenali.model", "tokenizer/report.json"
HF_KEY = "tokenizer/hf"
BASE_KEY = "tokenizer/base"  # a base model's tokenizer.json and tokenizer_config.json
BASE_CHAT_FILE = "base/chat/tokenizer.json"  # relative to tokenizer/: the base's with the chat tokens added


@dg.asset(group_name="tokenizer", deps=[corpus], kinds={"sentencepiece"},
          description="BPE tokenizer with byte fallback, split digits and the chat/end-of-text special tokens; "
                      "or, with TENALI_BASE_MODEL set, the base model's own tokenizer.")
def tokenizer(context: dg.AssetExecutionContext, lake: LakeResource, corpus_settings: CorpusResource) -> dg.MaterializeResult:
    store = lake.lake()
    if corpus_settings.base_model:
        return _base_tokenizer(context, lake, corpus_settings.base_model, _val_batches(store))
    cfg = TokenizerConfig(vocab_size=corpus_settings.vocab_size)
    # Streamed a row group at a time: the trainer samples cfg.max_sentences lines, the split is not held whole.
    texts = (t for batch in store.iter_parquet(TRAIN_UNIQUE_KEY, columns=["text"]) for t in batch["text"] if t)
    model = train_tokenizer(texts, cfg)
    sp = load_tokenizer(model)
    if sp.vocab_size() < cfg.vocab_size:
        context.log.warning(f"The corpus filled only {sp.vocab_size()} of {cfg.vocab_size} vocabulary entries.")
    with store.staged_dir(TOKENIZER_KEY) as out:
        (out / "tenali.model").write_bytes(model)
        # The same tokenizer for the Hugging Face ecosystem (tokenizer.json + tokenizer_config.json),
        # with the share of validation documents it encodes to exactly sentencepiece's ids.
        hf_dir = out / "hf"
        hf_dir.mkdir()
        write_tokenizer(out / "tenali.model", hf_dir)
        hf = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
        same = 0

        def agree(texts: list[str], ids: list[list[int]]) -> None:
            nonlocal same
            same += sum(a.ids == list(b) for a, b in zip(hf.encode_batch(texts, add_special_tokens=False), ids))

        # The validation split streamed a batch at a time: the report's memory does not grow with it.
        report = tokenizer_report(sp, _val_batches(store), each_batch=agree)
        report["hf_id_agreement"] = same / max(report["val_documents"], 1)
        (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return dg.MaterializeResult(metadata={
        **_report_metadata(report),
        "uri": dg.MetadataValue.path(store.uri(MODEL_KEY)),
        "hf_tokenizer": dg.MetadataValue.path(store.uri(HF_KEY)),
        "hf_id_agreement": report["hf_id_agreement"],
    })


def _val_batches(store):
    return store.iter_parquet(VAL_KEY, columns=["text", "domain"])


def _base_tokenizer(context: dg.AssetExecutionContext, lake: LakeResource, uri: str, val) -> dg.MaterializeResult:
    """The base model's tokenizer.json into the lake, with the same report figures as a trained one."""
    store = lake.lake()
    try:
        files = read_base_tokenizer(uri, lake.s3_endpoint_url)
        model_cfg = model_config_from_hf(json.loads(files["config.json"]))  # an unsupported base fails here, not later
        source = TokenizerSource(HF_BASE, files["tokenizer.json"], eot_token=base_eot_token(files))
        enc = source.load()
    except (ValueError, ConversionError) as e:  # ConversionError is a ValueError; named for the reader
        raise dg.Failure(f"TENALI_BASE_MODEL={uri}: {e}") from e
    if enc.vocab_size > model_cfg.vocab_size:
        raise dg.Failure(f"TENALI_BASE_MODEL={uri}: its tokenizer has {enc.vocab_size} tokens but the model only "
                         f"{model_cfg.vocab_size} embeddings; a tokenizer and model that belong together are needed.")
    report = tokenizer_report(enc, val)
    report["base"] = {"name": base_name(uri), "uri": uri, "model_vocab_size": model_cfg.vocab_size}
    if report["roundtrip_failures"]:
        context.log.warning(f"{report['roundtrip_failures']} of {report['val_documents']} validation documents do not "
                            "decode back to their text with the base tokenizer (its normaliser or pre-tokeniser "
                            "changes text); training works, generated text may differ in those places.")
    try:
        chat_json, added = add_chat_tokens(files["tokenizer.json"])
    except ValueError as e:  # TokenizerError: ids with gaps
        raise dg.Failure(f"TENALI_BASE_MODEL={uri}: the chat tokens cannot be added to its tokenizer: {e}") from e
    with store.staged_dir(TOKENIZER_KEY) as out:
        (out / "base").mkdir()
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if name in files:
                (out / "base" / name).write_bytes(files[name])
        chat = out / BASE_CHAT_FILE
        chat.parent.mkdir()
        chat.write_text(chat_json, encoding="utf-8")
        write_tokenizer(chat, chat.parent, model_max_length=model_cfg.max_seq_len)  # + tokenizer_config.json
        report["chat"] = {"file": BASE_CHAT_FILE, "added_tokens": added,
                          "vocab_size": Tokenizer.from_file(str(chat)).get_vocab_size(with_added_tokens=True),
                          "sha256": hashlib.sha256(chat.read_bytes()).hexdigest()}
        (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    context.log.info(f"tokenizer of base model {uri}: {enc.vocab_size} tokens, documents end with "
                     f"{source.eot_token!r} (id {enc.eot_id})")
    return dg.MaterializeResult(metadata={
        **_report_metadata(report),
        "uri": dg.MetadataValue.path(store.uri(f"{BASE_KEY}/tokenizer.json")),
        "base_model": dg.MetadataValue.path(uri),
        "eot_token": source.eot_token,
        "chat_tokenizer": dg.MetadataValue.path(store.uri(f"{TOKENIZER_KEY}/{BASE_CHAT_FILE}")),
        "chat_tokens_added": ", ".join(added) or "none: the base has them",
        "chat_vocab_size": report["chat"]["vocab_size"],
    })


def _report_metadata(report: dict) -> dict:
    return {
        "kind": report["kind"],
        "tokenizer_sha256": report["sha256"][:16],
        "vocab_size": report["vocab_size"],
        "bytes_per_token": report["bytes_per_token"],
        "byte_fallback_rate": report["byte_fallback_rate"],
        "roundtrip_failures": report["roundtrip_failures"],
        "vocab_used_fraction": report["vocab_used_fraction"],
        "bytes_per_token_by_domain": dg.MetadataValue.json(report["bytes_per_token_by_domain"]),
    }


def lake_tokenizer(store) -> tuple[TokenizerSource, dict]:
    """The tokenizer the lake holds now (the tokenizer asset's output) and its report.

    A report written before base models existed has no ``kind`` (and a lake assembled by hand beside
    a ``tenali.model`` may have no report): it is sentencepiece.
    """
    report = store.read_json(REPORT_KEY) if store.exists(REPORT_KEY) or not store.exists(MODEL_KEY) else {}
    kind = report.get("kind", SENTENCEPIECE)
    if kind == HF_BASE:
        return TokenizerSource(HF_BASE, store.read_bytes(f"{BASE_KEY}/tokenizer.json"), report["eot_token"]), report
    return TokenizerSource(SENTENCEPIECE, store.read_bytes(MODEL_KEY)), report


def chat_tokenizer_file(store) -> str:
    """The tokenizer file, relative to ``tokenizer/``, that chat stages (SFT, DPO) read: Tenali's own
    (it has the chat pieces), or for a base model the base's with the chat tokens added. A base lineage
    whose tokenizer folder predates that file fails here, before any compute, naming the fix."""
    source, report = lake_tokenizer(store)
    if source.kind == SENTENCEPIECE:
        return "tenali.model"
    chat = report.get("chat")
    if not chat or not store.exists(f"{TOKENIZER_KEY}/{chat['file']}"):
        raise dg.Failure(
            "The lake's base-model tokenizer (TENALI_BASE_MODEL) has no chat version beside it (tokenizer/"
            f"{BASE_CHAT_FILE}, written by the tokenizer asset since chat stages run on a base lineage): "
            "re-materialise the tokenizer asset; the base's own tokenizer.json and the token shards stay as they are.")
    return chat["file"]


def export_tokenizer_file(store, chat: bool) -> str:
    """The tokenizer file, relative to ``tokenizer/``, a release exports with a checkpoint: the chat
    tokenizer for a chat model (its embeddings were grown to it), else the one the shards were made with."""
    source, _ = lake_tokenizer(store)
    if source.kind == SENTENCEPIECE:
        return "tenali.model"
    return chat_tokenizer_file(store) if chat else "base/tokenizer.json"


@dg.asset_check(asset=tokenizer, blocking=True,
                description="decode(encode(text)) == text for every validation document (a warning only for a "
                            "base model's tokenizer, which this project cannot change).")
def exact_roundtrip(lake: LakeResource) -> dg.AssetCheckResult:
    report = lake.lake().read_json(REPORT_KEY)
    base = report.get("kind") == HF_BASE
    return dg.AssetCheckResult(passed=report["roundtrip_failures"] == 0,
                               severity=dg.AssetCheckSeverity.WARN if base else dg.AssetCheckSeverity.ERROR,
                               metadata={"roundtrip_failures": report["roundtrip_failures"],
                                         "val_documents": report["val_documents"],
                                         "kind": report.get("kind", SENTENCEPIECE)})


@dg.asset_check(asset=tokenizer, description="The Hugging Face tokenizer gives sentencepiece's ids on the validation documents "
                                            "(it differs only where a text starts with a space or a special piece).")
def hf_ids_match(lake: LakeResource) -> dg.AssetCheckResult:
    report = lake.lake().read_json(REPORT_KEY)
    if report.get("kind") == HF_BASE:
        return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"not_applicable": "the base model's tokenizer is itself a Hugging Face "
                                                               "tokenizer; there is no sentencepiece model to match"})
    return dg.AssetCheckResult(passed=report["hf_id_agreement"] >= 0.99, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"hf_id_agreement": report["hf_id_agreement"]})
