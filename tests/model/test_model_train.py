"""The trainer: learning, exact resume, CLI errors, torchrun + Dagster Pipes from rank 0 only."""

import base64
import json
import re
import shutil
import subprocess
import zlib

import pytest
import torch
from safetensors.torch import load_file

import numpy as np

from tenali_model.checkpoint import (latest_checkpoint, list_checkpoints, load_meta, load_train_state,
                                     read_weights)
from tenali_model.config import TrainConfig
from tenali_model.data import write_shard
from tenali_model.model import Transformer
from tenali_model.parallel import load_full_state
from tenali_model.plan import flops_per_token
from tenali_model.train import lr_at, main, param_groups, train
from tm_helpers import PYTHON, REPO_ROOT, SEQ, VOCAB, flip, subprocess_env, tiny_config


def read_metrics(out_dir):
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_on_a_learnable_stream(shards, tmp_path):
    out = tmp_path / "run"
    summary = train(tiny_config(shards, out, steps=80, log_every=5, eval_every=40, ckpt_every=40))
    assert summary["final_loss"] < 0.7 * summary["initial_loss"]
    assert summary["val_loss"] < 0.7 * summary["initial_loss"]
    assert summary["complete"] and summary["step"] == 80
    assert summary["tokens_seen"] == 80 * 8 * 32
    rows = read_metrics(out)
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(5, 81, 5))
    assert set(train_rows[0]) == {"kind", "step", "loss", "lr", "grad_norm", "tokens_seen",
                                  "tokens_per_sec", "elapsed"}
    assert [r["step"] for r in rows if r["kind"] == "val"] == [40, 80]
    assert [p.name for p in list_checkpoints(out)] == ["step_00000040", "step_00000080"]
    assert latest_checkpoint(out).name == "step_00000080"
    meta = json.loads((out / "step_00000080" / "meta.json").read_text())
    assert meta["val_loss"] == summary["val_loss"]
    assert meta["train_config"]["steps"] == 80


def test_resume_is_bit_identical_to_an_uninterrupted_run(shards, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    train(tiny_config(shards, full, grad_accum=2))
    first = train(tiny_config(shards, split, grad_accum=2), stop_at=20)
    assert first["step"] == 20 and not first["complete"]
    assert latest_checkpoint(split).name == "step_00000020"
    # A run killed after its step-20 checkpoint: it logged steps past 20 and left a torn line
    # and a half-written checkpoint directory behind.
    with open(split / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "train", "step": 25, "loss": 9.9}) + "\n" + '{"kind": "tr')
    (split / ".tmp-step_00000030-dead").mkdir()
    second = train(tiny_config(shards, split, grad_accum=2))
    assert second["resumed_from_step"] == 20 and second["step"] == 40

    a = load_file(str(full / "step_00000040" / "model.safetensors"))
    b = load_file(str(split / "step_00000040" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    opt_a = load_train_state(full / "step_00000040")["optimizer"]["state"]
    opt_b = load_train_state(split / "step_00000040")["optimizer"]["state"]
    for i in opt_a:
        assert torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"])

    ra, rb = read_metrics(full), read_metrics(split)
    assert [r["step"] for r in rb] == [r["step"] for r in ra]  # continues, no duplicates
    assert [r.get("loss") for r in rb] == [r.get("loss") for r in ra]
    assert [r.get("val_loss") for r in rb] == [r.get("val_loss") for r in ra]

    again = train(tiny_config(shards, split, grad_accum=2))  # already finished: nothing to do
    assert again["step"] == 40 and again["resumed_from_step"] == 40
    assert read_metrics(split) == rb


def test_compile_trains_like_eager_and_saves_plain_weights(shards, tmp_path, monkeypatch, capsys):
    """The trainer's `compile` switch (what bench/bench_mfu.py --compile and the GPU runs use): the same
    losses as eager within float reassociation (inductor fuses the plain loss; the chunked head is for
    eager), and a checkpoint of the module itself (no `_orig_mod.` names) that eager code loads."""
    kw = dict(steps=6, log_every=2, eval_every=6, ckpt_every=6)
    eager = train(tiny_config(shards, tmp_path / "eager", **kw))
    compiled_modules = []
    real_compile = torch.compile

    def spy(model, *args, **kwargs):
        compiled_modules.append(type(model).__name__)
        return real_compile(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    compiled = train(tiny_config(shards, tmp_path / "compiled", compile=True, **kw))
    assert compiled_modules == ["Transformer"] and "+ torch.compile |" in capsys.readouterr().out
    losses = {name: [r["loss"] for r in read_metrics(tmp_path / name) if r["kind"] == "train"]
              for name in ("eager", "compiled")}
    assert len(losses["eager"]) == 3
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-4)
    from tenali_model.checkpoint import load_model

    model = load_model(latest_checkpoint(tmp_path / "compiled"))
    assert not any("_orig_mod" in name for name in model.state_dict())


def poison_gradients_at(monkeypatch, module, call: int) -> None:
    """From the `call`-th optimizer step of `module`'s loop on, every gradient is NaN when clipped
    (a loss spike that overflows): the step then writes NaN into the weights."""
    import tenali_model.parallel as parallel
    calls = [0]

    def clip(model, max_norm):
        calls[0] += 1
        if calls[0] >= call:
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))
        return parallel.clip_grad_norm(model, max_norm)

    monkeypatch.setattr(module, "clip_grad_norm", clip)


