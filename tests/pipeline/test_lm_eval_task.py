"""`tenali lm-eval-task`: the held-out grounded questions scored by lm-evaluation-harness itself, on an
exported release, give exactly the log-likelihoods Tenali's own chat scoring computes."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
from tm_helpers import FINANCE_TEXT, train_sentencepiece  # noqa: E402

from tenali_pipeline import cli  # noqa: E402
from tenali_pipeline.cleaning import clean  # noqa: E402
from tenali_pipeline.defs.posttraining.assets import QUESTIONS_KEY  # noqa: E402
from tenali_pipeline.grounded_eval import option_sentences  # noqa: E402
from tenali_pipeline.lake import Lake  # noqa: E402
from tenali_pipeline.lm_eval_task import TASK, TaskError, harness_command, write_task  # noqa: E402
from tenali_pipeline.sources.sample import SampleMarketClient  # noqa: E402
from tenali_pipeline.text.grounded import SYSTEM_PROMPT, GroundedConfig, build_questions  # noqa: E402


def _chat_model(root: Path, texts: list[str]):
    """A randomly initialised tiny model and a pipeline-style sentencepiece tokenizer with the chat pieces
    (scores need no training to be compared)."""
    import sentencepiece as spm

    from tenali_model.checkpoint import save_checkpoint
    from tenali_model.config import ModelConfig
    from tenali_model.model import Transformer

    sp_path = root / "tokenizer.model"
    train_sentencepiece(sp_path, texts=texts)
    torch.manual_seed(0)
    vocab = spm.SentencePieceProcessor(model_file=str(sp_path)).vocab_size()
    model = Transformer(ModelConfig(vocab_size=vocab, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=256))
    return save_checkpoint(root / "ckpt", step=1, model=model), sp_path


@pytest.fixture(scope="module")
def questions():
    prices = clean("market", SampleMarketClient().fetch()).df
    return build_questions(GroundedConfig(val_start=dt.date(2012, 1, 1), per_kind=3), prices=prices)


def test_the_task_files_hold_the_held_out_questions(questions, tmp_path):
    info = write_task(questions, tmp_path / "task dir")
    data_file = tmp_path / "task dir" / f"{TASK}.jsonl"
    task = yaml.safe_load(Path(info["yaml"]).read_text())  # a path with a space survives the YAML
    assert task["task"] == TASK and task["dataset_kwargs"]["data_files"]["test"] == str(data_file)
    val = questions.filter(pl.col("split") == "val")
    rows = [json.loads(line) for line in data_file.read_text().splitlines()]
    assert info["questions"] == len(rows) == val.height > 0
    assert sum(info["by_kind"].values()) == val.height
    for row, q in zip(rows, val.iter_rows(named=True)):
        assert row["question"] == q["question"] and row["choices"] == option_sentences(q)
        assert row["choices"][row["label"]] == q["answer"]  # the true sentence is the labelled choice
    assert write_task(questions, tmp_path / "all", split="all")["questions"] == questions.height
    with pytest.raises(TaskError, match="no grounded questions in the 'val' split"):
        write_task(questions.filter(pl.col("split") == "train"), tmp_path / "none")


def test_lm_eval_scores_an_exported_release_as_tenali_does(questions, tmp_path, monkeypatch):
    """The harness (not our code) loads the Hugging Face export and the task, applies the exported chat
    template and system prompt, and its log-likelihood of every choice equals ours on the checkpoint:
    the template, the tokenizer (each message with its own dummy prefix, as training encodes it) and
    the weights all survive the trip."""
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install -e '.[dev]')")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from tenali_model.checkpoint import load_model
    from tenali_model.evaluate_chat import completion_logprobs
    from tenali_model.hf import export_hf
    from tenali_model.tokenizer import load_tokenizer

    texts = FINANCE_TEXT + questions["question"].to_list() + questions["answer"].to_list()
    ckpt, sp_path = _chat_model(tmp_path, texts)
    hf_dir = export_hf(ckpt, tmp_path / "hf", tokenizer_model=sp_path)
    held_out = questions.filter(pl.col("split") == "val")
    write_task(held_out, tmp_path / "task")

    out = simple_evaluate(model="hf", model_args={"pretrained": str(hf_dir), "dtype": "float32"}, tasks=[TASK],
                          task_manager=TaskManager(include_path=str(tmp_path / "task")), apply_chat_template=True,
                          system_instruction=SYSTEM_PROMPT, batch_size=4, device="cpu", log_samples=True)
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    assert len(samples) == held_out.height

    model, tok = load_model(ckpt), load_tokenizer(sp_path)
    hits = 0
    for sample, q in zip(samples, held_out.iter_rows(named=True)):
        assert sample["doc"]["id"] == q["id"]
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": q["question"]}]
        # the pipeline's own multiple-choice scoring (grounded_eval), without the end-of-turn token
        ours = completion_logprobs(model, tok, messages, option_sentences(q), end=False)
        theirs = [float(r[0][0]) for r in sample["resps"]]
        assert theirs == pytest.approx(ours, abs=2e-3), q["question"]
        best = max(range(len(ours)), key=ours.__getitem__)
        assert sample["acc"] == float(best == q["correct_choice"])
        hits += best == q["correct_choice"]
    assert out["results"][TASK]["acc,none"] == pytest.approx(hits / held_out.height)


def test_the_cli_writes_the_task_from_the_lake_and_names_the_command(questions, tmp_path, capsys):
    lake = Lake(str(tmp_path / "lake"))
    assert cli.main(["lm-eval-task", str(tmp_path / "task"), "--lake", lake.root]) == 2
    assert "grounded_instructions" in capsys.readouterr().err  # nothing to write yet: what makes it

    lake.write_parquet(QUESTIONS_KEY, questions)
    assert cli.main(["lm-eval-task", str(tmp_path / "task"), "--lake", lake.root]) == 0
    printed = capsys.readouterr()
    assert harness_command(tmp_path / "task") in printed.out  # no release yet: a placeholder for the model
    assert "no release to name in the command" in printed.err and "model_release" in printed.err  # and why
    assert (tmp_path / "task" / f"{TASK}.yaml").is_file()
    with pytest.raises(SystemExit):
        cli.main(["lm-eval-task", str(tmp_path / "empty"), "--lake", lake.root, "--split", "nope"])
