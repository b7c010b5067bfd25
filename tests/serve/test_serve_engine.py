"""The batched engine: same tokens as single-sequence generate(), seeds independent of batching, slots freed."""

import time

import pytest
import torch

from ts_helpers import StepGate, wait_until
from tenali_model.generate import generate
from tenali_model.serve.engine import Engine, QueueFull, SamplingParams, generate_ids


@pytest.fixture(scope="module")
def model(served):
    return served.model


def _prompts(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    lengths = [3, 17, 40, 1, 9, 64, 5, 30][:n]
    return [torch.randint(0, 300, (k,), generator=g).tolist() for k in lengths]


def _single(model, prompt, n, **kw):
    return generate(model, torch.tensor([prompt]), n, **kw)[0, len(prompt):].tolist()


def test_batched_greedy_equals_single_sequence_generate(model):
    prompts = _prompts(8)
    want = [_single(model, p, 24, temperature=0) for p in prompts]
    # 3 slots for 8 requests: requests join and leave the batch between steps.
    with Engine(model, max_batch=3, max_queue=8) as engine:
        got = generate_ids(engine, prompts, SamplingParams(max_tokens=24, temperature=0))
    assert got == want


def test_static_step_engine_equals_single_sequence_generate(model):
    """Engine(cuda_graph=True) decodes through `StaticDecoder` (every slot in one fixed-shape step; a
    CUDA graph on a GPU, run eagerly here): the same tokens as generate() while requests join and
    leave, and free slots decode dummies beside live ones."""
    prompts = _prompts(8)
    want = [_single(model, p, 24, temperature=0) for p in prompts]
    with Engine(model, max_batch=3, max_queue=8, cuda_graph=True) as engine:
        assert not engine._static.capture  # nothing to capture on the CPU
        got = generate_ids(engine, prompts, SamplingParams(max_tokens=24, temperature=0))
    assert got == want


def test_compiled_static_step_engine_equals_single_sequence_generate(model):
    """Engine(cuda_graph=True, compile_step=True): the static step through torch.compile (inductor's
    C++ kernels here, Triton's on a GPU, where the graph then captures it), compiled when the engine's
    thread starts, before the first request: generate()'s tokens while requests join and leave."""
    prompts = _prompts(6)
    want = [_single(model, p, 16, temperature=0) for p in prompts]
    with Engine(model, max_batch=3, max_queue=8, cuda_graph=True, compile_step=True) as engine:
        got = generate_ids(engine, prompts, SamplingParams(max_tokens=16, temperature=0), timeout=300)
        assert engine._static.compiled and engine.warmup_seconds is not None
        assert engine._static.kind == "compiled, eager"  # nothing to capture on the CPU
    assert got == want


def test_compiling_the_step_needs_the_static_step(model):
    with pytest.raises(ValueError, match="compile_step compiles the CUDA-graph step: it needs cuda_graph=True"):
        Engine(model, max_batch=2, compile_step=True)


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_a_bfloat16_model_serves(ckpt, tok_path, cuda_graph):
    """What `tenali serve` loads on a GPU by default (--dtype auto): bfloat16 weights and cache. Every
    request ends by length, not with an error, and a prompt alone gives generate()'s tokens."""
    from tenali_model.serve.loading import load_served

    model = load_served(ckpt, tokenizer=tok_path, dtype=torch.bfloat16).model
    assert next(model.parameters()).dtype == torch.bfloat16
    prompts = _prompts(4)
    params = SamplingParams(max_tokens=12, temperature=0)
    with Engine(model, max_batch=2, cuda_graph=cuda_graph) as engine:
        reqs = [engine.submit(p, params) for p in prompts]
        assert all(r.wait(30) for r in reqs)
        assert [r.finish_reason for r in reqs] == ["length"] * 4
        (alone,) = generate_ids(engine, prompts[:1], params)
    assert alone == _single(model, prompts[0], 12, temperature=0)


def test_a_static_step_whose_cache_outweighs_the_weights_is_warned_about(model, caplog):
    """The static step reads every slot's whole cache each step: beyond the weights' bytes it decodes
    slower than the usual step, and the engine says so (a 7B at 16 x 4,096: 34 GB against 13.8 GB)."""
    weights = sum(p.nbytes for p in model.parameters())
    per_slot = Engine(model, max_batch=1).cache.k.nbytes * 2
    few, many = max(1, weights // per_slot // 2), weights // per_slot + 1
    with caplog.at_level("WARNING", logger="tenali.serve"):
        Engine(model, max_batch=few, cuda_graph=True)
        assert not caplog.records
        Engine(model, max_batch=many, cuda_graph=True)
    assert "reads every slot's whole KV cache each step" in caplog.text and "it is for small models" in caplog.text


def test_cuda_graph_needs_a_cuda_cache(model):
    from tenali_model.serve.graph import StaticDecoder

    engine = Engine(model, max_batch=2)
    with pytest.raises(ValueError, match="CUDA graphs need the cache on a CUDA device, not cpu"):
        StaticDecoder(model, engine.cache, capture=True)


def _submit_together(engine, prompts, params):
    with engine._cv:  # the loop waits for this lock: all are queued before it admits any
        return [engine.submit(p, params) for p in prompts]


@pytest.mark.parametrize("batched_fails", [False, True])
def test_prompts_admitted_together_are_prefilled_together(model, monkeypatch, batched_fails):
    """Requests admitted together share one prefill forward, right-padded to the longest prompt while
    the padding stays within 25% (if it fails, each is prefilled alone); either way the tokens are
    single-sequence generate()'s."""
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(0, 300, (12,), generator=g).tolist() for _ in range(4)]
    prompts.append(prompts[0][:10])  # 12 x 5 = 60 padded positions for 58 tokens: padded into the batch
    prompts.append(prompts[1][:2])  # with the 10-token one, 10 x 2 = 20 for 12: prefilled on its own (first)
    want = [_single(model, p, 10, temperature=0) for p in prompts]
    sizes = []
    real = Engine._prefill

    def prefill(self, reqs):
        sizes.append(len(reqs))
        if batched_fails and len(reqs) > 1:
            raise RuntimeError("simulated failure of a batched prefill")
        return real(self, reqs)

    monkeypatch.setattr(Engine, "_prefill", prefill)
    with Engine(model, max_batch=6) as engine:
        reqs = _submit_together(engine, prompts, SamplingParams(max_tokens=10, temperature=0))
        assert all(r.wait(30) for r in reqs)
    assert sizes == ([1, 5, 1, 1, 1, 1, 1] if batched_fails else [1, 5])
    assert [r.finish_reason for r in reqs] == ["length"] * 6
    assert [r.generated for r in reqs] == want


def test_prefill_groups_bound_the_padding():
    from tenali_model.serve.engine import _prefill_groups

    class R:
        def __init__(self, n):
            self.prompt = [0] * n

    reqs = [R(n) for n in (10, 40, 38, 9, 100, 35, 8)]
    groups = [[len(r.prompt) for r in g] for g in _prefill_groups(reqs)]
    assert groups == [[8, 9, 10], [35, 38, 40], [100]]  # shortest first
    for g in groups:
        assert max(g) * len(g) <= 1.25 * sum(g)
    assert [[len(r.prompt) for r in g] for g in _prefill_groups(reqs, max_padding=0)] == [[8], [9], [10], [35], [38], [40], [100]]
    assert [[len(r.prompt) for r in g] for g in _prefill_groups([R(5), R(7), R(5)], max_padding=0)] == [[5, 5], [7]]


def test_seeded_sampling_is_the_same_alone_or_in_a_batch(model):
    prompts = _prompts(5, seed=2)
    params = [SamplingParams(max_tokens=20, temperature=0.9, top_k=50, top_p=0.9, seed=100 + i,
                             frequency_penalty=0.4, presence_penalty=0.2) for i in range(5)]
    want = [_single(model, p, 20, temperature=0.9, top_k=50, top_p=0.9, seed=100 + i,
                    frequency_penalty=0.4, presence_penalty=0.2) for i, p in enumerate(prompts)]
    with Engine(model, max_batch=8) as engine:
        together = generate_ids(engine, prompts, params)
        alone = [generate_ids(engine, [p], sp)[0] for p, sp in zip(prompts, params)]
    assert together == alone == want


def test_stop_tokens_end_generation_exactly(model):
    prompt = _prompts(1, seed=3)[0]
    free = _single(model, prompt, 30, temperature=0)
    stops = (free[7], free[12])  # two stop tokens; the first to appear ends it
    first = min(free.index(stops[0]), free.index(stops[1]))
    with Engine(model, max_batch=2) as engine:
        (got,) = generate_ids(engine, [prompt], SamplingParams(max_tokens=30, temperature=0, stop_token_ids=stops))
    assert got == free[:first + 1]  # generated up to and including the stop token, nothing after


def test_cancel_frees_the_slot_and_a_full_queue_refuses(model, monkeypatch):
    gate = StepGate(monkeypatch)  # the running request cannot finish (and free its slot) before it is cancelled
    with Engine(model, max_batch=1, max_queue=1) as engine:
        long = SamplingParams(max_tokens=100, temperature=0)
        running = engine.submit([1, 2, 3], long)
        next(running.events(timeout=60))  # it holds the only slot
        waiting = engine.submit([4, 5], long)
        with pytest.raises(QueueFull) as err:
            engine.submit([6], long)
        assert err.value.retry_after >= 1
        waiting.cancel()
        assert waiting.finish_reason == "cancelled" and engine.queue_depth == 0
        running.cancel()
        wait_until(lambda: not engine.active, "the cancelled request's slot freed")
        assert engine.active == 0 and running.finish_reason == "cancelled"
        assert len(running.generated) < 100
        # the freed slot serves the next request
        gate.open()
        (out,) = generate_ids(engine, [[7, 8]], SamplingParams(max_tokens=3, temperature=0), timeout=60)
        assert len(out) == 3


def test_time_limit_ends_a_request(model, monkeypatch):
    """A request whose time runs out mid-answer ends with "time_limit" and keeps its tokens. The engine's
    clock is the test's: on a loaded machine 0.2 s of real time could pass before the request was even
    admitted (it then ended in the queue, with no token)."""
    import types

    import tenali_model.serve.engine as eng

    now = [1000.0]
    monkeypatch.setattr(eng, "time", types.SimpleNamespace(monotonic=lambda: now[0], perf_counter=time.perf_counter))
    StepGate(monkeypatch)  # no step before the time is up: the answer cannot reach max_tokens first
    with Engine(model, max_batch=1) as engine:
        req = engine.submit([1, 2], SamplingParams(max_tokens=100, temperature=0), timeout=0.2)
        assert next(req.events(timeout=60)).kind == "token"  # admitted and answering
        now[0] += 0.25
        assert req.wait(60)
    assert req.finish_reason == "time_limit" and 0 < len(req.generated) < 100


def test_prompt_that_cannot_fit_is_refused(model):
    with Engine(model, max_batch=1) as engine:
        with pytest.raises(ValueError, match="context of 128"):
            engine.submit(list(range(100)), SamplingParams(max_tokens=40))
        with pytest.raises(ValueError, match="empty"):
            engine.submit([], SamplingParams(max_tokens=4))


def test_one_requests_sampling_failure_ends_only_that_request(model, monkeypatch):
    """Every live request samples in one decoding step; when one row's sampling raises (a temperature
    that overflowed its logits used to), only that request ends with the error, and the others get
    the tokens they would have got alone."""
    import tenali_model.serve.engine as eng

    real, calls = eng.sample_next, []

    def failing(logits, temperature, *a, **k):
        if temperature == 0.5:
            calls.append(1)
            if len(calls) >= 3:  # past its prefill: in a decoding step shared with the others
                raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        return real(logits, temperature, *a, **k)

    monkeypatch.setattr(eng, "sample_next", failing)
    prompts = _prompts(3, seed=5)
    good = [SamplingParams(max_tokens=20, temperature=0.8, seed=7), SamplingParams(max_tokens=20, temperature=0)]
    with Engine(model, max_batch=4) as engine:
        alone = [generate_ids(engine, [p], sp)[0] for p, sp in zip(prompts, good)]
        with engine._cv:  # all admitted together: they share every decoding step
            reqs = [engine.submit(p, sp) for p, sp in
                    zip(prompts, good + [SamplingParams(max_tokens=20, temperature=0.5, seed=1)])]
        assert all(r.wait(30) for r in reqs)
    assert [r.finish_reason for r in reqs] == ["length", "length", "error"]
    assert [r.generated for r in reqs[:2]] == alone
    assert len(reqs[2].generated) == 2
    done = [ev for ev in reqs[2].ready_events() if ev.kind == "done"]
    assert done[0].error == "RuntimeError: probability tensor contains either inf, nan or element < 0"


@pytest.mark.parametrize("temperature", [1e-39, 1e-44, 9e-6])
def test_a_tiny_temperature_is_greedy(model, temperature):
    """Below 1e-5 (vLLM's _SAMPLING_EPS) a temperature is greedy: dividing logits by 1e-39 overflows
    them to inf, and softmax then gives NaN, which torch.multinomial refuses."""
    prompt = _prompts(1, seed=6)[0]
    want = _single(model, prompt, 16, temperature=0)
    assert _single(model, prompt, 16, temperature=temperature, seed=3) == want
    with Engine(model, max_batch=2) as engine:
        req = engine.submit(prompt, SamplingParams(max_tokens=16, temperature=temperature, seed=3))
        assert req.wait(30)
    assert req.finish_reason == "length" and req.generated == want


def test_the_engine_restarts_and_refuses_requests_while_stopped(model):
    """An app's lifespan may start and stop its engine more than once: after stop() start() runs it
    again; a stopped engine refuses a request at once (EngineStopped) instead of queueing it forever."""
    from tenali_model.serve.engine import EngineStopped

    engine = Engine(model, max_batch=2)
    params = SamplingParams(max_tokens=3, temperature=0)
    with pytest.raises(EngineStopped, match="call start"):
        engine.submit([1, 2, 3], params)
    engine.start()
    engine.stop()
    with pytest.raises(EngineStopped):
        engine.submit([1, 2, 3], params)
    assert engine.queue_depth == 0
    engine.start()
    try:
        assert engine.alive
        (out,) = generate_ids(engine, [[1, 2, 3]], params, timeout=60)
        assert len(out) == 3
    finally:
        engine.stop()


def test_a_request_submitted_while_the_engine_stops_is_refused(model, monkeypatch):
    """Between stop() asking the thread to end and the thread ending, a submitted request would be
    queued behind a loop that never takes it again: it is refused, and the live one is cancelled."""
    import threading

    from tenali_model.serve.engine import EngineStopped

    gate = StepGate(monkeypatch, react=False)  # the thread stays in its step until the request was tried
    engine = Engine(model, max_batch=2).start()
    running = engine.submit([1, 2, 3], SamplingParams(max_tokens=50, temperature=0))
    next(running.events(timeout=60))
    stopper = threading.Thread(target=lambda: engine.stop(timeout=60))
    stopper.start()
    wait_until(lambda: engine._stop, "stop() asked the thread to end")
    assert engine.alive  # the thread is still in its step
    with pytest.raises(EngineStopped):
        engine.submit([4, 5], SamplingParams(max_tokens=3, temperature=0))
    gate.open()
    stopper.join(60)
    assert running.wait(60) and running.finish_reason == "cancelled"
    assert engine.queue_depth == 0


def test_generate_ids_checks_lengths_and_cancels_the_rest_on_failure(model, monkeypatch):
    import tenali_model.serve.engine as eng

    StepGate(monkeypatch)  # the two long requests run until cancelled: ended by generate_ids, not by their length
    real = eng.sample_next

    def failing(logits, temperature, *a, **k):
        if temperature == 0.5:
            raise RuntimeError("sampling failed")
        return real(logits, temperature, *a, **k)

    monkeypatch.setattr(eng, "sample_next", failing)
    with Engine(model, max_batch=4) as engine:
        with pytest.raises(ValueError, match="3 prompts but 2 SamplingParams"):
            generate_ids(engine, [[1], [2], [3]], [SamplingParams(max_tokens=2)] * 2)
        assert engine.queue_depth == 0 and engine.active == 0
        long = SamplingParams(max_tokens=100, temperature=0)
        with pytest.raises(RuntimeError, match="sampling failed"):
            generate_ids(engine, [[1, 2], [3, 4], [5, 6]], [SamplingParams(max_tokens=5, temperature=0.5), long, long])
        wait_until(lambda: not (engine.active or engine.queue_depth), "the other two requests ended")
        assert engine.active == 0 and engine.queue_depth == 0  # the other two were cancelled, not left running


def test_bad_token_ids_and_sampling_values_are_refused_before_they_take_a_slot(model):
    """A prompt id outside the embeddings used to fail its prefill with a bare IndexError (on CUDA a
    device-side assert that breaks every later request); a negative top_p, a NaN temperature or an
    infinite penalty used to take a slot and end in torch.multinomial's "probability tensor contains
    either inf, nan or element < 0". Each is now a ValueError from submit, and nothing is queued."""
    vocab = model.config.vocab_size
    with Engine(model, max_batch=2) as engine:
        for prompt in ([1, vocab], [-1, 2]):
            with pytest.raises(ValueError, match=r"prompt token ids \[-?\d+\] are outside the vocabulary"):
                engine.submit(prompt, SamplingParams(max_tokens=2, temperature=0))
        for bad in (dict(temperature=0.8, top_p=-0.5), dict(temperature=float("nan")),
                    dict(temperature=0.8, frequency_penalty=float("inf")), dict(presence_penalty=float("nan"))):
            with pytest.raises(ValueError, match="sampling needs"):
                engine.submit([1, 2, 3], SamplingParams(max_tokens=4, seed=1, **bad))
        assert engine.queue_depth == 0 and engine.active == 0
        # the edges that work are still taken: top_p 0 keeps the likeliest token, a penalty of 2 is fine
        (out,) = generate_ids(engine, [[1, 2, 3]], SamplingParams(max_tokens=4, top_p=0.0, presence_penalty=2.0, seed=1))
        assert len(out) == 4


@pytest.mark.parametrize("bad", [dict(max_batch=0), dict(max_queue=-1), dict(request_timeout=0),
                                 dict(request_timeout=-5.0), dict(request_timeout=float("nan"))])
def test_an_engine_that_could_never_answer_is_refused(model, bad):
    """max_batch=0 gave no slot, so every request waited in the queue until its time limit; a time
    limit of 0 (or below, or NaN: never) ended every request, or none, whatever the model did."""
    with pytest.raises(ValueError, match="max_batch must be >= 1, max_queue >= 0 and request_timeout > 0"):
        Engine(model, **bad)


def test_a_start_after_a_stop_that_timed_out_runs_the_engine(model, monkeypatch):
    """stop() gives up waiting after its timeout while a long step (or the static step's warm-up)
    runs; start() then took the ending thread for a running one and returned, the thread ended, and
    the engine refused every request (EngineStopped) until the process restarted."""
    gate = StepGate(monkeypatch, react=False)  # the thread is held in its step: it outlives the stop
    engine = Engine(model, max_batch=2).start()
    try:
        running = engine.submit([1, 2, 3], SamplingParams(max_tokens=50, temperature=0))
        next(running.events(timeout=60))
        engine.stop(timeout=0.01)
        old = engine._thread
        assert old is not None and old.is_alive()
        join = old.join
        old.join = lambda timeout=None: (gate.open(), join(timeout))[1]  # its step ends once start() waits for it
        engine.start()
        gate.open()  # (a start() that did not wait for it)
        assert running.wait(60) and running.finish_reason == "cancelled"
        assert engine.alive
        (out,) = generate_ids(engine, [[1, 2, 3]], SamplingParams(max_tokens=2, temperature=0), timeout=60)
        assert len(out) == 2
    finally:
        gate.open()
        engine.stop()


def test_two_stops_at_once_both_return(model, monkeypatch):
    """stop() from two threads at once (a program's own and an app's lifespan): the one whose wait for
    the thread ended second read self._thread after the other had dropped it, and raised AttributeError
    ('NoneType' object has no attribute 'is_alive') instead of returning."""
    import threading

    gate = StepGate(monkeypatch, react=False)  # the thread stays in its step until both stops wait for it
    engine = Engine(model, max_batch=1).start()
    running = engine.submit([1, 2, 3], SamplingParams(max_tokens=50, temperature=0))
    next(running.events(timeout=60))
    thread, waiting, first_done, errors = engine._thread, [], threading.Event(), []
    join = thread.join

    def join_then_let_the_first_finish(timeout=None):
        waiting.append(threading.current_thread().name)
        join(timeout)
        if threading.current_thread().name == "second":
            assert first_done.wait(60)

    thread.join = join_then_let_the_first_finish

    def stop(name):
        try:
            engine.stop(timeout=60)
        except Exception as e:  # noqa: BLE001 - what the test is about
            errors.append(e)
        finally:
            if name == "first":
                first_done.set()

    stoppers = [threading.Thread(target=stop, args=(name,), name=name) for name in ("first", "second")]
    for t in stoppers:
        t.start()
    wait_until(lambda: len(waiting) == 2, "both stops wait for the thread")
    gate.open()
    for t in stoppers:
        t.join(120)
    assert errors == [] and not engine.alive and engine._thread is None
    assert running.finish_reason == "cancelled"
