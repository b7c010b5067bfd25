"""Pretraining settings: the resource's, else the model's recipe (tenali_model/recipes.py); the demo's
unchanged; TENALI_TRAIN_CONFIG checked at start-up."""

import json

import pytest

from tenali_model.config import ModelConfig, preset
from tenali_model.recipes import RECIPES
from tenali_pipeline.resources import TrainingResource, build_resources
from tenali_pipeline.settings import SettingsError, load_settings


def _prod(tmp_path, **env):
    return load_settings({"TENALI_PROFILE": "local", "TENALI_HOME": str(tmp_path), **env})


def test_the_demo_trains_as_it_always_did(tmp_path):
    training = build_resources(load_settings({"TENALI_HOME": str(tmp_path)}))["training"]
    assert training.resolve(None) == {
        "recipe": "demo", "batch_size": 16, "seq_len": 128, "global_batch_tokens": 0, "lr": 3e-3,
        "min_lr": 3e-3 / 10, "warmup_steps": 30, "z_loss": 0.0, "compile": False, "activation_checkpointing": False,
        "eval_every": 100, "eval_batches": 20, "ckpt_every": 100, "seed": 1337}


def test_a_larger_model_brings_its_recipe_and_the_variable_overrides_it(tmp_path):
    training = build_resources(_prod(tmp_path, TENALI_MODEL="7b", TENALI_TRAIN_STEPS="25000"))["training"]
    got = training.resolve(None)
    assert (got["recipe"], got["seq_len"], got["global_batch_tokens"], got["lr"], got["warmup_steps"]) == (
        "7b", 4096, 4 * 2 ** 20, 3e-4, 2000)
    assert got["batch_size"] == 1 and got["compile"] is True

    env = {"TENALI_MODEL": "51m", "TENALI_TRAIN_CONFIG": json.dumps({"lr": 5e-4, "compile": False, "seq_len": 128})}
    got = build_resources(_prod(tmp_path, **env))["training"].resolve(None)
    r = RECIPES["51m"]
    assert (got["lr"], got["min_lr"], got["compile"]) == (5e-4, 5e-5, False)  # given
    assert got["z_loss"] == r.z_loss and got["batch_size"] == r.micro_batch  # the recipe's
    assert got["global_batch_tokens"] == r.global_batch_seqs * 128  # the recipe's sequences at the given length


def test_warmup_is_capped_by_a_short_run_and_a_base_model_context_cuts_the_recipe():
    assert TrainingResource(model="7b", steps=100).resolve(None)["warmup_steps"] == 20
    base = ModelConfig(vocab_size=32000, dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, ffn_hidden=5632,
                       max_seq_len=1024)  # a 1.1B base with a shorter context than the 1b recipe's 2,048
    got = TrainingResource(model="demo", steps=1000).resolve(base)
    assert (got["recipe"], got["seq_len"], got["global_batch_tokens"]) == ("1b", 1024, 512 * 1024)
    # a seq_len given explicitly is not cut: the trainer's validation names it instead
    assert TrainingResource(model="demo", seq_len=4096).resolve(preset("demo"))["seq_len"] == 4096


@pytest.mark.parametrize("value, match", [
    ("{lr: 1}", "must be JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"learning_rate": 1e-4}', "'learning_rate', which is not a pretraining setting; known: activation_checkpointing"),
    ('{"steps": 10}', "use TENALI_TRAIN_STEPS"),
    ('{"compile": "yes"}', "compile='yes': Input should be a valid boolean"),
    ('{"batch_size": 2.5}', "batch_size=2.5: Input should be a valid integer"),
])
def test_a_bad_train_config_stops_at_start_up_naming_it(tmp_path, value, match):
    with pytest.raises(SettingsError, match="TENALI_TRAIN_CONFIG") as e:
        build_resources(_prod(tmp_path, TENALI_TRAIN_CONFIG=value))
    assert match in str(e.value)


def test_post_training_stages_take_the_pretraining_batch_context_and_switches(tmp_path):
    """Distillation, SFT and DPO run with the pretraining's batch and context, and with its compile and
    activation checkpointing (the large recipes turn both on for GPUs), resolved for the parent's size."""
    from tenali_model.checkpoint import save_checkpoint
    from tenali_model.model import Transformer
    from tenali_model.posttrain.config import SFTConfig
    from tenali_pipeline.defs.posttraining.stages import pretraining_settings

    parent = save_checkpoint(tmp_path / "parent", step=0, model=Transformer(preset("tiny")))
    assert pretraining_settings(TrainingResource(), parent) == {
        "batch_size": 16, "seq_len": 128, "activation_checkpointing": False, "compile": False}
    got = pretraining_settings(TrainingResource(compile=True, activation_checkpointing=True, batch_size=4), parent)
    assert got == {"batch_size": 4, "seq_len": 128, "activation_checkpointing": True, "compile": True}
    cfg = SFTConfig(init_from=str(parent), out_dir=str(tmp_path / "sft"), tokenizer="t", train_files=["f"], **got)
    cfg.validate()
    assert cfg.compile and cfg.activation_checkpointing
