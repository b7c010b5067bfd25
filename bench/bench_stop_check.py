"""What agreeing on a stop costs a DDP training step (tenali_model/preemption.py), in the same run.

    .venv/bin/python bench/bench_stop_check.py [--ranks 2] [--preset tiny] [--batch 8] [--seq-len 64]
                                               [--steps 200] [--rounds 5]

Under torchrun, every rank asks `preemption.requested` after each optimizer step: one all-reduce of one
int64 over gloo (CPU tensors: no CUDA synchronisation). This starts `--ranks` CPU processes itself (gloo,
one thread each) and, alternating the two in each round, times `--steps` DDP steps of the trainer's own
`optimizer_step` with and without the check. It prints the median per-step time of each and the overhead
(with / without - 1), whose median over rounds is the figure; a small model makes it look as large as it
can be (the check costs the same whatever the model, the step grows with it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from tenali_model import preemption
    from tenali_model.config import ModelConfig, preset
    from tenali_model.model import Transformer
    from tenali_model.parallel import wrap_ddp
    from tenali_model.train import autocast_context, optimizer_step, param_groups

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    cfg = ModelConfig(**{**vars(preset(args.preset)), "max_seq_len": args.seq_len})
    raw = Transformer(cfg)
    model = wrap_ddp(raw, torch.device("cpu"))
    opt = torch.optim.AdamW(param_groups(raw, 0.1), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.seq_len))
    autocast = autocast_context(torch.device("cpu"), "float32")

    def steps(check: bool) -> float:
        dist.barrier()
        t = time.perf_counter()
        for _ in range(args.steps):
            optimizer_step(model, raw, opt, "ddp", lambda: (x, x), 1, torch.device("cpu"), autocast, 0.0, 1.0)
            if check:
                preemption.requested(dist.get_world_size())
        dist.barrier()
        return (time.perf_counter() - t) / args.steps

    overheads, plain, checked = [], [], []
    with preemption.handling():
        steps(True)  # warm-up, and the gloo group
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            times = {c: steps(c) for c in order}
            plain.append(times[False])
            checked.append(times[True])
            overheads.append(times[True] / times[False] - 1)
    if dist.get_rank() == 0:
        print(f"{dist.get_world_size()} ranks, {args.preset} {args.batch}x{args.seq_len}: step "
              f"{statistics.median(plain) * 1e3:.2f} ms without the check, {statistics.median(checked) * 1e3:.2f} ms "
              f"with it")
        print(f"overhead of the stop check: {statistics.median(overheads):+.1%} per step (median of {args.rounds} "
              f"rounds; range {min(overheads):+.1%} to {max(overheads):+.1%})")
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    if "RANK" in os.environ:
        worker(args)
        return
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.ranks}",
           __file__, *sys.argv[1:]]
    sys.exit(subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode)


if __name__ == "__main__":
    main()
