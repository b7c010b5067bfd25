"""Distillation (hand-computed loss, the student moves toward the teacher, HF teachers, vocabulary
checks), DPO (the margin grows; bad pairs fail before anything is written) and the schedules."""

import json
import math

import pytest
import torch

from conftest import tiny_model_config, write_jsonl
from tenali_model.checkpoint import load_meta, load_model, load_train_state, save_checkpoint
from tenali_model.config import ConfigError
from tenali_model.model import Transformer
from tenali_model.posttrain import distill, dpo
from tenali_model.posttrain.config import DistillConfig, DPOConfig, Phase, seed_phases
from tenali_model.posttrain.data import collate_pairs, encode_pairs, load_pairs, pad_id_of
from tenali_model.posttrain.distill import distill_loss
from tenali_model.posttrain.dpo import sequence_logps
from tenali_model.posttrain.loop import lr_in_phase
from tm_helpers import PYTHON, SEQ, VOCAB, assert_same_tensors, train_until_signalled


def test_distill_loss_equals_a_hand_computation():
    s = torch.tensor([[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]])
    t = torch.tensor([[[0.0, 2.0, 0.0], [1.0, -1.0, 0.0]]])
    y = torch.tensor([[1, -1]])  # the second position is ignored
    T, alpha = 2.0, 0.7
    ps = [math.exp(v / T) for v in (1.0, 0.0, -1.0)]
    pt = [math.exp(v / T) for v in (0.0, 2.0, 0.0)]
    ps, pt = [v / sum(ps) for v in ps], [v / sum(pt) for v in pt]
    kl = sum(b * math.log(b / a) for a, b in zip(ps, pt))
    p1 = [math.exp(v) for v in (1.0, 0.0, -1.0)]
    ce = -math.log(p1[1] / sum(p1))
    total, n, stats = distill_loss(s, t, y, T, alpha)
    assert n == 1
    assert total.item() == pytest.approx(alpha * T * T * kl + (1 - alpha) * ce, rel=1e-6)
    assert stats["kl"].item() == pytest.approx(kl, rel=1e-6) and stats["ce"].item() == pytest.approx(ce, rel=1e-6)


@pytest.mark.parametrize("tied", [True, False])
def test_chunked_distill_loss_from_the_model_equals_the_logits_version(tied):
    from tenali_model.posttrain.distill import chunked_distill_loss
    torch.manual_seed(3)
    cfg = tiny_model_config(VOCAB, max_seq_len=SEQ, dim=32, n_heads=2, n_kv_heads=1, tie_embeddings=tied)
    x, y = torch.randint(0, VOCAB, (2, 24)), torch.randint(0, VOCAB, (2, 24))
    y[0, :4] = -1
    teacher_logits = torch.randn(2, 24, VOCAB) * 3
    results = []
    for chunked in (False, True):
        torch.manual_seed(4)
        model = Transformer(cfg)
        if chunked:
            total, n, stats = chunked_distill_loss(model(x, hidden=True)[0], model.lm_head.weight,
                                                   teacher_logits, y, 2.5, 0.7)
        else:
            total, n, stats = distill_loss(model(x)[0], teacher_logits, y, 2.5, 0.7)
        (total / n).backward()
        results.append((total.detach(), n, stats, {k: p.grad for k, p in model.named_parameters()}))
    (a, n_a, s_a, g_a), (b, n_b, s_b, g_b) = results
    assert n_a == n_b == 44
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for k in ("kl", "ce"):
        torch.testing.assert_close(s_b[k], s_a[k], rtol=1e-5, atol=1e-5)
    for name, g in g_a.items():
        torch.testing.assert_close(g_b[name], g, rtol=1e-4, atol=1e-6, msg=name)


