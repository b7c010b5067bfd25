"""Saving and resuming an FSDP run: consolidated (gathered to rank 0) against sharded, in the same run.

    .venv/bin/python bench/bench_checkpoint.py [--ranks 2] [--preset 125m] [--rounds 3] [--out DIR]

Starts `--ranks` CPU processes itself (gloo, one thread each), shards the preset with FSDP2 as the
trainer does, takes one AdamW step (so the optimizer holds its two moments), then, alternating which
goes first in each round, times the trainer's two ways to save:

    full     parallel.full_state (weights and optimizer state gathered to rank 0's CPU) then
             checkpoint.save_checkpoint (one model.safetensors + train_state.pt, hashed)
    sharded  sharded.save_sharded (each rank writes and hashes its own file; nothing gathered)

and the two ways to resume from them (rank 0 reads and broadcasts; each rank reads its slices). It
prints the median of each and the ratio full / sharded (the speedup), and checks that both resumes
give back the same weights and AdamW state. Writes under --out (default: a temporary folder in the
working directory), removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from tenali_model.checkpoint import load_train_state, save_checkpoint, step_dir_name
    from tenali_model.config import num_params, preset
    from tenali_model.model import Transformer
    from tenali_model.parallel import build_model, full_state, load_full_state
    from tenali_model.sharded import load_checkpoint_state, save_sharded
    from tenali_model.train import param_groups

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    cfg = preset(args.preset)

    def fresh():
        model = build_model(cfg, "fsdp", cpu, world_size=world)
        return model, torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4)

    model, opt = fresh()
    load_full_state(model, "fsdp", Transformer(cfg).state_dict() if rank == 0 else None)
    x = torch.randint(0, cfg.vocab_size, (1, 32))
    model(x, x)[1].backward()
    opt.step()
    out = Path(args.out)

    def timed(fn):
        dist.barrier()
        t = time.perf_counter()
        result = fn()
        dist.barrier()
        return time.perf_counter() - t, result

    def save_full(step):
        model_state, optimizer_state = full_state(model, opt, "fsdp")
        if rank == 0:
            save_checkpoint(out / "full", step=step, model=model, model_state=model_state,
                            optimizer_state=optimizer_state, keep_last=1)

    def save_shards(step):
        save_sharded(out / "sharded", step=step, model=model, optimizer=opt, keep_last=1)

    def load(kind, step):  # as the trainer resumes: load_checkpoint_state picks the way by the checkpoint
        m, o = fresh()
        path = out / kind / step_dir_name(step)
        state = load_train_state(path, mmap=True, verify=False)
        load_checkpoint_state(path, m, o, "fsdp", rank == 0, state["optimizer"])
        return m, o

    saves = {"full": [], "sharded": []}
    loads = {"full": [], "sharded": []}
    for r in range(args.rounds):
        order = ("full", "sharded") if r % 2 == 0 else ("sharded", "full")
        for kind in order:
            saves[kind].append(timed(lambda: (save_full if kind == "full" else save_shards)(r + 1))[0])
        loaded = {}
        for kind in order:
            seconds, loaded[kind] = timed(lambda: load(kind, r + 1))
            loads[kind].append(seconds)
    (wa, oa), (wb, ob) = (full_state(*loaded[kind], "fsdp") for kind in ("full", "sharded"))
    if rank == 0:
        same = (wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
                and oa["param_groups"] == ob["param_groups"]
                and all(torch.equal(oa["state"][n][k], v) for n in ob["state"] for k, v in ob["state"][n].items()))
        size = sum(f.stat().st_size for f in (out / "sharded").rglob("*") if f.is_file())
        print(f"{world} ranks, {args.preset} ({num_params(cfg) / 1e6:.1f}M parameters, "
              f"{size / 2**30:.2f} GiB a checkpoint), FSDP2 on CPU, {args.rounds} rounds")
        for what, times in (("save", saves), ("resume", loads)):
            full, sharded = statistics.median(times["full"]), statistics.median(times["sharded"])
            ratios = [f / s for f, s in zip(times["full"], times["sharded"])]
            print(f"{what}: full {full:.2f} s, sharded {sharded:.2f} s: sharded is {full / sharded:.2f}x "
                  f"as fast (rounds {min(ratios):.2f}x-{max(ratios):.2f}x)")
        print(f"both resumes give the same weights and AdamW state: {same}")
        if not same:
            sys.exit(1)
    dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--preset", default="125m")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="")
    args = p.parse_args()
    if "RANK" in os.environ:
        worker(args)
        return
    import subprocess

    out = args.out or tempfile.mkdtemp(prefix=".bench-checkpoint-", dir=".")
    try:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.ranks}",
               __file__, *sys.argv[1:], "--out", out]
        sys.exit(subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode)
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
