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

import torch

from ..checkpoint import Shape, latest_checkpoint, load_config, read_weights, resolve_checkpoint, save_checkpoint
from ..config import ConfigError, num_params
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
    retried run must not re-initialise a student that has trained).

    The teacher's tensors are written out as read, mapped from its model.safetensors: no model is built
    and nothing copied into memory (a 7B teacher's 3.5B student took 41 GB of the Dagster process's
    memory that way, and a random initialisation thrown away)."""
    if latest_checkpoint(out_dir) is not None:
        return latest_checkpoint(out_dir)
    teacher_dir = resolve_checkpoint(teacher_ckpt)
    state, meta = read_weights(teacher_dir)  # verified; a sharded teacher is read whole
    tcfg = load_config(teacher_dir)
    layers = pick_layers(tcfg.n_layers, n_layers)
    scfg = dataclasses.replace(tcfg, n_layers=n_layers)
    with torch.device("meta"):  # the student's names and shapes, nothing allocated
        shapes = Transformer(scfg).state_dict()
    new = {}
    for name, shape in shapes.items():
        if name.startswith("layers."):
            i, rest = name.split(".", 2)[1:]
            new[name] = state[f"layers.{layers[int(i)]}.{rest}"]
        else:
            new[name] = state[name]
        if new[name].shape != shape.shape:
            raise ConfigError(f"teacher {teacher_dir}: {name} is {tuple(new[name].shape)}, its config makes it "
                              f"{tuple(shape.shape)}")
    # the teacher's embedding rows come along, and with them its record of those fitted to a chat
    # tokenizer: a chat stage on the student must not start them again (posttrain/vocab.py)
    from .vocab import FITTED_KEY, fitted_vocab

    fitted = fitted_vocab(meta, tcfg.vocab_size)
    return save_checkpoint(out_dir, step=0, model=Shape(scfg, num_params(scfg)), model_state=new,
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
