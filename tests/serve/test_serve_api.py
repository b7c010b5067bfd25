"""The OpenAI-compatible routes through FastAPI's TestClient: streaming, stops, usage, every bad input."""

import contextlib
import json
import time

import pytest

from ts_helpers import CONTEXT, StepGate, never_sample, no_text_yet, wait_until

CHAT = [{"role": "user", "content": "What did Apple close at?"}]


def _sse(resp) -> list[dict]:
    events = [line[len("data: "):] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


@pytest.mark.parametrize("route", ["chat", "completions"])
def test_streaming_and_non_streaming_give_the_same_answer(client, route):
    body = {"max_tokens": 40, "temperature": 0.9, "top_p": 0.95, "seed": 11, "model": "tenali-test"}
    if route == "chat":
        url, body = "/v1/chat/completions", {**body, "messages": CHAT}
    else:
        url, body = "/v1/completions", {**body, "prompt": "Treasury yields: 2-year"}
    whole = client.post(url, json=body)
    assert whole.status_code == 200, whole.text
    data = whole.json()
    with client.stream("POST", url, json={**body, "stream": True, "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        chunks = _sse(r)
    if route == "chat":
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        assert text == data["choices"][0]["message"]["content"]
    else:
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        assert text == data["choices"][0]["text"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finishes == [data["choices"][0]["finish_reason"]]
    assert chunks[-1]["usage"] == data["usage"]
    u = data["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and 0 < u["completion_tokens"] <= 40


def test_stop_strings_end_the_answer_exactly(client):
    body = {"prompt": "Bitcoin funding rates", "max_tokens": 60, "temperature": 0}
    free = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    assert len(free) > 12, free
    stop = free[8:11]  # somewhere inside, usually spanning tokens
    cut = free[:free.index(stop)]
    got = client.post("/v1/completions", json={**body, "stop": [stop, "\u2603never"]}).json()
    assert got["choices"][0]["text"] == cut and got["choices"][0]["finish_reason"] == "stop"
    with client.stream("POST", "/v1/completions", json={**body, "stop": stop, "stream": True}) as r:
        chunks = _sse(r)
    assert "".join(c["choices"][0]["text"] for c in chunks) == cut
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stop_token_ids_end_the_answer(client, served):
    body = {"prompt": "The Federal Reserve held", "max_tokens": 30, "temperature": 0}
    ids = served.tokenizer.encode("The Federal Reserve held")
    from tenali_model.generate import generate
    import torch
    gen = generate(served.model, torch.tensor([ids]), 30, temperature=0)[0, len(ids):].tolist()
    stop_at = gen[10]
    first = gen.index(stop_at)
    got = client.post("/v1/completions", json={**body, "stop_token_ids": [stop_at, 1]}).json()
    assert got["choices"][0]["finish_reason"] == "stop"
    assert got["usage"]["completion_tokens"] == first + 1  # the stop token counts, its text is not shown
    # the text continues the prompt: decoded after it (a first "▁piece" keeps its space)
    prompt_text = served.tokenizer.decode(ids)
    assert got["choices"][0]["text"] == served.tokenizer.decode(ids + gen[:first])[len(prompt_text):]


@pytest.mark.parametrize("stream", [False, True])
def test_a_completion_keeps_the_leading_space_of_its_continuation(client, served, stream):
    """sentencepiece drops the space of a "▁piece" decoded first: "Apple closed" + "▁at" must read
    " at", as the prompt and the answer decoded together do (a chat answer starts without one)."""
    import torch

    from tenali_model.generate import generate

    tok = served.tokenizer
    ids = tok.encode("Apple closed")
    assert tok.decode(tok.encode("Apple closed at")[len(ids):]) == "at"  # the pitfall
    for seed in range(200):  # a seed whose first sampled token is a "▁piece" (sampled: the same in the server)
        gen = generate(served.model, torch.tensor([ids]), 8, temperature=1.0, seed=seed)[0, len(ids):].tolist()
        if tok.id_to_token(gen[0]).startswith("\u2581") and tok.id_to_token(gen[0]) != "\u2581":
            break
    else:
        pytest.fail("no seed starts the answer with a word")
    eot = tok.eot_id
    gen = gen[:gen.index(eot)] if eot in gen else gen  # the server stops there (its text is not shown)
    want = tok.decode(ids + gen)[len(tok.decode(ids)):]
    assert want.startswith(" ")
    body = {"prompt": "Apple closed", "max_tokens": 8, "temperature": 1.0, "seed": seed, "stop_token_ids": [],
            "stream": stream}
    if stream:
        with client.stream("POST", "/v1/completions", json=body) as r:
            text = "".join(c["choices"][0]["text"] for c in _sse(r) if c["choices"])
    else:
        text = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    assert text == want


def test_models_health_metrics_info_and_docs(client):
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tenali-test"]
    assert client.get("/v1/models/tenali-test").status_code == 200
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/ready").json() == {"ready": True, "status": "ok"}
    n = client.post("/v1/completions", json={"prompt": "AAPL", "max_tokens": 3}).json()["usage"]["completion_tokens"]
    text = client.get("/metrics").text
    for name in ("tenali_requests_total", "tenali_time_to_first_token_seconds_bucket",
                 "tenali_inter_token_latency_seconds_bucket", "tenali_generated_tokens_total",
                 "tenali_queue_depth", "tenali_batch_size"):
        assert name in text, name
    assert 'route="/v1/completions",status="200"' in text
    assert f"tenali_generated_tokens_total {n}.0" in text  # the one request so far (counted by the engine)
    assert f"tenali_inter_token_latency_seconds_count {n - 1}.0" in text  # the gaps between its tokens
    deadline = time.monotonic() + 60  # the engine goes idle just after the answer is sent
    while "tenali_batch_size 0.0" not in text and time.monotonic() < deadline:
        time.sleep(0.02)
        text = client.get("/metrics").text
    assert "tenali_batch_size 0.0" in text  # nothing is decoding now, whatever the last step held
    info = client.get("/info").json()
    assert info["context"] == CONTEXT and info["model"] == "tenali-test"
    assert client.get("/docs").status_code == 200
    assert "/v1/chat/completions" in client.get("/openapi.json").json()["paths"]
    assert "<title>Tenali chat</title>" in client.get("/").text


def test_inter_token_latency_buckets():
    """The inter-token latency buckets run from 1 ms to 2.5 s (the bounds a dashboard's quantiles rest on)."""
    from prometheus_client import generate_latest

    from tenali_model.serve.metrics import Metrics

    m = Metrics()
    for seconds in (0.0005, 0.001, 0.003, 2.0, 100.0):
        m.inter_token(seconds)
    text = generate_latest(m.registry).decode()
    for line in ('tenali_inter_token_latency_seconds_bucket{le="0.001"} 2.0',  # 0.001 itself is <= 0.001
                 'tenali_inter_token_latency_seconds_bucket{le="0.005"} 3.0',
                 'tenali_inter_token_latency_seconds_bucket{le="2.5"} 4.0',
                 'tenali_inter_token_latency_seconds_bucket{le="+Inf"} 5.0',
                 "tenali_inter_token_latency_seconds_count 5.0",
                 "tenali_inter_token_latency_seconds_sum 102.0045"):
        assert line in text, line


@pytest.mark.parametrize("url, body, status, param", [
    ("/v1/completions", b"{not json", 422, "body"),
    ("/v1/completions", {"max_tokens": 4}, 422, "prompt"),
    ("/v1/completions", {"prompt": "x", "temperature": 5}, 422, "temperature"),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, 422, "top_p"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 422, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "n": 2}, 422, "n"),
    ("/v1/completions", {"prompt": "x", "stop": 3}, 422, "stop"),
    ("/v1/chat/completions", {"messages": []}, 422, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "bot", "content": "x"}]}, 422, "messages.0.role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
     422, "messages[1].role"),
    ("/v1/completions", {"prompt": "x " * 200, "max_tokens": 8}, 400, "prompt"),  # the prompt fills the context
    ("/v1/completions", {"prompt": "x " * 30, "max_tokens": 120}, 400, "max_tokens"),  # together they overflow it
    ("/v1/completions", {"prompt": "x", "max_tokens": CONTEXT}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": [1, 2, 10**6], "max_tokens": 2}, 400, "prompt"),
    ("/v1/completions", {"prompt": "", "max_tokens": 2}, 400, "prompt"),
    ("/v1/completions", {"prompt": "x", "model": "gpt-4o"}, 404, "model"),
    ("/v1/chat/completions", {"messages": CHAT, "model": "gpt-4o"}, 404, "model"),
    # the field this request used: a completion has no "messages"; chat's newer name for max_tokens
    ("/v1/completions", {"prompt": "x " * 200, "max_tokens": None}, 400, "prompt"),
    ("/v1/chat/completions", {"messages": CHAT, "max_completion_tokens": CONTEXT}, 400, "max_completion_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x " * 200}], "max_completion_tokens": 8},
     400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x " * 30}], "max_completion_tokens": 120},
     400, "max_completion_tokens"),
    # options that would change the answer are refused, not silently ignored
    ("/v1/completions", {"prompt": "x", "max_tokens": 2, "echo": True}, 400, "echo"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 2, "logprobs": 1}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 2, "logprobs": 0}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 2, "best_of": 3}, 400, "best_of"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 2, "suffix": " end."}, 400, "suffix"),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 2, "logprobs": True, "top_logprobs": 2}, 400, "logprobs"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 2, "logit_bias": {"5": 100}}, 400, "logit_bias"),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 2, "response_format": {"type": "json_object"}}, 400,
     "response_format"),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 2, "tool_choice": "required",
                              "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tool_choice"),
])
def test_bad_input_gets_its_status_and_names_the_field(client, url, body, status, param):
    resp = client.post(url, content=body) if isinstance(body, bytes) else client.post(url, json=body)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["param"] == param and param.split(".")[0].split("[")[0] in err["message"]
    if status == 400 and "context" in err["message"]:
        assert str(CONTEXT) in err["message"]
    assert client.get("/health").json()["status"] == "ok"  # nobody else was harmed


