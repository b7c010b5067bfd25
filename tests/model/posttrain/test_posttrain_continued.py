"""Continued pretraining of a Hugging Face base: a tiny Llama made here with transformers (never a
download) -> import_hf -> shards encoded with its own tokenizer.json -> train with init_from."""

import json

import numpy as np
import pytest
import torch

from tenali_model.checkpoint import load_meta, load_model
from tenali_model.config import ConfigError, TrainConfig
from tenali_model.data import write_shard
from tenali_model.tokenizer import load_tokenizer
from tenali_model.train import train
from tm_helpers import FINANCE_TEXT

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture
def hf_base(tmp_path):
    """A tiny Llama directory with its own BPE tokenizer.json, as a downloaded base would be."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(FINANCE_TEXT * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<|endoftext|>"], show_progress=False))
    base = tmp_path / "base"
    base.mkdir()
    tok.save(str(base / "tokenizer.json"))
    cfg = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(base)
    return base


def test_continued_pretraining_from_an_imported_hugging_face_base(hf_base, tmp_path):
    from tenali_model.hf import import_hf
    imported = import_hf(hf_base, tmp_path / "imported")
    tok = load_tokenizer(hf_base / "tokenizer.json")
    eot = tok.special("<|endoftext|>")
    ids = np.concatenate([tok.encode(t) + [eot] for t in FINANCE_TEXT * 30])
    write_shard(tmp_path / "train.bin", ids, vocab_size=tok.vocab_size)
    cfg = TrainConfig(train_shards=[str(tmp_path / "train.bin")], out_dir=str(tmp_path / "cpt"),
                      init_from=str(tmp_path / "imported"), steps=4, batch_size=4, seq_len=32, lr=1e-4,
                      min_lr=1e-5, warmup_steps=1, log_every=1, device="cpu", num_threads=1)
    cfg.to_json(tmp_path / "cpt.json")
    assert TrainConfig.from_json(tmp_path / "cpt.json") == cfg
    summary = train(cfg)
    assert summary["complete"] and np.isfinite(summary["final_loss"])
    meta = load_meta(summary["checkpoint"])
    assert meta["train_config"]["init_from"] == str(tmp_path / "imported")
    assert "chat_vocab_size" not in meta  # nothing to carry from a plain base
    # it started from the base's weights: 4 small steps stay close to them (a random start would not)
    start, end = load_model(imported).state_dict(), load_model(summary["checkpoint"]).state_dict()
    for k in start:
        assert (end[k] - start[k]).abs().max() < 5e-3, k
    # the first step's loss is the Hugging Face model's own loss on that batch (no re-initialisation)
    from tenali_model.data import TokenLoader
    x, y = TokenLoader(cfg.train_shards, 32, 4, seed=cfg.seed).next_batch()
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_base, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(x).logits
    hf_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item()
    first = json.loads((tmp_path / "cpt" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1 and first["loss"] == pytest.approx(hf_loss, rel=1e-4)


def test_init_from_shape_mismatch_and_missing_checkpoint(tmp_path, hf_base):
    from tenali_model.hf import import_hf
    import_hf(hf_base, tmp_path / "imported")
    cfg = TrainConfig(train_shards=["x.bin"], out_dir="o", init_from=str(tmp_path / "imported"), model="demo")
    with pytest.raises(ConfigError, match="differs from the shape of init_from"):
        cfg.validate()
    with pytest.raises(ConfigError, match="not a checkpoint directory"):
        TrainConfig(train_shards=["x.bin"], out_dir="o", init_from=str(tmp_path / "nowhere")).validate()


def test_continued_pretraining_carries_the_rows_a_chat_stage_fitted(hf_base, tmp_path):
    """A chat model's checkpoint records how many rows its lineage fitted (chat_vocab_size); continued
    pretraining from it carries the record, so a later SFT does not re-initialise the trained chat rows."""
    from tenali_model.hf import import_hf
    imported = import_hf(hf_base, tmp_path / "imported")
    meta_path = next(imported.glob("step_*")) / "meta.json" if not (imported / "meta.json").exists() else imported / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "chat_vocab_size": 123}))  # as if a chat stage had written it
    tok = load_tokenizer(hf_base / "tokenizer.json")
    ids = np.concatenate([tok.encode(t) + [tok.special("<|endoftext|>")] for t in FINANCE_TEXT * 30])
    write_shard(tmp_path / "train.bin", ids, vocab_size=tok.vocab_size)
    cfg = TrainConfig(train_shards=[str(tmp_path / "train.bin")], out_dir=str(tmp_path / "cpt"),
                      init_from=str(tmp_path / "imported"), steps=2, batch_size=4, seq_len=32, lr=1e-4,
                      min_lr=1e-5, warmup_steps=1, log_every=1, device="cpu", num_threads=1)
    summary = train(cfg)
    assert load_meta(summary["checkpoint"])["chat_vocab_size"] == 123
