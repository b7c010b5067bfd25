"""Pretraining: a launched torchrun step whose rank 0 reports the checkpoint through Dagster Pipes.

Each run trains into its own folder (``checkpoints/pretrain/<run_id>``); a retry of the same run
finds the checkpoints there and the trainer resumes from the latest instead of starting over. On
success the final checkpoint is recorded in ``checkpoints/pretrain/LATEST.json`` for evaluation and
serving. With an S3 lake the shards are first copied to the local cache, training writes there, and
the final checkpoint is uploaded to the lake.

Continued pretraining: when ``LATEST.json`` names a checkpoint trained on another shard manifest
(new shards landed) with the same tokenizer and model shape, the run starts from it: its weights,
optimizer state, step and tokens seen are copied into the run folder as the starting checkpoint (the
data position is reset, the shards being new), and the run trains ``steps`` more. The learning-rate
schedule is the trainer's warmup + cosine over the whole step count, so a continued run restarts at
the schedule's value for its first step. ``TENALI_TRAIN_FROM=scratch`` always starts fresh, and so does
a changed tokenizer (token ids would mean other things) or model shape, or a validation split that now
starts earlier than the parent's did (it trained on documents that are validation now), which is logged
and recorded.
The same manifest as the latest checkpoint (a re-run, e.g. with other settings) also trains from
scratch. Metadata records the parent checkpoint, the shard manifest hash and the tokenizer version;
``lineage.json`` in the run folder records the data it trains on (``data_lineage``), which a release
of its checkpoints describes, however much the lake's data has changed since.

A Hugging Face base (``TENALI_BASE_MODEL``; the shard manifest records it when the shards were encoded
with its tokenizer): the base is imported once per content into ``checkpoints/base/<sha>`` and every
run of that lineage that does not continue a parent starts from its weights (``init_from``, fresh
optimizer); the model shape and vocabulary are the base's, so ``TENALI_MODEL`` does not apply.
Metadata and ``LATEST.json`` name the base (uri and sha256).
"""

from dataclasses import asdict
from pathlib import Path

import hashlib
import json
import math
import os
import shutil
import tempfile

import dagster as dg
from tenali_model.config import TrainConfig, checkpoint_model_config
from tenali_model.recipes import describe

from ...plots import line_chart_svg, markdown_image
from ...resources import LakeResource, TrainingResource
from ...settings import training_retry_delay
from ...tracking import log_stage_safely
from ..corpus.assets import DOCUMENT_ASSETS
from ..shards.assets import MANIFEST, SHARDS_KEY, token_shards

CHECKPOINTS_KEY = "checkpoints/pretrain"
LATEST_KEY = f"{CHECKPOINTS_KEY}/LATEST.json"
BASE_CHECKPOINTS_KEY = "checkpoints/base"  # imported Hugging Face bases, one folder per content sha256
LINEAGE = "lineage.json"  # in a run folder: the data its checkpoints were trained on (data_lineage)


# Trainings wait for each other: one slot per pool by default (instance dagster.yaml), so two runs
# never put two trainings on the same GPUs.
TRAINING_POOL = "training"

# One retry of a training step, after TENALI_TRAINING_RETRY_DELAY seconds: a crash or a lost node (the
# retry resumes from the last checkpoint); the trainer's own refusal of its config is not retried
# (launchers/common.failure).
TRAINING_RETRY = dg.RetryPolicy(max_retries=1, delay=training_retry_delay())


@dg.asset(group_name="training", deps=[token_shards], kinds={"pytorch"}, pool=TRAINING_POOL,
          retry_policy=TRAINING_RETRY,
          description="A LLaMA-style model pretrained on the token shards by a launched torchrun step; "
                      "continues from the latest checkpoint when new shards landed.")
