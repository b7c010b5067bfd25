"""Ranks that wait for another's checkpoint work wait on tenali_model.file_waits' gloo group, not on the
default group, whose timeout (NCCL's watchdog, 10 minutes on GPUs) would end the run mid-save."""

import subprocess
import sys
import textwrap

import torch.distributed as dist

from tenali_model import file_waits
from tenali_model.checkpoint import is_sharded, read_weights
from tm_helpers import REPO_ROOT, subprocess_env, tiny_config

# A torchrun worker whose default group gives up after 2 s, as NCCL's watchdog would after 10 minutes,
# and whose checkpoint work is slower than that: rank 0 hashing its shard of a sharded save, any rank
# hashing train_state.pt (rank 0 when saving, the last rank when verifying a resume), rank 0 reading
# the weights it broadcasts into the FSDP model.
WORKER = textwrap.dedent("""
    import os, sys, time
    from datetime import timedelta
    import torch.distributed as dist
    from torch.distributed.distributed_c10d import _set_pg_timeout  # the one way to shorten a live group's
    import tenali_model.checkpoint as checkpoint, tenali_model.sharded as sharded, tenali_model.train as train

    dist.init_process_group("gloo")
    _set_pg_timeout(timedelta(seconds=2))
    rank, hash_file, read_weights = dist.get_rank(), checkpoint.sha256_file, train.read_weights

    def slow_hash(path, *args, **kwargs):
        if os.path.basename(str(path)) in ("train_state.pt", "__0_0.distcp"):
            time.sleep(4)
        return hash_file(path, *args, **kwargs)

    def slow_read(*args, **kwargs):
        if rank == 0:
            time.sleep(4)
        return read_weights(*args, **kwargs)

    checkpoint.sha256_file = sharded.sha256_file = slow_hash
    train.read_weights = slow_read
    sys.exit(train.main(sys.argv[1:]))
""")


def test_slow_checkpoint_work_outlasts_the_default_groups_timeout(shards, tmp_path):
    """FSDP on two gloo ranks: a sharded save (step 2), a consolidated one (step 4), then a resume from it
    (verification shared by the ranks, rank 0's weights broadcast) and a last save, each with one rank
    busy for twice the default group's timeout while the other waits. On the default group the first
    wait fails ("Timed out ..."); on file_waits' group the run ends as it would without the delays."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)

    def run(steps: int) -> str:
        cfg = tmp_path / f"train{steps}.json"
        tiny_config(shards, tmp_path / "run", steps=steps, log_every=1, eval_every=0, ckpt_every=2, batch_size=4,
                    warmup_steps=1, parallelism="fsdp").to_json(cfg)
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(worker), "--config", str(cfg)], cwd=REPO_ROOT, env=subprocess_env(),
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    run(4)
    assert is_sharded(tmp_path / "run" / "step_00000002") and not is_sharded(tmp_path / "run" / "step_00000004")
    assert "resuming from" in (out := run(6)) and "at step 4" in out, out[-2000:]
    weights, meta = read_weights(tmp_path / "run" / "step_00000006")
    assert meta["step"] == 6 and weights


def test_one_group_per_default_group(tmp_path):
    """The group is made once beside each default group (tests make several in one process), and
    a process without torch.distributed has none and waits for nobody."""
    assert file_waits.group() is None
    file_waits.barrier()  # no group: returns at once
    for attempt in range(2):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store{attempt}", rank=0, world_size=1)
        try:
            made = file_waits.group()
            assert made is not None and file_waits.group() is made
            assert dist.get_backend(made) == "gloo"
            file_waits.barrier()
        finally:
            dist.destroy_process_group()
        if attempt == 0:
            first = made
    assert made is not first
