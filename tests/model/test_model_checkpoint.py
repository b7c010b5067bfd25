"""The checkpoint layout (version 1): round trip, integrity, latest pointer, pruning."""

import json
import random

import numpy as np
import pytest
import torch

from tenali_model.checkpoint import (CheckpointError, latest_checkpoint, list_checkpoints,
                                     load_model, load_train_state, restore_rng, save_checkpoint)
from tenali_model.config import ModelConfig, preset
from tenali_model.model import Transformer


def small_model(seed=0, **kw) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig(**{**vars(preset("tiny")), "vocab_size": 64, **kw}))


def trained_optimizer(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, 64, (2, 8))
    model(idx, idx)[1].backward()
    opt.step()
    return opt


def test_round_trip(tmp_path):
    model = small_model()
    opt = trained_optimizer(model)
    path = save_checkpoint(tmp_path, step=12, model=model, optimizer=opt, tokens_seen=345,
                           loader_state={"epoch": 1, "position": 2}, loss=1.5, val_loss=1.7)
    assert path == tmp_path / "step_00000012"
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "meta.json", "model.safetensors", "train_state.pt"]
    assert (tmp_path / "latest").read_text().strip() == "step_00000012"
    assert latest_checkpoint(tmp_path) == path

    loaded = load_model(path)
    assert loaded.lm_head.weight is loaded.tok_embeddings.weight  # tie restored, stored once
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(loaded.rope_cos, model.rope_cos)
    idx = torch.randint(0, 64, (1, 10))
    torch.testing.assert_close(loaded(idx)[0], model.eval()(idx)[0], rtol=0, atol=0)

    meta = json.loads((path / "meta.json").read_text())
    assert meta["checkpoint_format_version"] == 1
    assert (meta["step"], meta["tokens_seen"], meta["loss"], meta["val_loss"]) == (12, 345, 1.5, 1.7)
    assert len(meta["model_sha256"]) == 64 and meta["num_params"] == model.num_params()
    config = json.loads((path / "config.json").read_text())
    assert config["checkpoint_format_version"] == 1 and config["vocab_size"] == 64

    state = load_train_state(path)  # weights_only=True inside
    assert (state["step"], state["tokens_seen"], state["loader"]) == (12, 345, {"epoch": 1, "position": 2})
    fresh = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    fresh.load_state_dict(state["optimizer"])
    torch.testing.assert_close(fresh.state_dict()["state"][0]["exp_avg"],
                               opt.state_dict()["state"][0]["exp_avg"])
    torch.load(path / "train_state.pt", weights_only=True)  # the contract, checked directly


def test_untied_model_round_trip(tmp_path):
    model = small_model(tie_embeddings=False)
    path = save_checkpoint(tmp_path, step=1, model=model)
    loaded = load_model(path)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    assert loaded.lm_head.weight is not loaded.tok_embeddings.weight


