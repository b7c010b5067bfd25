"""Pretraining recipes: one per preset, runnable as written (context, divisibility, memory), the 7B's
the seed's, and a shape that is no preset gets the nearest preset's."""

import dataclasses

import pytest

from tenali_model.config import MODEL_PRESETS, ConfigError, ModelConfig, TrainConfig, preset
from tenali_model.plan import USABLE_FRACTION, get_gpu, memory_per_gpu
from tenali_model.recipes import RECIPES, recipe_for

# Where each GPU recipe is meant to run (what the recipe module says it was sized for).
TARGETS = {"51m": (1, "single"), "125m": (8, "ddp"), "350m": (8, "ddp"), "1b": (8, "fsdp"), "7b": (8, "fsdp")}


def test_every_preset_has_a_recipe_that_the_trainer_accepts():
    assert set(RECIPES) == set(MODEL_PRESETS)
    for name, r in RECIPES.items():
        assert r.seq_len <= MODEL_PRESETS[name].max_seq_len, name
        assert 0 < r.lr < 0.01 and 0 <= r.warmup_steps and r.eval_every > 0 and r.ckpt_every > 0, name
        cfg = TrainConfig(train_shards=["a"], out_dir="o", model=name, batch_size=r.micro_batch, seq_len=r.seq_len,
                          global_batch_tokens=r.global_batch_tokens(), lr=r.lr, min_lr=r.lr / 10,
                          warmup_steps=r.warmup_steps, z_loss=r.z_loss, compile=r.compile,
                          activation_checkpointing=r.activation_checkpointing)
        cfg.validate()
        if r.global_batch_seqs:  # 1, 2, 4 or 8 ranks run the same optimisation
            for ranks in (1, 2, 4, 8):
                assert cfg.resolved_grad_accum(ranks) * r.micro_batch * ranks == r.global_batch_seqs, (name, ranks)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_a_gpu_recipe_fits_the_gpus_it_was_sized_for(name):
    gpus, parallelism = TARGETS[name]
    r, h100 = RECIPES[name], get_gpu("h100")
    accum = r.global_batch_tokens() / (r.micro_batch * r.seq_len * gpus) if r.global_batch_seqs else 1
    m = memory_per_gpu(MODEL_PRESETS[name], gpus=gpus, parallelism=parallelism, micro_batch=r.micro_batch,
                       seq_len=r.seq_len, activation_checkpointing=r.activation_checkpointing,
                       grad_accum=accum, compile=r.compile)
    assert m.total <= USABLE_FRACTION * h100.memory_gib * 2 ** 30, (name, m.total / 2 ** 30)


def test_the_7b_recipe_is_the_seeds():
    r = RECIPES["7b"]
    assert (r.seq_len, r.global_batch_tokens(), r.lr, r.warmup_steps) == (4096, 4 * 2 ** 20, 3e-4, 2000)


def test_the_demo_recipe_is_what_the_demo_always_ran():
    r = RECIPES["demo"]
    assert (r.micro_batch, r.seq_len, r.global_batch_seqs, r.lr, r.warmup_steps, r.eval_every, r.ckpt_every) == (
        16, 128, 0, 3e-3, 30, 100, 100)
    assert not (r.compile or r.activation_checkpointing or r.z_loss)


def test_recipe_for_a_shape():
    assert recipe_for("7b")[0] == "7b"
    assert recipe_for(dataclasses.replace(preset("51m"), vocab_size=32000))[0] == "51m"  # another tokenizer
    tinyllama = ModelConfig(vocab_size=32000, dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, ffn_hidden=5632,
                            max_seq_len=2048)  # a 1.1B Llama base: the nearest preset is the 1B
    assert recipe_for(tinyllama)[0] == "1b"
    assert recipe_for(ModelConfig(vocab_size=300, dim=32, n_layers=2, n_heads=2, n_kv_heads=2,
                                  max_seq_len=32))[0] == "demo"
    with pytest.raises(ConfigError, match="no training recipe"):
        recipe_for("13b")
