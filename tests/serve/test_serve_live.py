"""A real uvicorn server on 127.0.0.1: the official openai client, a bounded load test, disconnects."""

import os
import threading
import time

import httpx
import pytest

from ts_helpers import LiveServer, StepGate, never_sample, no_text_yet, wait_until


@pytest.fixture
def live(served):
    from tenali_model.serve.app import ServeOptions, create_app

    app = create_app(served, ServeOptions(max_batch=4, max_queue=32, api_key=""))
    with LiveServer(app) as server:
        server.app = app
        yield server


def test_the_openai_client_works_unchanged(live):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    assert [m.id for m in client.models.list().data] == ["tenali-test"]
    chat = client.chat.completions.create(model="tenali-test", messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=12, temperature=0.7, seed=3)
    assert chat.choices[0].finish_reason in ("stop", "length") and chat.usage.completion_tokens > 0
    stream = client.chat.completions.create(model="tenali-test", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=12, temperature=0.7, seed=3, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == chat.choices[0].message.content
    comp = client.completions.create(model="tenali-test", prompt="AAPL rose", max_tokens=8, temperature=0,
                                     stop=["\n"])
    assert comp.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4o", prompt="x", max_tokens=2)
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model="tenali-test", prompt="x", max_tokens=2, temperature=9)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_bounded_load_no_5xx_no_lost_request_flat_memory(live):
    clients, seconds = 6, 1.5
    sent, done, bad = [0], [], []
    lock = threading.Lock()

    def worker(i):
        with httpx.Client(base_url=live.url, timeout=30) as c:
            end, n = time.time() + seconds, 0
            while n < 2 or time.time() < end:  # two at least, however slow the machine
                body = {"prompt": f"AAPL rose {i} {n}", "max_tokens": 6 + n % 10, "temperature": 0.8, "seed": n}
                with lock:
                    sent[0] += 1
                if n % 2:
                    with c.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
                        lines = list(r.iter_lines())
                        ok = r.status_code == 200 and lines[-2:] == ["data: [DONE]", ""] or lines[-1:] == ["data: [DONE]"]
                        status = r.status_code
                else:
                    r = c.post("/v1/completions", json=body)
                    status, ok = r.status_code, r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
                with lock:
                    done.append(status)
                    if not ok:
                        bad.append(status)
                n += 1

    def round_():
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)

    round_()  # warm up allocators and caches
    before = _rss_mb()
    round_()
    grown = _rss_mb() - before
    assert len(done) == sent[0] > 2 * clients, (len(done), sent[0])
    assert not bad and not [s for s in done if s >= 500]
    assert grown < 64, f"RSS grew by {grown:.0f} MB over a load round"
    h = httpx.get(live.url + "/health").json()
    assert h["active"] == 0 and h["queued"] == 0


def test_a_client_that_disconnects_frees_its_slot(live, served, monkeypatch):
    from tenali_model.tokenizer import EOT

    # The answers run until their client leaves: once they show text their steps wait but for a
    # cancellation, and no end of text ends them (a loaded machine let a 2 s answer finish before the
    # client went, uncancelled).
    StepGate(monkeypatch, pass_while=no_text_yet(served.tokenizer))
    never_sample(monkeypatch, served.tokenizer.token_id(EOT))
    engine = live.app.state.engine
    body = {"prompt": "The curve", "max_tokens": 100, "temperature": 0, "stream": True,
            "stop_token_ids": []}
    with httpx.Client(base_url=live.url, timeout=30) as c:
        with c.stream("POST", "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            assert engine.active == 1
        # leaving the block closes the connection mid-stream
    wait_until(lambda: not engine.active, "the slot of the client that left freed")
    assert engine.active == 0
    # counted as cancelled, not as an answer that stopped
    finished = 'tenali_finished_generations_total{reason="cancelled"} 1.0'
    wait_until(lambda: finished in httpx.get(live.url + "/metrics").text, "the cancelled answer counted")
    metrics = httpx.get(live.url + "/metrics").text
    assert finished in metrics and 'reason="stop"' not in metrics
    # the same for a non-streaming request that is abandoned
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(live.url + "/v1/completions", json={**body, "stream": False}, timeout=0.3)
    wait_until(lambda: not engine.active, "the slot of the abandoned request freed")
    assert engine.active == 0
    assert 'tenali_finished_generations_total{reason="cancelled"}' in httpx.get(live.url + "/metrics").text
