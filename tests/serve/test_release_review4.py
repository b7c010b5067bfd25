"""Review 4 of the release: what a release says is true of the model it ships. The card's data lineage is
the released checkpoint's own (recorded when it trained), not the lake's data at release time."""

import hashlib
import json
from pathlib import Path

import dagster as dg
import numpy as np

from tenali_model.config import TrainConfig
from tenali_model.data import write_shard
from tenali_pipeline.defs.corpus.assets import DOCUMENT_ASSETS
from tenali_pipeline.defs.release.assets import LATEST_RELEASE_KEY
from tenali_pipeline.defs.training.assets import LATEST_KEY, LINEAGE, pretrain_checkpoint
from tenali_pipeline.lake import Lake
from tenali_pipeline.resources import LakeResource, TrainingResource
from ts_helpers import materialise_release, record_evaluation


class InProcessLauncher(dg.ConfigurableResource):
    """The real trainer in this process, reporting what rank 0 reports through Pipes."""

    def launch(self, context, config_path: Path, workdir: Path, extras=None) -> dg.MaterializeResult:
        from tenali_model.train import train

        summary = train(TrainConfig.from_json(config_path))
        return dg.MaterializeResult(metadata={
            "checkpoint": dg.MetadataValue.path(summary["checkpoint"]), "step": summary["step"],
            "tokens_seen": summary["tokens_seen"]})


def _data_state(lake: Lake, instance, tok_sha: str, vocab: int, n_train: int, val_start: str, last: str) -> None:
    """Documents (as their asset records them) and shards with a manifest: one state of the lake's data."""
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=DOCUMENT_ASSETS[0].key, metadata={
        "dagster/row_count": 10 * n_train, "first": "2019-01-01", "last": last, "sources": "sample"}))
    pattern = np.random.default_rng(0).integers(0, vocab, size=37)
    folder = lake.local_dir("shards")
    train = []
    for i in range(n_train):
        write_shard(folder / f"train_{i:05d}.bin", np.tile(pattern, 80)[i:i + 2500], vocab_size=vocab)
        train.append({"file": f"train_{i:05d}.bin", "tokens": 2500})
    write_shard(folder / "val_00000.bin", np.tile(pattern, 20)[:600], vocab_size=vocab)
    val = [{"file": "val_00000.bin", "tokens": 600, "bytes": 2400, "documents": 2, "domain": "market"}]
    lake.write_json("shards/manifest.json", {
        "tokenizer": {"sha256": tok_sha, "vocab_size": vocab},
        "corpus": {"val_start": val_start, "train_documents": 10 * n_train, "val_documents": 2},
        "splits": {"train": train, "val": val}, "totals": {"train": 2500 * n_train, "val": 600}})


def _train(lake: Lake, instance) -> str:
    training = TrainingResource(model="tiny", steps=4, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=1,
                                eval_every=0, eval_batches=1, ckpt_every=0)
    res = dg.materialize([pretrain_checkpoint], instance=instance, resources={
        "lake": LakeResource(root=lake.root), "training": training, "launcher": InProcessLauncher()})
    assert res.success
    return lake.read_json(LATEST_KEY)["checkpoint_key"]


def _card(lake: Lake, release_id: str) -> tuple[str, dict]:
    folder = lake.local_dir(f"releases/{release_id}")
    return (folder / "README.md").read_text(), json.loads((folder / "release.json").read_text())


