"""The model-side `tenali` commands, run in-process through tenali_model.cli.main."""

import json
import subprocess

import pytest

from tenali_model.checkpoint import latest_checkpoint, load_model
from tenali_model.cli import main
from tenali_model.plan import plan
from tm_helpers import PYTHON, REPO_ROOT, subprocess_env, tiny_config


def test_plan_from_a_preset(capsys):
    assert main(["plan", "--config", "7b", "--tokens", "100e9", "--gpus", "8", "--gpu", "h100",
                 "--mfu", "0.4", "--price", "2.5"]) == 0
    out = capsys.readouterr().out
    # what is not given comes from the 7b recipe: the seed's 4M-token batches of 4,096-token sequences
    p = plan("7b", tokens=100e9, gpus=8, gpu="h100", mfu=0.4, price_per_gpu_hour=2.5, seq_len=4096,
             micro_batch=1, global_batch_tokens=4 * 2 ** 20)
    assert f"{p.gpu_hours:,.0f} GPU-hours" in out and f"${p.cost:,.0f}" in out
    assert f"{p.steps:,} steps" in out and "fsdp x8" in out and "23,842 steps" in out
    assert "recipe     7b" in out and "micro-batch 1 per GPU, grad_accum 128" in out
    assert main(["plan", "--config", "7b", "--tokens", "100e9", "--gpus", "8", "--global-batch-tokens", "2M",
                 "--micro-batch", "2"]) == 0  # given values win
    assert "2,000,000 tokens per step" in capsys.readouterr().out


def test_plan_from_a_training_config(shards, tmp_path, capsys):
    cfg_path = tmp_path / "train.json"
    tiny_config(shards, tmp_path / "o", batch_size=4, global_batch_tokens=4 * 32 * 8).to_json(cfg_path)
    assert main(["plan", "--config", str(cfg_path), "--tokens", "10M", "--gpus", "2", "--gpu", "a100",
                 "--seq-len", "32"]) == 0
    out = capsys.readouterr().out
    assert "1,024 tokens per step" in out and "micro-batch 4 per GPU, grad_accum 4" in out
    assert "9,766 steps" in out  # 10M / 1024, rounded up


def _mfu_results(path, **over):
    rec = {"config": "1b", "status": "ok", "params": 1_076_000_000, "mfu": 0.473, "device": "NVIDIA H200",
           "dtype": "bfloat16", "compile": True, "batch": 8, "seq_len": 2048, "torch": "2.11.0+cu130"}
    rec.update(over)
    path.write_text(json.dumps([{"config": "125m", "status": "ok", "params": 1, "mfu": 0.31, "device": "NVIDIA H200"},
                                rec, {"config": "7b", "status": "out of memory"}]))
    return str(path)


def test_plan_takes_the_mfu_that_bench_mfu_measured(tmp_path, capsys):
    results = _mfu_results(tmp_path / "mfu.json")
    assert main(["plan", "--config", "1b", "--tokens", "20B", "--gpus", "8", "--gpu", "h200", "--mfu", results]) == 0
    out = capsys.readouterr().out
    assert "MFU 47.3% as measured by bench_mfu.py: 1b on NVIDIA H200, bfloat16, compiled" in out
    p = plan("1b", tokens=20e9, gpus=8, gpu="h200", mfu=0.473)
    assert "at 47% MFU" in out and f"{p.gpu_hours:,.0f} GPU-hours" in out
    assert "a different GPU" not in out
    assert main(["plan", "--config", "1b", "--tokens", "20B", "--gpu", "h100", "--mfu", results]) == 0
    assert "planning for h100, a different GPU" in capsys.readouterr().out
    assert main(["plan", "--config", "7b", "--tokens", "20B", "--mfu", results]) == 2
    assert "no measured MFU for 7b (it has: 125m (ok), 1b (ok), 7b (out of memory))" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["plan", "--config", "1b", "--tokens", "20B", "--mfu", str(tmp_path / "bad.json")]) == 2
    assert "expected the results.json of bench/bench_mfu.py" in capsys.readouterr().err


