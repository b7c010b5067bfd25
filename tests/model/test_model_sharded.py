"""Sharded checkpoints (tenali_model/sharded.py): round trip, integrity, refusal of pickled code and
bit-identical resumes, in one process and on two DDP ranks. FSDP ranks: test_model_train.py."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp

from tenali_model.checkpoint import (CheckpointError, is_sharded, load_model, load_train_state, read_weights,
                                     sha256_file, verify_checkpoint)
from tenali_model.config import ConfigError, ModelConfig, TrainConfig, preset
from tenali_model.data import write_shard
from tenali_model.model import Transformer
from tenali_model.sharded import SafeLoadPlanner, SafeReader, load_sharded, save_sharded
from tenali_model.train import param_groups, train
from tm_helpers import REPO_ROOT, flip, subprocess_env, tiny_config


def trained(seed=0, **kw):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(**{**vars(preset("tiny")), "vocab_size": 64, **kw}))
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    for _ in range(2):
        idx = torch.randint(0, 64, (2, 8))
        model(idx, idx)[1].backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def saved(tmp_path, **kw):
    model, opt = trained(**kw)
    path = save_sharded(tmp_path, step=7, model=model, optimizer=opt, tokens_seen=99, loss=2.5,
                        loader_state={"position": 3})
    return model, opt, path


def test_round_trip_in_one_process(tmp_path):
    model, opt, path = saved(tmp_path)
    assert path == tmp_path / "step_00000007" and is_sharded(path)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "meta.json", "sharded", "train_state.pt"]
    meta = verify_checkpoint(path)
    assert meta["model_sha256"] is None and meta["sharded"]["format"] == "torch.distributed.checkpoint"
    assert sorted(meta["sharded"]["sha256"]) == [".metadata", "__0_0.distcp"]
    state = load_train_state(path)
    assert (state["step"], state["tokens_seen"], state["loader"]) == (7, 99, {"position": 3})
    assert set(state["optimizer"]) == {"param_groups"}  # names, lr, betas, decay; the moments are shards

    # read whole (what evaluation, export and serving do), the tie restored
    loaded = load_model(path)
    assert loaded.lm_head.weight is loaded.tok_embeddings.weight
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name

    # into a fresh model and optimizer (what a resume does): the same weights and AdamW state
    fresh, fresh_opt = trained(seed=1)
    fresh_opt = torch.optim.AdamW(param_groups(fresh, 0.1), lr=5e-4)
    load_sharded(path, fresh, fresh_opt, state["optimizer"]["param_groups"])
    assert fresh.lm_head.weight is fresh.tok_embeddings.weight
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    a, b = opt.state_dict(), fresh_opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i, s in a["state"].items():
        for key, value in s.items():
            assert torch.equal(b["state"][i][key], value), (i, key)


def test_export_takes_a_sharded_checkpoint(tmp_path):
    """transformers loads the export of a sharded checkpoint and computes our logits."""
    transformers = pytest.importorskip("transformers")
    from tenali_model.hf import export_hf

    model, _, path = saved(tmp_path)
    out = export_hf(path, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    idx = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model.eval()(idx)[0], rtol=0, atol=1e-4)


def test_untied_model_keeps_its_head(tmp_path):
    model, _, path = saved(tmp_path, tie_embeddings=False)
    weights, _ = read_weights(path)
    assert torch.equal(weights["lm_head.weight"], model.lm_head.weight)
    assert not torch.equal(weights["lm_head.weight"], weights["tok_embeddings.weight"])


def test_a_flipped_byte_a_lost_file_and_a_stray_file_are_named(tmp_path):
    _, _, path = saved(tmp_path)
    shard = path / "sharded" / "__0_0.distcp"
    flip(shard)
    with pytest.raises(CheckpointError, match=r"sharded/__0_0.distcp sha256 mismatch"):
        verify_checkpoint(path)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        read_weights(path)
    shard.unlink()
    with pytest.raises(CheckpointError, match=r"sharded/ is missing __0_0.distcp"):
        verify_checkpoint(path)
    _, _, path = saved(tmp_path / "b")
    (path / "sharded" / "__1_0.distcp").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="files meta.json does not list: __1_0.distcp"):
        verify_checkpoint(path)


def test_ranks_share_the_hashing_and_together_miss_nothing(tmp_path):
    """verify_checkpoint(part=(rank, world)): each file is hashed by exactly one rank, so a resume on
    N ranks hashes a checkpoint once, N files at a time; whichever file is corrupt, one rank says so."""
    from tenali_model.checkpoint import save_checkpoint

    model, opt = trained()
    full = save_checkpoint(tmp_path / "full", step=1, model=model, optimizer=opt)
    path = save_sharded(tmp_path / "sharded", step=1, model=model, optimizer=opt)
    # two shard files, as two ranks would write: copy rank 0's under rank 1's name and list it
    shard = path / "sharded" / "__1_0.distcp"
    shard.write_bytes((path / "sharded" / "__0_0.distcp").read_bytes())
    meta = json.loads((path / "meta.json").read_text())
    meta["sharded"]["sha256"]["__1_0.distcp"] = sha256_file(shard)
    (path / "meta.json").write_text(json.dumps(meta))

    def failing(ckpt, world):
        found = []
        for rank in range(world):
            try:
                verify_checkpoint(ckpt, part=(rank, world))
            except CheckpointError:
                found.append(rank)
        return found
    for ckpt in (full, path):
        assert failing(ckpt, 2) == []
    flip(full / "model.safetensors")
    assert failing(full, 2) == [0] and failing(full, 1) == [0]
    flip(full / "model.safetensors")
    flip(full / "train_state.pt")
    assert failing(full, 2) == [1] and failing(full, 3) == [2]
    for name, rank in ((".metadata", 0), ("__0_0.distcp", 1), ("__1_0.distcp", 0)):
        flip(path / "sharded" / name)
        assert failing(path, 2) == [rank], name
        assert failing(path, 1) == [0], name
        flip(path / "sharded" / name)


def test_a_full_disk_fails_the_sharded_save_naming_it_and_keeps_the_checkpoint_before(tmp_path, monkeypatch):
    import errno

    from tenali_model import sharded
    from tenali_model.checkpoint import latest_checkpoint, list_checkpoints

    model, opt = trained()
    first = save_sharded(tmp_path, step=1, model=model, optimizer=opt)

    def full_disk(state, storage_writer, **kw):
        Path(storage_writer.path).mkdir(parents=True)
        (Path(storage_writer.path) / "__0_0.distcp").write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sharded.dcp, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"no space left .* rank 0 saved its shard of step 2: disk full"):
        save_sharded(tmp_path, step=2, model=model, optimizer=opt)
    assert list_checkpoints(tmp_path) == [first] and latest_checkpoint(tmp_path) == first
    assert not list(tmp_path.glob(".tmp-*"))


class Payload:
    """What a crafted checkpoint would smuggle in: unpickling it runs code."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_metadata_that_would_run_code_is_refused(tmp_path, monkeypatch):
    """DCP's own reader unpickles .metadata with plain pickle; ours refuses any global outside DCP's
    record types, even when meta.json's sha256 agrees (whoever wrote the file wrote meta.json too)."""
    monkeypatch.chdir(tmp_path)
    _, _, path = saved(tmp_path)
    metadata = path / "sharded" / ".metadata"
    metadata.write_bytes(pickle.dumps(Payload()))
    meta = json.loads((path / "meta.json").read_text())
    meta["sharded"]["sha256"][".metadata"] = sha256_file(metadata)
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"cannot read \.metadata: .*posix.system is not a DCP metadata type"):
        read_weights(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")
def test_non_tensor_entries_load_weights_only(tmp_path, monkeypatch):
    """DCP stores non-tensor values as torch.save bytes and its default planner loads them with
    weights_only=False; SafeLoadPlanner loads them with weights_only=True."""
    monkeypatch.chdir(tmp_path)
    dcp.save({"x": {"ok": 1.5, "bad": Payload()}}, checkpoint_id=tmp_path / "c", no_dist=True)
    ok = {"x": {"ok": 0.0}}
    dcp.load(ok, storage_reader=SafeReader(tmp_path / "c"), planner=SafeLoadPlanner(), no_dist=True)
    assert ok["x"]["ok"] == 1.5
    with pytest.raises(BaseException, match="Weights only load failed|Unsupported global"):
        dcp.load({"x": {"bad": None}}, storage_reader=SafeReader(tmp_path / "c"), planner=SafeLoadPlanner(),
                 no_dist=True)
    assert not (tmp_path / "pwned").exists()


def assert_same_run(run_a: Path, run_b: Path) -> None:
    """Bit for bit: the same training losses at every logged step, the same weights at step 6."""
    def losses(run_dir):
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]
    assert losses(run_a) and losses(run_a) == losses(run_b)  # logged steps, not two empty logs
    a, b = read_weights(run_a / "step_00000006")[0], read_weights(run_b / "step_00000006")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_a_sharded_checkpoint_is_bit_identical(tmp_path):
    """checkpoint_format "sharded" in one process: stopped at step 3 and resumed, the run equals an
    uninterrupted one exactly (losses and weights), and its last checkpoint is consolidated."""
    tokens = np.tile(np.random.default_rng(0).integers(0, 64, size=37), 200)
    write_shard(tmp_path / "t.bin", tokens, vocab_size=64)
    kw = dict(train_shards=[str(tmp_path / "t.bin")], model={"preset": "tiny", "vocab_size": 64, "max_seq_len": 32},
              steps=6, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=2, log_every=1, ckpt_every=3, device="cpu",
              num_threads=1, seed=7, checkpoint_format="sharded")
    train(TrainConfig(out_dir=str(tmp_path / "a"), **kw))
    train(TrainConfig(out_dir=str(tmp_path / "b"), **kw), stop_at=3)
    assert is_sharded(tmp_path / "b" / "step_00000003")
    summary = train(TrainConfig(out_dir=str(tmp_path / "b"), **kw))
    assert summary["resumed_from_step"] == 3
    assert not is_sharded(tmp_path / "b" / "step_00000006")  # the last one: model.safetensors
    assert_same_run(tmp_path / "a", tmp_path / "b")


def test_ddp_ranks_resume_from_a_sharded_checkpoint_bit_identically(shards, tmp_path):
    """checkpoint_format "sharded" under DDP on two gloo ranks: stopped at step 3 and rerun, the run
    equals an uninterrupted two-rank run exactly (every rank reads the whole replicated state)."""
    def run(out, *extra):
        cfg = tmp_path / f"{out}.json"
        tiny_config(shards, tmp_path / out, steps=6, log_every=1, eval_every=0, ckpt_every=3, batch_size=4,
                    parallelism="ddp", checkpoint_format="sharded").to_json(cfg)
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "tenali_model.train", "--config", str(cfg), *extra], cwd=REPO_ROOT,
                              env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    run("stopped", "--stop-at-step", "3")
    assert is_sharded(tmp_path / "stopped" / "step_00000003")
    assert "resuming from" in run("stopped") and not is_sharded(tmp_path / "stopped" / "step_00000006")
    run("whole")
    assert_same_run(tmp_path / "stopped", tmp_path / "whole")


def test_checkpoint_format_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="checkpoint_format must be 'auto', 'full' or 'sharded'"):
        TrainConfig(train_shards=["a"], out_dir="o", checkpoint_format="dcp").validate()
