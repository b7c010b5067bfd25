"""The batched engine: same tokens as single-sequence generate(), seeds independent of batching, slots freed."""

import time

import pytest
import torch

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
    import tenali_model.serve.engine as eng

    real = eng.decode_slots

    def slow(*a, **k):
        time.sleep(0.01)
        return real(*a, **k)

    monkeypatch.setattr(eng, "decode_slots", slow)
    with Engine(model, max_batch=1, max_queue=1) as engine:
        long = SamplingParams(max_tokens=100, temperature=0)
        running = engine.submit([1, 2, 3], long)
        next(running.events(timeout=5))  # it holds the only slot
        waiting = engine.submit([4, 5], long)
        with pytest.raises(QueueFull) as err:
            engine.submit([6], long)
        assert err.value.retry_after >= 1
        waiting.cancel()
        assert waiting.finish_reason == "cancelled" and engine.queue_depth == 0
        running.cancel()
        deadline = time.time() + 5
        while engine.active and time.time() < deadline:
            time.sleep(0.01)
        assert engine.active == 0 and running.finish_reason == "cancelled"
        assert len(running.generated) < 100
        # the freed slot serves the next request
        (out,) = generate_ids(engine, [[7, 8]], SamplingParams(max_tokens=3, temperature=0), timeout=10)
        assert len(out) == 3


def test_time_limit_ends_a_request(model, monkeypatch):
    import tenali_model.serve.engine as eng

    real = eng.decode_slots
    monkeypatch.setattr(eng, "decode_slots", lambda *a, **k: (time.sleep(0.01), real(*a, **k))[1])
    with Engine(model, max_batch=1) as engine:
        req = engine.submit([1, 2], SamplingParams(max_tokens=100, temperature=0), timeout=0.2)
        list(req.events(timeout=10))
    assert req.finish_reason == "time_limit" and 0 < len(req.generated) < 100


def test_prompt_that_cannot_fit_is_refused(model):
    with Engine(model, max_batch=1) as engine:
        with pytest.raises(ValueError, match="context of 128"):
            engine.submit(list(range(100)), SamplingParams(max_tokens=40))
        with pytest.raises(ValueError, match="empty"):
            engine.submit([], SamplingParams(max_tokens=4))
