"""The serving engine's decoding step (`decode_slots`) against the model's plain cached forward, same run.

    .venv/bin/python bench/bench_decode.py [--preset demo] [--threads 1] [--steps 100] [--rounds 15]
                                           [--device cpu] [--dtype float32] [--graph] [--compile]

One sequence is prefilled with a 16-token prompt into each cache; then, per round, each path
decodes `--steps` tokens (positions 16 onwards), the paths alternating round by round so a noisy
neighbour slows them alike:

- slots: `decode_slots` on a `SlotKVCache` (what the server runs every step);
- forward: `Transformer.forward` of one token with a `KVCache` (what `generate()` runs);
- with --graph, graph: `serve.graph.StaticDecoder` on a 4-slot cache (what `tenali serve --cuda-graph`
  runs: one static step over every slot, replayed from a CUDA graph; on a CPU it runs eagerly);
- with --compile, compiled: the same static step through torch.compile first (`tenali serve --cuda-graph
  --compile`); its compile (and capture) time is printed. A compile that fails is reported and the
  other paths still run.

All give the same logits (checked first). Prints the median time per step of each (on a CPU,
`time.thread_time`, so time the thread spends descheduled does not count; on a GPU, wall time with
a synchronisation after every step, as the engine reads each step's tokens back), ratios against
slots, the PyTorch operations dispatched per step (`torch.profiler` CPU events, views included), and
the cost of the engine's Prometheus updates per step beside it. The last line, "serve with: ...",
names the `tenali serve` flags of the fastest path that passed its check (bench/device_checks.sh
reads it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tenali_model.config import preset  # noqa: E402
from tenali_model.model import KVCache, SlotKVCache, Transformer, decode_slots  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=100, help="tokens decoded per round")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--graph", action="store_true", help="also time the CUDA-graph step (eager on a CPU)")
    p.add_argument("--compile", action="store_true", help="also time that step compiled with torch.compile")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = preset(args.preset)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    model = Transformer(cfg).to(device=device, dtype=dtype).eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0)).to(device)
    if 16 + args.steps > cfg.max_seq_len:
        raise SystemExit(f"--steps {args.steps} does not fit the context of {cfg.max_seq_len} after 16 prompt tokens")
    slots = SlotKVCache(cfg, 4, cfg.max_seq_len, device, dtype)
    cache = KVCache(cfg, 1, cfg.max_seq_len, device, dtype)
    token, row = torch.tensor([5], device=device), torch.tensor([0], device=device)

    def step_slots(pos: int) -> torch.Tensor:
        return decode_slots(model, token, slots, row, torch.tensor([pos], device=device))

    def step_forward(pos: int) -> torch.Tensor:
        return model(token[:, None], cache=cache, start_pos=pos)[0][:, -1]

    paths = {"slots": step_slots, "forward": step_forward}
    caches = [slots.view(0), cache]
    flags = {"slots": "", "forward": ""}
    failed = 0
    warmup: dict[str, tuple[float, str]] = {}
    for name, wanted, compile in (("graph", args.graph, False), ("compiled", args.compile, True)):
        if not wanted:
            continue
        from tenali_model.serve.graph import StaticDecoder

        static = SlotKVCache(cfg, 4, cfg.max_seq_len, device, dtype)
        decoder = StaticDecoder(model, static, compile=compile)
        try:
            with torch.inference_mode():
                warmup[name] = decoder.warm(), decoder.kind  # as the engine does before its first request
        except Exception as e:  # noqa: BLE001 - say why, time the others
            print(f"{name}: failed to prepare: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            failed = 1
            continue
        # Printed now as well as in the summary: a run stopped at its time limit (device_checks.sh) prints
        # no summary, and the compile time is then the one figure it has.
        print(f"({name} ready after {warmup[name][0]:.1f} s: {warmup[name][1]})")
        paths[name] = lambda pos, decoder=decoder: decoder([0], [5], [pos])
        caches.append(static.view(0))
        flags[name] = "--cuda-graph" + (" --compile" if compile else "")
    gpu = device.type == "cuda"
    clock = time.perf_counter if gpu else time.thread_time
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    with torch.inference_mode():
        for c in caches:
            model(prompt, cache=c, start_pos=0)
        first = {name: fn(16).float() for name, fn in paths.items()}
        tol = {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 5e-2, "rtol": 2e-2}
        for name, got in first.items():
            if not torch.allclose(got, first["slots"], **tol):
                message = f"{name} and slots disagree: max |diff| {(got - first['slots']).abs().max().item():.3g}"
                if name == "forward":  # the model's own two paths: nothing here is worth timing
                    raise SystemExit(message)
                print(f"{message}; not timed")  # a static step: the others are still worth timing
                failed = 1
                del paths[name]
        times: dict[str, list[float]] = {name: [] for name in paths}
        for r in range(args.rounds):
            for name in list(paths) if r % 2 == 0 else list(paths)[::-1]:
                fn = paths[name]
                sync()
                t = clock()
                for pos in range(16, 16 + args.steps):
                    fn(pos)
                    sync()
                times[name].append((clock() - t) / args.steps)
            # Each round as it ends: a run stopped at its time limit (device_checks.sh) keeps what it timed.
            print(f"(round {r + 1}: " + ", ".join(f"{name} {1e3 * v[-1]:.3f}" for name, v in times.items())
                  + " ms per step)")
        # The medians before the op counts (the profiler's start-up is slow): kept if the run is stopped.
        print("(timed, median ms per step: " + ", ".join(f"{name} {1e3 * statistics.median(v):.3f}"
                                                        for name, v in times.items()) + "; counting ops next)")
        ops = {}
        from torch.profiler import ProfilerActivity, profile

        for name, fn in paths.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for pos in range(16, 26):
                    fn(pos)
            ops[name] = sum(e.count for e in prof.key_averages()) / 10

    try:  # prometheus_client: the serve extra, which a bare GPU image may lack; the timings stand without it
        from tenali_model.serve.metrics import Metrics
    except ImportError as e:
        metrics_s, metrics_missing = None, str(e)
    else:
        metrics, n = Metrics(), 50_000
        t = time.thread_time()
        for _ in range(n):  # what Engine._step and _accept record for one sequence per step
            metrics.batch(1)
            metrics.inter_token(0.004)
            metrics.tokens(1)
        metrics_s = (time.thread_time() - t) / n

    ms = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    where = torch.cuda.get_device_name(device) if gpu else f"{args.threads} thread(s)"
    print(f"model {args.preset}: {model.num_params():,} params, {where}, {args.dtype}, torch {torch.__version__}, "
          f"median of {args.rounds} rounds x {args.steps} steps ({'wall time, synchronised' if gpu else 'CPU time'})")
    for name in paths:
        print(f"{name:8s} {ms[name]:7.3f} ms/step ({1e3 / ms[name]:7.0f} tok/s)  {ops[name]:6.0f} ops/step")
    for name in paths:
        if name != "slots":
            print(f"ratio {name}/slots {ms[name] / ms['slots']:.2f}x  (time per step: above 1, {name} is slower)")
    for name, (seconds, kind) in warmup.items():
        if name in paths:
            print(f"{name}: prepared in {seconds:.1f} s ({kind})")
    if metrics_s is None:
        print(f"prometheus updates: not measured ({metrics_missing})")
    else:
        print(f"prometheus updates {metrics_s * 1e6:.1f} us/step ({metrics_s / (ms['slots'] / 1e3):.2%} of a slots step)")
    servable = [name for name in paths if name != "forward"]  # the forward path is generate()'s, not the server's
    print(f"serve with: {flags[min(servable, key=ms.get)]}".rstrip())
    return failed


if __name__ == "__main__":
    sys.exit(main())
