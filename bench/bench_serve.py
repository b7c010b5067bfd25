"""Inference: TTFT and decode TPS of our engine in process, through the HTTP server, and of transformers.

    .venv/bin/python bench/bench_serve.py [--preset demo] [--device cpu] [--dtype float32] [--threads 1]
                                          [--lengths 16,32,64,full] [--concurrency 1,4,16] [--new-tokens 32]
                                          [--rounds 5] [--stream-interval-ms 20] [--cuda-graph [--compile]]
                                          [--out var/bench_serve]

One run, one model (the preset, randomly initialised: speed does not depend on the weights), one
device, thread count, dtype and sampling setting (greedy, no stop token, exactly --new-tokens
tokens per request). For each prompt length and concurrency C (C requests sent at once, equal
prompt lengths), --rounds rounds, each running the three paths one after another, in turn first
and last (so a noisy neighbour slows them alike; each figure in the table is the median over the
rounds):

- in process: `Engine` (batched decoding with a slot KV cache), token times stamped by the engine;
- HTTP: the same engine behind `tenali serve`'s app under uvicorn in a child process, C streaming
  clients (httpx); times are taken by the client; the server streams with its default chunking
  (`--stream-interval-ms`, 20: a chunk at most every 20 ms after the first token);
- transformers: `generate` on the Hugging Face export of the same weights (a batch of C prompts,
  `min_new_tokens` = `max_new_tokens`, greedy, its default cache).

TTFT runs from sending the request to the first token available to the client, prefill and
queueing included (published figures that start the clock after the prefill are not comparable).
Decode TPS per stream is (tokens - 1) / (time of last token - time of first token); aggregate TPS
is all tokens of all requests over the wall time. transformers' TTFT is a `max_new_tokens=1`
generate; its decode rate is (N - 1) / (t(N tokens) - t(1 token)).

Prints the table and the ratios against the targets (single-stream decode >= 1.5x transformers;
aggregate at concurrency 16 >= 4x concurrency 1; HTTP decode within 10% of in-process at
concurrency 1), and writes results.json, table.md and a plot (tps.svg) to --out. The two
single-stream comparisons are paired: the median over rounds of each round's own ratio (printed with
their range), since the paths of a round ran back to back; the aggregate one compares two cells.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tenali_model.config import preset  # noqa: E402
from tenali_model.model import Transformer, inference_attention  # noqa: E402
from tenali_model.serve.engine import Engine, SamplingParams  # noqa: E402


class IdTokenizer:
    """A stand-in tokenizer for random weights: each id decodes to a short word (streaming cost stays real)."""

    def __init__(self, vocab_size: int):
        self.vocab_size, self.name = vocab_size, "ids"

    def encode(self, text):
        return [int(t) for t in text.split()]

    def decode(self, ids):
        return "".join(f" t{int(i)}" for i in ids)

    def token_id(self, token):
        return None


def build_model(args) -> Transformer:
    torch.manual_seed(0)
    cfg = preset(args.preset)
    model = Transformer(cfg).eval()
    return model.to(device=args.device, dtype=getattr(torch, args.dtype))


def prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed + length)
    return torch.randint(0, vocab, (n, length), generator=g).tolist()


def _median(values) -> float:
    """The median of the values that are numbers (NaN: a rate that could not be measured); NaN if none."""
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def summarise(ttfts, stream_tps, total_tokens, wall) -> dict:
    # No decode rate for a stream whose tokens all arrived in one chunk (a fast model, few tokens): NaN.
    return {"ttft_ms": 1000 * statistics.median(ttfts), "decode_tps_stream": _median(stream_tps),
            "aggregate_tps": total_tokens / wall}


def run_inprocess(engine: Engine, ps, new_tokens: int) -> dict:
    params = SamplingParams(max_tokens=new_tokens, temperature=0)
    t0 = time.perf_counter()
    reqs = [engine.submit(p, params) for p in ps]
    # Times are stamped by the engine as it hands each token over; waiting for the end (instead of
    # waking for each token) keeps this thread from competing with the engine's for the GIL.
    for r in reqs:
        r.wait()
    times = [[ev.time for ev in r.ready_events() if ev.kind == "token"] for r in reqs]
    wall = max(ts[-1] for ts in times) - t0
    ttfts = [ts[0] - t0 for ts in times]
    tps = [(len(ts) - 1) / (ts[-1] - ts[0]) for ts in times if len(ts) > 1]
    return summarise(ttfts, tps, sum(len(ts) for ts in times), wall)


async def _http_round(url: str, ps, new_tokens: int) -> dict:
    import httpx

    async def one(client, p):
        # A chunk may carry several tokens (the server sends what arrived while it was busy), so tokens
        # are counted from the usage the stream ends with; stamps mark the first and last text.
        body = {"prompt": p, "max_tokens": new_tokens, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}}
        start, stamps, tokens = time.perf_counter(), [], 0
        async with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {await r.aread()}")
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if chunk["choices"] and chunk["choices"][0]["text"]:
                        stamps.append(time.perf_counter())
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
        return start, stamps, tokens

    limits = httpx.Limits(max_connections=len(ps) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(client, p) for p in ps))
        wall = time.perf_counter() - t0
    ttfts = [st[0] - s for s, st, _ in results]
    tps = [(n - 1) / (st[-1] - st[0]) for _, st, n in results if len(st) > 1 and n > 1]
    return summarise(ttfts, tps, sum(n for _, _, n in results), wall)


def run_transformers(hf_model, ps, new_tokens: int, device) -> dict:
    idx = torch.tensor(ps, device=device)
    common = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    def sync():  # a GPU's last step may still be running when generate returns
        if idx.device.type == "cuda":
            torch.cuda.synchronize(idx.device)

    # The attention kernels our engine runs (`inference_attention`: not cuDNN's, whose per-shape plans
    # would land in transformers' first round of every cell on a Hopper GPU): the same kernels both sides.
    with torch.inference_mode(), inference_attention(idx.device):
        sync()
        t0 = time.perf_counter()
        hf_model.generate(idx, max_new_tokens=1, min_new_tokens=1, **common)
        sync()
        t1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = hf_model.generate(idx, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **common)
        sync()
        tn = time.perf_counter() - t0
    assert out.shape[1] == idx.shape[1] + new_tokens
    per_stream = (new_tokens - 1) / max(tn - t1, 1e-9)
    return {"ttft_ms": 1000 * t1, "decode_tps_stream": per_stream, "aggregate_tps": len(ps) * new_tokens / tn}


def serve_child(args) -> None:
    """--_serve CKPT_DIR PORT: the HTTP server process (same model, device, dtype, threads)."""
    import uvicorn

    from tenali_model.checkpoint import load_model
    from tenali_model.serve.app import ServeOptions, create_app
    from tenali_model.serve.loading import Served

    torch.set_num_threads(args.threads)
    model = load_model(args._serve[0], device=args.device).to(getattr(torch, args.dtype))
    served = Served(model=model, tokenizer=IdTokenizer(model.config.vocab_size), name="bench", source="bench")
    app = create_app(served, ServeOptions(max_batch=max(args.concurrency), max_queue=64, api_key="",
                                          stream_interval=args.stream_interval_ms / 1000,
                                          cuda_graph=args.cuda_graph, compile_step=args.compile))
    uvicorn.run(app, host="127.0.0.1", port=int(args._serve[1]), log_level="warning")


def graph_note(args, who: str = "") -> str:
    """', a CUDA graph' (', a compiled CUDA graph') for the headers when our engine decodes through one."""
    if not args.cuda_graph:
        return ""
    what = "CUDA graph" if args.device.startswith("cuda") else "static step (eager: no graph on a CPU)"
    return f", {who}a {'compiled ' if args.compile else ''}{what}"


def start_server(args, ckpt: Path):
    import httpx

    from tenali_model.serve import DEFAULT_HOST

    import socket

    with socket.socket() as s:
        s.bind((DEFAULT_HOST, 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, __file__, "--_serve", str(ckpt), str(port), "--preset", args.preset, "--device", args.device,
           "--dtype", args.dtype, "--threads", str(args.threads), "--concurrency", ",".join(map(str, args.concurrency)),
           "--stream-interval-ms", str(args.stream_interval_ms)] + (["--cuda-graph"] if args.cuda_graph else []) + (["--compile"] if args.compile else [])
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    url = f"http://{DEFAULT_HOST}:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the benchmark server exited")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the benchmark server did not start")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lengths", default="16,32,64,full", help="prompt lengths; 'full' = context - new tokens")
    p.add_argument("--concurrency", default="1,4,16", type=lambda s: [int(x) for x in s.split(",")])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5, help="repeats per cell, alternating the paths; the median is kept")
    p.add_argument("--skip", default="", help="comma-separated: http, transformers")
    p.add_argument("--stream-interval-ms", type=float, default=20.0,
                   help="the server's --stream-interval-ms (its default: 20; 0 sends every token at once)")
    p.add_argument("--compile", action="store_true",
                   help="with --cuda-graph: the graph captures the torch.compile'd step (tenali serve --compile)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="our engine (in process and in the server) decodes through a CUDA graph (tenali serve --cuda-graph)")
    p.add_argument("--out", default="var/bench_serve")
    p.add_argument("--_serve", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.compile and not args.cuda_graph:
        p.error("--compile compiles the CUDA-graph step: give --cuda-graph too")
    if args._serve:
        serve_child(args)
        return 0
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    model = build_model(args)
    cfg = model.config
    ctx = cfg.max_seq_len
    lengths = sorted({ctx - args.new_tokens if x == "full" else int(x) for x in args.lengths.split(",")})
    lengths = [n for n in lengths if 0 < n <= ctx - args.new_tokens]
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{args.threads} threads"
    print(f"model {args.preset} ({model.num_params() / 1e6:.1f}M params, context {ctx}), {device_name}, "
          f"{args.dtype}, greedy, {args.new_tokens} new tokens, lengths {lengths}, concurrency {args.concurrency}, "
          f"HTTP stream interval {args.stream_interval_ms:g} ms{graph_note(args)}")

    tmp, out = Path(tempfile.mkdtemp(prefix="bench-serve-")), Path(args.out)
    # `timeout` (the device run's stage limit) sends SIGTERM: exit through the finally below, so the
    # server child stops too instead of holding the GPU for the next stage. The SystemExit the
    # handler raises can land where Python only prints it (a weakref callback, a __del__) or be
    # turned into another error on its way out, so the signal is also remembered: each round checks
    # it, and any error while stopping exits as the signal.
    stopped: list[int] = []

    def on_sigterm(signum, frame):
        stopped.append(signum)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    from tenali_model.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp / "ckpt", step=0, model=model.float())
    model = model.to(getattr(torch, args.dtype))

    # Every path is set up first, then each cell's rounds alternate between them, so a noisy
    # neighbour slows all paths alike and the ratios compare like with like.
    engine = Engine(model, max_batch=max(args.concurrency), max_queue=64, cuda_graph=args.cuda_graph,
                    compile_step=args.compile).start()
    run_inprocess(engine, prompts(2, 16, cfg.vocab_size), 4)  # warm up
    # At concurrency 1, CPU seconds of the engine thread and of the other threads of the process that
    # serves (this one in process; the server for HTTP), summed over the rounds.
    cpu = {"in-process": {}, "http": {}}
    paths = {"in-process": lambda ps: _with_thread_cpu(os.getpid(), cpu["in-process"], len(ps),
                                                       lambda: run_inprocess(engine, ps, args.new_tokens))}
    proc = None
    try:
        if "http" not in skip:
            proc, url = start_server(args, ckpt)
            asyncio.run(_http_round(url, prompts(2, 16, cfg.vocab_size), 4))
            paths["http"] = lambda ps: _with_thread_cpu(proc.pid, cpu["http"], len(ps),
                                                        lambda: asyncio.run(_http_round(url, ps, args.new_tokens)))
        if "transformers" not in skip:
            from transformers import AutoModelForCausalLM

            from tenali_model.hf import export_hf

            hf_dir = export_hf(ckpt, tmp / "hf")
            # dtype again in .to(): transformers before 4.56 knows only torch_dtype= and would load float32
            # silently (ours bf16 against theirs fp32: a ratio that misleads); the device image brings its own.
            hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=getattr(torch, args.dtype)).to(
                args.device, getattr(torch, args.dtype)).eval()
            run_transformers(hf, prompts(1, 16, cfg.vocab_size), 4, args.device)
            paths["transformers"] = lambda ps: run_transformers(hf, ps, args.new_tokens, args.device)
        results = []
        for n in lengths:
            for c in args.concurrency:
                ps = prompts(c, n, cfg.vocab_size)
                runs = {name: [] for name in paths}
                for r in range(args.rounds):  # which path goes first alternates too
                    for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                        runs[name].append(paths[name](ps))
                        if stopped:  # the handler's SystemExit was swallowed
                            raise SystemExit(128 + stopped[0])
                for name, rs in runs.items():
                    results.append({"path": name, "prompt": n, "concurrency": c,
                                    **{k: _median(r[k] for r in rs) for k in rs[0]},
                                    "rounds_decode_tps": [r["decode_tps_stream"] for r in rs]})
                # what is measured so far survives a time limit (the device run's stages have one)
                out.mkdir(parents=True, exist_ok=True)
                part = out / "results.json.part"  # renamed whole: a signal mid-write leaves the last one
                part.write_text(json.dumps({"setup": "partial", "complete": False, "results": results}, indent=2))
                part.replace(out / "results.json")
    except BaseException as e:
        if stopped and not (isinstance(e, SystemExit) and e.code == 128 + stopped[0]):
            print(f"stopped by signal {stopped[0]} ({type(e).__name__} on the way out)", file=sys.stderr)
            raise SystemExit(128 + stopped[0]) from e
        raise
    finally:
        engine.stop()
        if proc is not None:
            proc.terminate()
            try:  # uvicorn waits for open connections to close, and a stopped round may leave one
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    report(args, results, lengths, device_name, model, cpu)
    return 0


def _get(results, path, n, c):
    return next((r for r in results if r["path"] == path and r["prompt"] == n and r["concurrency"] == c), None)


def _paired(a: dict, b: dict, overhead: bool = False) -> str:
    """The median over rounds of a's decode rate over b's in the same round (the paths of a round run
    back to back, so a slow spell of the machine hits both: the ratio cancels it, as bench_train does),
    with the range; overhead: 1 - b/a as a percentage instead."""
    pairs = [(x, y) for x, y in zip(a["rounds_decode_tps"], b["rounds_decode_tps"])
             if not (math.isnan(x) or math.isnan(y))]
    if not pairs:
        return "n/a (no round measured both decode rates: every stream came in one chunk)"
    if overhead:
        vals = sorted(1 - y / x for x, y in pairs)
        return f"{statistics.median(vals):+.1%} (rounds {vals[0]:+.0%} to {vals[-1]:+.0%})"
    vals = sorted(x / y for x, y in pairs)
    return f"{statistics.median(vals):.2f}x (rounds {vals[0]:.2f}x-{vals[-1]:.2f}x)"


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of a process, from /proc (Linux): schedstat's time on the CPU in
    nanoseconds where the kernel has it, else stat's user + system clock ticks (10 ms steps, too coarse
    for short rounds)."""
    out, tick = {}, os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[tid] = int(f.read().split()[0]) / 1e9
            continue
        except (FileNotFoundError, IndexError, ValueError):
            pass
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        out[tid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _with_thread_cpu(pid: int, acc: dict, concurrency: int, run):
    """run() (one round); at concurrency 1 adds the CPU time of process pid's threads to acc: the
    busiest is the engine's, the rest (the event loop's HTTP, JSON and SSE work in the server; the
    waiting caller in process) is "other"."""
    if concurrency != 1 or not os.path.isdir(f"/proc/{pid}/task"):
        return run()
    before = _thread_cpu(pid)
    out = run()
    after = _thread_cpu(pid)
    deltas = sorted((after[t] - before.get(t, 0.0) for t in after), reverse=True)
    acc["engine"] = acc.get("engine", 0.0) + deltas[0]
    acc["other"] = acc.get("other", 0.0) + sum(deltas[1:])
    acc["rounds"] = acc.get("rounds", 0) + 1
    return out


def report(args, results, lengths, device_name, model, cpu: dict | None = None) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = ["| path | prompt | concurrency | TTFT ms | decode tok/s per stream | aggregate tok/s |",
            "|---|---:|---:|---:|---:|---:|"]
    rows += [f"| {r['path']} | {r['prompt']} | {r['concurrency']} | {r['ttft_ms']:.1f} | {r['decode_tps_stream']:.0f} "
             f"| {r['aggregate_tps']:.0f} |" for r in results]
    ratios = []
    for n in lengths:
        ours, http, theirs = (_get(results, p, n, 1) for p in ("in-process", "http", "transformers"))
        c_hi = _get(results, "in-process", n, max(args.concurrency))
        line = f"prompt {n:>4}:"
        if ours and theirs:
            line += f" decode ours/transformers {_paired(ours, theirs)} (target 1.5x);"
        if ours and c_hi and max(args.concurrency) > 1:
            line += (f" aggregate c{max(args.concurrency)}/c1 {c_hi['aggregate_tps'] / ours['aggregate_tps']:.2f}x"
                     " (target 4x);")
        if ours and http:
            line += f" HTTP overhead {_paired(ours, http, overhead=True)} (target < 10%)"
        ratios.append(line)
    inp, srv = (cpu or {}).get("in-process", {}), (cpu or {}).get("http", {})
    if inp.get("engine") and srv.get("engine"):
        per = {k: {part: 1e3 * v[part] / (v["rounds"] * args.new_tokens) for part in ("engine", "other")}
               for k, v in (("in-process", inp), ("http", srv))}
        total_in, total_http = sum(per["in-process"].values()), sum(per["http"].values())
        ratios.append(f"CPU per token at concurrency 1 (all lengths; CPU time, which the machine's noise barely "
                      f"enters): in process {per['in-process']['engine']:.3f} ms engine thread "
                      f"+ {per['in-process']['other']:.3f} ms other; HTTP server {per['http']['engine']:.3f} ms engine "
                      f"thread + {per['http']['other']:.3f} ms event loop (HTTP, JSON, SSE): "
                      f"{total_http / total_in - 1:+.1%} CPU for serving over HTTP")
    header = (f"{args.preset} ({model.num_params() / 1e6:.1f}M params), {device_name}, {args.dtype}, greedy, "
              f"{args.new_tokens} new tokens per request{graph_note(args, 'our engine through ')}")
    text = "\n".join([header, "", *rows, "", *ratios])
    print("\n" + text)
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"setup": header, "complete": True, "results": results}, indent=2))
    try:
        from tenali_pipeline.plots import line_chart_svg  # plain SVG, no dagster

        series = {f"{p} c{c}": [(r["prompt"], r["aggregate_tps"]) for r in results if r["path"] == p and r["concurrency"] == c]
                  for p in ("in-process", "http", "transformers") for c in args.concurrency}
        series = {k: v for k, v in series.items() if v}
        (out / "tps.svg").write_text(line_chart_svg(dict(list(series.items())), x_label="prompt tokens",
                                                    y_label="aggregate tok/s"))
    except (ImportError, ValueError) as e:
        print(f"(no plot: {e})")
    print(f"\nwrote {out}/table.md, results.json, tps.svg")


if __name__ == "__main__":
    sys.exit(main())
