"""Trainer throughput and MFU on one device: the trainer's own optimizer step on random tokens.

    python bench/bench_mfu.py --configs 125m,1b --device cuda --dtype bfloat16 --compile
        [--batch 8] [--seq-len 0] [--grad-accum 1] [--steps 10] [--warmup 3]
        [--activation-checkpointing] [--first-fit] [--timeout 300] [--out DIR]

For each named config (tenali_model.config presets), in a fresh subprocess so that one config's
out-of-memory error, compile failure or hang ends only that config: the model (initialised on the
device, single process, no wrapper), with the trainer's AdamW (fused on CUDA),
autocast and optional `torch.compile` and activation checkpointing, and `train.optimizer_step` runs
`--warmup` untimed steps (compilation included, reported apart) and then `--steps` timed ones on
random tokens (speed does not depend on the data). The device is synchronised before and after the
timed steps only, as the trainer runs.

Prints, per config: parameters, tokens per step, seconds per step, tokens/s, MFU (model FLOPs, as the
trainer logs it: `plan.flops_per_token` x tokens/s over the device's dense bf16 peak,
`plan.peak_bf16_flops`; none on CPUs and unknown GPUs), peak memory (CUDA: max allocated; CPU: peak
RSS) beside what `tenali plan` predicts for the same run (`plan.memory_per_gpu`: each GPU run checks
the planner), and the warm-up time. `--first-fit` stops at the first config that runs, so `--configs 7b,1b`
finds the largest that fits. `--out DIR` writes results.json and table.md there.

On a CPU it runs too (`--device cpu --configs tiny`): the test suite does that so the script keeps
working; the CPU comparison against transformers is bench/bench_train.py.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULT = "BENCH_MFU_RESULT "  # the child's one line of JSON for the parent


def run_one(args: argparse.Namespace, name: str) -> dict:
    """Build, warm up and time one config in this process; returns the result record."""
    import torch

    from tenali_model.config import num_params, preset
    from tenali_model.model import Transformer
    from tenali_model.plan import flops_per_token, memory_per_gpu
    from tenali_model.train import (autocast_context, device_peak_flops, fused_adamw, optimizer_step, param_groups,
                                    use_bf16)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"CUDA is not available to torch {torch.__version__}: run this on a GPU machine, "
                         f"or pass --device cpu")
    torch.manual_seed(0)
    mcfg = preset(name)
    seq = args.seq_len or mcfg.max_seq_len
    if seq > mcfg.max_seq_len:
        raise SystemExit(f"--seq-len {seq} exceeds {name}'s context of {mcfg.max_seq_len}")
    t0 = time.perf_counter()
    # Built and initialised on the device itself: the trainer builds on the CPU and moves (so that every
    # rank starts from the same weights), which for the 7B takes minutes of CPU random numbers and
    # 27 GB of host memory; speed does not depend on where the random weights came from.
    with torch.device(device):
        model = Transformer(mcfg)
    model.set_activation_checkpointing(args.activation_checkpointing)
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
                                  fused=fused_adamw(device))
    called = torch.compile(model) if args.compile else model
    autocast = autocast_context(device, args.dtype)
    gen = torch.Generator().manual_seed(0)
    pool = [torch.randint(0, mcfg.vocab_size, (args.batch, seq + 1), generator=gen) for _ in range(4)]
    batches = itertools.cycle([(t[:, :-1].contiguous(), t[:, 1:].contiguous()) for t in pool])

    def next_batch():
        return next(batches)

    def step():
        return optimizer_step(called, model, optimizer, "single", next_batch, args.grad_accum, device,
                              autocast, z_loss=0.0, grad_clip=1.0)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss, grad_norm = step()
    sync()
    seconds = (time.perf_counter() - t0) / args.steps
    tokens = args.batch * seq * args.grad_accum
    tps = tokens / seconds
    peak = device_peak_flops(device)
    flops_tok = flops_per_token(mcfg, seq)
    if device.type == "cuda":
        memory, memory_kind = torch.cuda.max_memory_allocated(device), "max allocated"
    else:
        memory, memory_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS"
    planned = memory_per_gpu(mcfg, gpus=1, parallelism="single", micro_batch=args.batch, seq_len=seq,
                             activation_checkpointing=args.activation_checkpointing, grad_accum=args.grad_accum,
                             compile=args.compile, bf16=use_bf16(device, args.dtype)).total
    return {
        "config": name, "status": "ok", "params": num_params(mcfg), "batch": args.batch, "seq_len": seq,
        "grad_accum": args.grad_accum, "tokens_per_step": tokens, "seconds_per_step": seconds,
        "tokens_per_sec": tps, "model_flops_per_sec": tps * flops_tok, "peak_bf16_flops": peak,
        "mfu": tps * flops_tok / peak if peak else None, "memory_bytes": memory, "memory_kind": memory_kind,
        "planned_memory_bytes": planned,
        "build_seconds": built, "warmup_seconds": warmup, "loss": (loss / args.grad_accum).item(),
        "grad_norm": grad_norm.item(), "device": _device_name(device), "dtype": args.dtype,
        "compile": args.compile, "activation_checkpointing": args.activation_checkpointing,
        "torch": torch.__version__,
    }


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu x{torch.get_num_threads()} threads"


def run_child(argv: list[str], name: str, timeout: float) -> dict:
    """Run one config in a fresh interpreter; an error, out-of-memory or timeout becomes its status."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--_one", name]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"config": name, "status": f"timeout after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    oom = "out of memory" in proc.stderr.lower()
    return {"config": name, "status": "out of memory" if oom else f"failed (exit {proc.returncode})",
            "error": " | ".join(tail)}


