"""Continued pretraining: the training asset starts from the latest checkpoint when new shards land,
and from scratch when asked, when the tokenizer or the model shape changed, or when nothing is new.

The trainer runs in this process (a launcher that calls tenali_model.train.train), so these tests
check the asset's choices; the launchers themselves are tested in the other test_launcher_* files."""

import json
from dataclasses import replace
from pathlib import Path

import dagster as dg
import numpy as np

from tenali_model.checkpoint import load_meta, load_train_state
from tenali_model.config import TrainConfig
from tenali_model.data import write_shard
from tenali_pipeline.defs.training.assets import LATEST_KEY, choose_parent, manifest_sha256, pretrain_checkpoint
from tenali_pipeline.lake import Lake
from tenali_pipeline.resources import LakeResource, TrainingResource

TOKENIZER = "a" * 64


class InProcessLauncher(dg.ConfigurableResource):
    """Runs the real trainer in this process and reports what rank 0 would report through Pipes."""

    def launch(self, context, config_path: Path, workdir: Path, extras=None) -> dg.MaterializeResult:
        from tenali_model.train import train

        summary = train(TrainConfig.from_json(config_path))
        return dg.MaterializeResult(metadata={
            "checkpoint": dg.MetadataValue.path(summary["checkpoint"]), "step": summary["step"],
            "tokens_seen": summary["tokens_seen"], "resumed_from_step": summary["resumed_from_step"]})


def write_shards(lake: Lake, n_train: int, tokenizer: str = TOKENIZER) -> dict:
    """Shards and a manifest in the lake's layout; n_train train shards of a learnable pattern."""
    pattern = np.random.default_rng(0).integers(0, 64, size=37)
    folder = lake.local_dir("shards")
    train = []
    for i in range(n_train):
        write_shard(folder / f"train_{i:05d}.bin", np.tile(pattern, 80)[i:i + 2500], vocab_size=64)
        train.append({"file": f"train_{i:05d}.bin", "tokens": 2500})
    write_shard(folder / "val_00000.bin", np.tile(pattern, 20)[:600], vocab_size=64)
    val = [{"file": "val_00000.bin", "tokens": 600, "bytes": 2400, "domain": "market"}]
    manifest = {"tokenizer": {"sha256": tokenizer, "vocab_size": 64}, "splits": {"train": train, "val": val},
                "totals": {"train": 2500 * n_train, "val": 600}}
    lake.write_json("shards/manifest.json", manifest)
    return manifest


def run(lake: Lake, train_from: str = "latest", model: str = "tiny") -> dict:
    training = TrainingResource(model=model, steps=6, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=1,
                                eval_every=0, eval_batches=1, ckpt_every=0, train_from=train_from)
    res = dg.materialize([pretrain_checkpoint], resources={
        "lake": LakeResource(root=lake.root), "training": training, "launcher": InProcessLauncher()})
    assert res.success
    return res.asset_materializations_for_node("pretrain_checkpoint")[0].metadata