@pytest.fixture
def student_teacher(tmp_path, shards):
    torch.manual_seed(1)
    teacher = Transformer(tiny_model_config(VOCAB, max_seq_len=SEQ, dim=96, n_layers=3))
    with torch.no_grad():  # a confident teacher (a random one is near uniform): something to learn
        teacher.tok_embeddings.weight.mul_(40)
    student = Transformer(tiny_model_config(VOCAB, max_seq_len=SEQ, dim=32, n_heads=2, n_kv_heads=1))
    return (save_checkpoint(tmp_path / "student", step=0, model=student),
            save_checkpoint(tmp_path / "teacher", step=0, model=teacher))


def distill_config(student, teacher, shards, out, **kw):
    base = dict(init_from=str(student), teacher=str(teacher), out_dir=str(out), train_shards=shards["train"],
                val_shards=shards["val"], phases=seed_phases(24, lr=1e-2, min_lr=1e-3), batch_size=4,
                log_every=4, eval_batches=2, device="cpu", num_threads=1, seed=5)
    base.update(kw)
    return DistillConfig(**base)


def kl_to_teacher(student_ckpt, teacher_ckpt, shards) -> float:
    from tenali_model.data import iter_eval_windows
    s, t = load_model(student_ckpt), load_model(teacher_ckpt)
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in iter_eval_windows(shards["val"], SEQ, 8, 2):
            loss, count, _ = distill_loss(s(x)[0], t(x)[0], y, 1.0, 1.0)
            total, n = total + loss.item(), n + count
    return total / n


def test_distillation_pulls_the_student_toward_the_teacher(student_teacher, shards, tmp_path):
    student, teacher = student_teacher
    before = kl_to_teacher(student, teacher, shards)
    phases = [Phase(steps=12, lr=1e-2, min_lr=1e-3, warmup_steps=3, schedule="onecycle", temperature=2.5, alpha=0.9),
              Phase(steps=12, lr=1e-2, min_lr=1e-3, warmup_steps=3, schedule="onecycle", temperature=3.0, alpha=0.8)]
    summary = distill.train(distill_config(student, teacher, shards, tmp_path / "d", phases=phases))
    after = kl_to_teacher(summary["checkpoint"], teacher, shards)
    assert after < 0.5 * before
    rows = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["phase"] for r in train_rows] == [0, 0, 0, 1, 1, 1]
    assert train_rows[-1]["kl"] < train_rows[0]["kl"]
    meta = load_meta(summary["checkpoint"])
    assert meta["stage"] == "distill" and meta["teacher"] == str(teacher)
    assert [(p["temperature"], p["alpha"]) for p in meta["phases"]] == [(2.5, 0.9), (3.0, 0.8)]
    assert summary["teacher_student_flop_ratio"] > 3
    # val_loss is the final student's own cross-entropy on the validation windows
    from tenali_model.evaluate import loss_sum
    from tenali_model.data import iter_eval_windows
    total, n = loss_sum(load_model(summary["checkpoint"]), iter_eval_windows(shards["val"], SEQ, 4, 2), "cpu")
    val_rows = [r for r in rows if r["kind"] == "val"]
    assert val_rows and val_rows[-1]["val_loss"] == pytest.approx(total / n, rel=1e-4)


def test_distillation_from_a_hugging_face_teacher_and_resume(student_teacher, shards, tmp_path):
    pytest.importorskip("transformers")
    from tenali_model.hf import export_hf
    student, teacher = student_teacher
    hf = export_hf(teacher, tmp_path / "hf_teacher")
    cfg = lambda out: distill_config(student, hf, shards, out, phases=[Phase(steps=6, lr=1e-2, temperature=2.0,  # noqa: E731
                                                                             alpha=0.5)], ckpt_every=3)
    full = distill.train(cfg(tmp_path / "full"))
    distill.train(cfg(tmp_path / "split"), stop_at=3)
    split = distill.train(cfg(tmp_path / "split"))
    assert split["resumed_from_step"] == 3
    a = load_model(full["checkpoint"]).state_dict()
    b = load_model(split["checkpoint"]).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_meta(full["checkpoint"])["teacher_kind"] == "hf"


