"""Helpers for the serving tests (a unique module name): a tiny model, a tiny tokenizer, a live server."""

from __future__ import annotations

import contextlib
import re
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

__all__ = ["FINANCE_TEXT", "train_sentencepiece", "make_checkpoint", "LiveServer", "chat_page", "free_port", "CONTEXT",
           "StepGate", "never_sample", "no_text_yet", "wait_until", "served_port"]


def make_checkpoint(out_dir: Path, seed: int = 0, **overrides) -> Path:
    """A randomly initialised tiny model saved as a Tenali checkpoint (no training: serving only needs weights)."""
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(**{**TINY, **overrides}))
    return save_checkpoint(out_dir, step=1, model=model, val_loss=5.0)


def free_port() -> int:
    """A port free now, for a test that never binds it: one bound later could be taken meanwhile (give
    `tenali serve --port 0` and read the port with served_port instead)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_port(proc, stdout: Path, seconds: float = 180.0) -> int:
    """The port a `tenali serve --port 0` process bound, from its "Serving ... on http://HOST:PORT" line
    (its stdout redirected to the file `stdout`); fails with its stderr if it exits first."""
    found = []

    def banner():
        found[:] = re.findall(r"^Serving .* on http://\S+:(\d+) ", stdout.read_text(), re.MULTILINE)
        return found or proc.poll() is not None

    wait_until(banner, "tenali serve printed where it serves", seconds)
    assert found, f"tenali serve exited ({proc.returncode}) before serving: {proc.communicate()[1]}"
    return int(found[0])


class LiveServer:
    """uvicorn on 127.0.0.1 in a thread of the test process (so tests can see the engine). The socket is
    bound here and handed to uvicorn: a port picked free and bound later could be taken meanwhile."""

    def __init__(self, app, port: int = 0):
        import uvicorn

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart on the same port
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                   timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def wait_until(condition, what: str, seconds: float = 60.0) -> None:
    """Poll `condition` until it is true; fail naming `what` after `seconds` (a deadline for a machine
    far slower than this one, never a wait that a test relies on)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:g} s")
        time.sleep(0.01)


class StepGate:
    """Holds the engine's decoding steps (`Engine._step`) while closed: an answer that a test stops,
    cancels, cuts or queues behind stays under way for as long as the test needs, however slow or
    loaded the machine (a sleep in each step only made that likely, and a loaded CI machine let such
    answers finish first). Prefill is not held: each request admitted gets its first token.

    A held step goes on once the gate is open, for each of the steps `allow(n)` lets through, while
    `pass_while(engine)` is true (e.g. `no_text_yet`), and, with react=True, whenever the engine has
    something else to do: a stop asked, a request cancelled, a time limit passed (the step then runs
    and the engine's loop handles it)."""

    HOLD_AT_MOST = 120.0  # a test that fails with the gate closed does not hang its teardown for ever

    def __init__(self, monkeypatch, react: bool = True, pass_while=None):
        from tenali_model.serve import engine as eng

        self.react, self.pass_while = react, pass_while
        self._open, self._budget, self._lock = threading.Event(), 0, threading.Lock()
        real, gate = eng.Engine._step, self

        def step(engine):
            gate._wait(engine)
            return real(engine)

        monkeypatch.setattr(eng.Engine, "_step", step)

    def open(self) -> None:
        self._open.set()

    def allow(self, steps: int) -> None:
        with self._lock:
            self._budget += steps

    def _wait(self, engine) -> None:
        give_up = time.monotonic() + self.HOLD_AT_MOST
        while not self._open.is_set() and time.monotonic() < give_up:
            with self._lock:
                if self._budget > 0:
                    self._budget -= 1
                    return
            if (self.react and _engine_has_work(engine)) or (self.pass_while is not None and self.pass_while(engine)):
                return
            self._open.wait(0.005)


def _engine_has_work(engine) -> bool:
    from tenali_model.serve import engine as eng

    now = eng.time.monotonic()  # the engine's clock (a test may stand in its own)
    with engine._cv:
        return (engine._stop or any(r._cancelled or now > r.deadline for r in engine._active)
                or any(now > r.deadline for r in engine._pending))


def no_text_yet(tokenizer):
    """For StepGate(pass_while=...): steps go on while an answer has no letter or digit yet. Its first
    token may show nothing (a byte of a character, a piece the server does not show), and a test that
    waits for the answer's text (or for its first streamed chunk) would wait on a held step for ever."""
    from tenali_model.tokenizer import SPECIAL_TOKENS

    hidden = {tokenizer.token_id(t) for t in SPECIAL_TOKENS}

    def waiting(engine) -> bool:
        with engine._cv:
            answers = [list(r.generated) for r in engine._active]
        return any(not any(ch.isalnum() for ch in tokenizer.decode([t for t in ids if t not in hidden]))
                   for ids in answers)

    return waiting


def never_sample(monkeypatch, token_id: int) -> None:
    """The engine never samples `token_id`, at the first token too (a hook on the decoding step alone
    missed the one prefill samples): the untrained model's end of text (about 1 token in 600, 1 first
    token in 300) ended answers that a test needed still under way."""
    from tenali_model.serve.engine import Engine

    real = Engine._limit

    def limit(self, logits):
        logits = real(self, logits)
        logits[:, token_id] = float("-inf")
        return logits

    monkeypatch.setattr(Engine, "_limit", limit)


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
