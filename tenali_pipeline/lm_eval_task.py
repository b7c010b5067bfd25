"""The held-out grounded questions as an lm-evaluation-harness task (`tenali lm-eval-task OUT_DIR`).

Why: the release card's figures come from Tenali's own scoring code. Written as a harness task, the
same finance questions score any model the harness loads (a Tenali release, or Llama, Qwen, ...)
by code that is not ours, so a release can be compared with the models people already use.

The task is multiple choice by log-likelihood, as `grounded_eval.score_grounded`'s choice accuracy:
the user turn is the question (after the pipeline's system prompt), and the options are the answer
sentence with each option's figure in it (`option_sentences`), each scored as the assistant's reply.
One harness convention differs from Tenali's own scoring, so the figure can differ a little from the
card's `grounded_choice_accuracy`: the reply is scored without the model's end-of-turn token (each
model spells it its own way). Under a chat template the harness puts nothing between the prompt and a
choice, which is how the exported template renders a reply, so the scored ids are exactly those chat
training used (the test checks this per question).
Run it with `--apply_chat_template` and `--system_instruction` (`harness_command` spells them out).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import polars as pl
import yaml
from tenali_model.config import atomic_write_text

from .grounded_eval import option_sentences
from .text.grounded import SYSTEM_PROMPT

TASK = "tenali_grounded"
SPLITS = ("val", "train", "all")


class TaskError(ValueError):
    """No questions to write: what is missing and how to make it."""


def _task_yaml(data_file: Path) -> str:
    metric = {"aggregation": "mean", "higher_is_better": True}
    return yaml.safe_dump({
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}",
        "metric_list": [{"metric": "acc", **metric}, {"metric": "acc_norm", **metric}],
        "metadata": {"version": 1.0},
    }, sort_keys=False)


def write_task(questions: pl.DataFrame, out_dir: str | Path, split: str = "val") -> dict:
    """<out_dir>/tenali_grounded.yaml and .jsonl for the questions of `split` ("val": the held-out
    ones the pipeline evaluates on; "train"; "all"). Returns {"task", "questions", "by_kind", "yaml"}."""
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r}: one of {', '.join(SPLITS)}")
    rows = questions if split == "all" else questions.filter(pl.col("split") == split)
    if rows.height == 0:
        raise TaskError(f"no grounded questions in the {split!r} split ({questions.height} in all): "
                        "materialise grounded_instructions over data that reaches past the corpus's validation "
                        "start date, or pass --split all")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_file = out / f"{TASK}.jsonl"
    lines = [json.dumps({"id": r["id"], "kind": r["kind"], "question": r["question"],
                         "choices": option_sentences(r), "label": r["correct_choice"]},
                        ensure_ascii=False) for r in rows.iter_rows(named=True)]
    atomic_write_text(data_file, "".join(line + "\n" for line in lines))
    atomic_write_text(out / f"{TASK}.yaml", _task_yaml(data_file))
    by_kind = dict(sorted(rows.group_by("kind").len().iter_rows()))
    return {"task": TASK, "questions": rows.height, "by_kind": by_kind, "yaml": str(out / f"{TASK}.yaml")}


def harness_command(task_dir: str | Path, model_dir: str | Path | None = None) -> str:
    """The `lm_eval` command line that scores a Hugging Face model folder on the written task."""
    model = shlex.quote(f"pretrained={model_dir or '<model folder>'},dtype=float32")
    return (f"lm_eval --model hf --model_args {model} --include_path {shlex.quote(str(Path(task_dir).resolve()))} "
            f"--tasks {TASK} --apply_chat_template --system_instruction {shlex.quote(SYSTEM_PROMPT)} "
            "--batch_size 8")