def pretrain_checkpoint(context: dg.AssetExecutionContext, lake: LakeResource, training: TrainingResource,
                        launcher: dg.ResourceParam) -> dg.MaterializeResult:
    store = lake.lake()
    manifest = store.read_json(f"{SHARDS_KEY}/{MANIFEST}")
    manifest_sha = manifest_sha256(manifest)
    shards = store.download_dir(SHARDS_KEY, lake.cache() / SHARDS_KEY)
    run_key, run_dir = run_folder(context, store, lake, CHECKPOINTS_KEY, {"shard_manifest_sha256": manifest_sha})
    base = import_base(context, lake, manifest) if manifest["tokenizer"].get("base") else None
    # from a base: its checkpoint decides the shape and vocabulary (TrainConfig.model_config)
    shape = ({"init_from": base["path"]} if base else
             {"model": training.model, "vocab_size": manifest["tokenizer"]["vocab_size"]})
    # the hyperparameters: the resource's, else the recipe of the model's size (the base's, from a base)
    hyper = training.resolve(checkpoint_model_config(base["path"]) if base else None)
    recipe = hyper.pop("recipe")
    cfg = TrainConfig(
        train_shards=[str(shards / e["file"]) for e in manifest["splits"]["train"]],
        val_shards=[str(shards / e["file"]) for e in manifest["splits"]["val"]],
        out_dir=str(run_dir),
        **shape,
        steps=training.steps,
        **hyper,
    )
    try:
        cfg.validate()
    except ValueError as e:  # ConfigError; from a base typically seq_len past its max_seq_len
        raise dg.Failure(f"The training config is invalid: {e}") from e
    if base and cfg.model_config().vocab_size < manifest["tokenizer"]["vocab_size"]:
        raise dg.Failure(f"The base model {base['uri']} has {cfg.model_config().vocab_size} embeddings, fewer than "
                         f"its tokenizer's {manifest['tokenizer']['vocab_size']} tokens: not a matching pair.")
    parent, why = choose_parent(store, manifest, manifest_sha, cfg, training.train_from)
    if base and parent is None:
        why = f"base model {base['name']} ({base['checkpoint']}); no parent checkpoint: {why}"
    context.log.info(f"starting point: {why}")
    if not store.exists(f"{run_key}/{LINEAGE}"):  # a resumed run keeps what it first trained on
        store.write_json(f"{run_key}/{LINEAGE}", {
            **data_lineage(context.instance, manifest, manifest_sha),
            "continued_from": parent["checkpoint"] if parent else None,
            "base_model": {k: base[k] for k in ("name", "uri", "sha256", "checkpoint")} if base else None})
    context.log.info(f"hyperparameters: the {recipe} recipe where not set (tenali_model/recipes.py): "
                     f"{describe(cfg.to_dict())}")
    if parent is not None:
        parent_dir = store.download_dir(parent["checkpoint_key"], lake.cache() / parent["checkpoint_key"])
        parent_step = seed_from_parent(parent_dir, run_dir)  # nothing to do on a retry: run_dir has its own
        cfg.steps = parent_step + training.steps
    config_path = run_dir / "train_config.json"
    cfg.to_json(config_path)
    result = launcher.launch(context, config_path, workdir=run_dir)
    reported = result.metadata or {}
    ckpt_key, uri, metrics = store_reported_checkpoint(store, reported, run_key, run_dir, "trainer")
    passed, verdict = loss_verdict(metrics)
    if not passed:  # before LATEST.json names it: evaluation, post-training, release and the next run read that
        raise dg.Failure(f"The training loss did not fall or was not finite ({verdict}); {uri} is kept but "
                         f"{LATEST_KEY} still names the previous checkpoint. Check the learning rate and the data, "
                         "or train longer.", metadata=verdict, allow_retries=False)  # a retry would report the same
    store.write_json(LATEST_KEY, {"run_id": context.run_id, "checkpoint_key": ckpt_key, "checkpoint": uri,
                                  "metrics_key": f"{run_key}/metrics.jsonl",
                                  "tokenizer_sha256": manifest["tokenizer"]["sha256"],
                                  "shard_manifest_sha256": manifest_sha,
                                  "parent_checkpoint": parent["checkpoint"] if parent else None,
                                  "base_model": {k: base[k] for k in ("name", "uri", "sha256", "checkpoint")} if base else None})
    tracked = log_stage_safely(context, "pretrain", config=cfg.to_dict(), metrics_jsonl=metrics,
                               summary={k: getattr(v, "value", v) for k, v in reported.items()},
                               tags={"dagster_run_id": context.run_id, "asset": "pretrain_checkpoint", "checkpoint": uri})
    return dg.MaterializeResult(metadata={
        **reported,
        **tracked,
        "checkpoint": dg.MetadataValue.path(uri),
        "loss_plot": dg.MetadataValue.md(loss_curve_markdown(metrics)),
        "tokenizer_sha256": manifest["tokenizer"]["sha256"][:16],
        "shard_manifest_sha256": manifest_sha[:16],
        "started_from": why,
        "parent_checkpoint": dg.MetadataValue.path(parent["checkpoint"]) if parent else "none",
        "base_model": dg.MetadataValue.path(base["uri"]) if base else "none",
        "base_model_sha256": base["sha256"][:16] if base else "none",
        "train_tokens_available": manifest["totals"]["train"],
        "recipe": recipe,
        "train_config": dg.MetadataValue.json(cfg.to_dict()),
    })


