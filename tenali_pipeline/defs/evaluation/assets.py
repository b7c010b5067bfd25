"""Evaluation of the pretrained checkpoint on the temporal validation split.

Validation loss (nats per token), perplexity and bits per byte are numeric metadata, so the Dagster
UI plots them across materialisations; sample generations show what the model has learned.
Bits per byte uses the validation shards' exact UTF-8 byte count from the manifest, which makes it
comparable across tokenizers.
"""

import math

import dagster as dg
import torch
from tenali_model.checkpoint import load_model
from tenali_model.evaluate import evaluate_checkpoint
from tenali_model.generate import generate

from ...resources import LakeResource
from ...tokenization import load_tokenizer
from ..shards.assets import MANIFEST, SHARDS_KEY
from ..tokenizer.assets import MODEL_KEY
from ..training.assets import LATEST_KEY, pretrain_checkpoint

PROMPTS = ["AAPL rose", "US economic data for", "Technical picture for MSFT", "Dividend yield is"]


@dg.asset(group_name="evaluation", deps=[pretrain_checkpoint], kinds={"pytorch"},
          description="Validation loss, perplexity and bits per byte of the latest pretraining checkpoint, with samples.")
def pretrain_evaluation(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    store = lake.lake()
    latest = store.read_json(LATEST_KEY)
    manifest = store.read_json(f"{SHARDS_KEY}/{MANIFEST}")
    shards = store.download_dir(SHARDS_KEY, lake.cache() / SHARDS_KEY)
    checkpoint = str(store.download_dir(latest["checkpoint_key"], lake.cache() / latest["checkpoint_key"]))
    val = manifest["splits"]["val"]
    val_tokens, val_bytes = sum(e["tokens"] for e in val), sum(e["bytes"] for e in val)
    metrics = evaluate_checkpoint(checkpoint, [str(shards / e["file"]) for e in val],
                                  batch_size=8, bytes_per_token=val_bytes / val_tokens)
    sp = load_tokenizer(store.read_bytes(MODEL_KEY))
    model = load_model(checkpoint)
    samples = []
    for i, prompt in enumerate(PROMPTS):
        idx = torch.tensor([sp.encode(prompt)], dtype=torch.long)
        out = generate(model, idx, max_new_tokens=48, temperature=0.8, top_k=40, seed=i,
                       eos_id=sp.piece_to_id("<|endoftext|>"))
        samples.append(f"**{prompt}** → {sp.decode(out[0, idx.shape[1]:].tolist())}")
    context.log.info(f"val_loss={metrics['val_loss']:.4f} bpb={metrics['bits_per_byte']:.4f}")
    return dg.MaterializeResult(metadata={
        "val_loss": metrics["val_loss"],
        "perplexity": metrics["perplexity"],
        "bits_per_byte": metrics["bits_per_byte"],
        "val_tokens_evaluated": metrics["tokens"],
        "checkpoint_step": metrics["step"],
        "checkpoint": dg.MetadataValue.path(latest["checkpoint"]),
        "samples": dg.MetadataValue.md("\n\n".join(samples)),
    })


@dg.asset_check(asset=pretrain_evaluation, description="Evaluation metrics exist and are finite.")
def metrics_finite(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(pretrain_evaluation.key)
    meta = event.asset_materialization.metadata if event else {}
    values = {k: meta[k].value for k in ("val_loss", "perplexity", "bits_per_byte") if k in meta}
    ok = len(values) == 3 and all(math.isfinite(v) for v in values.values())
    return dg.AssetCheckResult(passed=ok, metadata={k: float(v) for k, v in values.items()})