@pytest.mark.parametrize("poisoned, message, saved", [
    (3, r"loss is nan at step 4; the last good checkpoint is .*step_00000002", ["step_00000002"]),
    (2, r"gradient norm is nan at step 2; no checkpoint was saved", []),
])
def test_a_diverged_step_stops_the_run_before_it_is_saved(poisoned, message, saved, shards, tmp_path, monkeypatch):
    """Steps 2, 4 and 6 save and log_every is 5. Weights turned to NaN at step 3 are found on the
    next saving step (4), not on the next logging step (5); at step 2, whose loss was computed before
    the update, by the gradient norm. Nothing diverged becomes a checkpoint."""
    import tenali_model.train as train_module
    from tenali_model.checkpoint import read_weights

    poison_gradients_at(monkeypatch, train_module, call=poisoned)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=message):
        train(tiny_config(shards, out, steps=6, ckpt_every=2, log_every=5, keep_last=1))
    assert [p.name for p in list_checkpoints(out)] == saved
    if saved:
        assert all(torch.isfinite(w).all() for w in read_weights(latest_checkpoint(out))[0].values())


def test_lr_schedule():
    cfg = TrainConfig(train_shards=["a"], out_dir="o", lr=1.0, min_lr=0.1, warmup_steps=10, steps=110)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 110))


def test_param_groups_skip_norms_and_embeddings():
    from tenali_model.config import preset
    model = Transformer(preset("tiny"))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert any(p is model.tok_embeddings.weight for p in no_decay["params"])
    assert all(p.dim() == 2 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_cli_config_errors_exit_2(shards, tmp_path, capsys):
    cfg_path = tmp_path / "train.json"
    cfg_path.write_text(json.dumps({"train_shards": shards["train"], "out_dir": str(tmp_path / "o"),
                                    "stepz": 3}))
    assert main(["--config", str(cfg_path)]) == 2
    assert "unknown field(s) ['stepz']" in capsys.readouterr().err

    tiny_config({**shards, "train": [str(tmp_path / "missing.bin")]}, tmp_path / "o").to_json(cfg_path)
    assert main(["--config", str(cfg_path)]) == 2
    assert "not found" in capsys.readouterr().err and "missing.bin" in cfg_path.read_text()

    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"garbage" * 100)
    tiny_config({**shards, "train": [str(bad)]}, tmp_path / "o").to_json(cfg_path)
    assert main(["--config", str(cfg_path)]) == 2
    assert "bad magic" in capsys.readouterr().err

    assert main(["--config", str(tmp_path / "nope.json")]) == 2

    # shards of another tokenizer: an id past the model's vocabulary, named, not an IndexError
    wide = tmp_path / "wide.bin"
    write_shard(wide, np.arange(2000) % (VOCAB + 5), vocab_size=VOCAB + 5)
    tiny_config({**shards, "train": [str(wide)]}, tmp_path / "o2", steps=2).to_json(cfg_path)
    assert main(["--config", str(cfg_path)]) == 2
    err = capsys.readouterr().err
    assert "wide.bin" in err and f"outside the model's vocab_size {VOCAB}" in err

    short = tmp_path / "short.bin"  # a val split shorter than one window: no val loss would ever be logged
    write_shard(short, np.arange(SEQ) % VOCAB, vocab_size=VOCAB)
    tiny_config({**shards, "val": [str(short)]}, tmp_path / "o3", steps=2).to_json(cfg_path)
    assert main(["--config", str(cfg_path)]) == 2
    assert f"too few for one window of {SEQ + 1}" in capsys.readouterr().err


