"""The model card (README.md of a release) and release.json, as plain functions (no Dagster)."""

from __future__ import annotations

import json
import math

from tenali_model.chat import render_text
from tenali_model.tokenizer import SPECIAL_TOKENS

RELEASE_FORMAT_VERSION = 1


def _fmt(v) -> str:
    """A figure for the card: whole numbers as integers with thousands separators (evaluation figures and
    counts arrive as floats), small values with their significant digits (norm_eps 1e-05, not 0.0000),
    others with 4 decimals."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v.is_integer():
            return f"{int(v):,}"
        if abs(v) < 1e-3:
            return f"{v:.4g}"
        return f"{v:,.4f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def without_front_matter(card: str) -> str:
    """The card without its YAML front matter (Hugging Face's metadata between the leading `---` lines), for
    a Markdown view that would render it as a rule and a heading (the Dagster UI); README.md keeps it."""
    lines = card.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return card
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "".join(lines[i + 1:]).lstrip("\n")
    return card


_STAGE_LINES = {
    "pretrain": "Stage: **pretrained base model** (next-token prediction only; not instruction-tuned).",
    "distill": "Stage: **distilled student** of the pretrained model (base model; not instruction-tuned).",
    "sft": "Stage: **instruction-tuned** (distilled, then supervised fine-tuning with LoRA, merged) on grounded "
           "finance questions whose answers are computed from the data; use the chat template below.",
    "dpo": "Stage: **preference-tuned** (distilled, instruction-tuned, then DPO preferring the correct figure over "
           "a wrong one); use the chat template below.",
}
# The limits line that depends on the stage: a base model continues text, a chat model answers in turns.
_KIND_LIMITS = {
    "base": "- A base model (not instruction-tuned): it continues text rather than following instructions.",
    "chat": "- Instruction-tuned (a chat model): it answers short finance questions put in the chat template "
            "above; a small model, so check every figure it gives, and beyond such questions it follows "
            "instructions poorly.",
}


def _tokenizer_line(release: dict) -> str:
    tok = release["tokenizer"]
    specials = ", ".join(f"`{t}`" for t in SPECIAL_TOKENS)
    if tok.get("file", "tokenizer.model") == "tokenizer.model":
        return (f"SentencePiece BPE with byte fallback and single-digit splitting, {tok['vocab_size']:,} pieces "
                f"(`tokenizer.model`, sha256 `{tok['sha256'][:16]}…`), also as `tokenizer.json` for transformers. "
                f"Special pieces: {specials}.")
    chat = release.get("chat_template")
    return (f"The base model's own tokenizer (`tokenizer.json`, {tok['vocab_size']:,} tokens, sha256 "
            f"`{tok['sha256'][:16]}…`)" + (f", with {specials} added as special tokens after its last id (their "
                                            "embeddings started at the mean of the base's and were trained by "
                                            "instruction tuning)." if chat else "."))


def model_card(release: dict) -> str:
    """Hugging Face style README.md: front matter, then architecture, tokenizer, data, evaluation, use and limits."""
    m, ev, lin = release["model"], release["evaluation"], release["lineage"]
    ck = release["checkpoint"]
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "language: [en]",
        "tags: [finance, tenali, llama]",
        "---",
        "",
        f"# {release['model_name']}",
        "",
        f"A {m['num_params'] / 1e6:.1f}M-parameter decoder-only language model "
        + (f"continued from the base model `{release['base_model']['name']}` (`{release['base_model']['uri']}`) "
           if release.get("base_model") else "pretrained from scratch ")
        + "by Tenali on finance text (market data, macro series, crypto, SEC filings, news and documents rendered "
        f"as text). "
        f"Release `{release['release_id']}`, created {release['created']}.",
        "",
        _STAGE_LINES.get(release.get("stage", "pretrain"), ""),
        "",
        "## Architecture",
        "",
        f"`{m['architecture']}` (Llama-style: pre-norm RMSNorm, grouped-query attention with RoPE, "
        f"{'SwiGLU' if m['activation'] == 'swiglu' else 'GELU'} MLP"
        f"{', tied embeddings' if m['tie_embeddings'] else ''}).",
        "",
        "| field | value |", "|---|---:|",
        *[f"| {k} | {_fmt(m[k])} |" for k in ("num_params", "vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads",
                                                 "ffn_hidden", "max_seq_len", "rope_theta", "norm_eps")],
        "",
        "## Tokenizer",
        "",
        _tokenizer_line(release) + " Chat template (also in tokenizer_config.json):",
        "",
        "```",
        render_text([{"role": "system", "content": "…"}, {"role": "user", "content": "…"},
                     {"role": "assistant", "content": "…"}, {"role": "user", "content": "…"}],
                    add_generation_prompt=True),
        "```",
        "",
        "## Training data and lineage",
        "",
        f"Checkpoint `{ck['key']}` (step {_fmt(ck['step'])}, {_fmt(ck.get('tokens_seen') or 0)} tokens seen, "
        f"model sha256 `{str(ck.get('model_sha256', ''))[:16]}…`), "
        + (f"**training data not known**: {lin.get('note', '')}." if lin.get("recorded") == "unknown" else
           f"trained on {_fmt(lin.get('train_tokens') or 0)} training tokens; validation is split by time: no "
           f"training document is dated on or after {lin.get('val_start') or 'the validation start'}.")
        + (f" Continued from `{lin['continued_from']}`, which was trained on earlier data." if lin.get("continued_from")
           else "")
        + (f" Distilled from `{lin['distilled_from']}` on these shards." if lin.get("distilled_from") else "")
        + (" Its training run did not record its data: what follows is the lake's data at release, which it may not "
           "have been trained on." if "not recorded" in str(lin.get("recorded", "")) else ""),
        "",
    ]
    if lin.get("sources"):
        lines += ["| documents | rows | first | last | sources |", "|---|---:|---|---|---|"]
        lines += [f"| {s['asset']} | {_fmt(s.get('rows', ''))} | {s.get('first', '')} | {s.get('last', '')} | "
                  f"{s.get('sources', '')} |" for s in lin["sources"]]
        lines.append("")
    if lin.get("date_range"):
        lines += [f"Date range of all documents: {lin['date_range'][0]} to {lin['date_range'][1]}.", ""]
    if lin.get("sample_data"):
        lines += ["**Built from sample data** (the demo profile): a smoke-test model, not a useful one.", ""]
    lines += ["## Evaluation", "",
              "On the held-out (later-dated) validation split; bits per byte is comparable across tokenizers.", "",
              "| metric | value |", "|---|---:|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(ev.items())]
    lines += [
        "",
        "## Intended use and limits",
        "",
        "- Research and education: studying small finance-domain language models, serving and evaluation.",
        "- Not financial advice. It generates plausible-sounding text, including numbers, prices and dates that "
        "may be wrong; it has no access to live data and knows nothing after its training data ends.",
        _KIND_LIMITS["chat" if release.get("chat_template") else "base"],  # release.json: trained on the template
        "- English finance text dominates the data; other languages and domains are weak.",
        "- Data sources carry their own terms (e.g. SEC EDGAR, FRED, exchange data); check them before reuse.",
        "",
        "## How to use",
        "",
        "From the Tenali repository with its virtual environment activated (`source .venv/bin/activate`; "
        "without it `tenali` is not on PATH: run `.venv/bin/tenali` instead):",
        "",
        "```",
        f"tenali serve LAKE_ROOT/releases/{release['release_id']}   # this folder, wherever it is copied",
        "tenali serve --lake LAKE_ROOT   # the latest release (releases/LATEST.json; or set TENALI_LAKE_ROOT)",
        "```",
        "",
        "or with transformers: `AutoModelForCausalLM.from_pretrained(folder)`, `AutoTokenizer.from_pretrained(folder)`.",
        "llama.cpp's `convert_hf_to_gguf.py` converts this folder; `tenali lm-eval-task` scores it, or any other "
        "model, on the held-out grounded questions with lm-evaluation-harness.",
        "",
    ]
    return "\n".join(lines)


def release_json(release: dict) -> str:
    return json.dumps({"release_format_version": RELEASE_FORMAT_VERSION, **release}, indent=2, sort_keys=True,
                      default=str) + "\n"