def data_lineage(instance, manifest: dict, manifest_sha: str) -> dict:
    """The data a model trained on these shards sees, for a release's model card: each document asset's
    rows, dates and sources (its latest materialisation), the corpus split and the token totals. The run
    records it when it starts, so a release of an older checkpoint describes that checkpoint's data, not
    what the lake holds by the time of the release."""
    sources, firsts, lasts, sample = [], [], [], True
    for a in DOCUMENT_ASSETS:
        ev = instance.get_latest_materialization_event(a.key)
        if ev is None:
            continue
        meta = {k: v.value for k, v in ev.asset_materialization.metadata.items()}
        row = {"asset": a.key.to_user_string(), "rows": meta.get("dagster/row_count"), "first": meta.get("first"),
               "last": meta.get("last"), "sources": meta.get("sources", "")}
        sources.append(row)
        firsts += [row["first"]] if row["first"] else []
        lasts += [row["last"]] if row["last"] else []
        sample = sample and bool(meta.get("sample_data", False))
    corpus = manifest.get("corpus", {})
    return {"sources": sources, "date_range": [min(firsts), max(lasts)] if firsts else None,
            "sample_data": sample and bool(sources), "val_start": corpus.get("val_start"),
            "train_documents": corpus.get("train_documents"), "val_documents": corpus.get("val_documents"),
            "train_tokens": manifest.get("totals", {}).get("train"), "val_tokens": manifest.get("totals", {}).get("val"),
            "tokenizer_sha256": manifest.get("tokenizer", {}).get("sha256"), "shard_manifest_sha256": manifest_sha}


def require_shard_tokenizer(latest: dict, manifest: dict, use: str) -> None:
    """Stop when the checkpoint a LATEST.json names was trained with another tokenizer than the one
    the current shards were made with (tokenizer and shards rebuilt since): its token ids would mean
    other strings, so scoring it or distilling from it on these shards is meaningless."""
    trained, current = latest.get("tokenizer_sha256"), manifest["tokenizer"]["sha256"]
    if trained and trained != current:
        raise dg.Failure(f"{latest['checkpoint']} was trained with tokenizer {trained[:16]}, but the shards are now "
                         f"made with {current[:16]}: {use} on them would read its ids as other text. Materialise "
                         "pretrain_checkpoint (and the stages after it) on the current shards first.",
                         allow_retries=False)


def run_folder(context: dg.AssetExecutionContext, store, lake: LakeResource, prefix: str,
               inputs: dict) -> tuple[str, Path]:
    """(lake key, local folder) this step trains in: its run's own, or, when the run re-executes one
    that failed or was cancelled (Dagster's "Re-execute", from failure or all steps, and run retries
    are new runs with new ids), the folder of the first run of that chain, so training resumes from
    the failed run's checkpoints instead of starting again. Only when the folder was started on the
    same `inputs` (e.g. the shard manifest): a loader position means nothing on other shards, so
    after new data the re-execution starts a folder of its own. `run.json` in the folder records them."""
    from tenali_model.config import atomic_write_text

    def folder(run_id: str) -> tuple[str, Path, dict | None]:
        """Its key, its local path and what its run.json says it was started on (None: nothing yet)."""
        key = f"{prefix}/{run_id}"
        path = store.local_dir(key) if store.is_local else lake.cache() / key
        record = path / "run.json"
        return key, path, json.loads(record.read_text())["inputs"] if record.is_file() else None

    run = context.dagster_run
    parent = context.instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    if parent is not None and parent.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        key, path, started = folder(run.root_run_id or parent.run_id)
        if started == inputs:
            context.log.info(f"re-executing failed run {parent.run_id}: resuming in {key}")
            return key, path
        if started is not None:
            context.log.warning(f"re-executing failed run {parent.run_id}, whose folder {key} was started on other "
                                f"inputs ({started} against {inputs}): starting a folder of its own")
    key, path, started = folder(run.run_id)
    if started is None:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "run.json", json.dumps({"run_id": run.run_id, "inputs": inputs}) + "\n")
    elif started != inputs:  # this run's retry, after new data
        raise dg.Failure(f"{key} holds checkpoints trained on other inputs than this retry's ({started} against "
                         f"{inputs}): the shards (or the parent checkpoint) changed since the step first ran. Launch "
                         "a new run; it continues from the latest checkpoint on the new data.")
    return key, path


