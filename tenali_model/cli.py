"""The model side of the `tenali` command (no dagster needed: this is what the GPU image runs).

    tenali train --config train.json [--stop-at-step K]      same as python -m tenali_model.train
    tenali evaluate CKPT --val val_000.bin [...]              same as python -m tenali_model.evaluate
    tenali distill|sft|dpo --config F.json [--stop-at-step K]  post-training (python -m tenali_model.posttrain.<stage>)
    tenali export-hf CHECKPOINT OUTDIR [--tokenizer tokenizer.model]
    tenali import-hf HF_DIR OUTDIR
    tenali serve [PATH] [--tokenizer F] [--host 127.0.0.1] [--port 8000] [...]   (see tenali_model.serve)
    tenali plan --config 7b --tokens 100e9 --gpus 8 --gpu h100 [--mfu 0.4 | --mfu mfu.json] [--price 2.5]
                [--seq-len N] [--global-batch-tokens N] [--micro-batch N]

`main(argv)` returns the exit status: 0 done, 2 bad arguments or inputs, 1 anything else.
Torch is imported only by the subcommands that need it, so `plan` answers at once.
"""

from __future__ import annotations

import argparse
import os
import math
import sys
from pathlib import Path


def _train(argv: list[str]) -> int:
    from .train import main
    return main(argv)


def _evaluate(argv: list[str]) -> int:
    from .evaluate import main
    return main(argv)


def _stage(name: str):
    def run(argv: list[str]) -> int:
        import importlib

        return importlib.import_module(f"tenali_model.posttrain.{name}").main(argv)
    return run


# Passed through untouched: these modules own their arguments.
PASSTHROUGH = {"train": _train, "evaluate": _evaluate,
               "sft": _stage("sft"), "distill": _stage("distill"), "dpo": _stage("dpo")}


def _number(text: str) -> float:
    """100e9, 1.5e12, 2_000_000 or 100B / 1.5T / 300M."""
    text = text.strip().replace("_", "").replace(",", "")
    scale = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}.get(text[-1:].upper())
    try:
        value = float(text[:-1]) * scale if scale else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):  # inf crashed plan with an OverflowError traceback, nan with a cryptic one
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .serve import at_least  # argparse only: no torch

    p = argparse.ArgumentParser(prog="tenali", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("train", help="pretrain (python -m tenali_model.train; see its --help)", add_help=False)
    sub.add_parser("evaluate", help="validation loss of a checkpoint (see its --help)", add_help=False)
    for stage, what in (("distill", "distil a student from a teacher"), ("sft", "instruction-tune (LoRA or full)"),
                        ("dpo", "preference-tune against a frozen reference")):
        sub.add_parser(stage, help=f"{what} (python -m tenali_model.posttrain.{stage}; see its --help)", add_help=False)

    e = sub.add_parser("export-hf", help="write a transformers model directory for a checkpoint")
    e.add_argument("checkpoint", help="checkpoint directory, or an out_dir (its latest)")
    e.add_argument("outdir", help="new (or empty) directory for the Hugging Face model")
    e.add_argument("--tokenizer", default=None, help="sentencepiece .model to export as well")

    i = sub.add_parser("import-hf", help="a Tenali checkpoint from a Llama/Arcee transformers directory")
    i.add_argument("hf_dir")
    i.add_argument("outdir", help="out_dir for the checkpoint (step_00000000 is written there)")

    sv = sub.add_parser("serve", help="OpenAI-compatible API and chat page for a release or checkpoint")
    from .serve import add_arguments as _serve_arguments  # argparse only: no torch or fastapi yet
    _serve_arguments(sv)

    pl = sub.add_parser("plan", help="memory per GPU, time and cost of a training run")
    pl.add_argument("--config", required=True,
                    help="a model preset (tiny, demo, 51m, 125m, 350m, 1b, 7b) or a training-config JSON")
    pl.add_argument("--tokens", type=_number, required=True, help="training tokens, e.g. 100e9 or 100B")
    pl.add_argument("--gpus", type=int, default=8)
    pl.add_argument("--gpu", default="h100", help="h100, h200 or a100")
    pl.add_argument("--mfu", default=None,
                    help="model FLOPs utilisation to assume, or the results.json of bench/bench_mfu.py (e.g. "
                         "var/device-checks/mfu.json from a GPU run): its measured figure for this model is used. "
                         "Default: what this project measured for the preset on that GPU, compiled "
                         "(plan.MEASURED_MFU: 1b and 125m on h200), else 0.4")
    pl.add_argument("--price", type=float, default=None, help="price per GPU-hour")
    pl.add_argument("--seq-len", type=at_least(0, strict=True), default=None, help="default: the config's, else the preset's recipe")
    pl.add_argument("--global-batch-tokens", type=_number, default=None,
                    help="tokens per optimizer step (default: the config's, else the preset's recipe: "
                         "4M tokens for the 7b)")
    pl.add_argument("--micro-batch", type=at_least(0, strict=True), default=None,
                    help="sequences per GPU per micro-step (default: the config's batch_size, else the recipe's)")
    pl.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="plan memory with or without torch.compile (default: the config's compile, else the "
                         "recipe's: every GPU recipe compiles)")
    return p


