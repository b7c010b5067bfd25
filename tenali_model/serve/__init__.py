"""Serving: an OpenAI-compatible streaming API with batched generation, and a chat page.

    engine.py   one thread owns the model; requests join and leave a batch between decoding steps
    graph.py    the decoding step replayed from a CUDA graph (`--cuda-graph`), compiled (`--compile`)
    text.py     token ids -> text deltas (whole UTF-8 characters, stop strings cut exactly)
    loading.py  what to serve: a release folder, a Hugging Face export, a checkpoint, a lake
    app.py      FastAPI routes (/v1/models, /v1/completions, /v1/chat/completions, /health, /metrics, /)
    page.html   the chat page (no build step)

`tenali serve [PATH]` runs it under uvicorn (`run_server`). Needs the `serve` extra (fastapi,
uvicorn, prometheus-client) and nothing from the pipeline.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
LOG_LEVELS = ["critical", "error", "warning", "info", "debug", "trace"]  # uvicorn's
# Seconds that answers still streaming get to finish after Ctrl-C (or SIGTERM) before they are ended.
SHUTDOWN_GRACE = 10.0


def at_least(low: float, kind=int, strict: bool = False):
    """An argparse type (here and in `tenali plan`): a number >= low (> low when strict), refused at parse time with the flag's name
    (--max-batch 0 served nothing: every request waited for a slot until its time limit; --threads -1
    and a negative --prefill-padding were tracebacks after the model had loaded)."""
    def parse(text: str):
        value = kind(text)
        if value != value or value < low or (strict and value == low):  # value != value: NaN
            raise argparse.ArgumentTypeError(f"must be {'above' if strict else 'at least'} {low:g}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value" messages
    return parse


def port(text: str) -> int:
    """An argparse type: a TCP port, or 0 for one the system picks (--port 70000 served on 4464, the number
    modulo 65536, while the banner named 70000; a negative one failed only after the model had loaded)."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 1 to 65535 (or 0: any free one), got {text}")
    return value


port.__name__ = "int"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", default=None,
                   help="a release folder, a Hugging Face export, a checkpoint (or training out_dir), or a lake "
                        "root; default: the latest release in the lake (--lake)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.model / tokenizer.json (default: the one in PATH)")
    p.add_argument("--lake", default=os.environ.get("TENALI_LAKE_ROOT") or None,
                   help="lake root whose releases/LATEST.json is served when PATH is omitted")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0: every interface, then set "
                        "TENALI_API_KEY in the environment so that /v1/* asks for the key)")
    p.add_argument("--port", type=port, default=DEFAULT_PORT,
                   help=f"TCP port (default {DEFAULT_PORT}); 0: a free one the system picks, named in the "
                        "'Serving ... on http://HOST:PORT' line")
    p.add_argument("--name", default=None, help="the model id clients send (default: the release or folder name)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="auto: bfloat16 on a GPU that supports it, else float32")
    p.add_argument("--threads", type=at_least(0), default=0, help="CPU threads for torch (0: torch's default)")
    p.add_argument("--max-batch", type=at_least(1), default=16, help="sequences decoded together (KV cache slots)")
    p.add_argument("--max-queue", type=at_least(0), default=64, help="requests that may wait for a slot before 429")
    p.add_argument("--request-timeout", type=at_least(0, float, strict=True), default=300.0, help="seconds a request may take in all")
    p.add_argument("--stream-interval-ms", type=float, default=20.0,
                   help="stream tokens in chunks at most this often (the first at once; 0: every token as soon as "
                        "possible). Fewer chunks leave the decoding thread more time: see docs/benchmarks.md")
    p.add_argument("--prefill-padding", type=at_least(0, float), default=0.25,
                   help="requests arriving together share a prefill, right-padded, while the padding stays within "
                        "this share of their tokens (0: only prompts of one length share one); bench/bench_prefill.py")
    p.add_argument("--cuda-graph", action="store_true",
                   help="decode every slot in one step replayed from a CUDA graph (CUDA devices only): a small model's "
                        "step is then one launch instead of hundreds; see docs/serving.md")
    p.add_argument("--compile", action="store_true",
                   help="with --cuda-graph: pass the step through torch.compile before capturing it (fewer, fused "
                        "kernels in the graph; compiled when the server starts, before /ready answers 200)")
    p.add_argument("--cors-origin", action="append", default=None,
                   help="allow browser calls from this origin (repeatable; also TENALI_CORS_ORIGINS, comma-separated)")
    # a level uvicorn lacks failed only after the model had loaded ("Unable to configure logger")
    p.add_argument("--log-level", default="info", type=str.lower, choices=LOG_LEVELS)


def resolve_device_dtype(device: str, dtype: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # A device this machine lacks is an error to explain, not torch's AssertionError traceback
    # ("Torch not compiled with CUDA enabled") from deep inside loading the model.
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device}: not a device (give cpu, cuda, cuda:N or auto)") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA device(s)"
                             + ("" if count else " (or this torch was built without CUDA)") + "; give --device cpu")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
    return device, getattr(torch, dtype)


