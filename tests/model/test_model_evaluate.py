"""evaluate_checkpoint and its CLI."""

import json
import math

import pytest
import torch

from tenali_model.checkpoint import save_checkpoint
from tenali_model.config import ModelConfig, preset
from tenali_model.evaluate import evaluate_checkpoint, main
from tenali_model.model import Transformer
from tm_helpers import SEQ, VOCAB


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**vars(preset("tiny")), "vocab_size": VOCAB, "max_seq_len": SEQ}))
    return save_checkpoint(tmp_path / "run", step=7, model=model)


def test_evaluate_checkpoint(ckpt, shards):
    result = evaluate_checkpoint(ckpt, shards["val"], batch_size=4, max_batches=3, bytes_per_token=3.5)
    assert math.isfinite(result["val_loss"]) and abs(result["val_loss"] - math.log(VOCAB)) < 0.5
    assert result["perplexity"] == pytest.approx(math.exp(result["val_loss"]))
    assert result["tokens"] == 3 * 4 * SEQ and result["seq_len"] == SEQ and result["step"] == 7
    assert result["bits_per_byte"] == pytest.approx(result["val_loss"] / math.log(2) / 3.5)
    assert "bits_per_byte" not in evaluate_checkpoint(ckpt, shards["val"], max_batches=1)


def test_evaluate_cli_writes_json(ckpt, shards, tmp_path, capsys):
    out = tmp_path / "eval" / "result.json"
    assert main([str(ckpt.parent), "--val", *shards["val"], "--seq-len", "16",
                 "--max-batches", "2", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written == json.loads(capsys.readouterr().out)
    assert written["checkpoint"] == str(ckpt) and written["tokens"] == 2 * 8 * 16


def test_evaluate_cli_errors(ckpt, tmp_path, capsys):
    assert main([str(ckpt), "--val", str(tmp_path / "missing.bin")]) == 2
    assert "missing.bin" in capsys.readouterr().err
    assert main([str(tmp_path / "nowhere"), "--val", str(ckpt / "meta.json")]) == 2
