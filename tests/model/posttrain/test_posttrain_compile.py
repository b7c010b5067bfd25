"""The post-training stages' `compile` switch (what the pipeline sets from the large recipes on GPUs):
a compiled stage trains as the eager one does, within float reassociation, resumes from its own
checkpoints, and saves the module's plain weights. On a CPU compiling costs 15-30 s a stage, so two
stages are run here: LoRA DPO (peft's layers, and the reference pass through the same module left
eager) and distillation (the loss runs inside the compiled forward through `head_loss`)."""

import json

import pytest
import torch

from conftest import write_jsonl
from tenali_model.checkpoint import load_meta, read_weights
from tenali_model.config import ModelConfig
from tenali_model.posttrain import distill, dpo, loop
from tenali_model.posttrain.config import LoraSettings, seed_phases
from test_posttrain_distill_dpo import PAIRS, distill_config, dpo_config, student_teacher  # noqa: F401
from test_posttrain_sft import sft_config


def train_losses(out_dir) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines())
            if r.get("kind") == "train"]


def assert_close_weights(dir_a, dir_b, atol):
    """Weights moved ~1e-2 from the parent in these runs; AdamW turns a gradient's last-bit differences
    into up to ~1.5e-5 on an entry whose gradient is near zero."""
    a, b = read_weights(dir_a)[0], read_weights(dir_b)[0]
    assert a.keys() == b.keys() and not any("_orig_mod" in k for k in b)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=atol, msg=k)


def graphs_captured() -> int:
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


@pytest.fixture
def compile_spy(monkeypatch):
    """The classes torch.compile was given; dynamo's counters start at zero, so a test can tell that
    the compiled module is the one that ran."""
    from torch._dynamo.utils import counters

    counters.clear()
    compiled, real = [], torch.compile

    def spy(model, *args, **kwargs):
        compiled.append(type(model).__name__)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    return compiled


def test_compiled_lora_dpo_trains_like_eager_and_resumes(tok_dir, parent, tmp_path, compile_spy, capsys):
    # dropout 0: inductor draws its dropout masks from another generator than eager's
    f = write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 2)
    kw = dict(steps=4, log_every=1, batch_size=2, val_files=[f], eval_every=4,
              lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    eager = dpo.train(dpo_config(parent, tok_dir, [f], tmp_path / "eager", **kw))
    cfg = dpo_config(parent, tok_dir, [f], tmp_path / "compiled", compile=True, ckpt_every=2, **kw)
    dpo.train(cfg, stop_at=2)  # killed after step 2, then rerun
    compiled = dpo.train(cfg)
    assert compile_spy == ["Transformer", "Transformer"] and graphs_captured() > 0
    out = capsys.readouterr().out
    assert "single + torch.compile |" in out and "resuming dpo" in out
    assert compiled["resumed_from_step"] == 2 and compiled["complete"]
    assert load_meta(compiled["checkpoint"])["reference_held"] == "the policy without its adapters"
    assert train_losses(tmp_path / "compiled") == pytest.approx(train_losses(tmp_path / "eager"), rel=1e-4)
    assert compiled["val_margin"] == pytest.approx(eager["val_margin"], rel=1e-4)
    assert_close_weights(eager["checkpoint"], compiled["checkpoint"], atol=1e-4)


def test_compiled_distillation_trains_like_eager(student_teacher, shards, tmp_path, compile_spy):  # noqa: F811
    student, teacher = student_teacher
    kw = dict(phases=seed_phases(4, lr=1e-2, min_lr=1e-3), log_every=1, eval_every=4)
    eager = distill.train(distill_config(student, teacher, shards, tmp_path / "eager", **kw))
    compiled = distill.train(distill_config(student, teacher, shards, tmp_path / "compiled", compile=True, **kw))
    assert compile_spy == ["Transformer"] and graphs_captured() > 0
    assert train_losses(tmp_path / "compiled") == pytest.approx(train_losses(tmp_path / "eager"), rel=1e-4)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-4)
    assert_close_weights(eager["checkpoint"], compiled["checkpoint"], atol=1e-4)


def test_under_fsdp_the_blocks_are_compiled_when_built(tok_dir, parent, tmp_path, monkeypatch):
    """Under FSDP the stage does not wrap the sharded model: each block is compiled in place before
    sharding (`parallel.build_model`, run for real by the pretraining FSDP test), so the switch must
    reach it there."""
    built = []

    def fake_build(mcfg: ModelConfig, mode, device, **kw):
        built.append((mode, kw["compile_blocks"], kw["activation_checkpointing"]))
        from tenali_model.model import Transformer
        return Transformer(mcfg)

    monkeypatch.setattr(loop, "build_model", fake_build)
    monkeypatch.setattr(loop, "load_full_state", lambda model, mode, state: None)
    d = loop.Dist(rank=0, local_rank=0, world_size=2, device=torch.device("cpu"))
    for on in (False, True):
        cfg = sft_config(parent, tok_dir, ["unused"], tmp_path / "x", compile=on, activation_checkpointing=on)
        loop.build_student(cfg, parent, d, mode="fsdp")
    assert built == [("fsdp", False, False), ("fsdp", True, True)]
