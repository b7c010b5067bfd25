"""Helpers for the serving tests (a unique module name): a tiny model, a tiny tokenizer, a live server."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))
from tm_helpers import FINANCE_TEXT, train_sentencepiece  # noqa: E402

from tenali_model.checkpoint import save_checkpoint  # noqa: E402
from tenali_model.config import ModelConfig  # noqa: E402
from tenali_model.model import Transformer  # noqa: E402

CONTEXT = 128
TINY = dict(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=CONTEXT)

__all__ = ["FINANCE_TEXT", "train_sentencepiece", "make_checkpoint", "LiveServer", "chat_page", "free_port", "CONTEXT"]


def make_checkpoint(out_dir: Path, seed: int = 0, **overrides) -> Path:
    """A randomly initialised tiny model saved as a Tenali checkpoint (no training: serving only needs weights)."""
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(**{**TINY, **overrides}))
    return save_checkpoint(out_dir, step=1, model=model, val_loss=5.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn on 127.0.0.1 in a thread of the test process (so tests can see the engine)."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                   timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@contextlib.contextmanager
def chat_page(served, browser, viewport: dict | None = None, before_load=None, **options):
    """(page, app, server): the chat page of a live app with these ServeOptions, loaded in `browser`
    (`before_load(page)` runs first, e.g. to listen to its requests)."""
    from tenali_model.serve.app import ServeOptions, create_app

    options.setdefault("api_key", "")
    app = create_app(served, ServeOptions(max_batch=2, **options))
    with LiveServer(app) as server:
        page = browser.new_page(**({"viewport": viewport} if viewport else {}))
        if before_load is not None:
            before_load(page)
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('model-name').textContent === 'tenali-test'")
        try:
            yield page, app, server
        finally:
            page.close()


# --- releases: what the release tests record and materialise ---------------------------------------

def record_evaluation(instance, lake, key, bpb, asset="pretrain_evaluation", **meta):
    """An evaluation of the checkpoint at lake `key` with bits per byte `bpb` (more metadata in `meta`,
    e.g. val_set_sha256 or tokenizer_sha256), as the evaluation assets record it."""
    import dagster as dg

    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=asset,
        metadata={"bits_per_byte": bpb, "val_loss": bpb * 1.1, "perplexity": 9.0, "val_loss/market": bpb,
                  "checkpoint": dg.MetadataValue.path(lake.uri(key)), **meta}))


def materialise_release(instance, resources, **config):
    """model_release and its blocking check with `config`: (result, the check's evaluation or None)."""
    import dagster as dg

    from tenali_pipeline.defs.release.assets import model_release, not_worse_than_current

    result = dg.materialize([model_release, not_worse_than_current], instance=instance, resources=resources,
                            run_config={"ops": {"model_release": {"config": config}}} if config else None,
                            raise_on_error=False)
    checks = result.get_asset_check_evaluations()
    return result, checks[0] if checks else None
