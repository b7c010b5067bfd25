"""A student initialised from its teacher's blocks."""

import pytest
import torch

from tenali_model.checkpoint import load_meta, load_model, save_checkpoint
from tenali_model.config import ConfigError
from tenali_model.model import Transformer
from tenali_model.posttrain.student import init_student, pick_layers

from conftest import tiny_model_config


def test_layer_choice_spreads_and_keeps_the_ends():
    assert pick_layers(12, 6) == [0, 2, 4, 7, 9, 11]
    assert pick_layers(4, 4) == [0, 1, 2, 3]
    assert pick_layers(4, 1) == [3]
    with pytest.raises(ConfigError, match="1..4 layers"):
        pick_layers(4, 5)


def test_student_copies_the_chosen_blocks_and_the_shared_parts(tmp_path):
    torch.manual_seed(0)
    teacher = Transformer(tiny_model_config(300, n_layers=4))
    tdir = save_checkpoint(tmp_path / "teacher", step=7, model=teacher)
    sdir = init_student(tdir, tmp_path / "student", n_layers=2)
    student = load_model(sdir)
    assert student.config.n_layers == 2 and student.config.dim == teacher.config.dim
    assert load_meta(sdir)["step"] == 0 and load_meta(sdir)["teacher_layers"] == [0, 3]
    assert torch.equal(student.tok_embeddings.weight, teacher.tok_embeddings.weight)
    assert torch.equal(student.layers[1].attn.wq.weight, teacher.layers[3].attn.wq.weight)
    # A student of full depth is the teacher.
    full = load_model(init_student(tdir, tmp_path / "full", n_layers=4))
    x = torch.randint(0, 300, (2, 16))
    assert torch.allclose(full(x)[0], teacher(x)[0], atol=1e-6)
    # A second call (a retried run) keeps what is there.
    assert init_student(tdir, tmp_path / "student", n_layers=2) == sdir
