"""The serving engine's decoding step (`decode_slots`) against the model's plain cached forward, same run.

    .venv/bin/python bench/bench_decode.py [--preset demo] [--threads 1] [--steps 100] [--rounds 15]

One sequence is prefilled with a 16-token prompt into each of two caches; then, per round, each path
decodes `--steps` tokens (positions 16 onwards), the two paths alternating round by round so a noisy
neighbour slows both alike:

- slots: `decode_slots` on a `SlotKVCache` (what the server runs every step);
- forward: `Transformer.forward` of one token with a `KVCache` (what `generate()` runs).

Both give the same logits (checked first). Prints the median CPU time per step of each
(`time.thread_time`, so time the thread spends descheduled does not count), their ratio, the PyTorch
operations dispatched per step (`torch.profiler` events, views included), and the cost of the
engine's Prometheus updates per step beside it.
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
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = preset(args.preset)
    model = Transformer(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    if 16 + args.steps > cfg.max_seq_len:
        raise SystemExit(f"--steps {args.steps} does not fit the context of {cfg.max_seq_len} after 16 prompt tokens")
    slots, cache = SlotKVCache(cfg, 4, cfg.max_seq_len, "cpu", torch.float32), KVCache(cfg, 1, cfg.max_seq_len, "cpu", torch.float32)
    token, row = torch.tensor([5]), torch.tensor([0])

    def step_slots(pos: int) -> torch.Tensor:
        return decode_slots(model, token, slots, row, torch.tensor([pos]))

    def step_forward(pos: int) -> torch.Tensor:
        return model(token[:, None], cache=cache, start_pos=pos)[0][:, -1]

    paths = {"slots": step_slots, "forward": step_forward}
    with torch.inference_mode():
        model(prompt, cache=slots.view(0), start_pos=0)
        model(prompt, cache=cache, start_pos=0)
        a, b = step_slots(16), step_forward(16)
        if not torch.allclose(a, b, atol=1e-5, rtol=1e-4):
            raise SystemExit(f"the two paths disagree: max |diff| {(a - b).abs().max().item():.3g}")
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, fn in paths.items():
                t = time.thread_time()
                for pos in range(16, 16 + args.steps):
                    fn(pos)
                times[name].append((time.thread_time() - t) / args.steps)
        ops = {}
        from torch.profiler import profile

        for name, fn in paths.items():
            with profile() as prof:
                for pos in range(16, 26):
                    fn(pos)
            ops[name] = sum(e.count for e in prof.key_averages()) / 10

    from tenali_model.serve.metrics import Metrics

    metrics, n = Metrics(), 50_000
    t = time.thread_time()
    for _ in range(n):  # what Engine._step and _accept record for one sequence per step
        metrics.batch(1)
        metrics.inter_token(0.004)
        metrics.tokens(1)
    metrics_s = (time.thread_time() - t) / n

    ms = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    print(f"model {args.preset}: {model.num_params():,} params, {args.threads} thread(s), torch {torch.__version__}, "
          f"median of {args.rounds} rounds x {args.steps} steps (CPU time)")
    for name in paths:
        print(f"{name:8s} {ms[name]:7.3f} ms/step  {ops[name]:6.0f} ops/step")
    print(f"ratio forward/slots {ms['forward'] / ms['slots']:.2f}x")
    print(f"prometheus updates {metrics_s * 1e6:.1f} us/step ({metrics_s / (ms['slots'] / 1e3):.2%} of a slots step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
