"""Configs: preset shapes, the analytic parameter count, and the training-config contract."""

import json

import pytest
import torch

from tenali_model.config import (MODEL_PRESETS, ConfigError, ModelConfig, TrainConfig, num_params,
                                 preset, resolve_parallelism)
from tenali_model.model import Transformer


@pytest.mark.parametrize("name", ["tiny", "demo"])
def test_num_params_matches_built_model(name):
    cfg = preset(name)
    assert Transformer(cfg).num_params() == num_params(cfg)


@pytest.mark.parametrize("name", ["51m", "125m", "350m", "1b", "7b"])
def test_num_params_large_presets_on_meta(name):
    cfg = preset(name)
    with torch.device("meta"):  # shapes only, no memory
        model = Transformer(cfg)
    assert model.num_params() == num_params(cfg)


def test_preset_shapes():
    assert 50e6 < num_params(MODEL_PRESETS["51m"]) < 52e6
    seven = MODEL_PRESETS["7b"]
    assert (seven.n_layers, seven.dim, seven.n_heads, seven.max_seq_len, seven.vocab_size) == (
        32, 4096, 32, 4096, 50000)
    assert 6.5e9 < num_params(seven) < 7.5e9
    tiny = MODEL_PRESETS["tiny"]
    assert (tiny.dim, tiny.n_layers, tiny.n_heads, tiny.n_kv_heads) == (64, 2, 4, 2)


@pytest.mark.parametrize("name, low, high, kv_heads", [
    ("125m", 115e6, 135e6, 12), ("350m", 320e6, 380e6, 8), ("1b", 1.0e9, 1.2e9, 8)])
def test_llama_ladder_presets(name, low, high, kv_heads):
    cfg = MODEL_PRESETS[name]
    assert low < num_params(cfg) < high
    assert (cfg.max_seq_len, cfg.vocab_size, cfg.activation, cfg.n_kv_heads) == (2048, 50000, "swiglu", kv_heads)
    assert cfg.ffn_hidden % 256 == 0 and cfg.head_dim in (64, 128)


def test_parallelism_auto_shards_from_one_billion():
    assert resolve_parallelism("auto", num_params(MODEL_PRESETS["1b"]), 8) == "fsdp"
    assert resolve_parallelism("auto", num_params(MODEL_PRESETS["350m"]), 8) == "ddp"
    assert resolve_parallelism("fsdp", 1000, 2) == "fsdp"
    assert resolve_parallelism("fsdp", 10**10, 1) == "single"  # one process: nothing to shard


def test_global_batch_tokens_derives_grad_accum():
    cfg = TrainConfig(train_shards=["a"], out_dir="o", batch_size=4, seq_len=32, global_batch_tokens=1024)
    assert cfg.resolved_grad_accum(1) == 8 and cfg.resolved_grad_accum(2) == 4
    assert cfg.resolved_grad_accum(8) == 1
    with pytest.raises(ConfigError, match="multiple of batch_size"):
        cfg.resolved_grad_accum(3)  # 1024 / (4 * 32 * 3) is not whole
    with pytest.raises(ConfigError, match="multiple of batch_size"):
        cfg.resolved_grad_accum(16)  # less than one micro-batch per rank
    with pytest.raises(ConfigError, match="contradicts"):
        TrainConfig(train_shards=["a"], out_dir="o", batch_size=4, seq_len=32, global_batch_tokens=1024,
                    grad_accum=3).resolved_grad_accum(1)
    plain = TrainConfig(train_shards=["a"], out_dir="o", grad_accum=3)
    assert plain.resolved_grad_accum(4) == 3  # 0 = batch_size * seq_len * world * grad_accum


def test_ffn_hidden_derivation_and_gelu_count():
    assert ModelConfig(dim=64).ffn_hidden == 192  # 8/3*64 = 170.7 -> 192
    assert ModelConfig(dim=128).ffn_hidden == 352  # 341.3 -> 352
    gelu = ModelConfig(dim=64, activation="gelu")
    assert gelu.ffn_hidden == 256
    assert Transformer(gelu).num_params() == num_params(gelu)
    untied = ModelConfig(dim=64, tie_embeddings=False)
    assert Transformer(untied).num_params() == num_params(untied)