@pytest.mark.parametrize("kind", ["tenali", "hf"])
def test_a_bf16_teacher_hands_over_bf16_logits_unchanged(kind, student_teacher, tmp_path):
    """A bf16 teacher's logits are bf16 values: held in bf16 (half the memory of the [B, T, V] tensor
    the step keeps), they are the float32 ones exactly; a float32 teacher's stay float32."""
    from tenali_model.posttrain.distill import Teacher, teacher_shape
    _, teacher = student_teacher
    if kind == "hf":
        pytest.importorskip("transformers")
        from tenali_model.hf import export_hf
        teacher = export_hf(teacher, tmp_path / "hf_teacher")
    shape = teacher_shape(str(teacher))
    x = torch.randint(0, VOCAB, (2, SEQ))
    bf16 = Teacher(shape, torch.device("cpu"), torch.bfloat16)
    held = bf16.logits(x)
    assert held.dtype == torch.bfloat16 and held.shape == (2, SEQ, VOCAB)
    if kind == "tenali":
        with torch.no_grad():
            assert torch.equal(held.float(), bf16.model(x)[0])  # the model's own float32 upcast
    assert Teacher(shape, torch.device("cpu"), torch.float32).logits(x).dtype == torch.float32


def test_a_teacher_with_another_vocabulary_fails_before_any_compute(shards, tmp_path, capsys):
    student = save_checkpoint(tmp_path / "s", step=0, model=Transformer(tiny_model_config(VOCAB, max_seq_len=SEQ)))
    teacher = save_checkpoint(tmp_path / "t", step=0, model=Transformer(tiny_model_config(VOCAB * 2, max_seq_len=SEQ)))
    cfg = distill_config(student, teacher, shards, tmp_path / "out")
    cfg.to_json(tmp_path / "d.json")
    assert distill.main(["--config", str(tmp_path / "d.json")]) == 2
    assert "vocabulary of 128 but the student" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad, message", [("val", "truncated"), ("train", "too few for one window")])
def test_a_bad_shard_fails_with_exit_2_before_any_compute(bad, message, student_teacher, shards, tmp_path, capsys):
    """A truncated shard, or train shards too short for one window, is bad data (exit 2 with the
    reason, nothing written), as in pretraining, not a traceback."""
    import shutil

    student, teacher = student_teacher
    files = {k: [str(shutil.copy(p, tmp_path / f"{k}_{i}.bin")) for i, p in enumerate(v)] for k, v in shards.items()}
    if bad == "val":
        with open(files["val"][0], "r+b") as f:
            f.truncate(300)
    else:
        from tenali_model.data import write_shard
        write_shard(files["train"][0], list(range(8)), vocab_size=VOCAB)
        files["train"] = files["train"][:1]
    cfg = distill_config(student, teacher, files, tmp_path / "out")
    cfg.to_json(tmp_path / "d.json")
    assert distill.main(["--config", str(tmp_path / "d.json")]) == 2
    err = capsys.readouterr().err
    assert "python -m tenali_model.posttrain.distill: error:" in err and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_schedules():
    p = Phase(steps=100, lr=1.0, min_lr=0.1, warmup_steps=30, schedule="onecycle")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=100, pct_start=0.3,
                                              div_factor=25.0, final_div_factor=0.04 / 0.1,
                                              anneal_strategy="cos")
    theirs = []
    for _ in range(100):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    ours = [lr_in_phase(p, t) for t in range(100)]
    assert ours[0] == pytest.approx(0.04) and ours[28] < ours[29] == 1.0 > ours[30]
    assert ours[99] == pytest.approx(0.1)
    for a, b in zip(ours, theirs):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9)
    lin = Phase(steps=10, lr=1.0, min_lr=0.0, warmup_steps=0, schedule="linear")
    assert [lr_in_phase(lin, t) for t in (0, 5)] == [1.0, 0.5]
    assert lr_in_phase(Phase(steps=10, lr=1.0, warmup_steps=2, schedule="constant"), 7) == 1.0


# --- DPO -------------------------------------------------------------------------------------------