def test_plan_defaults_to_the_mfu_measured_here_for_that_gpu_and_preset(capsys):
    """--mfu unset: the figure this project measured (plan.MEASURED_MFU) where one exists for the GPU and
    the preset, compiled as it was measured; otherwise 0.4, said to be assumed."""
    from tenali_model.plan import DEFAULT_MFU, MEASURED_MFU

    measured = MEASURED_MFU[("h200", "1b")][0]
    assert main(["plan", "--config", "1b", "--tokens", "20B", "--gpus", "8", "--gpu", "h200"]) == 0
    out = capsys.readouterr().out
    assert f"MFU {measured:.1%} as measured here: bench_mfu.py on one H200" in out
    assert f"{plan('1b', tokens=20e9, gpus=8, gpu='h200', mfu=measured).gpu_hours:,.0f} GPU-hours" in out
    for argv in (["--gpu", "h100"], ["--gpu", "h200", "--no-compile"]):  # another GPU; not as measured
        assert main(["plan", "--config", "1b", "--tokens", "20B", "--gpus", "8", *argv]) == 0
        out = capsys.readouterr().out
        assert f"MFU {DEFAULT_MFU:.1%} assumed: nothing measured for 1b" in out and "at 40% MFU" in out
    assert main(["plan", "--config", "1b", "--tokens", "20B", "--gpu", "h200", "--mfu", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "at 30% MFU" in out and "measured here" not in out


@pytest.mark.parametrize("argv, message", [
    (["plan", "--config", "huge", "--tokens", "1e9"], "neither a preset"),
    (["plan", "--config", "7b", "--tokens", "1e9", "--gpu", "tpu"], "unknown GPU"),
    (["plan", "--config", "7b", "--tokens", "1e9", "--mfu", "2"], "mfu"),
    (["plan", "--config", "7b", "--tokens", "1e9", "--mfu", "/nonexistent/mfu.json"], "neither a number nor a file"),
    (["export-hf", "/nonexistent/ckpt", "/tmp/x"], "neither a checkpoint"),
    (["import-hf", "/nonexistent/hf", "/tmp/x"], "config.json is missing"),
])
def test_errors_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_usage(capsys):
    assert main(["--help"]) == 0
    assert "export-hf" in capsys.readouterr().out
    assert main(["plan"]) == 2  # --config and --tokens are required
    assert main([]) == 2


def test_train_evaluate_export_import(shards, tmp_path, capsys):
    cfg_path = tmp_path / "train.json"
    out = tmp_path / "run"
    tiny_config(shards, out, steps=4, eval_every=0, ckpt_every=0).to_json(cfg_path)
    assert main(["train", "--config", str(cfg_path)]) == 0
    assert latest_checkpoint(out).name == "step_00000004"
    capsys.readouterr()
    assert main(["evaluate", str(out), "--val", *shards["val"], "--seq-len", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 4
    assert main(["train", "--config", str(tmp_path / "missing.json")]) == 2

    pytest.importorskip("safetensors")
    capsys.readouterr()
    assert main(["export-hf", str(out), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()
    assert "no tokenizer in" in capsys.readouterr().err  # and how to add one: --tokenizer
    assert main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    back = load_model(tmp_path / "back")
    assert back.config == load_model(out).config
    assert main(["export-hf", str(out), str(tmp_path / "hf")]) == 2  # exists and is not empty


def test_export_without_a_tokenizer_names_the_lakes(tmp_path, capsys):
    """A checkpoint in a pipeline lake: the note names the lake's tokenizer file to pass, and the release."""
    from tenali_model.cli import _lake_tokenizer_hint

    lake = tmp_path / "lake"
    (lake / "tokenizer").mkdir(parents=True)
    (lake / "tokenizer" / "tenali.model").write_bytes(b"sp")
    hint = _lake_tokenizer_hint(str(lake / "checkpoints" / "sft" / "run-1" / "step_00000060"))
    assert f"--tokenizer {lake / 'tokenizer' / 'tenali.model'}" in hint and str(lake / "releases") in hint
    assert _lake_tokenizer_hint(str(tmp_path / "run" / "step_00000004")) == ""


def test_plan_runs_as_a_module_without_torch():
    code = ("import sys; from tenali_model.cli import main; "
            "rc = main(['plan', '--config', '1b', '--tokens', '20B', '--gpus', '8']); "
            "assert rc == 0; assert 'torch' not in sys.modules, 'plan imported torch'")
    proc = subprocess.run([PYTHON, "-c", code], cwd=REPO_ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "1.08B parameters" in proc.stdout


@pytest.mark.parametrize("stage", ["distill", "sft", "dpo"])
def test_post_training_stages_pass_through(stage, tmp_path, capsys):
    from tenali_model.cli import main

    assert main([stage, "--config", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--tokens", "inf"], "not a finite number: 'inf'"),  # was an OverflowError traceback
    (["--tokens", "nan"], "not a finite number"),
    (["--tokens", "1e9", "--global-batch-tokens", "inf"], "not a finite number"),
    (["--tokens", "1e9", "--micro-batch", "0"], "must be above 0, got 0"),  # was silently the recipe's
    (["--tokens", "1e9", "--seq-len", "0"], "must be above 0, got 0"),
])
def test_plan_refuses_bad_numbers(argv, message, capsys):
    assert main(["plan", "--config", "7b", *argv]) == 2
    assert message in capsys.readouterr().err


def test_train_resumed_with_another_seq_len_exits_2(shards, tmp_path, capsys):
    # The data loader refuses the checkpoint's position; that must be exit 2 with the fix, not a traceback.
    out = tmp_path / "run"
    tiny_config(shards, out, steps=1, eval_every=0, ckpt_every=0).to_json(tmp_path / "a.json")
    assert main(["train", "--config", str(tmp_path / "a.json")]) == 0
    tiny_config(shards, out, steps=2, eval_every=0, ckpt_every=0, seq_len=16).to_json(tmp_path / "b.json")
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "b.json")]) == 2
    assert "saved with seq_len 32, this loader uses 16" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["tokenizer.model", "tokenizer.json"])
def test_a_corrupt_tokenizer_file_is_a_tokenizer_error(name, tmp_path):
    # what `tenali serve --tokenizer` and the post-training stages load: their error handling catches
    # TokenizerError, and a file that does not parse raised RuntimeError / Exception (a traceback)
    from tenali_model.tokenizer import TokenizerError, load_tokenizer

    (tmp_path / name).write_bytes(b"{not a tokenizer")
    with pytest.raises(TokenizerError, match=name.replace(".", r"\.") + " is not a"):
        load_tokenizer(tmp_path / name)
    with pytest.raises(TokenizerError, match="is not a"):
        load_tokenizer(tmp_path)  # the folder form finds the same file


def test_plan_into_a_closed_pipe_is_quiet():
    """`tenali plan ... | head -1`: the reader closes the pipe early; no "Broken pipe" error, status 0."""
    proc = subprocess.Popen([PYTHON, "-m", "tenali_model", "plan", "--config", "7b", "--tokens", "1e9", "--gpus", "8"],
                            cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the interpreter has started: its first write finds the pipe closed
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0 and "Broken pipe" not in err, err


def test_train_stops_before_training_when_out_dir_has_no_room_for_a_checkpoint(shards, tmp_path, capsys, monkeypatch):
    import collections
    import shutil

    cfg_path = tmp_path / "train.json"
    out = tmp_path / "run"
    tiny_config(shards, out, steps=4, eval_every=0, ckpt_every=0).to_json(cfg_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: collections.namedtuple("u", "total used free")(10**9, 10**9, 1000))
    assert main(["train", "--config", str(cfg_path)]) == 2  # a bad setup, not retried: it would fail the same way
    err = capsys.readouterr().err
    assert "has 0.0 MiB free but one checkpoint of this model takes about" in err and "larger volume" in err
    assert not (out / "metrics.jsonl").exists() or "train" not in (out / "metrics.jsonl").read_text()
