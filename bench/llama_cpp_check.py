"""Does llama.cpp run a Tenali export as `transformers` does? Two halves, for two environments.

    reference EXPORT_DIR OUT.json   (the project's venv: transformers) token ids, last-position logits and
                                    a greedy continuation for a few finance texts and a chat prompt
    compare GGUF OUT.json           (a venv with llama-cpp-python) the same through llama.cpp: ids equal,
                                    logits within tolerance, the same greedy tokens; exit 1 otherwise

bench/llama_cpp_check.sh runs both around llama.cpp's own converter (convert_hf_to_gguf.py, from the
llama-cpp-python sdist on PyPI); docs/serving.md records what it printed. Not part of the tests: it
downloads and builds llama.cpp (minutes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

TEXTS = [
    "Apple (AAPL) closed at $189.25 on 2024-05-01, up 1.5% on volume of 58,414,500 shares.",
    "The Federal Reserve held the federal funds rate at 5.25%-5.50%; CPI rose 3.4% year over year.",
    "Item 7. Management's Discussion and Analysis:\nrevenue increased 8% to $94,930 million.",
]
CHAT = [{"role": "system", "content": "You are a financial analyst. Answer from the data, with the exact figure."},
        {"role": "user", "content": "What was the closing price of AAPL on May 1, 2024?"}]
NEW_TOKENS = 12


def reference(export_dir: str, out: str) -> None:
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(export_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(export_dir, dtype=torch.float32).eval()
    chat = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    cases = []
    for text in [*TEXTS, chat]:
        ids = tok.encode(text, add_special_tokens=False)[: model.config.max_position_embeddings - NEW_TOKENS]
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x).logits[0, -1]
            greedy = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS, do_sample=False,
                                    eos_token_id=None, pad_token_id=tok.pad_token_id)[0, len(ids):]
        cases.append({"text": text, "ids": ids, "last_logits": logits.tolist(), "greedy": greedy.tolist()})
    Path(out).write_text(json.dumps({"transformers": transformers.__version__, "cases": cases}))


def compare(gguf: str, ref_path: str, atol: float) -> int:
    import llama_cpp
    import numpy as np

    ref = json.loads(Path(ref_path).read_text())
    # an f32 KV cache, not llama.cpp's default f16 (which alone moves the logits by ~3e-3): f32 against f32
    llm = llama_cpp.Llama(model_path=gguf, n_ctx=0, logits_all=True, verbose=False, n_threads=2,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    failures, worst, same_ids, same_greedy = [], 0.0, 0, 0
    for case in ref["cases"]:
        what = repr(case["text"][:40])
        ids = llm.tokenize(case["text"].encode(), add_bos=False, special=True)[:len(case["ids"])]  # as cut there
        if ids != case["ids"]:
            failures.append(f"ids differ for {what}: {ids[:12]} vs {case['ids'][:12]}")
            continue
        same_ids += 1
        llm.reset()
        llm.eval(ids)
        diff = float(np.abs(np.asarray(llm.scores[len(ids) - 1]) - np.asarray(case["last_logits"])).max())
        worst = max(worst, diff)
        if diff > atol:
            failures.append(f"last logits differ by {diff:.2e} for {what}")
        greedy = list(itertools.islice(llm.generate(ids, top_k=1, temp=0.0, reset=True), NEW_TOKENS))
        if greedy == case["greedy"]:
            same_greedy += 1
        else:
            failures.append(f"greedy tokens differ for {what}: {greedy} vs {case['greedy']}")
    print(f"llama-cpp-python {llama_cpp.__version__} against transformers {ref['transformers']}: "
          f"{len(ref['cases'])} texts, token ids equal in {same_ids}, largest last-position logit difference "
          f"{worst:.2e} (tolerance {atol:g}), greedy {NEW_TOKENS}-token continuations equal in {same_greedy}")
    for f in failures:
        print("  FAIL:", f)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("reference")
    r.add_argument("export_dir")
    r.add_argument("out")
    c = sub.add_parser("compare")
    c.add_argument("gguf")
    c.add_argument("ref")
    c.add_argument("--atol", type=float, default=1e-4)
    args = p.parse_args(argv)
    if args.cmd == "reference":
        reference(args.export_dir, args.out)
        return 0
    return compare(args.gguf, args.ref, args.atol)


if __name__ == "__main__":
    sys.exit(main())
