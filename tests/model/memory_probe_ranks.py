"""Run under `torchrun --nproc_per_node=2` (gloo, CPU) by test_model_plan.py: each case's per-rank peak of
a DDP or FSDP2 training step, as torch's MemTracker / FSDPMemTracker count it, beside
`plan.memory_per_gpu`'s; rank 0 prints one JSON line per case."""

import json
import sys

import torch
import torch.distributed as dist

import tenali_model.model as model_module
from tenali_model.config import ModelConfig
from tenali_model.parallel import build_model, wrap_ddp
from tenali_model.plan import memory_per_gpu
from tenali_model.train import autocast_context, optimizer_step, param_groups

CASES = [dict(parallelism="fsdp", bf16=True, checkpointing=False, grad_accum=1),
         dict(parallelism="fsdp", bf16=True, checkpointing=True, grad_accum=2),
         dict(parallelism="fsdp", bf16=False, checkpointing=False, grad_accum=1),
         dict(parallelism="ddp", bf16=True, checkpointing=False, grad_accum=1),
         dict(parallelism="ddp", bf16=True, checkpointing=False, grad_accum=2)]


def peak(cfg: ModelConfig, B: int, T: int, parallelism: str, bf16: bool, checkpointing: bool, grad_accum: int) -> int:
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed._tools.mem_tracker import MemTracker

    torch.manual_seed(0)
    raw = build_model(cfg, parallelism, torch.device("cpu"), world_size=dist.get_world_size(),
                      activation_checkpointing=checkpointing, bf16=bf16)
    if parallelism == "fsdp":  # built on the meta device: weights to fill
        for p in raw.parameters():
            torch.nn.init.normal_(p, std=0.02)
    model = wrap_ddp(raw, torch.device("cpu")) if parallelism == "ddp" else raw
    optimizer = torch.optim.AdamW(param_groups(raw, 0.1), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, (B, T))

    def step(tracker=None):  # the trainer's own step: DDP syncs on the last micro-step, FSDP on every one
        def next_batch():
            if tracker is not None:
                tracker.reset_mod_stats()  # one forward per module per tracking, as the trackers want
            return x, x
        optimizer_step(model, raw, optimizer, parallelism, next_batch, grad_accum, torch.device("cpu"),
                       autocast_context(torch.device("cpu"), "bfloat16" if bf16 else "float32"), z_loss=0.0,
                       grad_clip=1.0)
    step()  # AdamW's state exists from the first step on
    if parallelism == "fsdp":
        tracker = FSDPMemTracker(model, optimizer)
        tracker.track_inputs((x,))
    else:
        tracker = MemTracker()
        tracker.track_external(model, optimizer)
    with tracker:
        step(tracker)
    return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]


def main() -> None:
    model_module._cpu_paths = lambda x: False  # the plan is for GPUs: their paths
    dist.init_process_group("gloo")
    cfg = ModelConfig(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, ffn_hidden=704, vocab_size=4000, max_seq_len=256)
    B, T = 4, 256
    for case in CASES:
        measured = peak(cfg, B, T, **case)
        planned = memory_per_gpu(cfg, gpus=dist.get_world_size(), parallelism=case["parallelism"], micro_batch=B,
                                 seq_len=T, activation_checkpointing=case["checkpointing"],
                                 grad_accum=case["grad_accum"], bf16=case["bf16"]).total
        if dist.get_rank() == 0:
            print(json.dumps({**case, "measured": measured, "planned": planned}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