def test_cli_refuses_out_dir_of_another_model(shards, tmp_path, capsys):
    out = tmp_path / "o"
    train(tiny_config(shards, out, steps=2, eval_every=0, ckpt_every=0))
    cfg_path = tmp_path / "train.json"
    tiny_config(shards, out, steps=4, model={"preset": "tiny", "vocab_size": 64, "max_seq_len": 32,
                                             "n_layers": 3}).to_json(cfg_path)
    assert main(["--config", str(cfg_path)]) == 2
    assert "different model" in capsys.readouterr().err


def _pipes_env(tmp_path):
    def encode(value):
        return base64.b64encode(zlib.compress(json.dumps(value).encode())).decode()
    context = {"asset_keys": ["pretrain_checkpoint"], "code_version_by_asset_key": None,
               "provenance_by_asset_key": None, "partition_key": None, "partition_key_range": None,
               "partition_time_window": None, "run_id": "test-run", "job_name": None,
               "retry_number": 0, "extras": {}}
    messages = tmp_path / "pipes_messages.jsonl"
    return messages, {"DAGSTER_PIPES_CONTEXT": encode({"data": context}),
                      "DAGSTER_PIPES_MESSAGES": encode({"path": str(messages)})}


def test_torchrun_two_ranks_reports_through_pipes_once(shards, tmp_path):
    """DDP over two gloo ranks: rank 0 alone reports, and the run matches one process at the same
    global batch (the two ranks' batches together are the one process's micro-batches). Its step-3
    checkpoint is sharded on request (DCP writes each replicated tensor once) and holds what one
    process held at step 3."""
    out = tmp_path / "ddp"
    cfg_path = tmp_path / "train.json"
    tiny_config(shards, out, steps=6, log_every=2, eval_every=3, ckpt_every=3, batch_size=4,
                global_batch_tokens=16 * 32, parallelism="ddp", checkpoint_format="sharded").to_json(cfg_path)
    messages, pipes_env = _pipes_env(tmp_path)
    proc = subprocess.run(
        [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "tenali_model.train", "--config", str(cfg_path)],
        cwd=REPO_ROOT, env=subprocess_env(**pipes_env), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert latest_checkpoint(out).name == "step_00000006"
    assert load_train_state(out / "step_00000006")["loader"]["world_size"] == 2
    assert [r["step"] for r in read_metrics(out) if r["kind"] == "train"] == [2, 4, 6]

    sent = [json.loads(line) for line in messages.read_text().splitlines()]
    methods = [m["method"] for m in sent]
    assert methods.count("opened") == 1 and methods.count("closed") == 1  # rank 0 only
    reports = [m["params"] for m in sent if m["method"] == "report_asset_materialization"]
    assert len(reports) == 1
    meta = reports[0]["metadata"]
    assert {"step", "tokens_seen", "initial_loss", "final_loss", "val_loss", "min_val_loss",
            "checkpoint", "num_params", "tokens_per_sec", "wall_seconds", "loss_curve",
            "world_size"} <= set(meta)
    assert meta["step"]["raw_value"] == 6 and meta["world_size"]["raw_value"] == 2
    assert meta["tokens_seen"]["raw_value"] == 6 * 4 * 32 * 2 * 2
    assert meta["checkpoint"] == {"raw_value": str(out / "step_00000006"), "type": "path"}
    assert meta["loss_curve"]["type"] == "md" and "| step | loss |" in meta["loss_curve"]["raw_value"]
    assert any(m["method"] == "log" and "step 6/6" in m["params"]["message"] for m in sent)
    assert meta["parallelism"]["raw_value"] == "ddp" and meta["global_batch_tokens"]["raw_value"] == 512
    assert "mfu" not in meta  # a CPU has no known peak

    single = tmp_path / "single"
    train(tiny_config(shards, single, steps=6, log_every=2, eval_every=3, ckpt_every=3, batch_size=4,
                      global_batch_tokens=16 * 32))  # grad_accum 4 instead of 2 x 2 ranks
    assert_same_run(read_metrics(single), read_metrics(out), single / "step_00000006",
                    out / "step_00000006")
    assert sorted(load_meta(out / "step_00000003")["sharded"]["sha256"])[0] == ".metadata"
    sharded3 = read_weights(out / "step_00000003")[0]
    for name, tensor in read_weights(single / "step_00000003")[0].items():
        torch.testing.assert_close(sharded3[name], tensor, rtol=0, atol=1e-5, msg=name)


def assert_same_run(rows_a, rows_b, ckpt_a, ckpt_b, rel=1e-5, atol=1e-5):
    """Same loss trajectory (train and val) and the same final weights, to float tolerance."""
    assert [(r["kind"], r["step"]) for r in rows_a] == [(r["kind"], r["step"]) for r in rows_b]
    for a, b in zip(rows_a, rows_b):
        key = "loss" if a["kind"] == "train" else "val_loss"
        assert b[key] == pytest.approx(a[key], rel=rel), (a, b)
    wa = load_file(str(ckpt_a / "model.safetensors"))
    wb = load_file(str(ckpt_b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=atol, msg=k)


def test_fsdp_two_ranks_match_one_process_and_resume(shards, tmp_path):
    """FSDP2 over two gloo CPU ranks, with activation checkpointing: a fresh start (rank 0's
    initialisation broadcast), a sharded checkpoint at step 3 (each rank's own file), a resume from it
    under FSDP (each rank reading its slices), a consolidated last checkpoint, all matching one
    process at the same global batch."""
    kw = dict(steps=6, log_every=1, eval_every=3, ckpt_every=3, batch_size=4, eval_batches=3,
              global_batch_tokens=8 * 32)
    single = tmp_path / "single"
    train(tiny_config(shards, single, **kw))
    out = tmp_path / "fsdp"
    cfg_path = tmp_path / "train.json"
    tiny_config(shards, out, parallelism="fsdp", activation_checkpointing=True, **kw).to_json(cfg_path)
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tenali_model.train", "--config", str(cfg_path)]
    for extra in (["--stop-at-step", "3"], []):
        proc = subprocess.run(cmd + extra, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "fsdp + activation checkpointing" in proc.stdout
    assert "resuming from" in proc.stdout and "at step 3" in proc.stdout
    # Step 3 (before the last): one shard file per rank, nothing gathered; the last is consolidated.
    assert sorted(p.name for p in (out / "step_00000003").iterdir()) == [
        "config.json", "meta.json", "sharded", "train_state.pt"]
    assert sorted(load_meta(out / "step_00000003")["sharded"]["sha256"]) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert "saved " in proc.stdout
    state = load_train_state(out / "step_00000003")
    assert state["loader"]["world_size"] == 2
    assert set(state["optimizer"]) == {"param_groups"}  # the moments are in the shards
    assert (out / "step_00000006" / "model.safetensors").is_file()
    state = load_train_state(out / "step_00000006")
    assert "layers.0.attn.wq.weight" in state["optimizer"]["state"]  # full, keyed by name
    assert_same_run(read_metrics(single), read_metrics(out), single / "step_00000006",
                    out / "step_00000006")
    # One process reads the sharded checkpoint whole: the weights it held at step 3 are one
    # process's at step 3 (a checkpoint every step-3 reader, export and evaluation included, can take).
    sharded3, _ = read_weights(out / "step_00000003")
    for name, tensor in read_weights(single / "step_00000003")[0].items():
        torch.testing.assert_close(sharded3[name], tensor, rtol=0, atol=1e-5, msg=name)

    # A flipped byte in step 6's train_state.pt, which rank 1 hashes: both ranks fall back to step 3
    # together, and the rerun of steps 4-6 ends where the first did.
    flip(out / "step_00000006" / "train_state.pt")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "cannot resume from step_00000006" in proc.stdout and "train_state.pt sha256 mismatch" in proc.stdout
    assert "resuming from the older step_00000003" in proc.stdout
    assert_same_run(read_metrics(single), read_metrics(out), single / "step_00000006",
                    out / "step_00000006")

    # The sharded checkpoint resumes in one process too (DCP reshards: one rank reads both files).
    cross = tmp_path / "cross"
    cross.mkdir()
    shutil.copytree(out / "step_00000003", cross / "step_00000003")
    summary = train(tiny_config(shards, cross, **kw))
    assert summary["resumed_from_step"] == 3
    assert_same_run([r for r in read_metrics(single) if r["step"] > 3], read_metrics(cross),
                    single / "step_00000006", cross / "step_00000006")


def test_fsdp_compiles_each_block_and_resumes(shards, tmp_path):
    """`compile` under FSDP2 (what a multi-GPU 1B or 7B run asks for): every block compiled in place
    (inductor writes its kernels: a private cache dir must fill), the sharding hooks and the root eager;
    stopped at step 3 and resumed, it follows one eager process within float reassociation, and its
    checkpoint keeps plain parameter names."""
    kw = dict(steps=6, log_every=1, eval_every=3, ckpt_every=3, batch_size=4, eval_batches=3,
              global_batch_tokens=8 * 32)
    single = tmp_path / "single"
    train(tiny_config(shards, single, **kw))
    out, cache = tmp_path / "fsdp", tmp_path / "inductor"
    cfg_path = tmp_path / "train.json"
    tiny_config(shards, out, parallelism="fsdp", compile=True, activation_checkpointing=True,
                **kw).to_json(cfg_path)
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tenali_model.train", "--config", str(cfg_path)]
    for extra in (["--stop-at-step", "3"], []):
        proc = subprocess.run(cmd + extra, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                              env=subprocess_env(TORCHINDUCTOR_CACHE_DIR=str(cache)))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "fsdp + activation checkpointing + torch.compile per block |" in proc.stdout
    assert "resuming from" in proc.stdout and "at step 3" in proc.stdout
    assert any(p.suffix == ".py" for p in cache.rglob("*")), "inductor compiled nothing"
    names = load_file(str(out / "step_00000006" / "model.safetensors")).keys()
    assert "layers.0.attn.wq.weight" in names and not any("_orig_mod" in n for n in names)
    assert_same_run(read_metrics(single), read_metrics(out), single / "step_00000006",
                    out / "step_00000006", rel=1e-4, atol=1e-4)


def test_tiny_model_overfits_one_batch(tmp_path):
    """A shard of exactly one batch of random tokens: every step sees the same windows; the
    trainer must drive the loss to (nearly) zero."""
    tokens = np.random.default_rng(0).integers(0, VOCAB, size=4 * SEQ + 1)
    write_shard(tmp_path / "one.bin", tokens, vocab_size=VOCAB)
    summary = train(tiny_config({"train": [str(tmp_path / "one.bin")], "val": []}, tmp_path / "o",
                                steps=60, batch_size=4, lr=1e-2, min_lr=1e-2, warmup_steps=10,
                                weight_decay=0.0, log_every=1, eval_every=0, ckpt_every=0))
    assert summary["initial_loss"] > 3.5  # ln(64) = 4.16: uniform at the start
    assert summary["final_loss"] < 0.01, summary


def test_mfu_is_logged_where_the_peak_is_known(shards, tmp_path, monkeypatch):
    monkeypatch.setattr("tenali_model.train.device_peak_flops", lambda device: 1e12)
    out = tmp_path / "o"
    summary = train(tiny_config(shards, out, steps=4, log_every=2, eval_every=0, ckpt_every=0))
    fpt = flops_per_token(tiny_config(shards, out).model_config(), SEQ)
    rows = [r for r in read_metrics(out) if r["kind"] == "train"]
    assert all(r["mfu"] == pytest.approx(r["tokens_per_sec"] * fpt / 1e12) for r in rows)
    assert summary["mfu"] == pytest.approx(summary["tokens_per_sec"] * fpt / 1e12)


def test_index_keyed_optimizer_state_still_loads():
    """Checkpoints from before name-keyed optimizer state (optimizer.state_dict()) resume too."""
    from tenali_model.config import preset
    torch.manual_seed(0)
    model = Transformer(preset("tiny"))
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    idx = torch.randint(0, 512, (2, 8))
    model(idx, idx)[1].backward()
    opt.step()
    fresh = Transformer(preset("tiny"))
    fresh_opt = torch.optim.AdamW(param_groups(fresh, 0.1), lr=1e-3)
    load_full_state(fresh, "single", model.state_dict(), fresh_opt, opt.state_dict())
    a, b = opt.state_dict(), fresh_opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a["state"][i][k], b["state"][i][k])


def test_cli_rejects_a_global_batch_that_does_not_divide(shards, tmp_path, capsys):
    cfg_path = tmp_path / "train.json"
    tiny_config(shards, tmp_path / "o", global_batch_tokens=1000).to_json(cfg_path)
    assert main(["--config", str(cfg_path)]) == 2
    err = capsys.readouterr().err
    assert "global_batch_tokens (1000) must be a positive multiple" in err
    # and it names the valid values around it, multiples of batch_size * seq_len * world_size
    per_micro = int(re.search(r"world_size = [\d *]+ = (\d+)", err).group(1))
    named = [int(n.replace(",", "")) for n in re.search(r"(?:nearest are|smallest is) ([\d, and]+)", err).group(1)
             .replace(" and ", " ").split()]
    assert named and all(n % per_micro == 0 for n in named) and min(named) <= max(1000, per_micro) <= max(named) + per_micro


def test_a_corrupt_newest_checkpoint_resumes_from_the_one_before(shards, tmp_path, capsys):
    """A newest checkpoint whose weights fail their sha256 (a flipped byte on the storage) made
    every rerun die with a traceback: the run could not go on without someone deleting it by hand.
    It is skipped, with a warning, for the newest one that verifies, and the run still ends exactly
    where an uninterrupted one does; when none verifies, exit 2 and a message naming them."""
    kw = dict(steps=12, log_every=2, eval_every=4, ckpt_every=4, keep_last=3)
    full, split = tmp_path / "full", tmp_path / "split"
    train(tiny_config(shards, full, **kw))
    train(tiny_config(shards, split, **kw), stop_at=8)
    weights = split / "step_00000008" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF
    weights.write_bytes(bytes(raw))
    capsys.readouterr()
    summary = train(tiny_config(shards, split, **kw))
    out = capsys.readouterr().out
    assert "cannot resume from step_00000008" in out and "sha256 mismatch" in out
    assert summary["resumed_from_step"] == 4 and summary["step"] == 12
    assert_same_run(read_metrics(full), read_metrics(split), full / "step_00000012",
                    split / "step_00000012", rel=0, atol=0)

    for ckpt in list_checkpoints(split):  # now every checkpoint is damaged
        (ckpt / "train_state.pt").write_bytes((ckpt / "train_state.pt").read_bytes()[:100])
    cfg_path = tmp_path / "train.json"
    tiny_config(shards, split, **{**kw, "steps": 16}).to_json(cfg_path)
    assert main(["--config", str(cfg_path)]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint in" in err and "step_00000012" in err and "step_00000004" in err


def test_cli_out_dir_that_cannot_be_written_exits_2(shards, tmp_path, capsys):
    """An out_dir that cannot be created (a path through a file, a read-only mount) is a config
    error found before any work, not a traceback from the trainer."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg_path = tmp_path / "train.json"
    tiny_config(shards, blocker / "run", steps=2).to_json(cfg_path)
    assert main(["--config", str(cfg_path)]) == 2
    assert f"out_dir {blocker / 'run'} cannot be written" in capsys.readouterr().err
