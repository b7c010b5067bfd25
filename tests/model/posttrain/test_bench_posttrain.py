"""bench/bench_posttrain.py's LoRA base-dtype section (4) keeps working: both variants run and agree
on the loss while holding less in bf16 (run in process here; the bench gives each its own)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bf16_frozen_weights_hold_less_for_the_same_loss():
    spec = importlib.util.spec_from_file_location("bench_posttrain", ROOT / "bench" / "bench_posttrain.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    f32, bf16 = (bench.base_dtype_child(mode, "cpu", 1, 32) for mode in ("lora-f32base", "lora-bf16base"))
    assert bf16["final_loss"] == f32["final_loss"]
    assert bf16["weights_mb"] < 0.65 * f32["weights_mb"]  # the projections are most of the model
    assert f32["total_mb"] > 0 and bf16["total_mb"] > 0


def test_the_distillation_throughput_section_runs():
    import torch

    spec = importlib.util.spec_from_file_location("bench_posttrain", ROOT / "bench" / "bench_posttrain.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.throughput(torch.device("cpu"), steps=1, batch=2, seq=32)
    assert r["plain_tokens_per_sec"] > 0 and r["distill_tokens_per_sec"] > 0 and r["slowdown"] > 0
    assert r["flop_ratio"] > 1 and r["expected_slowdown"] == 1 + r["flop_ratio"] / 3
