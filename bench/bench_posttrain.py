"""Post-training costs, in one run: distillation against plain training of the same student, and
peak memory of LoRA against full fine-tuning of the same model.

    .venv/bin/python bench/bench_posttrain.py [--steps 8] [--device cpu|cuda]

1. Throughput: the student (the demo preset's shape) trained on the same random tokens (a) with plain
   cross-entropy and (b) with the distillation loss against a larger teacher (forward under no_grad,
   bf16 on CUDA, where the student trains under bf16 autocast as the stage's does), both through the
   losses the stages use (the model's fused loss; `posttrain.distill.chunked_distill_loss`), AdamW
   steps included; 5 rounds, the two alternating, the slowdown the median of each round's ratio
   (tokens/s: the medians). Printed beside the teacher/student FLOP ratio
   (plan.flops_per_token): a teacher forward costs about a third of its training FLOPs, so the
   expected slowdown is 1 + (teacher FLOPs / 3) / student FLOPs.
2. Memory: a larger model fine-tuned for 3 steps with full fine-tuning and with LoRA (r=16 on
   wq/wk/wv/wo/w1/w2/w3, head trained; with the seed's dropout 0.05 and with none, since peft
   keeps a dropped-out copy of each adapted layer's input for the backward pass), each in a fresh
   subprocess. Peak = torch.cuda.max_memory_allocated
   on CUDA; on CPU the growth of the process's peak RSS over its RSS after the model was built, which
   also counts allocator caching. The analytic training state (gradients + AdamW moments of the
   trainable parameters) is printed beside it.
3. DPO and distillation: the same model as policy, with a frozen copy as reference (DPO) or as
   teacher (distillation, T 2.5, alpha 0.7), 3 steps; DPO on batch pairs
   (2 x batch rows), each variant in a fresh subprocess: per-sequence log-probabilities from the
   full [rows, T, vocab] logits (log_softmax + gather, what dpo.py did before) against the model's
   chunked per-token path (`forward(..., token_logps=True)`, loss.linear_token_logps, which recomputes
   the head's logits in backward); distillation with the student's full logits (distill_loss)
   against `chunked_distill_loss` (the teacher's logits are held in both). Peak memory as in 2, and
   seconds per step.
4. LoRA's frozen weights in float32 or bf16 (`lora.base_dtype`), both under bf16 autocast (what the
   GPU runs; on CPU too, for the comparison), dropout 0, 3 steps, each in a fresh subprocess. Here the
   weights count: the figure is the process's whole memory above what it held before the model was
   built (CUDA: max_memory_allocated after the model is ready, weights included; CPU: the peak RSS,
   reset once the model is ready (/proc/self/clear_refs) after freed memory went back to the system
   (malloc_trim), minus the RSS before the model, taken after one step of a tiny model has made the
   same kernels resident). The final losses of the two are printed too: bf16
   autocast computes with bf16-rounded weights either way, so they should agree.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tenali_model.config import ModelConfig, num_params  # noqa: E402
from tenali_model.model import Transformer  # noqa: E402
from tenali_model.plan import flops_per_token  # noqa: E402
from tenali_model.posttrain.distill import chunked_distill_loss  # noqa: E402
from tenali_model.train import autocast_context  # noqa: E402

STUDENT = ModelConfig(vocab_size=4096, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, max_seq_len=128)
TEACHER = ModelConfig(vocab_size=4096, dim=256, n_layers=8, n_heads=8, n_kv_heads=4, max_seq_len=128)
MEMORY_MODEL = ModelConfig(vocab_size=8192, dim=512, n_layers=8, n_heads=8, n_kv_heads=4, max_seq_len=128)


def throughput(device: torch.device, steps: int, batch: int, seq: int) -> dict:
    torch.manual_seed(0)
    student = Transformer(STUDENT).to(device)
    teacher = Transformer(TEACHER).to(device).eval().requires_grad_(False)
    if device.type == "cuda":
        teacher.to(dtype=torch.bfloat16)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
    x = torch.randint(0, STUDENT.vocab_size, (batch, seq), device=device)
    y = torch.randint(0, STUDENT.vocab_size, (batch, seq), device=device)

    # as the stage computes: the student under bf16 autocast on CUDA (the teacher is held in bf16)
    autocast = autocast_context(device, "auto")

    def plain():
        with autocast:
            loss = student(x, y, with_logits=False)[1]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def distill():  # as the distillation stage runs it: the student's logits chunked
        with torch.no_grad():
            t = teacher(x)[0]
        with autocast:
            s, n, _ = chunked_distill_loss(student(x, hidden=True)[0], student.lm_head.weight, t, y, 2.5, 0.7)
        (s / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def rate(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return batch * seq * steps / (time.perf_counter() - t0)

    plain(), distill()  # warm-up
    # the two alternate round by round, taking turns to go first; the slowdown is the median of
    # each round's own ratio (this VM's neighbours move whole rounds)
    rates = {plain: [], distill: []}
    for r in range(5):
        for fn in (plain, distill) if r % 2 == 0 else (distill, plain):
            rates[fn].append(rate(fn))
    plains, distills = rates[plain], rates[distill]
    plain_tps, distill_tps = statistics.median(plains), statistics.median(distills)
    slowdown = statistics.median(p / d for p, d in zip(plains, distills))
    f_s, f_t = flops_per_token(STUDENT, seq), flops_per_token(TEACHER, seq)
    return {"student_params": num_params(STUDENT), "teacher_params": num_params(TEACHER),
            "plain_tokens_per_sec": plain_tps, "distill_tokens_per_sec": distill_tps,
            "slowdown": slowdown, "flop_ratio": f_t / f_s, "expected_slowdown": 1 + f_t / 3 / f_s}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _vm_kb(field: str) -> int:
    """VmRSS / VmHWM of this process in kB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is not in /proc/self/status")


