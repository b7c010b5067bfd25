"""SIGTERM/SIGINT (a preempted pod, a stopped ECS task, a cancelled Dagster step) stop training after the
current step with a checkpoint (tenali_model/preemption.py): the run resumes from that step, not from the
last periodic checkpoint, and ends bit-identical to one never stopped."""

from __future__ import annotations

import signal
import subprocess

from tenali_model import preemption
from tenali_model.checkpoint import latest_checkpoint, load_meta, load_train_state
from tm_helpers import PYTHON, assert_same_tensors, subprocess_env, tiny_config, train_until_signalled

STEPS = 5000  # never reached: the schedule both runs share


def test_sigterm_saves_the_current_step_and_the_resumed_run_matches_one_never_stopped(shards, tmp_path):
    out = tmp_path / "run"
    tiny_config(shards, out, steps=STEPS, ckpt_every=1000, eval_every=0, log_every=1).to_json(tmp_path / "c.json")
    code, err = train_until_signalled(tmp_path / "c.json", out, signal.SIGTERM,
                                       [PYTHON, "-m", "tenali_model.train"])
    assert code == 143, err
    stopped = latest_checkpoint(out)
    k = load_meta(stopped)["step"]
    assert 15 <= k < 1000  # not the periodic checkpoint: the step it was at
    assert f"stopped by SIGTERM after step {k}, with a checkpoint in {out}" in err

    # resumed from k, on to k + 3; and a run never stopped, to k + 3 on the same schedule
    resumed = subprocess.run([PYTHON, "-m", "tenali_model.train", "--config", str(tmp_path / "c.json"),
                              "--stop-at-step", str(k + 3)], env=subprocess_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {stopped} at step {k}" in resumed.stdout
    ref = tmp_path / "ref"
    tiny_config(shards, ref, steps=STEPS, ckpt_every=1000, eval_every=0, log_every=1).to_json(tmp_path / "r.json")
    once = subprocess.run([PYTHON, "-m", "tenali_model.train", "--config", str(tmp_path / "r.json"),
                           "--stop-at-step", str(k + 3)], env=subprocess_env(), capture_output=True, text=True)
    assert once.returncode == 0, once.stderr
    assert_same_tensors(latest_checkpoint(out), latest_checkpoint(ref), ["model.safetensors"])


def test_under_torchrun_every_rank_stops_after_the_same_step(shards, tmp_path):
    out = tmp_path / "run"
    tiny_config(shards, out, steps=STEPS, ckpt_every=1000, eval_every=0, log_every=1).to_json(tmp_path / "c.json")
    torchrun = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tenali_model.train"]
    code, err = train_until_signalled(tmp_path / "c.json", out, signal.SIGTERM, torchrun)
    assert code != 0  # torchrun reports its own SignalException
    saved = latest_checkpoint(out)
    k = load_meta(saved)["step"]
    assert err.count(f"stopped by SIGTERM after step {k}") == 1  # rank 0 says it
    # the save gathered both ranks' RNG state: both were at step k when they saved it together
    assert len(load_train_state(saved)["rng_per_rank"]) == 2


def test_a_second_signal_later_stops_at_once_and_a_watchdog_bounds_the_wait(monkeypatch):
    killed, timers = [], []

    class Timer:
        def __init__(self, seconds, fn, args):
            timers.append((seconds, fn, args))
            self.daemon = False

        def start(self):
            pass

        def cancel(self):
            pass

    monkeypatch.setattr(preemption.threading, "Timer", Timer)
    monkeypatch.setattr(preemption.os, "kill", lambda pid, sig: killed.append(sig))
    monkeypatch.setattr(preemption.signal, "signal", lambda *a: None)
    clock = iter([100.0, 101.0, 104.0])
    monkeypatch.setattr(preemption.time, "monotonic", lambda: next(clock))
    monkeypatch.setenv("TENALI_STOP_GRACE_SECONDS", "30")
    monkeypatch.setitem(preemption._state, "installed", True)
    monkeypatch.setitem(preemption._state, "signum", None)
    monkeypatch.setitem(preemption._state, "watchdog", None)
    preemption._handler(signal.SIGTERM, None)
    assert preemption.requested(1) == signal.SIGTERM
    assert timers == [(30.0, preemption.os._exit, (143,))]
    preemption._handler(signal.SIGTERM, None)  # 1 s later: the same request (torchrun and a group both forward)
    assert killed == []
    preemption._handler(signal.SIGINT, None)  # 4 s later: asked again
    assert killed == [signal.SIGINT]


def test_no_stop_is_asked_outside_a_training_entry_point():
    assert preemption.requested(1) is None
    before = signal.getsignal(signal.SIGTERM)
    with preemption.handling():
        assert signal.getsignal(signal.SIGTERM) is preemption._handler and preemption.requested(1) is None
    assert signal.getsignal(signal.SIGTERM) is before and preemption.requested(1) is None
