"""The measured peak of the trainer's own optimizer step beside `plan.memory_per_gpu`'s, on the CPU, as
torch's MemTracker / FSDPMemTracker count it. test_model_plan.py calls `peak` in process (one process) and
runs this file under torchrun for DDP and FSDP2 on two gloo ranks, where rank 0 prints one JSON line per
case (bytes); docs/benchmarks.md quotes those lines:

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python -m torch.distributed.run --standalone \
        --nproc_per_node=2 tests/model/memory_probe_ranks.py
"""

import json
import sys

import torch
import torch.distributed as dist

import tenali_model.model as model_module
from tenali_model.config import ModelConfig
from tenali_model.parallel import build_model, wrap_ddp
from tenali_model.plan import memory_per_gpu
from tenali_model.train import autocast_context, fused_adamw, optimizer_step, param_groups

CFG = ModelConfig(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, ffn_hidden=704, vocab_size=4000, max_seq_len=256)
B, T = 4, 256

CASES = [dict(parallelism="fsdp", bf16=True, checkpointing=False, grad_accum=1),
         dict(parallelism="fsdp", bf16=True, checkpointing=True, grad_accum=2),
         dict(parallelism="fsdp", bf16=False, checkpointing=False, grad_accum=1),
         dict(parallelism="fsdp", bf16=False, checkpointing=True, grad_accum=1),
         dict(parallelism="ddp", bf16=True, checkpointing=False, grad_accum=1),
         dict(parallelism="ddp", bf16=True, checkpointing=False, grad_accum=2),
         dict(parallelism="ddp", bf16=True, checkpointing=True, grad_accum=1)]


def peak(parallelism: str, bf16: bool, checkpointing: bool, grad_accum: int, world_size: int = 1) -> int:
    """Bytes at the peak of the second optimizer step (AdamW's state exists from the first) of CFG at
    B x T. The caller puts the model on the paths it takes on CUDA (the plan is for GPUs)."""
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
    from torch.distributed._tools.mem_tracker import MemTracker

    cfg = CFG
    torch.manual_seed(0)
    raw = build_model(cfg, parallelism, torch.device("cpu"), world_size=world_size,
                      activation_checkpointing=checkpointing, bf16=bf16)
    if parallelism == "fsdp":  # built on the meta device: weights to fill
        for p in raw.parameters():
            torch.nn.init.normal_(p, std=0.02)
    model = wrap_ddp(raw, torch.device("cpu")) if parallelism == "ddp" else raw
    optimizer = torch.optim.AdamW(param_groups(raw, 0.1), lr=1e-4, fused=fused_adamw(torch.device("cpu")))
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


def planned(parallelism: str, bf16: bool, checkpointing: bool, grad_accum: int, world_size: int = 1) -> float:
    return memory_per_gpu(CFG, gpus=world_size, parallelism=parallelism, micro_batch=B, seq_len=T,
                          activation_checkpointing=checkpointing, grad_accum=grad_accum, bf16=bf16).total


def main() -> None:
    model_module._cpu_paths = lambda x: False  # the plan is for GPUs: their paths
    dist.init_process_group("gloo")
    world = dist.get_world_size()
    for case in CASES:
        measured = peak(**case, world_size=world)
        planned_ = planned(**case, world_size=world)
        if dist.get_rank() == 0:
            print(json.dumps({**case, "measured": measured, "planned": planned_}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