def test_new_shards_continue_from_the_latest_checkpoint(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    write_shards(lake, 1)
    first = run(lake)
    assert first["started_from"].value == "scratch (no earlier checkpoint)" and first["step"].value == 6
    latest = lake.read_json(LATEST_KEY)

    manifest = write_shards(lake, 2)  # new shards landed
    second = run(lake)
    assert second["started_from"].value.startswith(f"continued from {latest['checkpoint']}")
    assert second["parent_checkpoint"].value == latest["checkpoint"]
    assert (second["resumed_from_step"].value, second["step"].value) == (6, 12)
    assert second["tokens_seen"].value == 2 * first["tokens_seen"].value  # the count goes on
    assert second["shard_manifest_sha256"].value == manifest_sha256(manifest)[:16]
    assert second["tokenizer_sha256"].value == TOKENIZER[:16]
    pointer = lake.read_json(LATEST_KEY)
    assert pointer["parent_checkpoint"] == latest["checkpoint"]
    assert pointer["shard_manifest_sha256"] == manifest_sha256(manifest)
    # the new run started from the parent's weights and optimizer, with a fresh data position
    run_dir = Path(pointer["checkpoint"]).parent
    seeded = run_dir / Path(latest["checkpoint"]).name
    assert load_train_state(seeded)["loader"] is None and load_train_state(seeded)["optimizer"] is not None
    assert json.loads((run_dir / "parent.json").read_text())["parent_step"] == 6
    assert load_meta(pointer["checkpoint"])["step"] == 12

    # nothing new: a re-run trains from scratch instead of piling steps on the same data
    third = run(lake)
    assert third["started_from"].value.startswith("scratch (same shards") and third["step"].value == 6


def test_scratch_switch_changed_tokenizer_and_changed_model_train_from_scratch(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    write_shards(lake, 1)
    run(lake)
    manifest = write_shards(lake, 2)
    sha = manifest_sha256(manifest)
    cfg = TrainConfig(train_shards=["x"], out_dir="y", model="tiny", vocab_size=64)
    parent, why = choose_parent(lake, manifest, sha, cfg, "latest")
    assert parent is not None and why.startswith("continued")
    assert choose_parent(lake, manifest, sha, cfg, "scratch") == (None, "scratch (TENALI_TRAIN_FROM=scratch)")
    other_tokenizer = write_shards(lake, 2, tokenizer="b" * 64)
    parent, why = choose_parent(lake, other_tokenizer, manifest_sha256(other_tokenizer), cfg, "latest")
    assert parent is None and "tokenizer changed" in why
    parent, why = choose_parent(lake, manifest, sha, replace(cfg, model="demo"), "latest")
    assert parent is None and "model shape differs" in why


def test_a_validation_start_moved_earlier_trains_from_scratch(tmp_path):
    """Backfilled older documents move the time split earlier: continuing the last checkpoint would score
    it on documents it trained on (validation leaking into training), so the run starts from scratch."""
    lake = Lake(str(tmp_path / "lake"))
    manifest = {**write_shards(lake, 1), "corpus": {"val_start": "2024-06-01"}}
    lake.write_json("shards/manifest.json", manifest)
    run(lake)
    cfg = TrainConfig(train_shards=["x"], out_dir="y", model="tiny", vocab_size=64)
    for val_start, continued in (("2024-07-01", True), ("2024-06-01", True), ("2024-05-15", False)):
        moved = {**write_shards(lake, 2), "corpus": {"val_start": val_start}}
        parent, why = choose_parent(lake, moved, manifest_sha256(moved), cfg, "latest")
        assert (parent is not None) is continued, why
    assert "validation now starts on 2024-05-15, before 2024-06-01" in why and why.startswith("scratch")


def test_training_takes_a_slot_of_the_training_pool():
    """Two runs never train on the same GPUs at once: the asset's step waits for the pool's slot
    (limit 1 by default in tenali_pipeline/instance/dagster.yaml and infra/dagster.prod.yaml)."""
    assert pretrain_checkpoint.op.pool == "training"


def test_every_training_step_retries_once_after_the_configured_delay():
    """Pretraining and the post-training stages share one RetryPolicy: one retry, after
    TENALI_TRAINING_RETRY_DELAY seconds (1 in tests, tests/conftest.py; 60 by default)."""
    from tenali_pipeline.definitions import build_definitions
    from tenali_pipeline.settings import Settings

    pooled = [a for a in build_definitions().assets if getattr(a, "op", None) is not None and a.op.pool == "training"]
    assert {a.key.to_user_string() for a in pooled} == {"pretrain_checkpoint", "distilled_checkpoint", "sft_checkpoint",
                                                        "dpo_checkpoint"}
    assert {(a.op.retry_policy.max_retries, a.op.retry_policy.delay) for a in pooled} == {(1, 1.0)}
    assert Settings().training_retry_delay == 60


class RisingLossLauncher(InProcessLauncher):
    """The real trainer, whose logged losses are then made to rise (a run that learned nothing)."""

    def launch(self, context, config_path: Path, workdir: Path, extras=None) -> dg.MaterializeResult:
        result = super().launch(context, config_path, workdir, extras)
        metrics = Path(workdir) / "metrics.jsonl"
        records = [json.loads(line) for line in metrics.read_text().splitlines()]
        for i, r in enumerate(records):
            if r.get("kind") == "train":
                r["loss"] = 1.0 + i
        metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
        return result


def test_a_run_whose_loss_did_not_fall_never_becomes_latest(tmp_path):
    """The loss test runs in the asset before LATEST.json moves: a blocking check stops only its own
    run's downstream steps, while evaluation, post-training, the release and the next run all read
    LATEST.json."""
    lake = Lake(str(tmp_path / "lake"))
    write_shards(lake, 1)
    run(lake)
    good = lake.read_json(LATEST_KEY)
    write_shards(lake, 2)
    training = TrainingResource(model="tiny", steps=6, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=1,
                                eval_every=0, eval_batches=1, ckpt_every=0)
    res = dg.materialize([pretrain_checkpoint], raise_on_error=False, resources={
        "lake": LakeResource(root=lake.root), "training": training, "launcher": RisingLossLauncher()})
    assert not res.success
    failure = res.get_step_failure_events()[0].step_failure_data.error.message
    assert "The training loss did not fall or was not finite" in failure
    assert lake.read_json(LATEST_KEY) == good


def test_evaluation_refuses_a_checkpoint_of_another_tokenizer(tmp_path):
    """The tokenizer and shards were rebuilt since the latest pretraining: scoring (or distilling from)
    that checkpoint on the new shards would read its ids as other text, so the step stops and says why."""
    from tenali_pipeline.defs.evaluation.assets import pretrain_evaluation

    lake = Lake(str(tmp_path / "lake"))
    write_shards(lake, 1)
    run(lake)
    write_shards(lake, 1, tokenizer="b" * 64)
    res = dg.materialize([pretrain_evaluation], raise_on_error=False,
                         resources={"lake": LakeResource(root=lake.root, cache_dir=str(tmp_path / "cache"))})
    assert not res.success
    message = res.get_step_failure_events()[0].step_failure_data.error.message
    assert f"was trained with tokenizer {TOKENIZER[:16]}, but the shards are now made with {'b' * 16}" in message
