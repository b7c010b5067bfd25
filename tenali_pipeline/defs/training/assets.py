"""Pretraining: a launched torchrun step whose rank 0 reports the checkpoint through Dagster Pipes.

Each run trains into its own folder (``checkpoints/pretrain/<run_id>``); a retry of the same run
finds the checkpoints there and the trainer resumes from the latest instead of starting over. On
success the final checkpoint is recorded in ``checkpoints/pretrain/LATEST.json`` for evaluation and
serving. With an S3 lake the shards are first copied to the local cache, training writes there, and
the final checkpoint is uploaded to the lake.
"""

from pathlib import Path

import json
import math

import dagster as dg
from tenali_model.config import TrainConfig

from ...plots import line_chart_svg, markdown_image
from ...resources import LakeResource, TrainingResource
from ..shards.assets import MANIFEST, SHARDS_KEY, token_shards

CHECKPOINTS_KEY = "checkpoints/pretrain"
LATEST_KEY = f"{CHECKPOINTS_KEY}/LATEST.json"


@dg.asset(group_name="training", deps=[token_shards], kinds={"pytorch"},
          retry_policy=dg.RetryPolicy(max_retries=1),
          description="A LLaMA-style model pretrained on the token shards by a launched torchrun step.")
def pretrain_checkpoint(context: dg.AssetExecutionContext, lake: LakeResource, training: TrainingResource,
                        launcher: dg.ResourceParam) -> dg.MaterializeResult:
    store = lake.lake()
    manifest = store.read_json(f"{SHARDS_KEY}/{MANIFEST}")
    shards = store.download_dir(SHARDS_KEY, lake.cache() / SHARDS_KEY)
    run_key = f"{CHECKPOINTS_KEY}/{context.run_id}"
    run_dir = store.local_dir(run_key) if store.is_local else lake.cache() / run_key
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(
        train_shards=[str(shards / e["file"]) for e in manifest["splits"]["train"]],
        val_shards=[str(shards / e["file"]) for e in manifest["splits"]["val"]],
        out_dir=str(run_dir),
        model=training.model,
        vocab_size=manifest["tokenizer"]["vocab_size"],
        steps=training.steps,
        batch_size=training.batch_size,
        seq_len=training.seq_len,
        grad_accum=training.grad_accum,
        lr=training.lr,
        min_lr=training.lr / 10,
        warmup_steps=min(training.warmup_steps, training.steps // 5),
        eval_every=training.eval_every,
        eval_batches=training.eval_batches,
        ckpt_every=training.ckpt_every,
        seed=training.seed,
    )
    cfg.validate()
    config_path = run_dir / "train_config.json"
    cfg.to_json(config_path)
    result = launcher.launch(context, config_path, workdir=run_dir)
    reported = result.metadata or {}
    ckpt = reported.get("checkpoint")
    ckpt_path = Path(str(getattr(ckpt, "path", None) or getattr(ckpt, "value", None) or ckpt or ""))
    if not ckpt or not (ckpt_path / "model.safetensors").exists():
        raise dg.Failure(f"The trainer reported no usable checkpoint ({ckpt!r}); see the step's stdout/stderr.")
    ckpt_key = f"{run_key}/{ckpt_path.name}"
    uri = store.upload_dir(ckpt_path, ckpt_key)
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    if not store.is_local:
        store.write_bytes(f"{run_key}/metrics.jsonl", metrics)
    store.write_json(LATEST_KEY, {"run_id": context.run_id, "checkpoint_key": ckpt_key, "checkpoint": uri,
                                  "metrics_key": f"{run_key}/metrics.jsonl",
                                  "tokenizer_sha256": manifest["tokenizer"]["sha256"]})
    return dg.MaterializeResult(metadata={
        **reported,
        "checkpoint": dg.MetadataValue.path(uri),
        "loss_plot": dg.MetadataValue.md(loss_curve_markdown(metrics)),
        "tokenizer_sha256": manifest["tokenizer"]["sha256"][:16],
        "train_tokens_available": manifest["totals"]["train"],
        "train_config": dg.MetadataValue.json(cfg.to_dict()),
    })


def _metrics(raw: bytes) -> list[dict]:
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def loss_curve_markdown(raw_metrics: bytes) -> str:
    records = _metrics(raw_metrics)
    series = {
        "train loss": [(r["step"], r["loss"]) for r in records if r.get("kind") == "train"],
        "validation loss": [(r["step"], r["val_loss"]) for r in records if r.get("kind") == "val"],
    }
    series = {k: v for k, v in series.items() if v}
    return markdown_image(line_chart_svg(series), "loss curve") if series else "no metrics logged"


@dg.asset_check(asset=pretrain_checkpoint, blocking=True,
                description="Every logged loss is finite and the last tenth of training ends below the first tenth.")
def loss_finite_and_decreasing(lake: LakeResource) -> dg.AssetCheckResult:
    store = lake.lake()
    latest = store.read_json(LATEST_KEY)
    losses = [r["loss"] for r in _metrics(store.read_bytes(latest["metrics_key"])) if r.get("kind") == "train"]
    finite = bool(losses) and all(math.isfinite(x) for x in losses)
    tenth = max(1, len(losses) // 10)
    first, last = (sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth) if losses else (math.nan, math.nan)
    return dg.AssetCheckResult(passed=finite and last < first,
                               metadata={"logged_points": len(losses), "first_tenth_loss": first,
                                         "last_tenth_loss": last, "all_finite": finite})