def import_base(context, lake: LakeResource, manifest: dict) -> dict:
    """The base model the shards were encoded for, as a Tenali checkpoint in the lake (imported once
    per content sha256) and locally; a base whose tokenizer changed since the shards fails clearly."""
    from tenali_model.checkpoint import sha256_file
    from tenali_model.hf import import_hf

    from ...lake import CHECKSUMS
    from ...tokenization import base_weights_sha256, fetch_base

    store, uri = lake.lake(), manifest["tokenizer"]["base"]["uri"]
    cache = lake.cache() / "base-models" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    try:
        folder = fetch_base(uri, cache, lake.s3_endpoint_url)
        tok = folder / "tokenizer.json"
        if not tok.is_file() or sha256_file(tok) != manifest["tokenizer"]["sha256"]:
            raise ValueError("its tokenizer.json is not the one the shards were encoded with: re-materialise "
                             "tokenizer and token_shards")
        sha = base_weights_sha256(folder)
        key = f"{BASE_CHECKPOINTS_KEY}/{sha[:16]}"
        # complete when there: a local folder appears by rename, an S3 one writes its checksums last
        if not store.exists(f"{key}/meta.json" if store.is_local else f"{key}/{CHECKSUMS}"):
            lake.cache().mkdir(parents=True, exist_ok=True)  # next to the other large copies, not in /tmp
            with tempfile.TemporaryDirectory(prefix="import-", dir=lake.cache()) as tmp:
                store.upload_dir(import_hf(folder, Path(tmp)), key)
            context.log.info(f"imported base model {uri} into {store.uri(key)}")
    except (ValueError, FileNotFoundError) as e:  # ConversionError is a ValueError
        raise dg.Failure(f"The base model {uri} cannot be used: {e}") from e
    return {"name": manifest["tokenizer"]["base"]["name"], "uri": uri, "sha256": sha, "checkpoint_key": key,
            "checkpoint": store.uri(key), "path": str(store.download_dir(key, lake.cache() / key))}


def store_reported_checkpoint(store, reported: dict, run_key: str, run_dir: Path, what: str) -> tuple[str, str, bytes]:
    """The checkpoint rank 0 reported through Pipes, checked and put in the lake under run_key, with the
    run's metrics.jsonl: (checkpoint key, its URI, the metrics bytes). A launched process can exit 0
    without a usable checkpoint (dagster #17868), so a missing one fails the step here."""
    ckpt = reported.get("checkpoint")
    ckpt_path = Path(str(getattr(ckpt, "path", None) or getattr(ckpt, "value", None) or ckpt or ""))
    if not ckpt or not (ckpt_path / "model.safetensors").exists():
        raise dg.Failure(f"The {what} reported no usable checkpoint ({ckpt!r}); see the step's stdout/stderr.")
    ckpt_key = f"{run_key}/{ckpt_path.name}"
    uri = store.upload_dir(ckpt_path, ckpt_key)
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    if not store.is_local:
        store.write_bytes(f"{run_key}/metrics.jsonl", metrics)
    return ckpt_key, uri, metrics


