"""Fixtures for the serving tests: one tiny model and tokenizer per session, one CPU thread."""

from __future__ import annotations

import pytest
import torch

from ts_helpers import make_checkpoint, train_sentencepiece


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tok_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    train_sentencepiece(path)
    return path


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory, tok_path):
    from tenali_model.tokenizer import load_tokenizer

    # The model's vocabulary is the tokenizer's, as the pipeline trains it.
    vocab = load_tokenizer(tok_path).vocab_size
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "run", vocab_size=vocab)


@pytest.fixture(scope="session")
def served(ckpt, tok_path):
    from tenali_model.serve.loading import load_served

    return load_served(ckpt, tokenizer=tok_path, name="tenali-test")


@pytest.fixture
def make_client(served):
    """A TestClient factory for an app with given options (the engine stops when the client closes)."""
    from fastapi.testclient import TestClient

    from tenali_model.serve.app import ServeOptions, create_app

    clients = []

    def make(**options):
        options.setdefault("api_key", "")
        client = TestClient(create_app(served, ServeOptions(**options)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def lake_setup(tmp_path, tok_path, served):
    """A local lake with the tokenizer, a shards manifest and two pretrained checkpoints (the second
    named by checkpoints/pretrain/LATEST.json), an ephemeral Dagster instance and the lake resource:
    what the release tests materialise model_release against."""
    import hashlib
    import shutil

    import dagster as dg

    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import LakeResource

    root = tmp_path / "lake"
    lake = Lake(str(root))
    tok = tok_path.read_bytes()
    lake.write_bytes("tokenizer/tenali.model", tok)
    vocab = served.tokenizer.vocab_size
    lake.write_json("shards/manifest.json", {"tokenizer": {"sha256": hashlib.sha256(tok).hexdigest(), "vocab_size": vocab},
                                             "corpus": {"val_start": "2012-01-01", "train_documents": 10},
                                             "totals": {"train": 1000, "val": 100}})
    keys = []
    for i in range(2):
        ckpt = make_checkpoint(tmp_path / f"run{i}", seed=i, vocab_size=vocab)
        key = f"checkpoints/pretrain/run{i}/{ckpt.name}"
        shutil.copytree(ckpt, root / key)
        keys.append(key)
    lake.write_json("checkpoints/pretrain/LATEST.json", {"checkpoint_key": keys[1], "checkpoint": lake.uri(keys[1]),
                                                         "tokenizer_sha256": hashlib.sha256(tok).hexdigest()})
    instance = dg.DagsterInstance.ephemeral()
    resources = {"lake": LakeResource(root=str(root), cache_dir=str(tmp_path / "cache"))}
    return lake, keys, instance, resources
