"""Tokenizer: sentencepiece BPE trained on the corpus's training split (logic in tokenization.py)."""

import dagster as dg
from tenali_model.hf import write_tokenizer
from tokenizers import Tokenizer

from ...resources import CorpusResource, LakeResource
from ...tokenization import TokenizerConfig, load_tokenizer, tokenizer_report, train_tokenizer
from ..corpus.assets import TRAIN_UNIQUE_KEY, VAL_KEY, corpus

MODEL_KEY, REPORT_KEY = "tokenizer/tenali.model", "tokenizer/report.json"
HF_KEY = "tokenizer/hf"


@dg.asset(group_name="tokenizer", deps=[corpus], kinds={"sentencepiece"},
          description="BPE tokenizer with byte fallback, split digits and the chat/end-of-text special tokens.")
def tokenizer(context: dg.AssetExecutionContext, lake: LakeResource, corpus_settings: CorpusResource) -> dg.MaterializeResult:
    store = lake.lake()
    cfg = TokenizerConfig(vocab_size=corpus_settings.vocab_size)
    model = train_tokenizer(store.read_parquet(TRAIN_UNIQUE_KEY)["text"].to_list(), cfg)
    sp = load_tokenizer(model)
    if sp.vocab_size() < cfg.vocab_size:
        context.log.warning(f"The corpus filled only {sp.vocab_size()} of {cfg.vocab_size} vocabulary entries.")
    val = store.read_parquet(VAL_KEY)
    report = tokenizer_report(sp, val)
    uri = store.write_bytes(MODEL_KEY, model)
    # The same tokenizer for the Hugging Face ecosystem (tokenizer.json + tokenizer_config.json),
    # with the share of validation documents it encodes to exactly sentencepiece's ids.
    with store.staged_dir(HF_KEY) as hf_dir:
        (hf_dir / "tenali.model").write_bytes(model)
        write_tokenizer(hf_dir / "tenali.model", hf_dir)
        (hf_dir / "tenali.model").unlink()
        hf = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
        texts = val["text"].to_list()
        same = sum(a.ids == b for a, b in zip(hf.encode_batch(texts, add_special_tokens=False), sp.encode(texts)))
    report["hf_id_agreement"] = same / max(len(texts), 1)
    store.write_json(REPORT_KEY, report)
    return dg.MaterializeResult(metadata={
        "uri": dg.MetadataValue.path(uri),
        "vocab_size": report["vocab_size"],
        "bytes_per_token": report["bytes_per_token"],
        "byte_fallback_rate": report["byte_fallback_rate"],
        "roundtrip_failures": report["roundtrip_failures"],
        "vocab_used_fraction": report["vocab_used_fraction"],
        "bytes_per_token_by_domain": dg.MetadataValue.json(report["bytes_per_token_by_domain"]),
        "hf_tokenizer": dg.MetadataValue.path(store.uri(HF_KEY)),
        "hf_id_agreement": report["hf_id_agreement"],
    })


@dg.asset_check(asset=tokenizer, blocking=True,
                description="decode(encode(text)) == text for every validation document.")
def exact_roundtrip(lake: LakeResource) -> dg.AssetCheckResult:
    report = lake.lake().read_json(REPORT_KEY)
    return dg.AssetCheckResult(passed=report["roundtrip_failures"] == 0,
                               metadata={"roundtrip_failures": report["roundtrip_failures"],
                                         "val_documents": report["val_documents"]})


@dg.asset_check(asset=tokenizer, description="The Hugging Face tokenizer gives sentencepiece's ids on the validation documents "
                                            "(it differs only where a text starts with a space or a special piece).")
def hf_ids_match(lake: LakeResource) -> dg.AssetCheckResult:
    report = lake.lake().read_json(REPORT_KEY)
    return dg.AssetCheckResult(passed=report["hf_id_agreement"] >= 0.99, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"hf_id_agreement": report["hf_id_agreement"]})