def _plan(args) -> int:
    from .config import MODEL_PRESETS, TrainConfig
    from .plan import plan, render

    if args.config in MODEL_PRESETS:  # what the pipeline would run: the preset's recipe
        from .recipes import describe, recipe_for

        model, r = args.config, recipe_for(args.config)[1]
        seq_len = args.seq_len or r.seq_len
        micro = args.micro_batch or r.micro_batch
        batch = r.global_batch_tokens(seq_len) or micro * seq_len * args.gpus
        kwargs = dict(seq_len=seq_len, micro_batch=micro, compile=r.compile if args.compile is None else args.compile,
                      global_batch_tokens=int(args.global_batch_tokens) if args.global_batch_tokens else batch)
        print(f"recipe     {model} (tenali_model/recipes.py) for what is not given: "
              f"{describe(r.train_config(seq_len))}")
    elif Path(args.config).is_file():
        cfg = TrainConfig.from_json(args.config)
        model = cfg.model_config()
        seq_len = args.seq_len or cfg.resolved_seq_len()
        micro = args.micro_batch or cfg.batch_size
        batch = cfg.global_batch_tokens or cfg.batch_size * seq_len * cfg.grad_accum * args.gpus
        kwargs = dict(seq_len=seq_len, micro_batch=micro, compile=cfg.compile if args.compile is None else args.compile,
                      global_batch_tokens=int(args.global_batch_tokens) if args.global_batch_tokens else batch)
    else:
        print(f"tenali plan: error: --config {args.config!r} is neither a preset "
              f"({', '.join(MODEL_PRESETS)}) nor a file", file=sys.stderr)
        return 2
    if args.mfu is None:
        from .plan import DEFAULT_MFU, MEASURED_MFU

        known = (MEASURED_MFU.get((args.gpu.lower(), model)) if isinstance(model, str) and kwargs["compile"]
                 else None)
        mfu, where = known or (DEFAULT_MFU, None)
        source = f"MFU {mfu:.1%} " + (
            f"as measured here: {where}; a run over several GPUs loses some of it to communication (--mfu sets "
            "another)" if known else f"assumed: nothing measured for {args.config} on {args.gpu}"
            f"{'' if kwargs['compile'] else ' without compile'} (--mfu sets it)")
    else:
        mfu, source = _measured_mfu(args.mfu, model, args.gpu)
    if source:
        print(source)
    print(render(plan(model, tokens=args.tokens, gpus=args.gpus, gpu=args.gpu, mfu=mfu,
                      price_per_gpu_hour=args.price, **kwargs)))
    return 0


