"""Evaluation of the pretrained checkpoint on the temporal validation split, per domain.

Validation loss (nats per token), perplexity and bits per byte, overall and for each domain, are
numeric metadata, so the Dagster UI plots them across materialisations; sample generations show what
the model has learned. Bits per byte uses the validation shards' exact UTF-8 byte counts from the
manifest, which makes it comparable across tokenizers. The overall figures weight each domain by its
evaluated tokens.
"""

import math

import dagster as dg
import torch
from tenali_model.checkpoint import load_meta, load_model
from tenali_model.evaluate import evaluate_model
from tenali_model.generate import generate

from ...resources import LakeResource
from ...tokenization import load_tokenizer
from ..shards.assets import MANIFEST, SHARDS_KEY
from ..tokenizer.assets import MODEL_KEY
from ..training.assets import LATEST_KEY, pretrain_checkpoint

PROMPTS = ["AAPL rose", "US economic data for", "Technical picture for MSFT", "Dividend yield is"]
# A new checkpoint may be this much worse than the previous one before the check warns.
REGRESSION_TOLERANCE = 0.05


@dg.asset(group_name="evaluation", deps=[pretrain_checkpoint], kinds={"pytorch"},
          description="Validation loss, perplexity and bits per byte (overall and per domain) of the latest "
                      "pretraining checkpoint, with sample generations.")
def pretrain_evaluation(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    store = lake.lake()
    latest = store.read_json(LATEST_KEY)
    manifest = store.read_json(f"{SHARDS_KEY}/{MANIFEST}")
    shards = store.download_dir(SHARDS_KEY, lake.cache() / SHARDS_KEY)
    checkpoint = str(store.download_dir(latest["checkpoint_key"], lake.cache() / latest["checkpoint_key"]))
    model = load_model(checkpoint)

    by_domain: dict[str, dict] = {}
    for domain in sorted({e.get("domain", "all") for e in manifest["splits"]["val"]}):
        entries = [e for e in manifest["splits"]["val"] if e.get("domain", "all") == domain]
        tokens, n_bytes = sum(e["tokens"] for e in entries), sum(e["bytes"] for e in entries)
        try:
            by_domain[domain] = evaluate_model(model, [str(shards / e["file"]) for e in entries],
                                               batch_size=8, bytes_per_token=n_bytes / tokens)
        except ValueError as e:  # fewer tokens than one window
            context.log.warning(f"validation domain {domain!r} skipped: {e}")
    if not by_domain:
        raise dg.Failure("No validation domain has enough tokens for one window: lower seq_len or move TENALI_VAL_START earlier.")
    total = sum(m["tokens"] for m in by_domain.values())
    val_loss = sum(m["val_loss"] * m["tokens"] for m in by_domain.values()) / total
    bpb = sum(m["bits_per_byte"] * m["tokens"] for m in by_domain.values()) / total

    sp = load_tokenizer(store.read_bytes(MODEL_KEY))
    samples = []
    for i, prompt in enumerate(PROMPTS):
        idx = torch.tensor([sp.encode(prompt)], dtype=torch.long)
        out = generate(model, idx, max_new_tokens=48, temperature=0.8, top_k=40, seed=i,
                       eos_id=sp.piece_to_id("<|endoftext|>"))
        samples.append(f"**{prompt}** → {sp.decode(out[0, idx.shape[1]:].tolist())}")
    context.log.info(f"val_loss={val_loss:.4f} bits_per_byte={bpb:.4f} over {total:,} tokens")
    table = "\n".join(f"| {d} | {m['tokens']:,} | {m['val_loss']:.4f} | {m['perplexity']:.2f} | {m['bits_per_byte']:.4f} |"
                      for d, m in by_domain.items())
    metadata = {
        "val_loss": val_loss,
        "perplexity": math.exp(val_loss),
        "bits_per_byte": bpb,
        "val_tokens_evaluated": total,
        "checkpoint_step": load_meta(checkpoint)["step"],
        "checkpoint": dg.MetadataValue.path(latest["checkpoint"]),
        "by_domain": dg.MetadataValue.md("| domain | tokens | loss | perplexity | bits/byte |\n|---|---:|---:|---:|---:|\n" + table),
        "samples": dg.MetadataValue.md("\n\n".join(samples)),
    }
    for d, m in by_domain.items():  # one plotted series per domain
        metadata[f"val_loss/{d}"] = m["val_loss"]
        metadata[f"bits_per_byte/{d}"] = m["bits_per_byte"]
    return dg.MaterializeResult(metadata=metadata)


def _latest_values(context: dg.AssetCheckExecutionContext, limit: int) -> list[dict]:
    records = context.instance.fetch_materializations(pretrain_evaluation.key, limit=limit).records
    return [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in records]


@dg.asset_check(asset=pretrain_evaluation, description="Evaluation metrics exist and are finite.")
def metrics_finite(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    meta = (_latest_values(context, 1) or [{}])[0]
    values = {k: meta[k] for k in ("val_loss", "perplexity", "bits_per_byte") if k in meta}
    ok = len(values) == 3 and all(math.isfinite(v) for v in values.values())
    return dg.AssetCheckResult(passed=ok, metadata={k: float(v) for k, v in values.items()})


@dg.asset_check(asset=pretrain_evaluation,
                description=f"Bits per byte no worse than the previous evaluation's by more than {REGRESSION_TOLERANCE:.0%}.")
def no_regression(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    history = _latest_values(context, 2)
    if len(history) < 2:
        return dg.AssetCheckResult(passed=True, metadata={"previous": "none: first evaluation"})
    current, previous = history[0]["bits_per_byte"], history[1]["bits_per_byte"]
    return dg.AssetCheckResult(
        passed=current <= previous * (1 + REGRESSION_TOLERANCE),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"bits_per_byte": current, "previous_bits_per_byte": previous,
                  "change": current / previous - 1},
    )
