"""CPU training throughput: our trainer's step against transformers' LlamaForCausalLM, same run.

    .venv/bin/python bench/bench_train.py [--preset demo] [--batch 8] [--seq-len 0] [--threads 1]
                                          [--steps 3] [--warmup 1] [--rounds 15] [--profile N]

One training step is what tenali_model.train does per optimizer step with grad_accum 1: forward with
targets (the fused, chunked cross-entropy of tenali_model.loss: no [tokens, vocab] logits), backward,
gradient clipping at 1.0, AdamW (the trainer's: fused where torch has it, decay on matrices only),
zero_grad. The model runs its CPU paths: grouped-query attention inside SDPA, RMSNorm's own backward.
Both models get the same shape (dims, heads, KV heads, MLP width, vocabulary, tied embeddings, RoPE
theta, norm eps), the same float32 weights (ours, exported through tenali_model.hf's name mapping),
the same batches, optimizer settings and thread count; transformers uses its SDPA attention and
computes the loss on the same (input, next-token) pairs (`shift_labels`). Rounds alternate the two
models, and which goes first, so a noisy neighbour hurts both alike; each round times `--steps`
steps after `--warmup`.
Prints tokens/sec of each (median round) and the ratio ours/theirs: the median of the per-round
ratios (each from two back-to-back timings, so the VM's slow spells cancel), with their range, and
each model's minor page faults per step, and the same ratio by CPU time (one thread: the thread's, which
leaves out any time the core is taken away; where it agrees with the wall-time ratio, as on the
development VM, the noise is the core running slower beside its neighbours, not descheduling);
`--profile N` adds the N costliest PyTorch ops of both
steps under torch.profiler.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tenali_model.config import preset  # noqa: E402
from tenali_model.hf import hf_config, hf_names  # noqa: E402
from tenali_model.model import Transformer  # noqa: E402
from tenali_model.train import fused_adamw, param_groups  # noqa: E402


def make_step(model, loss_fn):
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=3e-4, betas=(0.9, 0.95), eps=1e-8,
                                  fused=fused_adamw(torch.device("cpu")))  # the trainer's, for both

    def step(x, y):
        loss = loss_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss
    return step


def timed(step, batches, steps: int, warmup: int, faults: list, cpu: list, cpu_clock) -> float:
    """Seconds per step over `steps` steps, after `warmup` untimed ones; appends the minor page faults
    per step (fresh memory the kernel maps, zeroed, on first touch) to `faults` and the CPU seconds per
    step (`cpu_clock`) to `cpu`."""
    for i in range(warmup):
        step(*batches[i % len(batches)])
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t, c = time.perf_counter(), cpu_clock()
    for i in range(steps):
        step(*batches[i % len(batches)])
    seconds = (time.perf_counter() - t) / steps
    cpu.append((cpu_clock() - c) / steps)
    faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f) / steps)
    return seconds


def profile(steps: dict, batches, top: int) -> None:
    """Self CPU time per step of the `top` costliest PyTorch ops, side by side (torch.profiler,
    3 steps of each model, 4 alternations)."""
    from collections import Counter

    from torch.profiler import profile as torch_profile
    totals = {name: Counter() for name in steps}
    for _ in range(4):
        for name, step in steps.items():
            step(*batches[0])
            with torch_profile() as prof:
                for i in range(3):
                    step(*batches[i % len(batches)])
            for e in prof.key_averages():
                totals[name][e.key] += e.self_cpu_time_total / 12 / 1e3  # ms per step
    a, b = totals.values()
    print(f"\nself CPU ms per step under torch.profiler: ours {sum(a.values()):.1f}, theirs {sum(b.values()):.1f}")
    for op in sorted(set(a) | set(b), key=lambda k: -(a[k] + b[k]))[:top]:
        print(f"  {op[:58]:58s} {a[op]:8.2f} {b[op]:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="demo", help="model preset (demo: the CPU demo model)")
    ap.add_argument("--batch", type=int, default=8, help="sequences per step")
    ap.add_argument("--seq-len", type=int, default=0, help="0 = the model's max_seq_len")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also print the N costliest ops of each step under torch.profiler")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: F401  (fail early if absent)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = preset(args.preset)
    if cfg.activation != "swiglu":
        raise SystemExit(f"preset {args.preset} is not a Llama (activation {cfg.activation})")
    seq_len = args.seq_len or cfg.max_seq_len
    ours = Transformer(cfg).train()

    hf_cfg = {k: v for k, v in hf_config(cfg).items() if k not in ("architectures", "model_type")}
    theirs = AutoModelForCausalLM.from_config(LlamaConfig(**hf_cfg), attn_implementation="sdpa",
                                              dtype=torch.float32).train()
    names = hf_names(cfg)
    state = {names[k]: v for k, v in ours.state_dict().items() if k in names}
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    theirs.tie_weights() if cfg.tie_embeddings else None

    gen = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(4):
        window = torch.randint(0, cfg.vocab_size, (args.batch, seq_len + 1), generator=gen)
        batches.append((window[:, :-1].contiguous(), window[:, 1:].contiguous()))

    # Same weights, same data: the first losses agree (a check that the comparison is fair).
    with torch.no_grad():
        a = ours(*batches[0])[1].item()
        b = theirs(input_ids=batches[0][0], labels=batches[0][1], shift_labels=batches[0][1],
                   use_cache=False).loss.item()
    assert abs(a - b) < 1e-4, (a, b)

    step_ours = make_step(ours, lambda x, y: ours(x, y, with_logits=False)[1])
    step_theirs = make_step(theirs, lambda x, y: theirs(input_ids=x, labels=y, shift_labels=y,
                                                        use_cache=False).loss)
    t_ours, t_theirs, f_ours, f_theirs, c_ours, c_theirs = [], [], [], [], [], []
    # One thread: the step runs on this thread, whose CPU time leaves out the time the VM hands the
    # core to someone else; with more, the process's (its OpenMP workers' spinning included).
    cpu_clock = time.thread_time if args.threads == 1 else time.process_time
    for r in range(args.rounds):  # who goes first alternates too
        pair = [(t_ours, f_ours, c_ours, step_ours), (t_theirs, f_theirs, c_theirs, step_theirs)]
        for times, faults, cpu, step in (pair if r % 2 == 0 else pair[::-1]):
            times.append(timed(step, batches, args.steps, args.warmup, faults, cpu, cpu_clock))
    tokens = args.batch * seq_len
    ours_tps, theirs_tps = tokens / statistics.median(t_ours), tokens / statistics.median(t_theirs)
    print(f"model {args.preset}: {ours.num_params():,} params, batch {args.batch} x {seq_len} tokens, "
          f"float32, {args.threads} thread(s), torch {torch.__version__}")
    print(f"tenali_model step          {ours_tps:10,.0f} tokens/s  "
          f"(median of {args.rounds} rounds x {args.steps} steps: {statistics.median(t_ours) * 1e3:.1f} ms/step)")
    import transformers
    print(f"transformers {transformers.__version__} Llama  {theirs_tps:10,.0f} tokens/s  "
          f"({statistics.median(t_theirs) * 1e3:.1f} ms/step)")
    ratios = sorted(b / a for a, b in zip(t_ours, t_theirs))
    print(f"ratio ours/theirs          {statistics.median(ratios):10.2f}x  "
          f"(median of the {args.rounds} rounds' ratios; range {ratios[0]:.2f}x-{ratios[-1]:.2f}x)")
    cpu_ratios = sorted(b / a for a, b in zip(c_ours, c_theirs))
    print(f"ratio by CPU time          {statistics.median(cpu_ratios):10.2f}x  "
          f"(range {cpu_ratios[0]:.2f}x-{cpu_ratios[-1]:.2f}x; {cpu_clock.__name__}: "
          f"{statistics.median(c_ours) * 1e3:.1f} / {statistics.median(c_theirs) * 1e3:.1f} ms/step)")
    print(f"minor page faults per step: ours {statistics.median(f_ours):,.0f}, "
          f"theirs {statistics.median(f_theirs):,.0f} (medians)")
    if args.profile:
        profile({"ours": step_ours, "theirs": step_theirs}, batches, args.profile)


if __name__ == "__main__":
    main()
