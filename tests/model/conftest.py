"""Fixtures for the tenali_model tests: tiny synthetic shards, one CPU thread."""

from __future__ import annotations

import pytest
import torch

from tenali_model.data import write_shard
from tm_helpers import VOCAB, pattern_tokens


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)  # the test machine is small and shared; also keeps runs exact


@pytest.fixture
def shards(tmp_path) -> dict[str, list[str]]:
    """Two train shards (the stream crosses a shard boundary) and one val shard."""
    toks = pattern_tokens(30_000)
    paths = {"train": [str(tmp_path / "train_000.bin"), str(tmp_path / "train_001.bin")],
             "val": [str(tmp_path / "val_000.bin")]}
    write_shard(paths["train"][0], toks[:12_000], vocab_size=VOCAB)
    write_shard(paths["train"][1], toks[12_000:24_000], vocab_size=VOCAB)
    write_shard(paths["val"][0], toks[24_000:], vocab_size=VOCAB)
    return paths