def table(results: list[dict]) -> str:
    rows = ["| config | params | batch x seq (x accum) | s/step | tokens/s | MFU | memory | planned | "
            "warm-up s | status |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if r["status"] != "ok":
            rows.append(f"| {r['config']} | | | | | | | | | {r['status']}: {r.get('error', '')} |")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        rows.append(f"| {r['config']} | {r['params'] / 1e6:,.1f}M | {r['batch']} x {r['seq_len']} (x {r['grad_accum']}) "
                    f"| {r['seconds_per_step']:.3f} | {r['tokens_per_sec']:,.0f} | {mfu} "
                    f"| {r['memory_bytes'] / 2**30:.1f} GiB ({r['memory_kind']}) "
                    f"| {r['planned_memory_bytes'] / 2**30:.1f} GiB | {r['warmup_seconds']:.1f} | ok |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="125m,1b", help="comma-separated presets, run in this order")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "auto"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=0, help="0: the config's context")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads on a CPU (0: torch's default)")
    p.add_argument("--first-fit", action="store_true", help="stop at the first config that runs")
    p.add_argument("--timeout", type=float, default=600, help="seconds per config")
    p.add_argument("--out", default="", help="directory for results.json and table.md")
    p.add_argument("--_one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.grad_accum < 1:
        p.error("--steps, --batch and --grad-accum must be >= 1 and --warmup >= 0")
    if args._one:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(RESULT + json.dumps(run_one(args, args._one)), flush=True)
        return 0

    from tenali_model.config import MODEL_PRESETS

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODEL_PRESETS]
    if unknown or not names:  # before any child starts
        p.error(f"unknown configs {unknown or args.configs!r}; known: {', '.join(MODEL_PRESETS)}")
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        r = run_child(argv, name, args.timeout)
        results.append(r)
        print(json.dumps(r), flush=True)
        if out is not None:  # after every config: a run stopped from outside keeps what it measured
            (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        if args.first_fit and r["status"] == "ok":
            break
    text = table(results)
    print("\n" + text)
    for r in results:
        if r["status"] == "ok":
            mfu = f"MFU {r['mfu']:.1%}" + (" (target for 1b: 45%)" if r["config"] == "1b" else "") if r["mfu"] is not None else "MFU n/a"
            print(f"{r['config']}: {r['tokens_per_sec']:,.0f} tokens/s, {mfu} on {r['device']}, "
                  f"{r['dtype']}{', compiled' if r['compile'] else ''}, torch {r['torch']}")
    if out is not None:
        (out / "table.md").write_text(text + "\n")
    return 0 if any(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
