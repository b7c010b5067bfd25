"""The trainer's CPU-specific pieces, each against what it replaced, on the demo model's shapes.

    .venv/bin/python bench/bench_train_parts.py [--preset demo] [--batch 8] [--threads 1] [--rounds 9]

Four A/B pairs, forward + backward (or one optimizer step), same inputs, CPU time per call
(`time.thread_time`), rounds alternating the two sides, medians:

- loss: `F.cross_entropy(F.linear(h, W))` against `loss.linear_cross_entropy(h, W, targets)` for
  h [batch * seq, dim] and the (tied) head W [vocab, dim];
- rmsnorm: autograd through `F.rms_norm` against `model._RMSNormCPU` on [batch, seq, dim];
- attention: SDPA with keys and values repeated to every query head against `enable_gqa`;
- adamw: `torch.optim.AdamW` for-each against fused, one step on the model's parameters.

Prints each side's time, the ratio old/new and whether the results agree. `bench/bench_train.py`
measures the whole step against transformers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tenali_model.config import preset  # noqa: E402
from tenali_model.loss import linear_cross_entropy  # noqa: E402
from tenali_model.model import Transformer, _RMSNormCPU  # noqa: E402
from tenali_model.train import param_groups  # noqa: E402


def cpu_ms(fn, calls: int) -> float:
    fn()
    start = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - start) / calls * 1e3


def fwd_bwd(fn, *inputs):
    """A callable running fn(*leaves) forward and backward on fresh grad-requiring copies."""
    def run():
        leaves = [x.detach().requires_grad_() if x.is_floating_point() else x for x in inputs]
        out = fn(*leaves)
        out.backward(torch.ones_like(out))
        return out.detach(), [x.grad for x in leaves if x.is_floating_point()]
    return run


def compare(name, old, new, rounds: int, calls: int, tol: float) -> None:
    (a, ga), (b, gb) = old(), new()
    agree = torch.allclose(a, b, rtol=tol, atol=tol) and all(
        torch.allclose(x, y, rtol=tol, atol=tol) for x, y in zip(ga, gb))
    t_old, t_new = [], []
    for r in range(rounds):
        pair = [(t_old, old), (t_new, new)]
        for times, fn in (pair if r % 2 == 0 else pair[::-1]):
            times.append(cpu_ms(fn, calls))
    o, n = statistics.median(t_old), statistics.median(t_new)
    print(f"{name:10s} old {o:8.3f} ms   new {n:8.3f} ms   old/new {o / n:5.2f}x   "
          f"results agree: {agree}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = preset(args.preset)
    B, T, D, V = args.batch, cfg.max_seq_len, cfg.dim, cfg.vocab_size
    print(f"{args.preset}: batch {B} x {T}, dim {D}, vocab {V}, {args.threads} thread(s), "
          f"torch {torch.__version__}, median of {args.rounds} alternating rounds (CPU time)")

    h, w = torch.randn(B * T, D), torch.randn(V, D) * 0.02
    t = torch.randint(0, V, (B * T,))
    compare("loss", fwd_bwd(lambda h, w: F.cross_entropy(F.linear(h, w), t), h, w),
            fwd_bwd(lambda h, w: linear_cross_entropy(h, w, t), h, w), args.rounds, 5, 1e-4)

    x, g = torch.randn(B, T, D), torch.rand(D) + 0.5
    compare("rmsnorm", fwd_bwd(lambda x, g: F.rms_norm(x, (D,), g, cfg.norm_eps), x, g),
            fwd_bwd(lambda x, g: _RMSNormCPU.apply(x, g, cfg.norm_eps), x, g), args.rounds, 50, 1e-4)

    rep = cfg.n_heads // cfg.n_kv_heads
    q = torch.randn(B, cfg.n_heads, T, cfg.head_dim)
    k, v = torch.randn(B, cfg.n_kv_heads, T, cfg.head_dim), torch.randn(B, cfg.n_kv_heads, T, cfg.head_dim)
    compare("attention",
            fwd_bwd(lambda q, k, v: F.scaled_dot_product_attention(
                q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), is_causal=True), q, k, v),
            fwd_bwd(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                   enable_gqa=rep > 1), q, k, v),
            args.rounds, 20, 1e-4)

    models = [Transformer(cfg) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    for m in models:
        for p in m.parameters():
            p.grad = torch.ones_like(p) * 1e-3
    opts = [torch.optim.AdamW(param_groups(m, 0.1), lr=1e-3, fused=f) for m, f in zip(models, (False, True))]

    def step(i):
        def run():
            opts[i].step()
            return models[i].lm_head.weight.detach(), []
        return run
    compare("adamw", step(0), step(1), args.rounds, 20, 1e-5)


if __name__ == "__main__":
    main()
