"""Tokenizer: a choice. By default a sentencepiece BPE trained on the corpus's training split (logic in
tokenization.py); with ``TENALI_BASE_MODEL`` set, the base model's own tokenizer.json, copied into the
lake, so its shards feed continued pretraining of that base.

The whole ``tokenizer/`` folder is written at once, so a switch of kind leaves no file of the other
kind behind (a stale ``tenali.model`` next to a base lineage would give later stages wrong ids).
``tokenizer/report.json`` says which tokenizer the folder holds (``kind``, ``sha256`` of its file,
vocabulary size, end-of-text token); `lake_tokenizer` reads it back for the stages that encode.
"""

import json

import dagster as dg
from tenali_model.hf import ConversionError, model_config_from_hf, write_tokenizer
from tenali_model.tokenizer import PAD, SPECIAL_TOKENS
from tokenizers import Tokenizer

from ...resources import CorpusResource, LakeResource
from ...tokenization import (HF_BASE, SENTENCEPIECE, TokenizerConfig, TokenizerSource, base_eot_token, base_name,
                             load_tokenizer, read_base_tokenizer, tokenizer_report, train_tokenizer)
from ..corpus.assets import TRAIN_UNIQUE_KEY, VAL_KEY, corpus

TOKENIZER_KEY = "tokenizer"
MODEL_KEY, REPORT_KEY = "tokenizer/tenali.model", "tokenizer/report.json"
HF_KEY = "tokenizer/hf"
BASE_KEY = "tokenizer/base"  # a base model's tokenizer.json and tokenizer_config.json


@dg.asset(group_name="tokenizer", deps=[corpus], kinds={"sentencepiece"},
          description="BPE tokenizer with byte fallback, split digits and the chat/end-of-text special tokens; "
                      "or, with TENALI_BASE_MODEL set, the base model's own tokenizer.")
def tokenizer(context: dg.AssetExecutionContext, lake: LakeResource, corpus_settings: CorpusResource) -> dg.MaterializeResult:
    store = lake.lake()
    val = store.read_parquet(VAL_KEY)
    if corpus_settings.base_model:
        return _base_tokenizer(context, lake, corpus_settings.base_model, val)
    cfg = TokenizerConfig(vocab_size=corpus_settings.vocab_size)
    model = train_tokenizer(store.read_parquet(TRAIN_UNIQUE_KEY)["text"].to_list(), cfg)
    sp = load_tokenizer(model)
    if sp.vocab_size() < cfg.vocab_size:
        context.log.warning(f"The corpus filled only {sp.vocab_size()} of {cfg.vocab_size} vocabulary entries.")
    report = tokenizer_report(sp, val)
    with store.staged_dir(TOKENIZER_KEY) as out:
        (out / "tenali.model").write_bytes(model)
        # The same tokenizer for the Hugging Face ecosystem (tokenizer.json + tokenizer_config.json),
        # with the share of validation documents it encodes to exactly sentencepiece's ids.
        hf_dir = out / "hf"
        hf_dir.mkdir()
        write_tokenizer(out / "tenali.model", hf_dir)
        hf = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
        texts = val["text"].to_list()
        same = sum(a.ids == b for a, b in zip(hf.encode_batch(texts, add_special_tokens=False), sp.encode(texts)))
        report["hf_id_agreement"] = same / max(len(texts), 1)
        (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return dg.MaterializeResult(metadata={
        **_report_metadata(report),
        "uri": dg.MetadataValue.path(store.uri(MODEL_KEY)),
        "hf_tokenizer": dg.MetadataValue.path(store.uri(HF_KEY)),
        "hf_id_agreement": report["hf_id_agreement"],
    })


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
    with store.staged_dir(TOKENIZER_KEY) as out:
        (out / "base").mkdir()
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if name in files:
                (out / "base" / name).write_bytes(files[name])
        (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    context.log.info(f"tokenizer of base model {uri}: {enc.vocab_size} tokens, documents end with "
                     f"{source.eot_token!r} (id {enc.eot_id})")
    return dg.MaterializeResult(metadata={
        **_report_metadata(report),
        "uri": dg.MetadataValue.path(store.uri(f"{BASE_KEY}/tokenizer.json")),
        "base_model": dg.MetadataValue.path(uri),
        "eot_token": source.eot_token,
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

    A report written before base models existed has no ``kind``: it is sentencepiece.
    """
    report = store.read_json(REPORT_KEY)
    kind = report.get("kind", SENTENCEPIECE)
    if kind == HF_BASE:
        return TokenizerSource(HF_BASE, store.read_bytes(f"{BASE_KEY}/tokenizer.json"), report["eot_token"]), report
    return TokenizerSource(SENTENCEPIECE, store.read_bytes(MODEL_KEY)), report


def chat_tokenizer_file(store) -> str:
    """The tokenizer file, relative to ``tokenizer/``, that chat stages (SFT, DPO) read. A tokenizer
    without the chat markup (a base model's, usually) fails here, naming the missing pieces and the fix,
    before any compute."""
    source, _ = lake_tokenizer(store)
    if source.kind == SENTENCEPIECE:
        return "tenali.model"
    hf = source.load().hf
    missing = [t for t in SPECIAL_TOKENS if t != PAD and hf.token_to_id(t) is None]
    if missing:
        raise dg.Failure(
            f"The base model's tokenizer (TENALI_BASE_MODEL) has no {', '.join(missing)} tokens, which chat "
            "formatting needs; post-training a base lineage needs them added to its tokenizer as special tokens "
            "and its embeddings resized (not automated yet), or unset TENALI_BASE_MODEL to train Tenali's own "
            "tokenizer (it has them).")
    return "base/tokenizer.json"


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