def log_config(level: str) -> dict:
    """uvicorn's logging config with the server's own logger ("tenali": the model served, its decoding
    step ready or failed) on uvicorn's console handler; without it Python prints only warnings."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["tenali"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def listen(host: str, port: int):
    """The server's socket, bound before the model loads: a port in use, or a host this machine does not
    have, is a message at once (it was uvicorn's error after the model had loaded, under a banner that
    said the model was being served)."""
    import errno
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart need not wait out TIME_WAIT
    try:
        sock.bind((host, port))  # not listening yet: a client is refused while the model loads, not kept waiting
        return sock
    except OSError as e:  # an unknown host name too
        sock.close()
        if e.errno == errno.EADDRINUSE:
            why = f"port {port} is in use (another server?): stop it or give another --port"
        elif e.errno == errno.EACCES:
            why = f"no permission to use port {port} (ports below 1024 need root): give --port 1024 or above"
        else:
            reason = (e.strerror or str(e)).split(" (while attempting")[0]
            why = f"{reason}: give --host 127.0.0.1, 0.0.0.0 or an address of this machine"
        raise ValueError(f"cannot listen on {host}:{port}: {why}") from None


def warn_if_open(host: str) -> None:
    """A warning for a server that other machines can reach with no API key set (it said nothing)."""
    from .app import API_KEY_ENV

    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        local = False
    if not local and not os.environ.get(API_KEY_ENV):
        print(f"tenali serve: warning: --host {host} lets other machines reach this server, and no API key is "
              f"set: anyone who can reach it can use the model. Set {API_KEY_ENV} to require one.",
              file=sys.stderr, flush=True)


def server_class():
    """uvicorn's Server, whose shutdown gives answers in progress SHUTDOWN_GRACE seconds (a second
    Ctrl-C: none) and then ends them through the engine: each stream gets its error chunk and
    "data: [DONE]", and the process exits cleanly. uvicorn alone waited for every stream to end (up to
    --request-timeout), and its forced quit (a second Ctrl-C) printed CancelledError tracebacks."""
    import asyncio
    import logging
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        def __init__(self, config, engine):
            super().__init__(config)
            self.engine, self.hurry = engine, False

        def handle_exit(self, sig, frame):
            if self.should_exit and sig == signal.SIGINT and not self.hurry:
                self.hurry = True  # the second Ctrl-C ends the answers now; a third forces the exit
                return
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets=None):
            async def end_answers():
                deadline = asyncio.get_running_loop().time() + SHUTDOWN_GRACE
                while not self.hurry and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.1)
                if self.engine.active or self.engine.queue_depth:
                    logging.getLogger("tenali.serve").info("ending the answers still in progress")
                # on this thread: the lifespan's own engine.stop() comes after it, never beside it
                self.engine.stop()

            ender = asyncio.create_task(end_answers())
            try:
                await super().shutdown(sockets)
            finally:
                ender.cancel()

    return Server


def run_server(args: argparse.Namespace) -> int:
    """Load the model and serve until interrupted (the body of `tenali serve`)."""
    import torch
    import uvicorn

    from .app import ServeOptions, create_app
    from .loading import LoadError, latest_release_dir, load_served

    path = args.path
    if path is None:
        if not args.lake:
            print("tenali serve: error: give PATH (a release, checkpoint or lake) or --lake / TENALI_LAKE_ROOT",
                  file=sys.stderr)
            return 2
        try:
            path = str(latest_release_dir(args.lake))
        except LoadError as e:
            print(f"tenali serve: error: {e}", file=sys.stderr)
            return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device, dtype = resolve_device_dtype(args.device, args.dtype)
    except ValueError as e:
        print(f"tenali serve: error: {e}", file=sys.stderr)
        return 2
    if args.cuda_graph and not device.startswith("cuda"):
        print(f"tenali serve: error: --cuda-graph needs a CUDA device, and this server runs on {device} "
              "(give --device cuda, or drop --cuda-graph)", file=sys.stderr)
        return 2
    if args.compile and not args.cuda_graph:
        print("tenali serve: error: --compile compiles the CUDA-graph decoding step: give --cuda-graph too",
              file=sys.stderr)
        return 2
    try:
        sock = listen(args.host, args.port)
    except ValueError as e:
        print(f"tenali serve: error: {e}", file=sys.stderr)
        return 2
    with sock:
        warn_if_open(args.host)
        try:
            served = load_served(path, tokenizer=args.tokenizer, device=device, dtype=dtype, name=args.name)
        except (LoadError, OSError, ValueError) as e:
            print(f"tenali serve: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C while the weights load: a traceback from deep in torch before
            print("tenali serve: interrupted while loading the model", file=sys.stderr)
            return 130
        origins = args.cors_origin or [o.strip() for o in os.environ.get("TENALI_CORS_ORIGINS", "").split(",")
                                       if o.strip()]
        options = ServeOptions(max_batch=args.max_batch, max_queue=args.max_queue,
                               request_timeout=args.request_timeout, cors_origins=origins,
                               stream_interval=args.stream_interval_ms / 1000, prefill_padding=args.prefill_padding,
                               cuda_graph=args.cuda_graph, compile_step=args.compile)
        try:
            app = create_app(served, options)
        except ValueError as e:  # e.g. the KV cache of --max-batch sequences does not fit
            print(f"tenali serve: error: {e}", file=sys.stderr)
            return 2
        bound = sock.getsockname()[1]  # --port 0: the one the system picked (scripts and tests read it here)
        host = f"[{args.host}]" if ":" in args.host else args.host  # an IPv6 address, as a URL writes it
        print(f"Serving {served.name} ({served.source}) on http://{host}:{bound}  "
              f"[{device}, {str(dtype).removeprefix('torch.')}]; chat page at /, API docs at /docs", flush=True)
        config = uvicorn.Config(app, host=args.host, port=bound, log_level=args.log_level,
                                log_config=log_config(args.log_level))
        try:
            server_class()(config, app.state.engine).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled; uvicorn.run drops it too
            pass
    return 0
