"""Host memory of post-training's model loading, against what it replaced, in the same run.

    .venv/bin/python bench/bench_host_memory.py [--preset 350m] [--rounds 2]

Two loads, each timed and measured in a fresh process (alternating which way goes first) as the peak
of the process's anonymous resident memory (`RssAnon`, sampled every 2 ms; pages mapped from a file,
which safetensors' readers use and ranks on one machine share, are not counted) above where it
started:

    teacher   distillation's Tenali teacher in bfloat16: `load_model(dtype=...)`, built in its dtype and
              cast from the mapped file as loaded, against loading it in float32 and casting after
              (the way before 2026-12-05)
    student   `init_student` (half the teacher's blocks): the teacher's tensors written out as mapped,
              against building the teacher and a randomly initialised student and copying into it
              (the way before 2026-12-05); both must write the same model.safetensors

Prints the medians and ratios for each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _anon() -> int:
    with open("/proc/self/status") as f:
        return int(re.search(r"RssAnon:\s+(\d+)", f.read()).group(1)) * 1024


def _before_student(teacher_dir: Path, out_dir: Path, n_layers: int) -> Path:
    """init_student as it was: the teacher and a random student built, the chosen blocks copied in."""
    from tenali_model.checkpoint import load_model, save_checkpoint
    from tenali_model.model import Transformer
    from tenali_model.posttrain.student import pick_layers

    teacher = load_model(teacher_dir)
    layers = pick_layers(teacher.config.n_layers, n_layers)
    student = Transformer(dataclasses.replace(teacher.config, n_layers=n_layers))
    state = teacher.state_dict()
    student.load_state_dict({n: state[f"layers.{layers[int(n.split('.')[1])]}.{n.split('.', 2)[2]}"]
                             if n.startswith("layers.") else state[n] for n in student.state_dict()})
    return save_checkpoint(out_dir, step=0, model=student)


def child(what: str, way: str, ckpt: str, out: str) -> None:
    import torch

    from tenali_model.checkpoint import load_config, load_meta, load_model
    from tenali_model.posttrain.student import init_student

    torch.set_num_threads(1)
    start, peak, done = _anon(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _anon())
            time.sleep(0.002)
    thread = threading.Thread(target=sample)
    thread.start()
    t = time.perf_counter()
    result = ""
    if what == "teacher":
        model = (load_model(ckpt, dtype=torch.bfloat16) if way == "now"
                 else load_model(ckpt).to(dtype=torch.bfloat16))
        result = str(next(model.parameters()).dtype)
    else:
        half = max(1, load_config(ckpt).n_layers // 2)
        made = init_student(ckpt, out, half) if way == "now" else _before_student(Path(ckpt), Path(out), half)
        result = load_meta(made)["model_sha256"]
    seconds = time.perf_counter() - t
    done.set()
    thread.join()
    print(json.dumps({"peak": max(peak[0], _anon()) - start, "seconds": seconds, "result": result}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="350m")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return

    import torch

    from tenali_model.checkpoint import save_checkpoint
    from tenali_model.config import preset
    from tenali_model.model import Transformer

    with tempfile.TemporaryDirectory(dir=".") as tmp:
        torch.manual_seed(0)
        cfg = preset(args.preset)
        teacher = save_checkpoint(Path(tmp) / "teacher", step=0, model=Transformer(cfg))
        print(f"{args.preset}: {cfg.n_layers} layers, model.safetensors "
              f"{(teacher / 'model.safetensors').stat().st_size / 2**30:.2f} GiB; torch {torch.__version__}")
        for what, label in (("teacher", "teacher loaded in bf16"),
                             ("student", f"init_student to {max(1, cfg.n_layers // 2)} layers")):
            runs = {"before": [], "now": []}
            for r in range(args.rounds):
                for way in (("before", "now") if r % 2 == 0 else ("now", "before")):
                    out = Path(tmp) / f"{what}-{way}-{r}"
                    proc = subprocess.run([sys.executable, __file__, "--child", what, way, str(teacher), str(out)],
                                          capture_output=True, text=True, check=True)
                    runs[way].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                    shutil.rmtree(out, ignore_errors=True)
            peak = {w: statistics.median(x["peak"] for x in runs[w]) for w in runs}
            secs = {w: statistics.median(x["seconds"] for x in runs[w]) for w in runs}
            same = len({x["result"] for w in runs for x in runs[w]}) == 1
            print(f"{label:26s} peak anonymous memory {peak['before'] / 2**30:.2f} -> {peak['now'] / 2**30:.2f} GiB "
                  f"({peak['before'] / max(peak['now'], 1):.1f}x less), {secs['before']:.2f} -> {secs['now']:.2f} s "
                  f"({secs['before'] / secs['now']:.2f}x); the same result: {same}")


if __name__ == "__main__":
    main()
