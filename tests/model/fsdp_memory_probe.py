"""Run under `torchrun --nproc_per_node=2` (gloo, CPU) by test_model_plan.py: each case's per-rank peak of
an FSDP2 training step, as torch's FSDPMemTracker counts it, beside `plan.memory_per_gpu`'s; rank 0
prints one JSON line per case."""

import json
import sys

import torch
import torch.distributed as dist

import tenali_model.model as model_module
from tenali_model.config import ModelConfig
from tenali_model.parallel import build_model
from tenali_model.plan import memory_per_gpu
from tenali_model.train import param_groups

CASES = [dict(bf16=True, checkpointing=False, grad_accum=1), dict(bf16=True, checkpointing=True, grad_accum=2),
         dict(bf16=False, checkpointing=False, grad_accum=1)]


def peak(cfg: ModelConfig, B: int, T: int, bf16: bool, checkpointing: bool, grad_accum: int) -> int:
    from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker

    torch.manual_seed(0)
    model = build_model(cfg, "fsdp", torch.device("cpu"), world_size=dist.get_world_size(),
                        activation_checkpointing=checkpointing, bf16=bf16)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, (B, T))

    def step(tracker=None):
        for _ in range(grad_accum):  # as the trainer: FSDP reduce-scatters every micro-step
            if tracker is not None:
                tracker.reset_mod_stats()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(x, x, with_logits=False)[1]
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    step()  # AdamW's state exists from the first step on
    tracker = FSDPMemTracker(model, optimizer)
    tracker.track_inputs((x,))
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
        planned = memory_per_gpu(cfg, gpus=dist.get_world_size(), parallelism="fsdp", micro_batch=B, seq_len=T,
                                 activation_checkpointing=case["checkpointing"], grad_accum=case["grad_accum"],
                                 bf16=case["bf16"]).total
        if dist.get_rank() == 0:
            print(json.dumps({**case, "measured": measured, "planned": planned}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