def manifest_sha256(manifest: dict) -> str:
    """The shard manifest's identity: new or re-encoded shards change it, a rebuild of the same ones does not."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def choose_parent(store, manifest: dict, manifest_sha: str, cfg: TrainConfig, train_from: str) -> tuple[dict | None, str]:
    """(LATEST.json's record to continue from, or None; why), by the rules in the module docstring."""
    if train_from == "scratch":
        return None, "scratch (TENALI_TRAIN_FROM=scratch)"
    if not store.exists(LATEST_KEY):
        return None, "scratch (no earlier checkpoint)"
    latest = store.read_json(LATEST_KEY)
    if latest.get("tokenizer_sha256") != manifest["tokenizer"]["sha256"]:
        return None, (f"scratch: the tokenizer changed since {latest['checkpoint']} "
                      f"({str(latest.get('tokenizer_sha256'))[:16]} -> {manifest['tokenizer']['sha256'][:16]}), "
                      "so its token ids mean other things now")
    if latest.get("shard_manifest_sha256") == manifest_sha:
        return None, f"scratch (same shards as {latest['checkpoint']}: nothing new to continue on)"
    config = json.loads(store.read_bytes(f"{latest['checkpoint_key']}/config.json"))
    config.pop("checkpoint_format_version", None)
    if config != asdict(cfg.model_config()):
        return None, f"scratch: the model shape differs from {latest['checkpoint']}'s"
    # The time split moves earlier when older documents are backfilled (the latest 10% of dates is then a
    # longer span): the parent trained on documents that are validation now, and would be scored on them.
    lineage_key = f"{latest['checkpoint_key'].rsplit('/', 1)[0]}/{LINEAGE}"
    before = store.read_json(lineage_key).get("val_start") if store.exists(lineage_key) else None
    now = manifest.get("corpus", {}).get("val_start")
    if before and now and str(now) < str(before):
        return None, (f"scratch: validation now starts on {now}, before {before}, where {latest['checkpoint']}'s "
                      "training documents ended: it trained on documents that are validation now")
    return latest, f"continued from {latest['checkpoint']} (new shards landed)"


def seed_from_parent(parent_dir: Path, run_dir: Path) -> int:
    """Make the parent checkpoint the run's starting checkpoint; returns the step it starts from.

    Weights, optimizer state, step, tokens seen and RNG are kept; the data loader position is dropped
    (the shards are new). ``parent.json`` in the run folder records the parent, so a retry, which finds
    its own checkpoints there, keeps them and the same step target.
    """
    from tenali_model.checkpoint import latest_checkpoint, load_meta, load_train_state, sha256_file
    from tenali_model.config import atomic_write_text

    record = run_dir / "parent.json"
    if latest_checkpoint(run_dir) is not None:
        # a retry: continue this run's own checkpoints (seeded, or from scratch when there is no record)
        return int(json.loads(record.read_text())["parent_step"]) if record.exists() else 0
    import torch

    meta = load_meta(parent_dir)
    atomic_write_text(record, json.dumps({"parent_checkpoint": str(parent_dir), "parent_step": meta["step"],
                                          "parent_tokens_seen": meta["tokens_seen"]}) + "\n")
    tmp = Path(tempfile.mkdtemp(prefix=".seed-", dir=run_dir))
    try:
        for name in ("model.safetensors", "config.json"):
            shutil.copy2(parent_dir / name, tmp / name)
        state = load_train_state(parent_dir)
        state["loader"] = None
        torch.save(state, tmp / "train_state.pt")
        # meta.json checksums train_state.pt: the rewritten one's, or resuming refuses it as corrupt
        (tmp / "meta.json").write_text(json.dumps({**meta, "train_state_sha256": sha256_file(tmp / "train_state.pt")},
                                                  indent=2) + "\n")
        os.replace(tmp, run_dir / parent_dir.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(run_dir / "latest", parent_dir.name + "\n")
    return int(meta["step"])


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
    passed, metadata = loss_verdict(store.read_bytes(latest["metrics_key"]))
    return dg.AssetCheckResult(passed=passed, metadata=metadata)


def loss_verdict(raw_metrics: bytes) -> tuple[bool, dict]:
    """Every logged training loss finite, and the last tenth's mean below the first tenth's (judged
    from two logged points on: one point shows no trend). The asset applies it before moving
    LATEST.json (a blocking check stops only its own run's downstream steps, while every later run
    reads LATEST.json); the check reports it."""
    losses = [r["loss"] for r in _metrics(raw_metrics) if r.get("kind") == "train"]
    finite = bool(losses) and all(math.isfinite(x) for x in losses)
    tenth = max(1, len(losses) // 10)
    first, last = (sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth) if losses else (math.nan, math.nan)
    judged = len(losses) >= 2
    return finite and (last < first or not judged), {
        "logged_points": len(losses), "first_tenth_loss": first, "last_tenth_loss": last, "all_finite": finite,
        "fall_judged": judged}