def _measured_mfu(value: str, model, gpu: str) -> tuple[float, str | None]:
    """--mfu as a number, or the best MFU that bench/bench_mfu.py's results.json records for this model
    (by preset name, or by parameter count for a training config), with a line saying where it came from."""
    try:
        return float(value), None
    except ValueError:
        pass
    import json

    from .config import num_params

    path = Path(value)
    if not path.is_file():
        raise ValueError(f"--mfu {value!r} is neither a number nor a file")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--mfu {path}: not JSON ({e}); expected the results.json of bench/bench_mfu.py") from None
    if not isinstance(results, list):
        raise ValueError(f"--mfu {path}: expected a list of results, as bench/bench_mfu.py writes")
    name = model if isinstance(model, str) else None
    params = None if name else num_params(model)
    hits = [r for r in results if isinstance(r, dict) and r.get("status") == "ok" and r.get("mfu")
            and (r.get("config") == name if name else r.get("params") == params)]
    if not hits:
        have = ", ".join(f"{r.get('config')} ({r.get('status')})" for r in results if isinstance(r, dict)) or "nothing"
        raise ValueError(f"--mfu {path}: no measured MFU for {name or f'a {params:,}-parameter model'} "
                         f"(it has: {have})")
    best = max(hits, key=lambda r: r["mfu"])
    note = "" if gpu.lower() in str(best.get("device", "")).lower() else f"; planning for {gpu}, a different GPU"
    return best["mfu"], (f"MFU {best['mfu']:.1%} as measured by bench_mfu.py: {best.get('config')} on "
                         f"{best.get('device')}, {best.get('dtype')}{', compiled' if best.get('compile') else ''}, "
                         f"batch {best.get('batch')} x {best.get('seq_len')}, torch {best.get('torch')}{note}")


def _export(args) -> int:
    from .checkpoint import CheckpointError
    from .hf import export_hf
    try:
        out = export_hf(args.checkpoint, args.outdir, tokenizer_model=args.tokenizer)
    except CheckpointError as e:
        raise ValueError(str(e)) from e
    print(f"wrote {out}")
    if args.tokenizer is None:
        print(f"note: no tokenizer in {out} (transformers' AutoTokenizer cannot load it): export again (into a new "
              "directory) with --tokenizer, the sentencepiece .model the checkpoint was trained with"
              f"{_lake_tokenizer_hint(args.checkpoint)}", file=sys.stderr)
    return 0


def _lake_tokenizer_hint(checkpoint: str) -> str:
    """Where the pipeline keeps that tokenizer, when `checkpoint` lies in a lake's checkpoints/ folder."""
    parts = Path(checkpoint).expanduser().absolute().parts
    if "checkpoints" not in parts:
        return ""
    lake = Path(*parts[:len(parts) - 1 - parts[::-1].index("checkpoints")])
    own = lake / "tokenizer" / "tenali.model"
    where = f"--tokenizer {own}" if own.is_file() else f"the file in {lake / 'tokenizer'}"
    return (f"; for this lake: {where} (unless the tokenizer was retrained since). A release in "
            f"{lake / 'releases'} is such an export, tokenizer included")


def _import(args) -> int:
    from .hf import import_hf
    out = import_hf(args.hf_dir, args.outdir)
    print(f"wrote {out}")
    return 0


def _serve(args) -> int:
    from .serve import run_server
    return run_server(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        return PASSTHROUGH[argv[0]](argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): a status, not an exit, in-process
        return int(e.code or 0)
    handler = {"plan": _plan, "export-hf": _export, "import-hf": _import, "serve": _serve}[args.command]
    try:
        return handler(args)
    except BrokenPipeError:  # `tenali plan ... | head` closed the pipe: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except (ValueError, OSError) as e:  # ConfigError, ConversionError, CheckpointError, missing files
        print(f"tenali {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
