"""Time to first token when requests of several prompt lengths arrive together: the engine's padded
batched prefill against one prefill per prompt length, same run.

    .venv/bin/python bench/bench_prefill.py [--preset demo] [--threads 1] [--requests 16]
                                            [--new-tokens 8] [--rounds 9] [--padding 0.25]

`--requests` prompts with lengths spread evenly from 16 tokens to the context less `--new-tokens`
are submitted to an in-process `Engine` at once (all queued before it admits any), greedy, exactly
`--new-tokens` tokens each. Two engines on the same model: `prefill_padding` `--padding` (0.25, the
server's default: the prompts are right-padded into a few batched prefills, `engine._prefill_groups`)
and 0 (only prompts of one length share a prefill, so here every prompt gets its own forward). The rounds alternate the two,
taking turns to go first. Prints, per engine, the median over rounds of the median and the last TTFT
(request to first token, prefill included) and of the time until every request is done, the median of
the per-round ratios, and the prefill forwards per round. Both must give the same tokens (checked).
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
from tenali_model.model import Transformer  # noqa: E402
from tenali_model.serve.engine import Engine, SamplingParams  # noqa: E402


def one_round(engine: Engine, prompts, params) -> dict:
    with engine._cv:  # the loop waits for this lock: every request is queued before it admits any
        t0 = time.perf_counter()
        reqs = [engine.submit(p, params) for p in prompts]
    for r in reqs:
        r.wait()
    times = [[e.time for e in r.ready_events() if e.kind == "token"] for r in reqs]
    ttft = sorted(ts[0] - t0 for ts in times)
    return {"ttft_median": statistics.median(ttft), "ttft_last": ttft[-1],
            "done": max(ts[-1] for ts in times) - t0, "tokens": [r.generated for r in reqs]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--requests", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--padding", type=float, default=0.25, help="the padded engine's prefill_padding")
    args = p.parse_args(argv)
    if args.padding <= 0:
        p.error("--padding must be > 0 (the other engine is the one at 0)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = preset(args.preset)
    model = Transformer(cfg).eval()
    longest = cfg.max_seq_len - args.new_tokens
    if longest < 16:
        raise SystemExit(f"--new-tokens {args.new_tokens} leaves no room for a 16-token prompt in {cfg.max_seq_len}")
    g = torch.Generator().manual_seed(1)
    lengths = [round(16 + i * (longest - 16) / max(1, args.requests - 1)) for i in range(args.requests)]
    prompts = [torch.randint(0, cfg.vocab_size, (n,), generator=g).tolist() for n in lengths]
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0)
    engines = {f"padded ({args.padding:g})": Engine(model, max_batch=args.requests,
                                                   prefill_padding=args.padding).start(),
               "per length (0)": Engine(model, max_batch=args.requests, prefill_padding=0.0).start()}
    counts = {}
    try:
        for name, engine in engines.items():  # warm up, and count the prefill forwards of one round
            one_round(engine, prompts, params)
            real = engine._prefill
            calls = []
            engine._prefill = lambda reqs, real=real, calls=calls: (calls.append(len(reqs)), real(reqs))[1]
            one_round(engine, prompts, params)
            engine._prefill = real
            counts[name] = calls
        runs = {name: [] for name in engines}
        for r in range(args.rounds):
            for name in (list(engines) if r % 2 == 0 else list(engines)[::-1]):
                runs[name].append(one_round(engines[name], prompts, params))
    finally:
        for engine in engines.values():
            engine.stop()
    a, b = runs.values()
    if any(x["tokens"] != y["tokens"] for x, y in zip(a, b)):
        raise SystemExit("the two engines generated different tokens")
    print(f"model {args.preset} ({model.num_params():,} params), {args.threads} thread(s), torch {torch.__version__}; "
          f"{args.requests} requests at once, prompts {lengths[0]}..{lengths[-1]} tokens, {args.new_tokens} new tokens each")
    for name, rs in runs.items():
        print(f"{name:15s} TTFT median {1e3 * statistics.median(r['ttft_median'] for r in rs):7.1f} ms, "
              f"last {1e3 * statistics.median(r['ttft_last'] for r in rs):7.1f} ms, all done "
              f"{1e3 * statistics.median(r['done'] for r in rs):7.1f} ms; prefill forwards {len(counts[name])} "
              f"(rows {counts[name]})")
    for key, label in (("ttft_median", "median TTFT"), ("ttft_last", "last TTFT"), ("done", "all done")):
        ratios = sorted(y[key] / x[key] for x, y in zip(a, b))
        print(f"per length / padded, {label:11s} {statistics.median(ratios):.2f}x "
              f"(rounds {ratios[0]:.2f}x-{ratios[-1]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
