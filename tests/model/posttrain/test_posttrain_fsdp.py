"""Post-training under FSDP2 (full fine-tuning of models too large for one GPU's memory): two gloo
ranks, sharded, end where one process at the same global batch does, resume from their own
checkpoints, and write checkpoints any mode reads. Also: which stages get FSDP, and the vocabulary
growth rank 0 applies to the weights it broadcasts."""

import json
import subprocess

import pytest
import torch

from conftest import CHATS, tiny_model_config, write_jsonl
from tenali_model.checkpoint import (is_sharded, load_meta, load_model, load_train_state, read_weights,
                                     save_checkpoint)
from tenali_model.config import ConfigError, ModelConfig, preset
from tenali_model.model import Transformer
from tenali_model.posttrain import dpo, sft
from tenali_model.posttrain.config import LoraSettings, SFTConfig
from tenali_model.posttrain.loop import stage_parallelism
from tenali_model.posttrain.vocab import extend_vocab, grown_state
from test_posttrain_distill_dpo import PAIRS, dpo_config
from test_posttrain_sft import sft_config
from tm_helpers import PYTHON, REPO_ROOT, subprocess_env


def torchrun(module: str, cfg, path, *extra: str) -> str:
    cfg.to_json(path)
    proc = subprocess.run([PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", module, "--config", str(path), *extra],
                          cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def assert_same_model(dir_a, dir_b, atol=1e-4):
    a, b = read_weights(dir_a)[0], read_weights(dir_b)[0]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=atol, msg=k)


def val_losses(out_dir) -> list[float]:
    return [r["val_loss"] for r in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines())
            if r.get("kind") == "val"]


def test_full_sft_on_two_fsdp_ranks_matches_one_process_and_resumes(tok_dir, parent, tmp_path):
    """Rows spread over two ranks at batch 2 are the rows one process takes at batch 2 x grad_accum 2;
    stopped at step 3 and rerun, the FSDP run resumes from its own sharded checkpoint (each rank's
    file), and its last checkpoint is gathered into one model.safetensors."""
    f = write_jsonl(tmp_path / "chats.jsonl", CHATS * 4)
    kw = dict(steps=6, ckpt_every=3, log_every=1, eval_every=3, val_files=[f], eval_batches=3, packing=False)
    one = sft.train(sft_config(parent, tok_dir, [f], tmp_path / "one", grad_accum=2, **kw))
    cfg = sft_config(parent, tok_dir, [f], tmp_path / "two", parallelism="fsdp", **kw)
    first = torchrun("tenali_model.posttrain.sft", cfg, tmp_path / "sft.json", "--stop-at-step", "3")
    assert "2 rank(s) on cpu, fsdp" in first
    assert (tmp_path / "two" / "latest").read_text().strip() == "step_00000003"
    # sharded: the moments are in the ranks' files; one process still reads the weights whole
    assert is_sharded(tmp_path / "two" / "step_00000003")
    assert set(load_train_state(tmp_path / "two" / "step_00000003")["optimizer"]) == {"param_groups"}
    assert_same_model(tmp_path / "one" / "step_00000003", tmp_path / "two" / "step_00000003")
    second = torchrun("tenali_model.posttrain.sft", cfg, tmp_path / "sft.json")
    assert "resuming sft from" in second and "at step 3" in second
    assert_same_model(one["checkpoint"], tmp_path / "two" / "step_00000006")
    assert load_meta(tmp_path / "two" / "step_00000006")["stage"] == "sft"
    assert load_meta(tmp_path / "two" / "step_00000003")["stage"] == "sft"
    assert (tmp_path / "two" / "step_00000006" / "model.safetensors").is_file()
    state = load_train_state(tmp_path / "two" / "step_00000006")
    assert all(isinstance(k, str) for k in state["optimizer"]["state"])  # gathered, keyed by name
    # three validation batches (of 16 padded rows) over two ranks: rank 1 runs a forward it does not count
    torch.testing.assert_close(val_losses(tmp_path / "two"), val_losses(tmp_path / "one"), rtol=1e-5, atol=0)
    assert not torch.equal(read_weights(one["checkpoint"])[0]["layers.0.attn.wq.weight"],
                           read_weights(parent)[0]["layers.0.attn.wq.weight"])  # it trained