PAIRS = [
    {"prompt": "What did Apple close at on 2024-05-01?", "chosen": "$189.25.", "rejected": "$142.10."},
    {"prompt": "What is the 10-year yield?", "chosen": "4.50%.", "rejected": "7.25%."},
    {"messages": [{"role": "user", "content": "CPI?"}, {"role": "assistant", "content": "3.4%."},
                  {"role": "user", "content": "And the funds rate?"}],
     "chosen": "5.25%-5.50%.", "rejected": [{"role": "assistant", "content": "1.00%."}]},
]


def dpo_config(parent, tok_dir, files, out, **kw):
    base = dict(init_from=str(parent), out_dir=str(out), train_files=files, tokenizer=str(tok_dir), steps=12,
                batch_size=3, lr=3e-3, min_lr=3e-4, warmup_steps=1, beta=0.5, log_every=3, device="cpu",
                num_threads=1, seed=2)
    base.update(kw)
    return DPOConfig(**base)


def chosen_margin(ckpt, tok, pairs_file) -> float:
    pairs, _ = encode_pairs(tok, load_pairs([pairs_file]), 128)
    batch = collate_pairs(pairs, pad_id_of(tok))
    with torch.no_grad():
        lp = sequence_logps(load_model(ckpt), batch["x"], batch["y"])
    return (lp[:len(pairs)] - lp[len(pairs):]).mean().item()


def test_completion_labels_skip_earlier_assistant_turns(tok, tmp_path):
    (pair,) = load_pairs([write_jsonl(tmp_path / "p.jsonl", [PAIRS[2]])])
    ((chosen, rejected),), _ = encode_pairs(tok, [pair], 128)
    assert [y for y in chosen.labels if y != -1] == tok.encode("5.25%-5.50%.") + [tok.eot_id]
    assert [y for y in rejected.labels if y != -1] == tok.encode("1.00%.") + [tok.eot_id]


def test_pairs_cut_by_the_context_are_counted_and_dropped_when_no_preference_is_left(tok):
    from tenali_model.chat import encode_chat
    from tenali_model.posttrain.data import Pair
    prompt = [{"role": "user", "content": "What is the 10-year yield?"}]
    pair = Pair(prompt, [{"role": "assistant", "content": "The yield was 4.50%."}],
                [{"role": "assistant", "content": "The yield was 7.25%."}])
    c, r = (encode_chat(tok, prompt + side).ids for side in (pair.chosen, pair.rejected))
    shared = next(i for i, (a, b) in enumerate(zip(c, r)) if a != b)  # tokens both sides begin with
    _, whole = encode_pairs(tok, [pair], 128)
    assert (whole.examples, whole.truncated, whole.dropped) == (1, 0, 0)
    ((cc, rr),), cut = encode_pairs(tok, [pair], shared)  # inputs and labels reach the first differing token
    assert (cut.examples, cut.truncated, cut.dropped) == (1, 1, 0) and cc.labels[-1] != rr.labels[-1]
    # one token fewer: both sides are the same tokens, whose loss is log 2 whatever the model does
    kept, same = encode_pairs(tok, [pair], shared - 1)
    assert kept == [] and (same.examples, same.truncated, same.dropped) == (0, 1, 1)


@pytest.mark.parametrize("lora", [False, True])
def test_dpo_raises_the_chosen_over_rejected_margin(lora, tok_dir, tok, parent, tmp_path):
    from tenali_model.posttrain.config import LoraSettings
    f = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    before = chosen_margin(parent, tok, f)
    s = dpo.train(dpo_config(parent, tok_dir, [f], tmp_path / "dpo", val_files=[f],
                             lora=LoraSettings(r=4, alpha=8) if lora else None))
    after = chosen_margin(s["checkpoint"], tok, f)
    assert after > before + 1.0
    assert s["val_accuracy"] == 1.0 and s["val_margin"] > 1.0
    assert math.isfinite(s["val_logp_gap"])  # val records give what train records give (dpo.py's doc)
    assert s["final_loss"] < s["initial_loss"] < math.log(2) + 1e-3  # starts at -log sigmoid(0)


