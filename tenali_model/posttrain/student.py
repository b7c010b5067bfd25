"""A smaller student initialised from its teacher: the teacher's embedding, final norm and head, and
every k-th of its blocks (the DistilBERT initialisation), so distillation starts near the teacher
instead of from noise. The student keeps the teacher's width and vocabulary; only depth shrinks.

    python -m tenali_model.posttrain.student TEACHER OUT_DIR --layers N
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..checkpoint import latest_checkpoint, load_meta, load_model, resolve_checkpoint, save_checkpoint
from ..config import ConfigError
from ..model import Transformer


def pick_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spread teacher blocks, first and last included (e.g. 12 -> 6: 0, 2, 4, 7, 9, 11)."""
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(f"a student needs 1..{teacher_layers} layers (the teacher's), got {student_layers}")
    if student_layers == 1:
        return [teacher_layers - 1]
    return [round(i * (teacher_layers - 1) / (student_layers - 1)) for i in range(student_layers)]


def init_student(teacher_ckpt: str | Path, out_dir: str | Path, n_layers: int) -> Path:
    """Write a step-0 student checkpoint into out_dir (kept as it is when one is already there: a
    retried run must not re-initialise a student that has trained)."""
    if latest_checkpoint(out_dir) is not None:
        return latest_checkpoint(out_dir)
    teacher_dir = resolve_checkpoint(teacher_ckpt)
    teacher = load_model(teacher_dir)
    tcfg = teacher.config
    layers = pick_layers(tcfg.n_layers, n_layers)
    student = Transformer(dataclasses.replace(tcfg, n_layers=n_layers))
    state = teacher.state_dict()
    new = {}
    for name in student.state_dict():
        if name.startswith("layers."):
            i, rest = name.split(".", 2)[1:]
            new[name] = state[f"layers.{layers[int(i)]}.{rest}"]
        else:
            new[name] = state[name]
    student.load_state_dict(new)
    # the teacher's embedding rows come along, and with them its record of those fitted to a chat
    # tokenizer: a chat stage on the student must not start them again (posttrain/vocab.py)
    from .vocab import FITTED_KEY, fitted_vocab

    fitted = fitted_vocab(load_meta(teacher_dir), tcfg.vocab_size)
    return save_checkpoint(out_dir, step=0, model=student,
                           extra_meta={"initialised_from": str(teacher_dir), "teacher_layers": layers,
                                       **({FITTED_KEY: fitted} if fitted is not None else {})})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tenali_model.posttrain.student", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("teacher")
    p.add_argument("out_dir")
    p.add_argument("--layers", type=int, required=True)
    args = p.parse_args(argv)
    try:
        print(init_student(args.teacher, args.out_dir, args.layers))
    except (ConfigError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
