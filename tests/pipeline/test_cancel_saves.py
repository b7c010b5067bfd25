"""A cancelled training step (Dagster interrupts it: the local launcher sends torchrun SIGINT, torchrun forwards
it to its workers) leaves a checkpoint of the step it was at, and the re-launch resumes from there
(tenali_model/preemption.py), instead of repeating every step since the last periodic checkpoint."""

import json
import subprocess
import time

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError

from launcher_fakes import tiny_run
from tenali_model.checkpoint import latest_checkpoint, load_meta
from tenali_pipeline.launchers import local


def _materialise(config_path, run_dir):
    @dg.asset
    def pretrain_checkpoint(context: dg.AssetExecutionContext):
        return local.LocalTorchrunLauncher(nproc_per_node=2, threads_per_process=1).launch(
            context, config_path, workdir=run_dir)

    return dg.materialize([pretrain_checkpoint], raise_on_error=False)


def test_a_cancelled_step_saves_the_step_it_was_at_and_the_next_launch_resumes_there(tmp_path, monkeypatch):
    config_path, run_dir = tiny_run(tmp_path, steps=100_000)
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "ckpt_every": 10_000, "log_every": 1}))
    wait, state = subprocess.Popen.wait, {"interrupted": False}

    def interrupted_while_training(self, timeout=None):
        if timeout is None and not state["interrupted"] and "torch.distributed.run" in self.args:
            give_up = time.monotonic() + 180
            metrics = run_dir / "metrics.jsonl"
            while time.monotonic() < give_up and len(
                    metrics.read_text().split("\n")[:-1] if metrics.exists() else []) < 12:
                time.sleep(0.05)
            state["interrupted"] = True
            raise DagsterExecutionInterruptedError()  # what Dagster raises in the step on a cancel
        return wait(self, timeout)

    monkeypatch.setattr(subprocess.Popen, "wait", interrupted_while_training)
    res = _materialise(config_path, run_dir)
    assert not res.success and state["interrupted"]
    saved = latest_checkpoint(run_dir)
    assert saved is not None, "the cancelled trainer saved nothing"
    k = load_meta(saved)["step"]
    assert 12 <= k < 10_000  # the step it was at, not a periodic checkpoint

    monkeypatch.setattr(subprocess.Popen, "wait", wait)
    config_path.write_text(json.dumps({**config, "ckpt_every": 10_000, "log_every": 1, "steps": k + 2}))
    res = _materialise(config_path, run_dir)
    assert res.success, [e.step_failure_data.error.message for e in res.all_events if e.is_step_failure]
    meta = res.asset_materializations_for_node("pretrain_checkpoint")[0].metadata
    assert meta["resumed_from_step"].value == k and meta["step"].value == k + 2