def test_a_release_of_an_older_checkpoint_describes_the_data_it_was_trained_on(tmp_path, tok_path, served):
    """Two trainings on two data states; 'best' releases the first checkpoint after the second landed: the
    card gives its own data (2,500 train tokens, validation from 2020-01-01, documents to 2020-06-30), not
    the lake's data at release time (5,000 tokens, 2024). A checkpoint trained before runs recorded their
    data, on a manifest that is not the lake's, says its data is not known instead of another run's. The base
    model the card names is the checkpoint's run's, not the one the newest run (LATEST.json) started from."""
    lake = Lake(str(tmp_path / "lake"))
    tok = tok_path.read_bytes()
    lake.write_bytes("tokenizer/tenali.model", tok)
    sha, vocab = hashlib.sha256(tok).hexdigest(), served.tokenizer.vocab_size
    instance = dg.DagsterInstance.ephemeral()
    resources = {"lake": LakeResource(root=lake.root, cache_dir=str(tmp_path / "cache"))}

    _data_state(lake, instance, sha, vocab, 1, "2020-01-01", "2020-06-30")
    old = _train(lake, instance)
    _data_state(lake, instance, sha, vocab, 2, "2024-01-01", "2024-06-30")
    new = _train(lake, instance)
    assert old != new
    record_evaluation(instance, lake, old, 1.0)
    record_evaluation(instance, lake, new, 2.0)
    # the newest run named a base model (one of a family sharing the tokenizer); the older checkpoint had none
    latest = lake.read_json(LATEST_KEY)
    lake.write_json(LATEST_KEY, {**latest, "base_model": {"name": "other-base", "uri": "/bases/other", "sha256": "b" * 64,
                                                          "checkpoint": "/lake/checkpoints/base/bbbb"}})

    result, check = materialise_release(instance, resources, pick="best")
    assert result.success and check.passed
    pointer = lake.read_json(LATEST_RELEASE_KEY)
    assert pointer["checkpoint_key"] == old
    card, release = _card(lake, pointer["release_id"])
    lineage = release["lineage"]
    assert (lineage["train_tokens"], lineage["val_start"], lineage["date_range"]) == (
        2500, "2020-01-01", ["2019-01-01", "2020-06-30"])
    assert "2,500 training tokens" in card and "2020-01-01" in card and "2020-06-30" in card
    assert "5,000" not in card and "2024" not in card
    assert release["base_model"] is None and "pretrained from scratch" in card and "other-base" not in card

    # the newer checkpoint (continued from the older one) has the lake's current data, and says so
    result, check = materialise_release(instance, resources, checkpoint_key=new, replace_incomparable=True)
    card, release = _card(lake, result.asset_materializations_for_node("model_release")[0].metadata["release_id"].value)
    assert release["lineage"]["train_tokens"] == 5000 and "2024-06-30" in card and "Continued from" in card

    # an instruction-tuned model of the older checkpoint: its lineage is that checkpoint's (the stage's record)
    import shutil

    sft = "checkpoints/sft/run-a/" + old.rsplit("/", 1)[1]
    shutil.copytree(lake.local_dir(old), lake.local_dir(sft))
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="sft_checkpoint", metadata={
        "checkpoint": dg.MetadataValue.path(lake.uri(sft)), "parent_checkpoint": dg.MetadataValue.path(lake.uri(old))}))
    record_evaluation(instance, lake, sft, 1.0, asset="sft_evaluation")
    result, check = materialise_release(instance, resources, checkpoint_key=sft)
    card, release = _card(lake, result.asset_materializations_for_node("model_release")[0].metadata["release_id"].value)
    assert release["stage"] == "sft" and release["lineage"]["train_tokens"] == 2500 and "2020-06-30" in card

    # before runs recorded their data: the older checkpoint's manifest is not the lake's, so no lineage is given
    (lake.local_dir(old).parent / LINEAGE).unlink()
    record_evaluation(instance, lake, old, 0.9)  # a new figure, so a new release rather than the same one
    result, check = materialise_release(instance, resources, checkpoint_key=old)
    card, release = _card(lake, result.asset_materializations_for_node("model_release")[0].metadata["release_id"].value)
    assert release["lineage"]["recorded"] == "unknown" and release["lineage"]["train_tokens"] is None
    assert "training data not known" in card and "2024" not in card


def test_an_evaluation_from_another_lake_root_does_not_stop_releases(lake_setup):
    """The Dagster instance keeps evaluations made before TENALI_LAKE_ROOT moved; their checkpoint paths are
    not keys of this lake. 'auto' releases this lake's evaluated checkpoint, and 'latest', which picks the
    other lake's, fails saying so, instead of both crashing on "lake keys are relative paths"."""
    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.5)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="pretrain_evaluation", metadata={
        "bits_per_byte": 1.0, "checkpoint": dg.MetadataValue.path("/old/lake/checkpoints/pretrain/x/step_00000001")}))
    result, check = materialise_release(instance, resources)
    assert result.success and check.passed and lake.read_json(LATEST_RELEASE_KEY)["checkpoint_key"] == keys[0]
    result, _ = materialise_release(instance, resources, pick="latest")
    failure = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error.message
    assert "evaluated in another lake than this one" in failure
