"""What a new shape costs PyTorch's attention: its default kernel choice against `inference_attention`'s.

    python bench/bench_sdpa_shapes.py [--preset 51m] [--device cuda] [--dtype bfloat16] [--lengths 32]

On a Hopper GPU (an H200, torch 2.11) PyTorch tried cuDNN's attention first, and cuDNN builds an
execution plan for every new shape. Inference meets new shapes all the time: a decoding step has one
more key than the last, a prefill has its prompt's length. For the preset's attention (heads, head size) this
times the first call at each of --lengths new shapes, and then a repeated call at one shape, three
ways a server runs attention: one decoding query over a new number of keys (no mask), four queries
over them under a mask (a batched step), and a causal prefill of a new prompt length. Each under
PyTorch's default backends and under `inference_attention` (every fused kernel but cuDNN's), in
that order after a warm-up of both at a length that is not timed, so that loading the kernels does
not count. Prints the median milliseconds of each, the ratio default / ours, and the backend each
picked. On a CPU both are the same kernels (a check that the script runs, nothing more).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tenali_model.config import preset  # noqa: E402
from tenali_model.model import inference_attention  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="51m")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--lengths", type=int, default=32, help="new shapes timed per case")
    args = p.parse_args(argv)
    cfg, device, dtype = preset(args.preset), torch.device(args.device), getattr(torch, args.dtype)
    gpu = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if gpu else (lambda: None)
    g = torch.Generator(device=device).manual_seed(0)

    def inputs(batch: int, queries: int, keys: int, masked: bool):
        q = torch.randn(batch, cfg.n_heads, queries, cfg.head_dim, device=device, dtype=dtype, generator=g)
        k, v = (torch.randn(batch, cfg.n_heads, keys, cfg.head_dim, device=device, dtype=dtype, generator=g)
                for _ in range(2))
        kw = {"is_causal": True} if queries == keys else {}
        if masked:  # row b sees its first keys - b keys (rows at different positions, as in a batched step)
            kw = {"attn_mask": (torch.arange(keys, device=device)[None, :]
                                < keys - torch.arange(batch, device=device)[:, None])[:, None, None, :]}
        return q, k, v, kw

    cases = {  # name: (batch, queries for `keys` keys, masked)
        "decode, 1 query": (1, lambda n: 1, False),
        "decode, 4 rows, mask": (4, lambda n: 1, True),
        "prefill, causal": (1, lambda n: n, False),
    }
    ways = {"default": contextlib.nullcontext, "inference_attention": lambda: inference_attention(device)}

    def timed(way: str, case, keys: int) -> float:
        batch, queries, masked = case
        q, k, v, kw = inputs(batch, queries(keys), keys, masked)
        with ways[way]():
            sync()
            t = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v, **kw)
            sync()
            return time.perf_counter() - t

    def chosen(way: str, case, keys: int) -> str:
        batch, queries, masked = case
        q, k, v, kw = inputs(batch, queries(keys), keys, masked)
        with ways[way]():
            try:
                return torch.nn.attention.SDPBackend(torch._fused_sdp_choice(q, k, v, **kw)).name.lower()
            except Exception as e:  # noqa: BLE001 - a private function: the timings stand without it
                return f"unknown ({type(e).__name__})"

    print(f"preset {args.preset} attention ({cfg.n_heads} heads of {cfg.head_dim}), {args.dtype}, "
          f"{torch.cuda.get_device_name(device) if gpu else 'CPU'}, torch {torch.__version__}")
    print(f"{'case':22s} {'way':20s} {'backend':20s} {'new shape ms':>12s} {'same shape ms':>13s}")
    with torch.inference_mode():
        for name, case in cases.items():
            for way in ways:  # kernels loaded, cuBLAS and the like set up: not part of what is timed
                timed(way, case, 8)
            first: dict[str, float] = {}
            for way in ways:
                # New shapes for each way: lengths neither has met (a plan is per shape and backend).
                offset = 16 if way == "default" else 16 + args.lengths
                first[way] = statistics.median(timed(way, case, offset + i) for i in range(args.lengths))
                again = statistics.median(timed(way, case, 200) for _ in range(21))
                print(f"{name:22s} {way:20s} {chosen(way, case, 200):20s} {1e3 * first[way]:12.3f} {1e3 * again:13.3f}")
            print(f"{name:22s} new shape: default / inference_attention {first['default'] / first['inference_attention']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
