"""Score a chat model on the held-out grounded questions (text/grounded.py).

Two measures per question kind and overall:
- exact match: the model's greedy answer contains the right figure (after number normalisation) or,
  for names, dates and item lists, the right text;
- multiple choice by log-likelihood: the answer sentence with each option's figure in it is scored
  as the assistant's reply; correct when the true one is the most likely.
The model is reached through two callables so that the scoring is tested without a model and the
same code runs on any backend (tenali_model.evaluate_chat provides both for a Tenali checkpoint).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Mapping, Sequence

import polars as pl

from .text.grounded import SYSTEM_PROMPT, answer_is_correct

Messages = Sequence[Mapping[str, str]]


def option_sentences(row: Mapping) -> list[str]:
    """The answer sentence with each option in place of the right one."""
    right = row["choices"][row["correct_choice"]]
    if right not in row["answer"]:
        return list(row["choices"])
    return [row["answer"].replace(right, c, 1) for c in row["choices"]]


def score_grounded(questions: pl.DataFrame, generate: Callable[[Messages], str],
                   loglik: Callable[[Messages, list[str]], list[float]] | None = None,
                   system: str | None = SYSTEM_PROMPT, samples: int = 5) -> dict:
    """Exact-match and multiple-choice accuracy, overall and by kind, with a few answers as Markdown."""
    hits, mc_hits, totals = defaultdict(int), defaultdict(int), defaultdict(int)
    shown = []
    for row in questions.iter_rows(named=True):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": row["question"]}]
        text = generate(messages)
        ok = answer_is_correct(text, row)
        kind = row["kind"]
        totals[kind] += 1
        hits[kind] += ok
        if loglik is not None:
            scores = loglik(messages, option_sentences(row))
            mc_hits[kind] += int(max(range(len(scores)), key=scores.__getitem__) == row["correct_choice"])
        if len(shown) < samples:
            shown.append(f"**Q:** {row['question']}  \n**model:** {text or '(empty)'}  \n"
                         f"**expected:** {row['answer']} {'✅' if ok else '❌'}")
    n = sum(totals.values())
    if n == 0:
        raise ValueError("no held-out grounded questions to score")
    result = {
        "questions": n,
        "exact_match": sum(hits.values()) / n,
        "by_kind": {k: {"questions": totals[k], "exact_match": hits[k] / totals[k],
                        **({"choice_accuracy": mc_hits[k] / totals[k]} if loglik else {})} for k in sorted(totals)},
        "samples_md": "\n\n".join(shown),
    }
    if loglik is not None:
        result["choice_accuracy"] = sum(mc_hits.values()) / n
    return result


def model_callables(model, tok, max_new_tokens: int = 48, device: str = "cpu"):
    """(generate, loglik) for a Tenali model and tokenizer, greedy decoding."""
    from tenali_model.evaluate_chat import answer, completion_logprobs

    def gen(messages: Messages) -> str:
        return answer(model, tok, messages, max_new_tokens=max_new_tokens, device=device)

    def loglik(messages: Messages, completions: list[str]) -> list[float]:
        return completion_logprobs(model, tok, messages, completions, device=device)

    return gen, loglik