@pytest.mark.parametrize("url, body", [
    ("/v1/completions", {"prompt": "AAPL", "max_tokens": 3, "n": None, "stream": None, "echo": False, "logprobs": False,
                         "best_of": 1, "suffix": None, "logit_bias": {}, "user": "u", "seed": None}),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 3, "n": None, "stream": None, "logprobs": False,
                              "stream_options": None, "response_format": {"type": "text"}, "user": None,
                              "logit_bias": None, "tool_choice": "auto",
                              "tools": [{"type": "function", "function": {"name": "f"}}]}),
])
def test_null_and_default_values_of_openai_fields_are_accepted(client, url, body):
    """OpenAI takes null (or the default) for every optional field; a typed client sends them so."""
    resp = client.post(url, json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_unknown_model_route_and_left_truncation(client):
    assert client.get("/v1/models/gpt-4o").status_code == 404
    resp = client.post("/v1/completions", json={"prompt": "x " * 200, "max_tokens": 8, "truncate_prompt": True,
                                                 "temperature": 0})
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["prompt_tokens"] == CONTEXT - 8


def test_ready_waits_for_the_decoding_step_and_reports_its_failure(make_client, monkeypatch):
    """With --cuda-graph (--compile) the engine prepares its step after the port opens: /health is 200
    (alive) while /ready is 503 "starting"; a request sent meanwhile waits and is answered; a step that
    cannot be prepared keeps /ready at 503 with the reason, and a later step that works clears it."""
    import threading

    from tenali_model.serve.graph import StaticDecoder

    release, calls = threading.Event(), []
    real_warm = StaticDecoder.warm

    def slow_warm(self):
        calls.append(1)
        assert release.wait(30)
        return real_warm(self)

    monkeypatch.setattr(StaticDecoder, "warm", slow_warm)
    c = make_client(cuda_graph=True)
    assert c.get("/health").status_code == 200 and c.get("/health").json()["status"] == "starting"
    r = c.get("/ready")
    assert r.status_code == 503 and r.json() == {"ready": False, "status": "starting"}
    answer = []
    t = threading.Thread(target=lambda: answer.append(c.post("/v1/completions", json={"prompt": "AAPL", "max_tokens": 3})))
    t.start()
    engine = c.app.state.engine
    wait_until(lambda: engine.queue_depth == 1 or answer, "the request reached the engine")
    assert not answer and engine.queue_depth == 1  # queued behind the preparation, not refused
    release.set()
    t.join(60)
    assert answer[0].status_code == 200 and answer[0].json()["usage"]["completion_tokens"] > 0
    assert c.get("/ready").json() == {"ready": True, "status": "ok"}

    def failing_warm(self):
        raise RuntimeError("CUDA graph capture failed")

    monkeypatch.setattr(StaticDecoder, "warm", failing_warm)
    c = make_client(cuda_graph=True)
    deadline = time.monotonic() + 60
    while c.get("/ready").json()["status"] == "starting" and time.monotonic() < deadline:
        time.sleep(0.01)
    r = c.get("/ready")
    assert r.status_code == 503
    assert r.json()["status"] == "preparing the decoding step failed: RuntimeError: CUDA graph capture failed"
    assert c.get("/health").status_code == 200  # alive: a restart would not help, the reason is shown
    # the step itself retries (eagerly here) and, when it works, the engine is ready after all
    assert c.post("/v1/completions", json={"prompt": "AAPL", "max_tokens": 2}).status_code == 200
    assert c.get("/ready").status_code == 200


def test_api_key_from_the_environment(make_client, monkeypatch):
    monkeypatch.setenv("TENALI_API_KEY", "s3cret-key")
    c = make_client(api_key=None)
    assert c.get("/v1/models").status_code == 401
    assert c.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
    assert c.get("/health").status_code == 200
    assert "s3cret-key" not in c.get("/info").text + c.get("/metrics").text


def test_cors_only_when_configured(make_client):
    plain = make_client()
    assert "access-control-allow-origin" not in plain.get("/v1/models", headers={"Origin": "https://x.test"}).headers
    open_ = make_client(cors_origins=["https://x.test"])
    r = open_.options("/v1/chat/completions", headers={"Origin": "https://x.test", "Access-Control-Request-Method": "POST"})
    assert r.headers["access-control-allow-origin"] == "https://x.test"


def test_queue_full_answers_429_with_retry_after(make_client, monkeypatch):
    from tenali_model.serve.engine import SamplingParams

    StepGate(monkeypatch)  # the running request keeps the only slot (and the other its place) until cancelled
    c = make_client(max_batch=1, max_queue=1)
    engine = c.app.state.engine
    long = SamplingParams(max_tokens=100, temperature=0)
    running = engine.submit([1, 2, 3], long)
    next(running.events(timeout=60))
    waiting = engine.submit([4], long)
    resp = c.post("/v1/completions", json={"prompt": "AAPL", "max_tokens": 4})
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    assert resp.json()["error"]["type"] == "rate_limit_error"
    waiting.cancel()
    running.cancel()
    assert "tenali_rejected_requests_total 1.0" in c.get("/metrics").text


@pytest.mark.parametrize("seed, status", [(2**64 - 1, 200), (-2**63, 200), (2**64, 422), (-2**63 - 1, 422), (10**30, 422)])
def test_a_seed_outside_int64_and_uint64_is_refused_naming_the_field(client, seed, status):
    for stream in (False, True):
        resp = client.post("/v1/completions", json={"prompt": "AAPL", "max_tokens": 2, "seed": seed, "stream": stream})
        assert resp.status_code == status, resp.text
        if status == 422:
            assert resp.json()["error"]["param"] == "seed" and "seed" in resp.json()["error"]["message"]


def test_a_tiny_temperature_answers_greedily(client):
    """The API takes any temperature >= 0; one below 1e-5 is greedy (as in vLLM), not a NaN softmax."""
    body = {"prompt": "Treasury yields", "max_tokens": 12, "stop_token_ids": []}
    greedy = client.post("/v1/completions", json={**body, "temperature": 0}).json()["choices"][0]["text"]
    for t in (1e-39, 1e-44):
        resp = client.post("/v1/completions", json={**body, "temperature": t})
        assert resp.status_code == 200, resp.text
        assert resp.json()["choices"][0]["text"] == greedy


def test_unknown_routes_and_methods_answer_in_openais_error_shape(client):
    for resp, status in ((client.get("/nope"), 404), (client.get("/v1/completions"), 405)):
        assert resp.status_code == status
        assert resp.json()["error"]["type"] == "invalid_request_error" and resp.json()["error"]["message"]


def test_cors_preflight_allows_the_api_key_header_and_the_openai_sdks_headers(make_client):
    c = make_client(cors_origins=["https://x.test"], api_key="k")
    for headers in ("authorization,content-type", "x-api-key,content-type",
                    "authorization,content-type,x-stainless-lang,x-stainless-os,x-stainless-retry-count"):
        r = c.options("/v1/chat/completions", headers={"Origin": "https://x.test", "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": headers})
        assert r.status_code == 200, (headers, r.text)
        assert r.headers["access-control-allow-origin"] == "https://x.test"
    assert c.get("/v1/models", headers={"x-api-key": "k"}).status_code == 200


def test_a_stream_that_times_out_before_its_first_token_answers_503(make_client, monkeypatch):
    """As a whole answer does: not a 200 stream with finish_reason "length" and no text."""
    from tenali_model.serve.engine import SamplingParams

    # The hog keeps the only slot until cancelled (its steps wait, but for the engine to end a request
    # whose time ran out): it cannot finish while the two requests below wait their 0.3 s.
    StepGate(monkeypatch)
    c = make_client(max_batch=1, request_timeout=0.3)
    hog = c.app.state.engine.submit([1, 2, 3], SamplingParams(max_tokens=100, temperature=0), timeout=600)
    next(hog.events(timeout=60))  # it holds the only slot
    body = {"messages": CHAT, "max_tokens": 5}
    whole = c.post("/v1/chat/completions", json=body)
    with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        r.read()
        streamed = r
    hog.cancel()
    assert whole.status_code == streamed.status_code == 503
    assert streamed.json()["error"] == whole.json()["error"] and "time limit" in whole.json()["error"]["message"]
    assert int(streamed.headers["Retry-After"]) >= 1
    assert 'tenali_finished_generations_total{reason="time_limit"} 2.0' in c.get("/metrics").text


def test_a_stopped_engine_answers_503_and_a_stream_cut_by_shutdown_ends_with_an_error(make_client, served, monkeypatch):
    import threading

    from tenali_model.tokenizer import EOT

    # the answer is still under way when the engine stops: once it shows text its steps wait for the stop
    StepGate(monkeypatch, pass_while=no_text_yet(served.tokenizer))
    never_sample(monkeypatch, served.tokenizer.token_id(EOT))  # nor does its first token end it
    c = make_client()
    engine = c.app.state.engine
    body = {"prompt": "The curve", "max_tokens": 100, "temperature": 0, "stop_token_ids": [], "stream": True}
    with c.stream("POST", "/v1/completions", json=body) as r:
        lines = r.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        threading.Thread(target=engine.stop).start()  # the server shutting down mid-answer
        rest = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    assert rest[-1] == "[DONE]"
    last = json.loads(rest[-2])
    assert last["error"]["type"] == "server_error" and "shutting down" in last["error"]["message"]
    wait_until(lambda: not engine.alive, "the engine's thread ended")
    resp = c.post("/v1/completions", json={"prompt": "AAPL", "max_tokens": 2})
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "engine_stopped"
    with c.stream("POST", "/v1/completions", json={"prompt": "AAPL", "max_tokens": 2, "stream": True}) as r:
        assert r.status_code == 503


@contextlib.contextmanager
def _emitting(served, piece: str):
    """The served model makes `piece` its greedy choice at every step (a hook on its head)."""
    token = served.tokenizer.special(piece)

    def favour(module, args, out):
        out[..., token] += 1e4
        return out

    hook = served.model.lm_head.register_forward_hook(favour)
    try:
        yield
    finally:
        hook.remove()


@pytest.mark.parametrize("url, body", [("/v1/completions", {"prompt": "AAPL"}),
                                       ("/v1/chat/completions", {"messages": CHAT})])
@pytest.mark.parametrize("stream", [False, True])
def test_special_pieces_are_never_answer_text(client, served, url, body, stream):
    """A model that emits "<|pad|>" (a tiny or half-trained one does): the tokens count, the text
    does not show the marker, as vLLM's skip_special_tokens does."""
    from tenali_model.tokenizer import PAD

    with _emitting(served, PAD):
        resp = client.post(url, json={**body, "max_tokens": 3, "temperature": 0, "stream": stream,
                                      "stream_options": {"include_usage": True} if stream else None})
    assert resp.status_code == 200, resp.text
    if stream:
        chunks = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: {")]
        text = "".join((c["choices"][0].get("text") or (c["choices"][0].get("delta") or {}).get("content") or "")
                       for c in chunks if c["choices"])
        usage = chunks[-1]["usage"]
    else:
        answer = resp.json()
        choice = answer["choices"][0]
        text, usage = choice.get("text", (choice.get("message") or {}).get("content")), answer["usage"]
    assert PAD not in text and text == ""
    assert usage["completion_tokens"] == 3


def test_another_assistant_marker_ends_a_chat_answer(client, served):
    from tenali_model.tokenizer import ASSISTANT

    with _emitting(served, ASSISTANT):
        resp = client.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": 5, "temperature": 0})
    answer = resp.json()
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["choices"][0]["message"]["content"] == ""
    assert answer["usage"]["completion_tokens"] == 1


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("finish", ["error", "cancelled"])
def test_text_that_arrives_with_an_error_is_still_streamed(chat, finish):
    """Tokens collected in one chunk, then the request fails (or the server shuts down): the text goes
    out before the error chunk instead of being dropped with it."""
    import asyncio

    from tenali_model.serve.app import _sse

    async def pieces():
        yield "Apple", None, 1, None
        yield " closed at", finish, 3, "boom"

    async def collect():
        return [c async for c in _sse(pieces(), "id", 0, "m", chat, True, lambda n: {"completion_tokens": n}, None)]

    events = [json.loads(c[6:]) for c in asyncio.run(collect()) if c.startswith("data: {")]
    texts = [(e["choices"][0]["delta"].get("content") if chat else e["choices"][0]["text"])
             for e in events if e.get("choices")]
    assert "".join(t or "" for t in texts) == "Apple closed at"
    assert "error" in events[-2] and events[-1]["usage"] == {"completion_tokens": 3}


def test_info_answers_when_the_release_figures_hold_nan(make_client, served, monkeypatch):
    """A release whose evaluation recorded NaN (a skipped figure) is served; /info gives it as null
    instead of failing with 500 (JSON has no NaN), so the chat page still shows the model."""
    monkeypatch.setattr(served, "release", {"evaluation": {"bits_per_byte": 1.2, "grounded_accuracy": float("nan"),
                                                           "per_domain": [float("inf"), 2.0]}})
    r = make_client().get("/info")
    assert r.status_code == 200, r.text
    assert r.json()["release"]["evaluation"] == {"bits_per_byte": 1.2, "grounded_accuracy": None,
                                                 "per_domain": [None, 2.0]}
