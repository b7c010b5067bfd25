"""Batched generation for many concurrent requests: one thread owns the model, requests come and go.

Each request gets a row ("slot") of a `SlotKVCache`. The loop admits waiting requests between
decoding steps (prefilling those with prompts of one length together, each into its slot, and
sampling their first tokens), then advances every live request by one token in a single batched
forward (`decode_slots`), and frees the slot of any request that finished, was cancelled or ran out
of time. Sampling is per request with `generate.sample_next` / `apply_penalties` and the request's
own `torch.Generator`, so a seeded request samples the same tokens whatever else is in the batch,
and at temperature 0 the tokens equal single-sequence `generate()`'s.

Waiting requests sit in a bounded queue: `submit` raises `QueueFull` when it is full (the server
answers 429 with Retry-After). Results are delivered as events, to a deque read on an asyncio loop
(the server; `Request.next_events`) or to a thread-safe queue (in-process callers; `events`, `wait`);
this module imports neither FastAPI nor asyncio at the top, so the engine is usable without the server.
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch

from ..checkpoint import unwrap
from ..generate import GREEDY_BELOW, apply_penalties, sample_next
from ..memory import device_memory
from ..model import SlotKVCache, Transformer, decode_slots
from .graph import StaticDecoder

log = logging.getLogger("tenali.serve")

# Why a request ended. "time_limit": its time ran out; "cancelled": the client went away or stopped it.
FINISH_REASONS = ("stop", "length", "time_limit", "cancelled", "error")


class QueueFull(RuntimeError):
    """Every slot is busy and the waiting queue is full; try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class EngineStopped(RuntimeError):
    """The engine's thread is not running (not started, stopped, or stopping): nothing would answer."""


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()

    @property
    def penalised(self) -> bool:
        return bool(self.frequency_penalty or self.presence_penalty)

    @property
    def greedy_plain(self) -> bool:
        return self.temperature < GREEDY_BELOW and not self.penalised


@dataclass
class Event:
    kind: str  # "token" | "done"
    token: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    time: float = 0.0  # time.perf_counter() when the engine produced it (for benchmarks)


@dataclass(eq=False)
class Request:
    """One generation. Read its events with `events()` (threads) or `aevents()` (asyncio)."""

    id: int
    prompt: list[int]
    params: SamplingParams
    created: float
    deadline: float
    loop: Any = None  # an asyncio loop: events go to an asyncio.Queue on it
    generated: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    first_token_at: float | None = None
    _engine: Any = None
    _cancelled: bool = False
    _slot: int | None = None
    _last_token_at: float | None = None
    _generator: torch.Generator | None = None
    _counts: torch.Tensor | None = None

    def __post_init__(self):
        if self.loop is None:
            self._queue = queue.Queue()
            self._ended_flag = threading.Event()  # for wait(): no wake-up per token
        else:
            # Events for an asyncio consumer: appended by the engine thread, read on the loop. The
            # loop is woken (call_soon_threadsafe) only while the consumer waits, and while it holds
            # a chunk back (`next_events(hold_until=...)`) only by the end: streaming a token must
            # not cost a loop wake-up, which takes the GIL from the decoding thread.
            self._items: deque[Event] = deque()
            self._waiter = None
            self._wake_on_token = True
            self._waiter_lock = threading.Lock()

    # --- engine side ---------------------------------------------------------------------------
    def _push(self, event: Event) -> None:
        event.time = time.perf_counter()
        if self.loop is None:
            self._queue.put(event)
            if event.kind == "done":
                self._ended_flag.set()
            return
        self._items.append(event)
        if self._waiter is None:  # the consumer is busy; it reads the deque before it waits
            return
        with self._waiter_lock:
            waiter = self._waiter
            if waiter is None or not (self._wake_on_token or event.kind == "done"):
                return
            self._waiter = None
        try:
            self.loop.call_soon_threadsafe(_wake, waiter)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self._cancelled = True

    # --- client side ---------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop generating and free the slot (a no-op once finished)."""
        self._cancelled = True
        if self._engine is not None:
            self._engine._cancel(self)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Events until "done" (blocking; for in-process callers without an event loop)."""
        while True:
            ev = self._queue.get(timeout=timeout)
            yield ev
            if ev.kind == "done":
                return

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request has ended (threads; its events stay readable). False on timeout.
        A caller that needs no token before the end is not woken by each one, which would take the
        GIL from the decoding thread."""
        if self.loop is not None:
            raise RuntimeError("wait() is for requests submitted without an event loop; use next_events()")
        return self._ended_flag.wait(timeout)

    async def aevents(self):
        while True:
            for ev in await self.next_events():
                yield ev
                if ev.kind == "done":
                    return

    async def next_events(self, hold_until: float | None = None) -> list[Event]:
        """(asyncio) Wait for at least one event, then return every event delivered so far.

        hold_until (the loop's clock): after the first event, keep collecting until then, or until
        the request ends. The server sends what it gets as one chunk, so the HTTP cost is per
        chunk, not per token, and a slow client or event loop never makes the model wait.
        """
        await self._until(lambda: self._items, on_token=True)
        if hold_until is not None and not self._ended():
            await self._until(self._ended, on_token=False, deadline=hold_until)
        out = list(self._items)
        for _ in out:
            self._items.popleft()
        return out

    def _ended(self) -> bool:
        return bool(self._items) and self._items[-1].kind == "done"

    async def _until(self, ready, on_token: bool, deadline: float | None = None) -> None:
        loop = self.loop
        while not ready():
            if deadline is not None and deadline <= loop.time():
                return
            fut = loop.create_future()
            with self._waiter_lock:
                self._wake_on_token, self._waiter = on_token, fut
            timer = None if deadline is None else loop.call_at(deadline, _wake, fut)
            try:
                if not ready():  # else it was delivered between the check above and the waiter
                    await fut
            finally:
                if timer is not None:
                    timer.cancel()
                with self._waiter_lock:
                    if self._waiter is fut:
                        self._waiter = None

    def ready_events(self) -> list[Event]:
        """Events already delivered and not yet read (non-blocking)."""
        out = []
        if self.loop is not None:
            while self._items:
                out.append(self._items.popleft())
            return out
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out


