"""Token shards: the corpus encoded with the tokenizer, in tenali_model's shard format, with a manifest."""

import json
import tempfile
from pathlib import Path

import dagster as dg
import polars as pl
from tenali_model.data import shard_token_count

from ...resources import CorpusResource, LakeResource
from ...tokenization import build_manifest, encode_split, load_tokenizer
from ..corpus.assets import TRAIN_KEY, VAL_KEY
from ..tokenizer.assets import MODEL_KEY, tokenizer

SHARDS_KEY = "shards"
MANIFEST = "manifest.json"


@dg.asset(group_name="shards", deps=[tokenizer, "corpus"], kinds={"numpy"},
          description="Train shards and per-domain validation shards (documents end with <|endoftext|>) and their manifest.")
def token_shards(lake: LakeResource, corpus_settings: CorpusResource) -> dg.MaterializeResult:
    store = lake.lake()
    model = store.read_bytes(MODEL_KEY)
    sp = load_tokenizer(model)
    corpus_meta = {"train_key": TRAIN_KEY, "val_key": VAL_KEY}
    with store.staged_dir(SHARDS_KEY) as out:
        splits = {}
        for split, key in (("train", TRAIN_KEY), ("val", VAL_KEY)):
            docs = store.read_parquet(key)
            corpus_meta[f"{split}_documents"] = docs.height
            if split == "val":
                corpus_meta["val_start"] = str(docs["date"].min())
            if split == "train":
                splits[split] = encode_split(sp, docs, out, split, corpus_settings.shard_tokens)
                continue
            # Validation shards per domain, so evaluation reports loss and bits per byte by domain
            # from exact byte counts.
            splits[split] = []
            for domain in sorted(docs["domain"].unique().to_list()):
                part = encode_split(sp, docs.filter(pl.col("domain") == domain), out, f"val_{domain}",
                                    corpus_settings.shard_tokens)
                splits[split] += [{**e, "domain": domain} for e in part]
        manifest = build_manifest(model, sp, splits, corpus_meta)
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    totals = manifest["totals"]
    val_bytes = sum(e["bytes"] for e in splits["val"])
    return dg.MaterializeResult(metadata={
        "uri": dg.MetadataValue.path(store.uri(SHARDS_KEY)),
        "train_tokens": totals["train"],
        "val_tokens": totals["val"],
        "train_shards": len(splits["train"]),
        "val_shards": len(splits["val"]),
        "val_bytes_per_token": round(val_bytes / max(totals["val"], 1), 4),
        "tokenizer_sha256": manifest["tokenizer"]["sha256"][:16],
    })


@dg.asset_check(asset=token_shards, blocking=True,
                description="Every shard's header count matches the manifest, and the manifest totals add up.")
def shard_counts_match(lake: LakeResource) -> dg.AssetCheckResult:
    store = lake.lake()
    manifest = store.read_json(f"{SHARDS_KEY}/{MANIFEST}")
    with tempfile.TemporaryDirectory() as tmp:
        local = store.download_dir(SHARDS_KEY, Path(tmp))
        bad = [e["file"] for entries in manifest["splits"].values() for e in entries
               if shard_token_count(local / e["file"]) != e["tokens"]]
    totals_ok = all(sum(e["tokens"] for e in manifest["splits"][s]) == t for s, t in manifest["totals"].items())
    return dg.AssetCheckResult(passed=not bad and totals_ok, metadata={"mismatched_shards": ", ".join(bad) or "none"})