def test_dpo_on_two_fsdp_ranks_shards_the_reference_and_matches_one_process(tok_dir, parent, tmp_path):
    f = write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 2)
    kw = dict(steps=4, batch_size=1, log_every=1, eval_every=2, val_files=[f])
    one = dpo.train(dpo_config(parent, tok_dir, [f], tmp_path / "one", grad_accum=2, **kw))
    out = torchrun("tenali_model.posttrain.dpo", dpo_config(parent, tok_dir, [f], tmp_path / "two",
                                                            parallelism="fsdp", **kw), tmp_path / "dpo.json")
    assert "fsdp" in out
    assert_same_model(one["checkpoint"], tmp_path / "two" / "step_00000004")
    torch.testing.assert_close(val_losses(tmp_path / "two"), val_losses(tmp_path / "one"), rtol=1e-4, atol=0)
    assert one["val_margin"] > 0


def test_which_stages_shard():
    big = preset("1b")
    full = SFTConfig(init_from="p", out_dir="o", train_files=["f"], tokenizer="t")
    assert stage_parallelism(full, big, 1) == "single"
    assert stage_parallelism(full, big, 8) == "fsdp"  # "auto": a 1B full fine-tune shards
    assert stage_parallelism(full, ModelConfig(), 8) == "ddp"
    lora = SFTConfig(init_from="p", out_dir="o", train_files=["f"], tokenizer="t", lora=LoraSettings())
    assert stage_parallelism(lora, big, 8) == "ddp"  # LoRA's frozen weights fit; only adapters carry state
    with pytest.raises(ConfigError, match="LoRA trains under ddp"):
        SFTConfig(init_from="p", out_dir="o", train_files=["f"], tokenizer="t", lora=LoraSettings(),
                  parallelism="fsdp").validate()
    with pytest.raises(ConfigError, match="checkpoint_format 'sharded' is for full fine-tuning"):
        SFTConfig(init_from="p", out_dir="o", train_files=["f"], tokenizer="t", lora=LoraSettings(),
                  checkpoint_format="sharded").validate()
    with pytest.raises(ConfigError, match="parallelism must be"):
        SFTConfig(init_from="p", out_dir="o", train_files=["f"], tokenizer="t", parallelism="zero3").validate()


@pytest.mark.parametrize("tied", [True, False])
def test_grown_state_is_what_extend_vocab_grows(tied, tmp_path):
    """Under FSDP rank 0 grows the weights it read (a state dict) before broadcasting them; the
    result must be the model one process grows (`extend_vocab`, which builds new tables from the
    same rule: this checks its copying, tying and that nothing else moved; the mean rows themselves
    are checked in test_posttrain_vocab)."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(50, tie_embeddings=tied))
    ckpt = save_checkpoint(tmp_path / "m", step=0, model=model)
    state, _ = read_weights(ckpt)
    grown = grown_state(state, model.config, 53)
    extend_vocab(model, 53)
    expected = model.state_dict()
    assert grown.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(grown[k], expected[k], rtol=0, atol=0, msg=k)
    assert (grown["lm_head.weight"] is grown["tok_embeddings.weight"]) == tied
    assert load_model(ckpt).config.vocab_size == 50  # the checkpoint itself is untouched


def test_activation_checkpointing_changes_no_result(tok_dir, parent, tmp_path):
    from tenali_model.posttrain.loop import build_student

    f = write_jsonl(tmp_path / "chats.jsonl", CHATS * 2)
    for on in (False, True):  # the switch reaches the blocks (else the comparison below proves nothing)
        cfg = sft_config(parent, tok_dir, [f], tmp_path / "x", activation_checkpointing=on)
        assert all(layer.checkpointing == on for layer in build_student(cfg, parent, torch.device("cpu")).layers)
    plain = sft.train(sft_config(parent, tok_dir, [f], tmp_path / "plain", steps=3, ckpt_every=0))
    recomputed = sft.train(sft_config(parent, tok_dir, [f], tmp_path / "ac", steps=3, ckpt_every=0,
                                      activation_checkpointing=True))
    assert_same_model(plain["checkpoint"], recomputed["checkpoint"], atol=1e-6)