def test_the_reference_holds_its_projections_in_bf16_under_bf16_compute(tok_dir, tok, parent, tmp_path, monkeypatch):
    """Under bf16 autocast a frozen model's projections are rounded to bf16 at each use, so holding
    them in bf16 gives the same log-probabilities bit for bit, for half their memory; a DPO run in
    bf16 holds its reference so."""
    from tenali_model.posttrain import loop
    f = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    pairs, _ = encode_pairs(tok, load_pairs([f]), 128)
    batch = collate_pairs(pairs, pad_id_of(tok))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        held32 = sequence_logps(load_model(parent), batch["x"], batch["y"])
        held16 = sequence_logps(loop.projections_to_bf16(load_model(parent)), batch["x"], batch["y"])
    assert torch.equal(held16, held32)
    converted = []
    monkeypatch.setattr(dpo, "projections_to_bf16", lambda m: converted.append(loop.projections_to_bf16(m)))
    s = dpo.train(dpo_config(parent, tok_dir, [f], tmp_path / "bf16", steps=2, dtype="bfloat16"))
    assert s["complete"] and len(converted) == 1
    assert converted[0].layers[0].mlp.w1.weight.dtype == torch.bfloat16
    assert converted[0].lm_head.weight.dtype == converted[0].norm.weight.dtype == torch.float32
    dpo.train(dpo_config(parent, tok_dir, [f], tmp_path / "f32", steps=2, dtype="float32"))
    assert len(converted) == 1  # float32 compute: the reference stays as it was loaded


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_lora_dpo_uses_the_policy_without_adapters_as_its_reference(dtype, tok_dir, parent, tmp_path):
    """With LoRA and the policy's own parent as the reference, the reference pass is the policy with
    its adapters off and its head as it started (no second model): the same run, bit for bit, as
    with a separate copy of the parent (a copied directory is another reference)."""
    import shutil

    from tenali_model.posttrain.config import LoraSettings
    f = write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 2)
    copy = shutil.copytree(parent, tmp_path / "parent-copy")
    kw = dict(steps=4, dtype=dtype, grad_accum=2, batch_size=1, val_files=[f], eval_every=2,
              lora=LoraSettings(r=4, alpha=8, dropout=0.05))
    shared = dpo.train(dpo_config(parent, tok_dir, [f], tmp_path / "shared", **kw))
    separate = dpo.train(dpo_config(parent, tok_dir, [f], tmp_path / "separate", reference=str(copy), **kw))
    assert load_meta(shared["checkpoint"])["reference_held"] == "the policy without its adapters"
    assert load_meta(separate["checkpoint"])["reference_held"] == "copy"
    assert shared["val_margin"] == separate["val_margin"] != 0 and shared["final_loss"] == separate["final_loss"]
    assert_same_tensors(tmp_path / "shared", tmp_path / "separate", ["step_00000004/model.safetensors"])


def test_lora_dpo_on_two_ddp_ranks_matches_one_process(tok_dir, parent, tmp_path):
    """The adapters-off reference pass swaps tensors under a DDP wrapper between its steps: two ranks
    must still end where one process at the same global batch does."""
    from tenali_model.posttrain.config import LoraSettings
    from test_posttrain_fsdp import assert_same_model, torchrun
    f = write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 2)
    kw = dict(steps=4, batch_size=1, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    one = dpo.train(dpo_config(parent, tok_dir, [f], tmp_path / "one", grad_accum=2, **kw))
    out = torchrun("tenali_model.posttrain.dpo", dpo_config(parent, tok_dir, [f], tmp_path / "two", **kw),
                   tmp_path / "dpo.json")
    assert "2 rank(s) on cpu, ddp" in out
    two = tmp_path / "two" / "step_00000004"
    assert load_meta(two)["reference_held"] == "the policy without its adapters"
    assert_same_model(one["checkpoint"], two, atol=1e-5)
    # tokens counted over every rank's own padded rows (not rank 0's times the ranks)
    assert load_train_state(two)["tokens_seen"] == load_train_state(one["checkpoint"])["tokens_seen"]


BAD_PAIRS = [
    ({"chosen": "a", "rejected": "b"}, "expected exactly one of 'prompt'"),
    ({"prompt": "q", "chosen": "a"}, "field 'rejected': expected a string or a list of messages, missing"),
    ({"prompt": "q", "chosen": "a", "rejected": "a"}, "identical"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}],
      "chosen": "a", "rejected": "b"}, "must end with a user turn"),
    ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, "field chosen[0].role"),
    ({"prompt": "q", "chosen": "a", "rejected": [{"role": "assistant", "content": ""}]},
     "field rejected[0].content: the assistant's answer is empty"),
]


