"""The KV cache is allocated whole when the server starts (a slot of the model's context per --max-batch
sequence): one that cannot fit is refused at start, naming the --max-batch that fits, not left to the
kernel's OOM killer (CPU) or a CUDA error that names no option."""

from __future__ import annotations

import pytest
import torch

from tenali_model.config import preset
from tenali_model.serve import engine


def test_the_cache_that_cannot_fit_names_the_max_batch_that_does(monkeypatch):
    cfg = preset("7b")  # 32 layers, 32 KV heads of 128: 4 GiB a float32 sequence of 4,096 tokens
    per_slot = 2 * 32 * 32 * 4096 * 128 * 4
    monkeypatch.setattr(engine, "device_memory", lambda device, available: (5.5 * per_slot, "this machine"))
    with pytest.raises(ValueError, match=r"--max-batch 16 sequences of 4096 tokens takes 64.00 GiB \(4096 MiB a "
                                         r"sequence\), but this machine has 22.00 GiB free .*--max-batch to 5 or less"):
        engine.check_cache_room(cfg, 16, 4096, torch.device("cpu"), torch.float32)
    engine.check_cache_room(cfg, 5, 4096, torch.device("cpu"), torch.float32)  # fits
    engine.check_cache_room(cfg, 11, 4096, torch.device("cpu"), torch.bfloat16)  # half the bytes
    monkeypatch.setattr(engine, "device_memory", lambda device, available: (per_slot / 2, "GPU 0"))
    with pytest.raises(ValueError, match="not even one sequence fits"):
        engine.check_cache_room(cfg, 1, 4096, torch.device("cpu"), torch.float32)
    monkeypatch.setattr(engine, "device_memory", lambda device, available: None)  # unknown: no refusal
    engine.check_cache_room(cfg, 16, 4096, torch.device("cpu"), torch.float32)


def test_this_machines_memory_is_read_within_its_cgroup_limit(tmp_path, monkeypatch):
    from tenali_model import memory

    total = memory.device_memory(torch.device("cpu"), available=False)
    free = memory.device_memory(torch.device("cpu"), available=True)
    if total is None or free is None:
        pytest.skip("no sysconf or /proc/meminfo on this system")
    assert 0 < free[0] <= total[0] and free[1] == total[1] == "this machine"
    (tmp_path / "memory.max").write_text("3000000\n")  # a container's cgroup v2 limit, 1 MB of it in use
    (tmp_path / "memory.current").write_text("1000000\n")
    monkeypatch.setattr(memory, "CGROUP", tmp_path)
    assert memory.device_memory(torch.device("cpu"), available=False)[0] == 3_000_000
    assert memory.device_memory(torch.device("cpu"), available=True)[0] == 2_000_000
    (tmp_path / "memory.max").write_text("max\n")  # no limit
    assert memory.device_memory(torch.device("cpu"), available=False) == total


def test_tenali_serve_exits_2_naming_the_fix_before_serving(ckpt, tok_path, capsys, monkeypatch):
    import uvicorn

    from tenali_model.cli import main

    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("served"))
    monkeypatch.setattr(engine, "device_memory", lambda device, available: (1000.0, "this machine"))
    assert main(["serve", str(ckpt), "--tokenizer", str(tok_path), "--device", "cpu", "--port", "0",
                 "--max-batch", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tenali serve: error: the KV cache for --max-batch 4 sequences") and "not even one" in err
