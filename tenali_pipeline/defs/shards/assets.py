"""Token shards: the corpus encoded with the tokenizer, in tenali_model's shard format, with a manifest.

The work is in sharding.py: partitions of the date-sorted corpus, encoded in parallel, reused when unchanged.
The manifest's tokenizer block records which tokenizer made the shards (Tenali's sentencepiece model or a
base model's tokenizer.json: kind, sha256, end-of-text id, and the base); training and evaluation follow it.
"""

import json
from pathlib import Path

import dagster as dg
import polars as pl
from tenali_model.data import shard_token_count

from ...lake import ChecksumError
from ...resources import CorpusResource, LakeResource
from ...sharding import FINGERPRINT_METHOD, build_shards, partition_summary, plan_partitions
from ...tokenization import build_manifest
from ..corpus.assets import TRAIN_KEY, VAL_KEY
from ..tokenizer.assets import lake_tokenizer, tokenizer

SHARDS_KEY = "shards"
MANIFEST = "manifest.json"


# Corpus partitions close once they hold this much text: big enough that a partition's last,
# partial shard is noise, small enough that a worker's memory stays modest and appends re-encode little.
PARTITION_BYTES = 64 << 20


@dg.asset(group_name="shards", deps=[tokenizer, "corpus"], kinds={"numpy"},
          description="Train shards and per-domain validation shards (documents end with <|endoftext|>, or a base "
                      "model's eos token) and their manifest, encoded in parallel by corpus partition with the "
                      "tokenizer asset's tokenizer; unchanged partitions are reused.")
def token_shards(context: dg.AssetExecutionContext, lake: LakeResource,
                 corpus_settings: CorpusResource) -> dg.MaterializeResult:
    store = lake.lake()
    source, tok_report = lake_tokenizer(store)
    enc = source.load()
    sha = source.sha256
    corpus_dir = store.download_dir("corpus", lake.cache() / "corpus")
    train_path, val_path = corpus_dir / Path(TRAIN_KEY).name, corpus_dir / Path(VAL_KEY).name
    parts = plan_partitions(train_path, "train", PARTITION_BYTES)
    # Validation shards per domain, so evaluation reports loss and bits per byte by domain from exact byte counts.
    val_domains = sorted(pl.scan_parquet(val_path).select(pl.col("domain").unique()).collect()["domain"].to_list())
    for domain in val_domains:
        parts += plan_partitions(val_path, f"val_{domain}", PARTITION_BYTES, domain=domain)
    previous, previous_dir = None, None
    if store.exists(f"{SHARDS_KEY}/{MANIFEST}"):
        previous = store.read_json(f"{SHARDS_KEY}/{MANIFEST}")
        if previous.get("tokenizer", {}).get("sha256") == sha:
            try:
                previous_dir = store.download_dir(SHARDS_KEY, lake.cache() / SHARDS_KEY)
            except ChecksumError as e:
                # An S3 upload that died part-way leaves new shards under the old checksums: nothing of the
                # old folder can be trusted, and this run is the one that replaces it, so encode it all anew.
                context.log.warning(f"The previous shards do not match their checksums ({e}); re-encoding every "
                                    "partition instead of reusing them.")
                previous = None
    with store.staged_dir(SHARDS_KEY) as out:
        by_prefix, report = build_shards(parts, source, sha, out, corpus_settings.shard_tokens,
                                         previous=previous, previous_dir=previous_dir)
        splits = {"train": by_prefix.get("train", []),
                  "val": [{**e, "domain": d} for d in val_domains for e in by_prefix.get(f"val_{d}", [])]}
        val_rows = pl.scan_parquet(val_path).select(pl.len(), pl.col("date").min()).collect().row(0)
        corpus_meta = {"train_key": TRAIN_KEY, "val_key": VAL_KEY, "val_documents": val_rows[0],
                       "train_documents": sum(p.rows for p in parts if p.split == "train"),
                       "val_start": str(val_rows[1]), "partitions": partition_summary(parts)}
        manifest = build_manifest(source, enc, splits, corpus_meta, base=tok_report.get("base"))
        manifest["fingerprint_method"] = FINGERPRINT_METHOD
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    context.log.info(f"{report.partitions} corpus partitions: {report.encoded} encoded by {report.workers} "
                     f"process(es), {report.reused} reused")
    totals = manifest["totals"]
    val_bytes = sum(e["bytes"] for e in splits["val"])
    return dg.MaterializeResult(metadata={
        "uri": dg.MetadataValue.path(store.uri(SHARDS_KEY)),
        "train_tokens": totals["train"],
        "val_tokens": totals["val"],
        "train_shards": len(splits["train"]),
        "val_shards": len(splits["val"]),
        "val_bytes_per_token": round(val_bytes / max(totals["val"], 1), 4),
        "tokenizer": source.kind,
        "tokenizer_sha256": sha[:16],
        "partitions": report.partitions,
        "partitions_encoded": report.encoded,
        "partitions_reused": report.reused,
    })


@dg.asset_check(asset=token_shards, blocking=True,
                description="Every shard's header count matches the manifest, and the manifest totals add up.")
def shard_counts_match(lake: LakeResource) -> dg.AssetCheckResult:
    store = lake.lake()
    manifest = store.read_json(f"{SHARDS_KEY}/{MANIFEST}")
    # Through the shard cache that training and evaluation download into (checksum-verified, kept between
    # runs): not a fresh temp copy of every shard per check. A local lake is read in place.
    local = store.download_dir(SHARDS_KEY, lake.cache() / SHARDS_KEY)
    bad = [e["file"] for entries in manifest["splits"].values() for e in entries
           if shard_token_count(local / e["file"]) != e["tokens"]]
    totals_ok = all(sum(e["tokens"] for e in manifest["splits"][s]) == t for s, t in manifest["totals"].items())
    return dg.AssetCheckResult(passed=not bad and totals_ok, metadata={"mismatched_shards": ", ".join(bad) or "none"})