def base_dtype_child(mode: str, device: str, batch: int, seq: int) -> dict:
    """LoRA with the frozen weights in float32 ("lora-f32base") or bf16 ("lora-bf16base") under bf16
    autocast; the process's memory above what it held before the model, weights included."""
    import ctypes
    import gc

    from tenali_model.posttrain.config import LoraSettings
    from tenali_model.posttrain.lora import apply_lora
    dev = torch.device(device)
    torch.manual_seed(0)
    x = torch.randint(0, MEMORY_MODEL.vocab_size, (batch, seq), device=dev)
    # the same kernels once on a tiny model first: their code and libraries' buffers are then already
    # resident, and the RSS below is the model's and its training's
    settings = LoraSettings(dropout=0.0, base_dtype="bfloat16" if mode == "lora-bf16base" else "float32")
    tiny = apply_lora(Transformer(ModelConfig(vocab_size=MEMORY_MODEL.vocab_size, dim=64, n_layers=1, n_heads=2,
                                              n_kv_heads=1, max_seq_len=seq)).to(dev), settings)
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        tiny(x, x)[1].backward()
    del tiny
    gc.collect()
    if dev.type != "cuda":  # what the warm-up freed goes back to the system now, not after the baseline
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # (trimmed later, it made the whole below negative: -32.7 MB)
    before_kb = _vm_kb("VmRSS")
    model = Transformer(MEMORY_MODEL).to(dev)
    model = apply_lora(model, settings)
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:  # the float32 copies apply_lora replaced go back to the system, then the peak starts here
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    t0 = time.perf_counter()
    for _ in range(3):
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = model(x, x)[1]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = (time.perf_counter() - t0) / 3
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    if dev.type == "cuda":
        total, measure = torch.cuda.max_memory_allocated() / 2**20, "cuda max_memory_allocated"
    else:
        total, measure = (_vm_kb("VmHWM") - before_kb) / 1024, "peak RSS above the process before the model"
    return {"mode": mode, "weights_mb": weights_mb, "total_mb": total, "measure": measure,
            "final_loss": losses[-1], "seconds_per_step": seconds}


def memory_child(mode: str, device: str, batch: int, seq: int) -> dict:
    """One fine-tuning variant in this (fresh) process; prints its peak as JSON."""
    from tenali_model.posttrain.config import LoraSettings
    from tenali_model.posttrain.lora import apply_lora, count_trainable
    dev = torch.device(device)
    torch.manual_seed(0)
    model = Transformer(MEMORY_MODEL).to(dev)
    if mode.startswith("lora"):
        model = apply_lora(model, LoraSettings(dropout=0.0 if mode == "lora-nodrop" else 0.05))
    base_rss = _rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randint(0, MEMORY_MODEL.vocab_size, (batch, seq), device=dev)
    if mode.startswith("dpo"):
        step = _dpo_step(model, opt, mode, dev, batch, seq)
    elif mode.startswith("distill"):
        step = _distill_step(model, opt, mode, dev, batch, seq)
    else:
        def step():
            model(x, x)[1].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / 3
    trainable = count_trainable(model)
    out = {"mode": mode, "trainable_params": trainable, "state_mb": trainable * 12 / 2**20,
           "peak_mb": _rss_mb() - base_rss, "measure": "peak RSS growth", "seconds_per_step": seconds}
    if dev.type == "cuda":
        out.update(peak_mb=(torch.cuda.max_memory_allocated() - base_cuda) / 2**20,
                   measure="cuda max_memory_allocated above the model")
    return out