def test_model_config_validation():
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(dim=66, n_heads=4)
    with pytest.raises(ConfigError, match="n_kv_heads"):
        ModelConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ConfigError, match="activation"):
        ModelConfig(activation="relu")


def test_train_config_json_round_trip(tmp_path):
    cfg = TrainConfig(train_shards=["a.bin"], val_shards=["v.bin"], out_dir="out",
                      model={"preset": "demo", "n_layers": 2}, vocab_size=1000, steps=10)
    path = tmp_path / "train.json"
    cfg.to_json(path)
    assert [p.name for p in tmp_path.iterdir()] == ["train.json"]  # no temp file left behind
    back = TrainConfig.from_json(path)
    assert back == cfg
    m = back.model_config()
    assert (m.vocab_size, m.n_layers, m.dim) == (1000, 2, 128)
    assert json.loads(path.read_text())["format_version"] == 1


def test_train_config_preset_name_and_vocab_override():
    cfg = TrainConfig.from_dict({"train_shards": ["a"], "out_dir": "o", "model": "tiny", "vocab_size": 99})
    assert cfg.model == "tiny"
    assert cfg.model_config().vocab_size == 99
    assert cfg.resolved_seq_len() == 128


@pytest.mark.parametrize("d, message", [
    ({"out_dir": "o"}, r"missing required field\(s\) \['train_shards'\]"),
    ({"train_shards": ["a"], "out_dir": "o", "stepz": 1}, r"unknown field\(s\) \['stepz'\]"),
    ({"train_shards": ["a"], "out_dir": "o", "format_version": 2}, "format_version 2"),
    ({"train_shards": ["a"], "out_dir": "o", "steps": "10"}, "steps must be int"),
    ({"train_shards": ["a"], "out_dir": "o", "model": "huge"}, "unknown model preset"),
    ({"train_shards": ["a"], "out_dir": "o", "model": {"dimm": 4}}, r"model: unknown field\(s\) \['dimm'\]"),
    ({"train_shards": "a.bin", "out_dir": "o"}, "list of strings"),
    ({"train_shards": ["a"], "out_dir": "o", "activation_checkpointing": 1}, "activation_checkpointing must be bool"),
])
def test_train_config_errors(d, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(d)


def test_train_config_validate():
    good = dict(train_shards=["a"], out_dir="o")
    TrainConfig(**good).validate()
    for bad, message in [({"steps": 0}, "steps"), ({"seq_len": 4096}, "max_seq_len"),
                         ({"device": "tpu"}, "device"), ({"min_lr": 1.0}, "min_lr"),
                         ({"train_shards": []}, "train_shards"), ({"parallelism": "zero3"}, "parallelism"),
                         ({"global_batch_tokens": -1}, "global_batch_tokens")]:
        with pytest.raises(ConfigError, match=message):
            TrainConfig(**{**good, **bad}).validate()


def test_from_json_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        TrainConfig.from_json(path)


@pytest.mark.parametrize("bad, message", [
    ({"min_lr": float("nan")}, "min_lr must be a finite number"),
    ({"weight_decay": float("nan")}, "weight_decay"), ({"weight_decay": float("inf")}, "weight_decay"),
    ({"grad_clip": float("nan")}, "grad_clip"), ({"z_loss": float("nan")}, "z_loss"),
    ({"lr": float("inf")}, "lr must be a finite number"),
    ({"seed": -1}, r"seed must be in \[0, 2\*\*32\)"), ({"seed": 2 ** 32}, "seed"),
    ({"model": {"preset": "tiny", "rope_theta": 0.0}}, "model.rope_theta must be a finite number > 0"),
    ({"model": {"preset": "tiny", "norm_eps": float("nan")}}, "model.norm_eps"),
])
def test_non_finite_and_out_of_range_values_are_refused(bad, message):
    # JSON carries NaN and Infinity (json.dumps writes them): NaN passed the `< 0` checks and trained a NaN
    # model; a seed outside [0, 2**32) crashed np.random.seed in the trainer with a traceback.
    d = json.loads(json.dumps({"train_shards": ["a"], "out_dir": "o", **bad}))
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(d).validate()