def test_rng_states_restore(tmp_path):
    model = small_model()
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    path = save_checkpoint(tmp_path, step=1, model=model)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng(load_train_state(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_corrupt_weights_fail_with_sha256_message(tmp_path):
    path = save_checkpoint(tmp_path, step=3, model=small_model())
    weights = path / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_model(path)


def test_truncated_weights_fail_even_unverified(tmp_path):
    path = save_checkpoint(tmp_path, step=3, model=small_model())
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_model(path)
    with pytest.raises(CheckpointError, match="cannot read model.safetensors"):
        load_model(path, verify=False)


def test_other_format_version_is_refused(tmp_path):
    path = save_checkpoint(tmp_path, step=3, model=small_model())
    meta = json.loads((path / "meta.json").read_text())
    meta["checkpoint_format_version"] = 2
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="checkpoint_format_version 2"):
        load_model(path)


def test_keep_last_prunes_and_latest_follows(tmp_path):
    model = small_model()
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step=step, model=model, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000030", "step_00000040"]
    assert latest_checkpoint(tmp_path).name == "step_00000040"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_keep_last_also_keeps_the_best_by_val_loss(tmp_path):
    """keep the last N and the best: the checkpoint with the lowest val_loss survives pruning however
    old, and the `best` pointer file names it (a step without an evaluation has no val_loss)."""
    from tenali_model.checkpoint import best_checkpoint, resolve_checkpoint

    model = small_model()
    assert best_checkpoint(tmp_path) is None
    for step, val in ((10, 3.0), (20, 1.0), (30, 2.0), (40, None), (50, float("nan")), (60, 2.5)):
        save_checkpoint(tmp_path, step=step, model=model, val_loss=val, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000020", "step_00000050", "step_00000060"]
    assert best_checkpoint(tmp_path).name == "step_00000020"
    assert resolve_checkpoint(tmp_path / "best").name == "step_00000020"
    save_checkpoint(tmp_path, step=70, model=model, val_loss=0.5, keep_last=2)  # a new best frees the old
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000060", "step_00000070"]
    assert (tmp_path / "best").read_text().strip() == "step_00000070"


def test_a_checkpoint_is_named_by_its_folder_its_out_dir_or_the_latest_file(tmp_path):
    """Commands that take a checkpoint (export-hf, evaluate, serve) accept the step folder, the
    training out_dir, or the out_dir's `latest` pointer file, which is what a reader of the folder
    reaches for; anything else is refused with what was expected."""
    from tenali_model.checkpoint import resolve_checkpoint

    model = small_model()
    for step in (10, 20):
        save_checkpoint(tmp_path, step=step, model=model)
    want = tmp_path / "step_00000020"
    assert resolve_checkpoint(want) == want
    assert resolve_checkpoint(tmp_path) == want
    assert resolve_checkpoint(tmp_path / "latest") == want
    assert resolve_checkpoint(tmp_path / "step_00000010") == tmp_path / "step_00000010"
    with pytest.raises(CheckpointError, match="neither a checkpoint directory .* nor a training out_dir"):
        resolve_checkpoint(tmp_path / "metrics.jsonl")


def test_resave_same_step_replaces(tmp_path):
    model = small_model()
    save_checkpoint(tmp_path, step=5, model=model, loss=2.0)
    save_checkpoint(tmp_path, step=5, model=model, loss=1.0)
    assert json.loads((tmp_path / "step_00000005" / "meta.json").read_text())["loss"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000005"]


def test_latest_ignores_incomplete_and_falls_back(tmp_path):
    model = small_model()
    save_checkpoint(tmp_path, step=1, model=model)
    save_checkpoint(tmp_path, step=2, model=model)
    (tmp_path / ".tmp-step_00000003-crashed").mkdir()  # a save that died half way
    (tmp_path / "step_00000004").mkdir()  # no meta.json: not a complete checkpoint
    assert latest_checkpoint(tmp_path).name == "step_00000002"
    (tmp_path / "latest").write_text("step_00000099\n")  # dangling pointer
    assert latest_checkpoint(tmp_path).name == "step_00000002"
    assert latest_checkpoint(tmp_path / "nothing") is None
    assert load_model(tmp_path).num_params() == model.num_params()  # an out_dir resolves to latest
    with pytest.raises(CheckpointError, match="neither"):
        load_model(tmp_path / "nothing")


def test_the_next_save_clears_what_a_killed_save_left(tmp_path):
    """A save killed half-way leaves a `.tmp-` folder (removed by the next save: a 7B's holds tens
    of GB) or, while re-saving a step, the old copy moved aside in `.old-` (put back when its
    replacement never arrived)."""
    import shutil
    model = small_model()
    save_checkpoint(tmp_path, step=1, model=model, loss=1.0)
    save_checkpoint(tmp_path, step=2, model=model, loss=2.0)
    (tmp_path / ".tmp-step_00000003-crashed").mkdir()
    (tmp_path / ".tmp-step_00000003-crashed" / "model.safetensors").write_bytes(b"\0" * 1024)
    aside = tmp_path / ".old-step_00000002-killed"  # killed between moving step 2 aside and replacing it
    aside.mkdir()
    shutil.move(tmp_path / "step_00000002", aside / "step_00000002")
    (tmp_path / ".old-step_00000001-done").mkdir()  # its replacement did arrive: only the leftover
    save_checkpoint(tmp_path, step=3, model=model, loss=3.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000001", "step_00000002",
                                                          "step_00000003"]
    assert json.loads((tmp_path / "step_00000002" / "meta.json").read_text())["loss"] == 2.0
    load_model(tmp_path / "step_00000002")  # whole: its checksum verifies


def test_corrupt_optimizer_state_fails_with_sha256_message(tmp_path):
    """torch.load reads a flipped byte inside a tensor of train_state.pt without complaint (its zip
    reader checks no CRC): resuming would continue from a silently corrupted optimizer state."""
    model = small_model()
    path = save_checkpoint(tmp_path, step=3, model=model, optimizer=trained_optimizer(model))
    state_file = path / "train_state.pt"
    raw = bytearray(state_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the optimizer's moment tensors, not the zip structure
    state_file.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="train_state.pt sha256 mismatch"):
        load_train_state(path)
    assert len(json.loads((path / "meta.json").read_text())["train_state_sha256"]) == 64
    from tenali_model.checkpoint import verify_checkpoint
    with pytest.raises(CheckpointError, match="train_state.pt sha256 mismatch"):
        verify_checkpoint(path)
    load_train_state(path, verify=False)  # the damage is invisible without the checksum


def test_pruning_a_checkpoint_someone_still_reads_does_not_fail_the_save(tmp_path, monkeypatch):
    """An upload or evaluation holding a file of an old checkpoint open (on NFS the folder then
    cannot be removed: 'Directory not empty') made the save that pruned it raise, killing the
    training run after its checkpoint was safely written. The pruned checkpoint leaves every listing
    at once, and what could not be removed goes with the next save."""
    import shutil

    import tenali_model.checkpoint as ckpt_module

    real_rmtree = shutil.rmtree

    def busy_rmtree(path, ignore_errors=False, **kw):
        if not ignore_errors:
            raise OSError(39, "Directory not empty", str(path))  # NFS keeps a .nfs* file behind

    model = small_model()
    save_checkpoint(tmp_path, step=10, model=model, keep_last=1)
    monkeypatch.setattr(ckpt_module.shutil, "rmtree", busy_rmtree)
    path = save_checkpoint(tmp_path, step=20, model=model, keep_last=1)
    assert latest_checkpoint(tmp_path) == path
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000020"]
    monkeypatch.setattr(ckpt_module.shutil, "rmtree", real_rmtree)  # the reader is done
    save_checkpoint(tmp_path, step=30, model=model, keep_last=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_00000030"]


def test_best_without_any_val_loss_says_why(tmp_path):
    """`run/best` of a run without validation data is refused with the reason and what to name instead."""
    from tenali_model.checkpoint import resolve_checkpoint

    save_checkpoint(tmp_path, step=10, model=small_model())
    with pytest.raises(CheckpointError, match="no `best` pointer: none of its checkpoints recorded a val_loss"):
        resolve_checkpoint(tmp_path / "best")


def test_a_full_disk_fails_the_save_naming_it_and_keeps_the_checkpoint_before(tmp_path, monkeypatch):
    """torch.save reports a full disk as RuntimeError('... unexpected pos ...'), which says nothing of
    space: the save names the cause and the fixes, leaves no partial folder and `latest` as it was."""
    import collections
    import errno
    import shutil

    from tenali_model import checkpoint

    model = small_model()
    opt = trained_optimizer(model)
    first = save_checkpoint(tmp_path, step=1, model=model, optimizer=opt, keep_last=2)
    usage = collections.namedtuple("usage", "total used free")

    def full_disk(obj, f, *a, **k):
        open(f, "wb").write(b"x" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 159232 vs 159120")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 0))
    with pytest.raises(CheckpointError, match=r"no space left .* step 2: disk full, 0.0 MiB free .*keep_last, now 2"):
        save_checkpoint(tmp_path, step=2, model=model, optimizer=opt, keep_last=2)
    assert list_checkpoints(tmp_path) == [first] and latest_checkpoint(tmp_path) == first
    assert not list(tmp_path.glob(".tmp-*"))

    def over_quota(*a, **k):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 10**9, 10**11))  # space, but no quota
    monkeypatch.setattr(checkpoint, "save_file", over_quota)
    with pytest.raises(CheckpointError, match="disk quota exceeded"):
        save_checkpoint(tmp_path, step=2, model=model, optimizer=opt)

    def other(*a, **k):
        raise RuntimeError("something else")

    monkeypatch.setattr(checkpoint, "save_file", other)  # not about space: as it was
    with pytest.raises(RuntimeError, match="^something else$"):
        save_checkpoint(tmp_path, step=2, model=model, optimizer=opt)


def test_training_fails_fast_when_out_dir_cannot_hold_one_checkpoint(tmp_path, monkeypatch, capsys):
    """Not hours of training and then a failed first save: the trainer checks the space before it starts
    (12 bytes a parameter: float32 weights and AdamW's moments), and warns when it holds one but not two."""
    import collections
    import shutil

    from tenali_model.checkpoint import check_space
    from tenali_model.plan import checkpoint_bytes

    from tenali_model.config import num_params

    cfg = small_model().config
    need = checkpoint_bytes(num_params(cfg))
    assert need == 12 * num_params(cfg) and checkpoint_bytes(1000, trainable=10) == 4080  # LoRA: the weights, mostly
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 0, need - 1))
    with pytest.raises(CheckpointError, match=r"MiB free but one checkpoint of this model takes about .* MiB"):
        check_space(tmp_path, need)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 0, need + 1))
    assert "but not two" in check_space(tmp_path, need)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 0, 2 * need))
    assert check_space(tmp_path, need) == ""
    seven_b = num_params(ModelConfig(**vars(preset("7b"))))
    assert round(checkpoint_bytes(seven_b) / 1e9, 1) == 82.6  # the figure the runbook gives