def _dpo_step(model, opt, mode: str, dev, batch: int, seq: int):
    """One DPO step on `batch` random pairs (2 x batch rows, answers in the second half of each row)."""
    import copy

    from tenali_model.posttrain.dpo import dpo_loss, sequence_logps
    ref = copy.deepcopy(model).requires_grad_(False)
    x = torch.randint(0, MEMORY_MODEL.vocab_size, (2 * batch, seq), device=dev)
    y = x.roll(-1, 1)
    y[:, : seq // 2] = -1  # the prompt's labels are not counted

    def from_logits(m):  # the full-logits baseline
        logp = torch.log_softmax(m(x)[0].float(), dim=-1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
        return (logp * (y != -1)).sum(-1)

    logps = from_logits if mode == "dpo-logits" else (lambda m: sequence_logps(m, x, y))

    def step():
        with torch.no_grad():
            ref_logps = logps(ref)
        loss, n, _ = dpo_loss(logps(model), ref_logps, 0.1)
        (loss / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _distill_step(model, opt, mode: str, dev, batch: int, seq: int):
    """One distillation step against a frozen copy of the model as the teacher."""
    import copy

    from tenali_model.posttrain.distill import distill_loss
    teacher = copy.deepcopy(model).requires_grad_(False)
    x = torch.randint(0, MEMORY_MODEL.vocab_size, (batch, seq), device=dev)
    y = x.roll(-1, 1)

    def step():
        with torch.no_grad():
            t = teacher(x)[0]
        if mode == "distill-logits":
            loss, n, _ = distill_loss(model(x)[0], t, y, 2.5, 0.7)
        else:
            loss, n, _ = chunked_distill_loss(model(x, hidden=True)[0], model.lm_head.weight, t, y, 2.5, 0.7)
        (loss / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def memory(device: str, batch: int, seq: int, modes=("full", "lora", "lora-nodrop")) -> list[dict]:
    rows = []
    for mode in modes:
        proc = subprocess.run([sys.executable, __file__, "--memory-child", mode, "--device", device,
                               "--batch", str(batch), "--seq", str(seq)],
                              capture_output=True, text=True, check=True, cwd=ROOT)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--memory-child", choices=["full", "lora", "lora-nodrop", "dpo-logits", "dpo-chunked",
                                              "distill-logits", "distill-chunked", "lora-f32base",
                                              "lora-bf16base"],
                   default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        child = base_dtype_child if args.memory_child.endswith("base") else memory_child
        print(json.dumps(child(args.memory_child, args.device, args.batch, args.seq)))
        return
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    t = throughput(device, args.steps, args.batch, args.seq)
    print(f"distillation: student {t['student_params']:,} params, teacher {t['teacher_params']:,}; "
          f"batch {args.batch} x {args.seq}")
    print(f"  plain training   {t['plain_tokens_per_sec']:>10,.0f} tok/s")
    print(f"  distillation     {t['distill_tokens_per_sec']:>10,.0f} tok/s")
    print(f"  slowdown {t['slowdown']:.2f}x | teacher/student training FLOP ratio {t['flop_ratio']:.2f} "
          f"| expected slowdown from FLOPs {t['expected_slowdown']:.2f}x")
    rows = memory(args.device, args.batch, args.seq)
    print(f"fine-tuning memory: {num_params(MEMORY_MODEL):,} params, batch {args.batch} x {args.seq}, 3 steps")
    for r in rows:
        print(f"  {r['mode']:<11} trainable {r['trainable_params']:>11,} | peak {r['peak_mb']:8.1f} MB "
              f"({r['measure']}) | grads + AdamW state {r['state_mb']:7.1f} MB")
    print(f"  LoRA / full peak: {rows[1]['peak_mb'] / rows[0]['peak_mb']:.2f} (dropout 0.05), "
          f"{rows[2]['peak_mb'] / rows[0]['peak_mb']:.2f} (dropout 0)")
    for stage, title in (("dpo", f"DPO memory: same model as policy and reference, {args.batch} pairs"),
                         ("distill", f"distillation memory: same model as student and teacher, {args.batch} rows")):
        pair = memory(args.device, args.batch, args.seq, modes=(f"{stage}-logits", f"{stage}-chunked"))
        print(f"{title} x {args.seq} tokens, 3 steps")
        for r in pair:
            print(f"  {r['mode']:<15} peak {r['peak_mb']:8.1f} MB ({r['measure']}) | {r['seconds_per_step']:.3f} s/step")
        print(f"  chunked / full-logits: peak {pair[1]['peak_mb'] / pair[0]['peak_mb']:.2f}, "
              f"time per step {pair[1]['seconds_per_step'] / pair[0]['seconds_per_step']:.2f}")
    pair = memory(args.device, args.batch, args.seq, modes=("lora-f32base", "lora-bf16base"))
    print(f"LoRA's frozen weights (lora.base_dtype), bf16 autocast, dropout 0, {args.batch} x {args.seq}, 3 steps")
    for r in pair:
        print(f"  {r['mode']:<14} parameters {r['weights_mb']:7.1f} MB | whole {r['total_mb']:8.1f} MB "
              f"({r['measure']}) | final loss {r['final_loss']:.6f} | {r['seconds_per_step']:.3f} s/step")
    print(f"  bf16 / float32 frozen weights: whole {pair[1]['total_mb'] / pair[0]['total_mb']:.2f}")


if __name__ == "__main__":
    main()
