"""Tokenizer: sentencepiece BPE trained on the corpus's training split (logic in tokenization.py)."""

import dagster as dg

from ...resources import CorpusResource, LakeResource
from ...tokenization import TokenizerConfig, load_tokenizer, tokenizer_report, train_tokenizer
from ..corpus.assets import TRAIN_UNIQUE_KEY, VAL_KEY, corpus

MODEL_KEY, REPORT_KEY = "tokenizer/tenali.model", "tokenizer/report.json"


@dg.asset(group_name="tokenizer", deps=[corpus], kinds={"sentencepiece"},
          description="BPE tokenizer with byte fallback, split digits and the chat/end-of-text special tokens.")
def tokenizer(context: dg.AssetExecutionContext, lake: LakeResource, corpus_settings: CorpusResource) -> dg.MaterializeResult:
    store = lake.lake()
    cfg = TokenizerConfig(vocab_size=corpus_settings.vocab_size)
    model = train_tokenizer(store.read_parquet(TRAIN_UNIQUE_KEY)["text"].to_list(), cfg)
    sp = load_tokenizer(model)
    if sp.vocab_size() < cfg.vocab_size:
        context.log.warning(f"The corpus filled only {sp.vocab_size()} of {cfg.vocab_size} vocabulary entries.")
    report = tokenizer_report(sp, store.read_parquet(VAL_KEY))
    uri = store.write_bytes(MODEL_KEY, model)
    store.write_json(REPORT_KEY, report)
    return dg.MaterializeResult(metadata={
        "uri": dg.MetadataValue.path(uri),
        "vocab_size": report["vocab_size"],
        "bytes_per_token": report["bytes_per_token"],
        "byte_fallback_rate": report["byte_fallback_rate"],
        "roundtrip_failures": report["roundtrip_failures"],
        "vocab_used_fraction": report["vocab_used_fraction"],
        "bytes_per_token_by_domain": dg.MetadataValue.json(report["bytes_per_token_by_domain"]),
    })


@dg.asset_check(asset=tokenizer, blocking=True,
                description="decode(encode(text)) == text for every validation document.")
def exact_roundtrip(lake: LakeResource) -> dg.AssetCheckResult:
    report = lake.lake().read_json(REPORT_KEY)
    return dg.AssetCheckResult(passed=report["roundtrip_failures"] == 0,
                               metadata={"roundtrip_failures": report["roundtrip_failures"],
                                         "val_documents": report["val_documents"]})
