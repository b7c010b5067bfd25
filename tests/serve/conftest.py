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