def test_parquet_pairs_with_both_prompt_and_messages_columns(tmp_path):
    """Each Parquet row has every column (null where unused): 'prompt' rows and 'messages' rows mix."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema([("prompt", pa.string()), ("messages", pa.list_(message)), ("chosen", pa.string()),
                        ("rejected", pa.string())])
    rows = [PAIRS[0], {**PAIRS[2], "rejected": "1.00%."}]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "p.parquet")
    pairs = load_pairs([tmp_path / "p.parquet"])
    assert [p.prompt for p in pairs] == [[{"role": "user", "content": PAIRS[0]["prompt"]}], PAIRS[2]["messages"]]


@pytest.mark.parametrize("record,message", BAD_PAIRS)
def test_malformed_preference_files_fail_with_file_line_field(record, message, tok_dir, parent, tmp_path, capsys):
    f = write_jsonl(tmp_path / "pairs.jsonl", [PAIRS[0], PAIRS[1], record])
    dpo_config(parent, tok_dir, [f], tmp_path / "out").to_json(tmp_path / "dpo.json")
    assert dpo.main(["--config", str(tmp_path / "dpo.json")]) == 2
    err = capsys.readouterr().err
    assert f"{f}:line 3" in err and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("beta", [0.0, float("inf"), float("nan")])
def test_dpo_beta_must_be_finite_and_positive(beta, tmp_path):
    # an infinite beta makes a pair whose margin is 0 (every pair at the first step) a NaN loss
    with pytest.raises(ConfigError, match="beta must be a finite number > 0"):
        dpo_config("p", "t", ["f.jsonl"], tmp_path / "o", beta=beta).validate()


def test_distill_config_validation(tmp_path):
    d = dict(init_from="a", teacher="t", out_dir="o", train_shards=["x.bin"],
             phases=[{"steps": 10, "temperature": 0, "alpha": 0.5}])
    with pytest.raises(ConfigError, match=r"phases\[0\].temperature must be a finite number > 0"):
        DistillConfig.from_dict(d).validate()
    with pytest.raises(ConfigError, match=r"phases\[0\].steps must be int"):
        DistillConfig.from_dict({**d, "phases": [{"steps": 1.5}]})
    with pytest.raises(ConfigError, match="phases is empty"):
        DistillConfig.from_dict({**d, "phases": []}).validate()


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_distillation_on_two_gloo_ranks_matches_one_process(parallelism, shards, tmp_path):
    """DDP and FSDP with the chunked distillation loss: the student's head weight is applied by the
    loss (`forward(x, head_loss=...)` + `linear_distill_loss`), and its gradient must still be
    all-reduced (DDP) or reduce-scattered from the all-gathered weight (FSDP). An untied head makes
    that the only route; two ranks at batch 4 must then end where one process at batch 4 x
    grad_accum 2 does (with FSDP: with validation, which pads the short rank's batches)."""
    import subprocess

    from tm_helpers import PYTHON, REPO_ROOT, subprocess_env
    torch.manual_seed(1)
    student = save_checkpoint(tmp_path / "student", step=0, model=Transformer(
        tiny_model_config(VOCAB, max_seq_len=SEQ, dim=32, n_heads=2, n_kv_heads=1, tie_embeddings=False)))
    teacher = save_checkpoint(tmp_path / "teacher", step=0, model=Transformer(
        tiny_model_config(VOCAB, max_seq_len=SEQ, dim=48, n_layers=2)))
    kw = dict(phases=seed_phases(4, lr=1e-2, min_lr=1e-3), log_every=2,
              **(dict(eval_batches=3, eval_every=2) if parallelism == "fsdp" else dict(val_shards=[])))
    single = distill.train(distill_config(student, teacher, shards, tmp_path / "one", grad_accum=2, **kw))
    cfg_path = tmp_path / "distill.json"
    distill_config(student, teacher, shards, tmp_path / "two", parallelism=parallelism, **kw).to_json(cfg_path)
    proc = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "tenali_model.posttrain.distill", "--config", str(cfg_path)],
                          cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a = load_model(single["checkpoint"]).state_dict()
    two = sorted((tmp_path / "two").glob("step_*"))[-1]
    b = load_model(two).state_dict()
    assert not torch.equal(a["lm_head.weight"], load_model(student).state_dict()["lm_head.weight"])  # it trained
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=2e-5, msg=k)
    if parallelism == "fsdp":
        assert "2 rank(s) on cpu, fsdp" in proc.stdout + proc.stderr
        assert load_meta(two)["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)


def test_two_ranks_with_lora_dropout_resume_exactly(tok_dir, parent, tmp_path):
    """Each rank draws its own dropout masks, and as many numbers as its rows (padded to their own
    lengths) need: a checkpoint keeps every rank's RNG state, so a killed two-rank run resumes to the
    same weights, bit for bit, as one never stopped."""
    from tenali_model.posttrain.config import LoraSettings
    from test_posttrain_fsdp import torchrun
    f = write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 2)
    kw = dict(steps=4, batch_size=1, ckpt_every=2, lora=LoraSettings(r=4, alpha=8, dropout=0.3))
    torchrun("tenali_model.posttrain.dpo", dpo_config(parent, tok_dir, [f], tmp_path / "full", **kw),
             tmp_path / "full.json")
    split = dpo_config(parent, tok_dir, [f], tmp_path / "split", **kw)
    torchrun("tenali_model.posttrain.dpo", split, tmp_path / "split.json", "--stop-at-step", "2")
    assert len(load_train_state(tmp_path / "split" / "step_00000002")["rng_per_rank"]) == 2
    out = torchrun("tenali_model.posttrain.dpo", split, tmp_path / "split.json")
    assert "resuming dpo" in out
    assert_same_tensors(tmp_path / "full", tmp_path / "split", ["step_00000004/model.safetensors"])