MAX_PREFILL_PADDING = 0.25  # a batched prefill may compute this share of padding beyond the prompts' tokens


def _prefill_groups(reqs: list[Request], max_padding: float = MAX_PREFILL_PADDING) -> list[list[Request]]:
    """Requests admitted together, grouped for batched prefills: shortest prompt first, a group takes
    the next request while its right-padded size (longest x rows) stays within 1 + max_padding of its
    prompts' tokens. One forward for several prompts saves the per-forward cost (most of a small
    model's, kernel launches on a GPU) at the price of computing the pad positions, which are
    written to the cache after the prompt and overwritten by decoding before any row can see them.
    On the CPU, 16 prompts of 16..120 tokens at once (bench/bench_prefill.py, three runs): the last
    first token 1.09-1.26x and the last request's end 1.01-1.16x sooner than one prefill per length,
    the median first token 0.84-1.06x (a short prompt waits for its group)."""
    groups: list[list[Request]] = []
    for req in sorted(reqs, key=lambda r: len(r.prompt)):  # shortest first: their first tokens come soonest
        if groups:
            group = groups[-1]
            real = sum(len(r.prompt) for r in group) + len(req.prompt)
            if len(req.prompt) * (len(group) + 1) <= (1 + max_padding) * real:
                group.append(req)
                continue
        groups.append([req])
    return groups


def _wake(fut) -> None:
    if not fut.done():
        fut.set_result(None)


