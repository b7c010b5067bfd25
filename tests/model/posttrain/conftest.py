"""Fixtures for the post-training tests: a small tokenizer with the chat markers, a tiny parent
checkpoint that uses it, and chat / preference files."""

from __future__ import annotations

import json

import pytest
import torch

from tenali_model.checkpoint import save_checkpoint
from tenali_model.config import ModelConfig
from tenali_model.model import Transformer
from tenali_model.tokenizer import load_tokenizer
from tm_helpers import train_sentencepiece

CHATS = [
    {"messages": [{"role": "system", "content": "You are a careful analyst."},
                  {"role": "user", "content": "What did Apple close at?"},
                  {"role": "assistant", "content": "Apple closed at $189.25."}]},
    {"instruction": "Give the 10-year Treasury yield.", "input": "", "output": "4.50%."},
    {"instruction": "Summarise the filing item.", "input": "Item 7: revenue increased 8%.",
     "output": "Revenue rose 8%."},
    {"messages": [{"role": "user", "content": "CPI?"}, {"role": "assistant", "content": "3.4% year over year."},
                  {"role": "user", "content": "Fed funds?"}, {"role": "assistant", "content": "5.25%-5.50%."}]},
]


@pytest.fixture(scope="session")
def tok_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    train_sentencepiece(path)
    return path.parent


@pytest.fixture(scope="session")
def tok(tok_dir):
    return load_tokenizer(tok_dir)


def tiny_model_config(vocab_size: int, **kw) -> ModelConfig:
    base = dict(vocab_size=vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128)
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture(scope="session")
def parent(tmp_path_factory, tok):
    """A randomly initialised tiny model as a step-0 checkpoint (vocabulary = the tokenizer's)."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(tok.vocab_size))
    out = tmp_path_factory.mktemp("parent")
    return save_checkpoint(out, step=0, model=model)


def write_jsonl(path, records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


@pytest.fixture
def chat_file(tmp_path):
    return write_jsonl(tmp_path / "chats.jsonl", CHATS * 4)