def test_a_stage_whose_out_dir_cannot_hold_a_checkpoint_fails_before_training(student_teacher, shards, tmp_path,
                                                                                capsys, monkeypatch):
    import collections
    import shutil

    student, teacher = student_teacher
    distill_config(student, teacher, shards, tmp_path / "out").to_json(tmp_path / "d.json")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: collections.namedtuple("u", "total used free")(10**9, 10**9, 1000))
    assert distill.main(["--config", str(tmp_path / "d.json")]) == 2
    err = capsys.readouterr().err
    assert "free but one checkpoint of this model takes about" in err and "larger volume" in err
    assert not list((tmp_path / "out").glob("step_*"))


def test_a_stage_stopped_by_a_signal_saves_the_step_it_was_at(student_teacher, shards, tmp_path):
    """Ctrl-C (or a cancelled step: SIGINT through torchrun) stops a post-training stage after its current
    step with a checkpoint, as in pretraining (tenali_model/preemption.py); exit 130."""
    import signal

    from tenali_model.checkpoint import latest_checkpoint

    student, teacher = student_teacher
    out = tmp_path / "out"
    distill_config(student, teacher, shards, out, phases=seed_phases(5000, lr=1e-2, min_lr=1e-3),
                   log_every=1).to_json(tmp_path / "d.json")
    code, err = train_until_signalled(tmp_path / "d.json", out, signal.SIGINT,
                                      [PYTHON, "-m", "tenali_model.posttrain.distill"], at_step=3)
    assert code == 130, err
    k = load_meta(latest_checkpoint(out))["step"]
    assert k >= 3 and f"stopped by SIGINT after step {k}" in err