def check_cache_room(cfg, max_batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> None:
    """ValueError, naming the --max-batch that fits, when the KV cache (allocated whole, a slot per sequence)
    cannot fit beside the loaded weights: on a CPU the zeroed pages would otherwise get the server killed by
    the kernel's OOM killer without a word; on a GPU torch's error names no option."""
    per_slot = 2 * math.prod(SlotKVCache.shape(cfg, 1, max_len)) * dtype.itemsize  # keys and values
    room = device_memory(device, available=True)
    if room is None or per_slot * max_batch <= room[0]:
        return
    fits = int(room[0] // per_slot)
    fix = (f"lower --max-batch to {fits} or less" if fits else
           "not even one sequence fits: serve on a device with more memory, or in a smaller --dtype")
    raise ValueError(f"the KV cache for --max-batch {max_batch} sequences of {max_len} tokens takes "
                     f"{per_slot * max_batch / 2**30:.2f} GiB ({per_slot / 2**20:.0f} MiB a sequence), but {room[1]} "
                     f"has {room[0] / 2**30:.2f} GiB free beside the weights: {fix}")


class Engine:
    """Owns the model on one background thread; `submit` from any thread."""

    def __init__(self, model: torch.nn.Module, *, max_batch: int = 16, max_queue: int = 64,
                 max_len: int | None = None, request_timeout: float = 300.0, metrics=None,
                 dtype: torch.dtype | None = None, vocab_limit: int | None = None,
                 prefill_padding: float = MAX_PREFILL_PADDING, cuda_graph: bool = False,
                 compile_step: bool = False):
        """vocab_limit: ids at or above it are never sampled (a model vocabulary padded beyond its
        tokenizer's would otherwise emit ids that cannot be decoded). prefill_padding: the share of
        padding a batched prefill of prompts of several lengths may compute (0: only prompts of one
        length share a prefill; `_prefill_groups`, bench/bench_prefill.py). cuda_graph: decode every
        slot in one static step replayed from a CUDA graph (`graph.StaticDecoder`; on a CPU the same
        static step runs eagerly, which only tests want). compile_step (with cuda_graph): pass that
        step through torch.compile before capturing it. Either is prepared when the engine's thread
        starts, before it takes a request (`warmup_seconds`)."""
        self.model: Transformer = unwrap(model).eval()
        cfg = self.model.config
        # max_batch 0 (no slot) left every request waiting in the queue until its time limit.
        if max_batch < 1 or max_queue < 0 or not request_timeout > 0:
            raise ValueError(f"max_batch must be >= 1, max_queue >= 0 and request_timeout > 0; got {max_batch}, "
                             f"{max_queue} and {request_timeout}")
        self.max_len = min(max_len or cfg.max_seq_len, cfg.max_seq_len)
        self.max_batch, self.max_queue = max_batch, max_queue
        self.vocab_limit = vocab_limit if vocab_limit is not None and vocab_limit < cfg.vocab_size else None
        self.request_timeout = request_timeout
        self.metrics = metrics
        if prefill_padding < 0:
            raise ValueError(f"prefill_padding must be >= 0, got {prefill_padding}")
        self.prefill_padding = prefill_padding
        param = next(self.model.parameters())
        self.device = param.device
        check_cache_room(cfg, max_batch, self.max_len, self.device, dtype or param.dtype)
        self.cache = SlotKVCache(cfg, max_batch, self.max_len, self.device, dtype or param.dtype)
        if compile_step and not cuda_graph:
            raise ValueError("compile_step compiles the CUDA-graph step: it needs cuda_graph=True")
        self._static = StaticDecoder(self.model, self.cache, compile=compile_step) if cuda_graph else None
        if cuda_graph:
            cache_bytes = self.cache.k.nbytes + self.cache.v.nbytes
            weight_bytes = sum(p.nbytes for p in self.model.parameters())
            if cache_bytes > weight_bytes:
                log.warning("the CUDA-graph step reads every slot's whole KV cache each step: %.2f GB against %.2f GB "
                            "of weights, so it decodes slower than the usual step would; it is for small models and "
                            "short contexts (fewer --max-batch slots shrink it; larger models: serve the export "
                            "with vLLM)", cache_bytes / 1e9, weight_bytes / 1e9)
        self.warmup_seconds: float | None = None  # compiling and capturing the static step, once done
        # Set once the thread has prepared its decoding step (at once without a static one); a failure
        # to prepare it is kept (and cleared by the first step that succeeds) for /ready to report.
        self._prepared = threading.Event()
        if self._static is None:
            self._prepared.set()
        self.prepare_error: str | None = None
        self._free = list(range(max_batch - 1, -1, -1))  # pop() hands out the lowest slot first
        self._pending: deque[Request] = deque()
        self._active: list[Request] = []
        self._cv = threading.Condition()
        self._ids = itertools.count(1)
        self._stop = False
        self._thread: threading.Thread | None = None
        self._decode_times: deque[float] = deque(maxlen=64)
        self.steps = 0

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "Engine":
        """Start the thread (again after stop(): an app's lifespan may run more than once)."""
        with self._cv:
            old = self._thread
            if old is not None and old.is_alive() and not self._stop:
                return self
        # A thread still ending after a stop() that timed out (a long step or warm-up) was taken for a
        # running one: start() returned, the thread then ended, and every request got EngineStopped.
        # Wait for it to end, then start a new one.
        if old is not None:
            old.join()
        with self._cv:
            if self._thread is not None and self._thread.is_alive():
                return self  # another start() got there first
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="tenali-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
            # One read of the thread: a stop() on another thread (two at once: a program's own and an
            # app's lifespan) dropped self._thread between this one's reads, which then raised
            # AttributeError on None; and a thread a start() made meanwhile is not dropped for the old one.
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():  # a long step: it stops after it (start() waits for that)
                log.warning("the engine's thread did not stop within %.0f s; it stops after its current step", timeout)
            else:
                with self._cv:
                    if self._thread is thread:
                        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def alive(self) -> bool:
        thread = self._thread  # read once: a stop() on another thread may drop it between two reads
        return thread is not None and thread.is_alive()

    @property
    def ready(self) -> bool:
        """Alive, with its decoding step prepared (compiled and captured, for a static one) and working:
        what a load balancer should wait for before sending traffic (/ready)."""
        return self.alive and self._prepared.is_set() and self.prepare_error is None

    # --- submitting ------------------------------------------------------------------------------
    def submit(self, prompt: Sequence[int], params: SamplingParams, *, loop=None,
               timeout: float | None = None) -> Request:
        """Queue a generation; raises ValueError for a prompt that cannot fit, QueueFull when full,
        EngineStopped when the engine's thread is not running (the request would never be answered)."""
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise ValueError("the prompt is empty: give at least one token")
        # An id outside the embeddings failed the prefill with a bare IndexError (on CUDA a device-side
        # assert, which breaks every later request too): refused here, before it takes a slot.
        bad = [t for t in prompt if not 0 <= t < self.model.config.vocab_size]
        if bad:
            raise ValueError(f"prompt token ids {bad[:5]} are outside the vocabulary 0..{self.model.config.vocab_size - 1}")
        if params.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        # Refused at once: each of these used to take a slot and then end the request with
        # torch.multinomial's "probability tensor contains either inf, nan or element < 0".
        if math.isnan(params.temperature) or (params.top_p is not None and params.top_p < 0) \
                or not (math.isfinite(params.frequency_penalty) and math.isfinite(params.presence_penalty)):
            raise ValueError(f"sampling needs a temperature (not NaN), top_p >= 0 and finite penalties; got temperature "
                             f"{params.temperature}, top_p {params.top_p}, frequency_penalty "
                             f"{params.frequency_penalty}, presence_penalty {params.presence_penalty}")
        if len(prompt) + params.max_tokens > self.max_len:
            raise ValueError(f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceeds "
                             f"the context of {self.max_len} tokens")
        now = time.monotonic()
        req = Request(id=next(self._ids), prompt=prompt, params=params, created=now,
                      deadline=now + (timeout or self.request_timeout), loop=loop, _engine=self)
        with self._cv:
            # under the lock: the thread's shutdown finishes what is queued under it, so none is left waiting
            if self._stop or not self.alive:
                raise EngineStopped("the engine is not running (stopped, or never started): call start() first; "
                                    "a server answers 503 until it is restarted")
            # requests that will still wait once every free slot is taken
            if len(self._pending) - len(self._free) >= self.max_queue:
                raise QueueFull(f"all {self.max_batch} slots are busy and {len(self._pending)} requests are "
                                f"waiting (the queue holds {self.max_queue})", self.retry_after())
            self._pending.append(req)
            self._observe_queue()
            self._cv.notify_all()
        return req

    def retry_after(self) -> int:
        """A rough wait in seconds: the queue ahead times the recent step time times typical length."""
        step = sum(self._decode_times) / len(self._decode_times) if self._decode_times else 0.05
        return max(1, min(60, int(step * 64 * (1 + len(self._pending) / max(self.max_batch, 1))) + 1))

    def _cancel(self, req: Request) -> None:
        with self._cv:
            if req in self._pending:
                self._pending.remove(req)
                self._finish(req, "cancelled")
                self._observe_queue()
            self._cv.notify_all()

    # --- the loop --------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        finally:  # also when the loop itself crashed: no request may wait for a thread that is gone
            with self._cv:
                self._stop = True
                for req in list(self._active) + list(self._pending):
                    self._finish(req, "cancelled", error="the server is shutting down")
                self._pending.clear()
                self._observe_queue()

    def _loop(self) -> None:
        with torch.inference_mode():  # grad mode is per thread: set it here, where the model runs
            if self._static is not None:  # every slot is free: compile and capture before any request
                try:
                    self.warmup_seconds = self._static.warm()
                    log.info("decoding step ready in %.1f s (%s)", self.warmup_seconds, self._static.kind)
                except Exception as e:  # noqa: BLE001 - the first step tries again, and fails its requests
                    log.exception("preparing the static decoding step failed")
                    self.prepare_error = f"preparing the decoding step failed: {type(e).__name__}: {e}"
                self._prepared.set()
            while True:
                admitted: list[Request] = []
                with self._cv:
                    if not self._active and self.metrics is not None:
                        self.metrics.idle()
                    while not self._stop and not self._pending and not self._active:
                        self._cv.wait()
                    if self._stop:
                        break
                    now = time.monotonic()
                    for req in [r for r in self._pending if r._cancelled or now > r.deadline]:
                        self._pending.remove(req)
                        self._finish(req, "cancelled" if req._cancelled else "time_limit")
                    while self._pending and self._free:
                        req = self._pending.popleft()
                        req._slot = self._free.pop()
                        admitted.append(req)
                    self._observe_queue()
                for group in _prefill_groups(admitted, self.prefill_padding):
                    self._prefill_group(group)
                self._reap()
                if self._active:
                    self._guard(list(self._active), self._step)

    def _guard(self, reqs: list[Request], fn, *args) -> None:
        """Run fn; on an exception end only the requests involved (with the error) and go on."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - one bad batch must not kill the server
            log.exception("generation failed")
            for req in reqs:
                self._finish(req, "error", error=f"{type(e).__name__}: {e}")

    def _prefill_group(self, reqs: list[Request]) -> None:
        """Prefill a group (`_prefill_groups`) in one forward; if that fails, each alone, so that only
        a request that fails by itself ends with an error."""
        if len(reqs) > 1:
            try:
                self._prefill(reqs)
                return
            except Exception:  # noqa: BLE001 - retried one by one below
                log.warning("a batched prefill of %d requests failed; prefilling each alone", len(reqs),
                            exc_info=True)
        for req in reqs:
            self._guard([req], self._prefill, [req])

    def _prefill(self, reqs: list[Request]) -> None:
        for req in reqs:
            p = req.params
            if p.seed is not None:
                req._generator = torch.Generator(device=self.device)
                req._generator.manual_seed(p.seed)
            elif p.temperature >= GREEDY_BELOW:
                req._generator = torch.Generator(device=self.device)
                req._generator.seed()
            if p.penalised:
                req._counts = torch.zeros(1, self.model.config.vocab_size, device=self.device)
        lengths = [len(r.prompt) for r in reqs]
        longest = max(lengths)
        # right-padded to the longest: causal attention keeps every prompt position from seeing the pads
        idx = torch.tensor([r.prompt + [0] * (longest - n) for r, n in zip(reqs, lengths)],
                           dtype=torch.long, device=self.device)
        h = self.model(idx, cache=self.cache.rows([r._slot for r in reqs]), start_pos=0, hidden=True)[0]
        last = h[torch.arange(len(reqs), device=self.device), torch.tensor(lengths, device=self.device) - 1]
        logits = self.model.lm_head(last).float()  # the head on each row's own last position only
        # every first token before any request goes live: a failure leaves none half admitted
        firsts = [self._sample(req, self._limit(logits[i:i + 1])) for i, req in enumerate(reqs)]
        for req, tok in zip(reqs, firsts):
            self._active.append(req)
            self._accept(req, tok)

    def _step(self) -> None:
        rows = list(self._active)
        started = time.perf_counter()
        tokens = [r.generated[-1] for r in rows]
        slots = [r._slot for r in rows]
        positions = [len(r.prompt) + len(r.generated) - 1 for r in rows]
        if self._static is not None:
            logits = self._static(slots, tokens, positions)
            self.prepare_error = None  # prepared after all (the step retries what the warm-up failed)
        else:
            t = torch.tensor([tokens, slots, positions], dtype=torch.long, device=self.device)
            logits = decode_slots(self.model, t[0], self.cache, t[1], t[2])
        logits = self._limit(logits)
        if all(r.params.greedy_plain for r in rows):
            chosen = logits.argmax(dim=-1).tolist()
        else:
            chosen = [self._sample_row(r, logits[i:i + 1]) for i, r in enumerate(rows)]
        self._decode_times.append(time.perf_counter() - started)
        self.steps += 1
        if self.metrics is not None:
            self.metrics.batch(len(rows))
        for r, tok in zip(rows, chosen):
            if tok is not None:
                self._accept(r, int(tok))

    def _limit(self, logits: torch.Tensor) -> torch.Tensor:
        if self.vocab_limit is not None:
            logits[:, self.vocab_limit:] = float("-inf")
        return logits

    def _sample_row(self, req: Request, logits: torch.Tensor) -> int | None:
        """One row's token, or None when its sampling failed: that ends only this request, with the
        error; the other rows of the step keep their tokens (one request's bad parameters must not
        end everybody's answer)."""
        try:
            return self._sample(req, logits)
        except Exception as e:  # noqa: BLE001 - isolated to the row that failed
            log.exception("sampling request %d failed", req.id)
            self._finish(req, "error", error=f"{type(e).__name__}: {e}")
            return None

    def _sample(self, req: Request, logits: torch.Tensor) -> int:
        p = req.params
        if p.penalised:
            logits = apply_penalties(logits.float(), req._counts, p.frequency_penalty, p.presence_penalty)
        tok = int(sample_next(logits, p.temperature, p.top_k, p.top_p, req._generator)[0])
        if p.penalised:
            req._counts[0, tok] += 1
        return tok

    def _accept(self, req: Request, tok: int) -> None:
        if req.done:
            return
        now = time.monotonic()
        req.generated.append(tok)
        if self.metrics is not None:
            if req.first_token_at is None:
                self.metrics.first_token(now - req.created)
            else:
                self.metrics.inter_token(now - req._last_token_at)
            self.metrics.tokens(1)
        if req.first_token_at is None:
            req.first_token_at = now
        req._last_token_at = now
        if tok in req.params.stop_token_ids:
            self._finish(req, "stop")
            return
        req._push(Event("token", token=tok))
        if len(req.generated) >= req.params.max_tokens or len(req.prompt) + len(req.generated) >= self.max_len:
            self._finish(req, "length")

    def _reap(self) -> None:
        now = time.monotonic()
        for req in list(self._active):
            if req._cancelled:
                self._finish(req, "cancelled")
            elif now > req.deadline:
                self._finish(req, "time_limit")

    def _finish(self, req: Request, reason: str, error: str | None = None) -> None:
        if req.done:
            return
        req.finish_reason = reason
        if req in self._active:
            self._active.remove(req)
        if req._slot is not None:
            self._free.append(req._slot)
            self._free.sort(reverse=True)
            req._slot = None
        req._counts = None
        req._push(Event("done", finish_reason=reason, error=error))

    def _observe_queue(self) -> None:
        if self.metrics is not None:
            self.metrics.queue(len(self._pending))


def generate_ids(engine: Engine, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams],
                 timeout: float | None = None) -> list[list[int]]:
    """Submit several prompts at once and wait for all (the in-process batched API). On an error or
    a timeout the requests still running are cancelled, so none keeps a slot for a caller that left."""
    many = params if isinstance(params, (list, tuple)) else [params] * len(prompts)
    if len(many) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(many)} SamplingParams: give one per prompt, or one for all")
    reqs: list[Request] = []
    try:
        for p, sp in zip(prompts, many):
            reqs.append(engine.submit(p, sp))
        for r in reqs:
            if not r.wait(timeout):
                raise TimeoutError(f"request {r.id} did not finish within {timeout} s")
            for ev in r.ready_events():
                if ev.kind == "done" and ev.finish_reason == "error":
                    raise RuntimeError(ev.error)
    except BaseException:
        for r in reqs:
            r.cancel()
        raise
    return [list(r.generated) for r in reqs]
