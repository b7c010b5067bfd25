"""Review 4 of the trainer: what a resumed run does when the config changed between runs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tenali_model.train as train_module
from tenali_model.train import train
from tm_helpers import PYTHON, REPO_ROOT, subprocess_env, tiny_config


def test_resume_trains_with_the_configs_weight_decay_and_betas(shards, tmp_path, monkeypatch, capsys):
    """A checkpoint's optimizer state carries the weight decay and betas it was saved with; a resume
    whose config changes them must train with the config's (which meta.json records), not silently
    with the checkpoint's."""
    kw = dict(steps=4, log_every=2, eval_every=0, ckpt_every=2, batch_size=4)
    train(tiny_config(shards, tmp_path / "run", **kw), stop_at=2)
    seen = []
    real = train_module.optimizer_step

    def spy(model, raw_model, optimizer, *args, **kwargs):
        seen.append([(g["weight_decay"], tuple(g["betas"])) for g in optimizer.param_groups])
        return real(model, raw_model, optimizer, *args, **kwargs)

    monkeypatch.setattr(train_module, "optimizer_step", spy)
    capsys.readouterr()
    train(tiny_config(shards, tmp_path / "run", weight_decay=0.0, beta1=0.8, beta2=0.99, **kw))
    assert seen == [[(0.0, (0.8, 0.99)), (0.0, (0.8, 0.99))]] * 2
    assert ("note: the checkpoint was trained with weight_decay 0.1, betas (0.9, 0.95); continuing with "
            "the config's weight_decay 0.0, betas (0.8, 0.99)") in capsys.readouterr().out


def test_resume_says_when_the_schedule_or_the_batch_changed(shards, tmp_path, capsys):
    """A resume whose config moves the end of the cosine schedule, or the tokens per step (here
    grad_accum; a new world size does the same when global_batch_tokens is 0), trains differently from
    the run that saved the checkpoint: it says so, with the figures, instead of changing it unsaid."""
    kw = dict(log_every=2, eval_every=0, ckpt_every=2, batch_size=4)
    train(tiny_config(shards, tmp_path / "run", steps=8, **kw), stop_at=2)
    train(tiny_config(shards, tmp_path / "run", steps=8, **kw), stop_at=6)  # same config: nothing to say
    assert "note:" not in capsys.readouterr().out
    train(tiny_config(shards, tmp_path / "run", steps=16, grad_accum=2, **kw), stop_at=8)
    out = capsys.readouterr().out
    assert ("note: the learning-rate schedule changed since the checkpoint (steps 8 -> 16): step 7 trains "
            "at lr 2.95e-03 where the checkpoint's schedule gives 2.32e-03") in out
    assert ("note: 256 tokens per step where the checkpoint trained with 128 (1 rank(s) then, 1 now); "
            "set global_batch_tokens to 128 to keep it") in out


def _children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (from /proc: Linux)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_end_when_torchrun_is_killed_outright(shards, tmp_path):
    """torchrun starts each worker in a session of its own: when the agent itself is SIGKILLed, the
    workers must not train on, orphaned (writing checkpoints into out_dir beside a rerun's)."""
    cfg_path = tmp_path / "train.json"
    tiny_config(shards, tmp_path / "run", steps=100_000, log_every=1, eval_every=0, ckpt_every=0,
                batch_size=2, parallelism="ddp").to_json(cfg_path)
    agent = subprocess.Popen(
        [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "tenali_model.train", "--config", str(cfg_path)],
        cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    workers = []
    try:
        for line in agent.stdout:
            if line.startswith("step 2/"):  # both ranks are training
                break
        workers = _children(agent.pid)
        assert len(workers) == 2
        agent.kill()
        agent.wait()
        deadline = time.monotonic() + 60
        while any(map(_running, workers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_running, workers)), "workers outlived their torchrun agent"
    finally:
        agent.kill()
        for pid in filter(_running, workers):
            os.kill(pid, signal.SIGKILL)


def test_a_run_shorter_than_its_warmup_says_the_rate_never_decays(shards, tmp_path, capsys):
    train(tiny_config(shards, tmp_path / "short", steps=3, warmup_steps=5, eval_every=0, ckpt_every=3))
    assert "note: warmup_steps (5) is not below steps (3)" in capsys.readouterr().out
    train(tiny_config(shards, tmp_path / "long", steps=6, warmup_steps=5, eval_every=0, ckpt_every=6))
    assert "warmup_steps" not in capsys.readouterr().out
