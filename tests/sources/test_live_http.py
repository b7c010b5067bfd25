"""The shared retry / rate-limit helpers used by every live collector."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tenali_pipeline.sources.http import (
    SEC_LIMITER,
    RateLimiter,
    RetriesExhausted,
    TransientError,
    limiter_for_url,
    rate_limited_session,
    redact,
    retry,
)


def flaky(failures: int, exc: Exception):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= failures:
            raise exc
        return "ok"

    return fn, calls


def test_retry_backs_off_exponentially_with_jitter():
    fn, calls = flaky(3, TransientError("429"))
    sleeps: list[float] = []

    assert retry(fn, attempts=5, base_delay=1.0, max_delay=3.0, sleep=sleeps.append) == "ok"

    assert len(calls) == 4 and len(sleeps) == 3
    for delay, cap in zip(sleeps, [1.0, 2.0, 3.0]):  # full jitter under 1, 2, 4->capped 3
        assert 0 <= delay <= cap


def test_retry_honours_retry_after_within_max_delay():
    sleeps: list[float] = []
    fn, _ = flaky(2, TransientError("slow down", retry_after=5))
    retry(fn, attempts=3, base_delay=0.01, max_delay=4.0, sleep=sleeps.append)
    assert sleeps == [4.0, 4.0]


def test_retry_does_not_retry_other_errors():
    fn, calls = flaky(1, KeyError("bad series"))
    with pytest.raises(KeyError):
        retry(fn, attempts=5, sleep=lambda s: None)
    assert len(calls) == 1


def test_retry_gives_up_naming_what_and_cause():
    fn, calls = flaky(10, ConnectionError("refused"))
    with pytest.raises(RetriesExhausted, match="FRED GDP still failing after 3 attempts: refused") as info:
        retry(fn, attempts=3, retry_on=(ConnectionError,), what="FRED GDP", sleep=lambda s: None)
    assert isinstance(info.value.__cause__, ConnectionError) and len(calls) == 3


def test_rate_limiter_spaces_calls_with_fake_clock():
    now = [100.0]
    slept: list[float] = []

    def sleep(s):
        slept.append(s)

    limiter = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.wait()
    assert slept == pytest.approx([0.1, 0.2])  # slots at t, t+0.1, t+0.2
    now[0] = 200.0
    slept.clear()
    limiter.wait()
    assert slept == []  # idle long enough: no wait, no burst credit either


def test_rate_limiter_is_thread_safe():
    limiter = RateLimiter(200)
    stamps: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(4):
            limiter.wait()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(5)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stamps) == 20
    assert max(stamps) - start >= 19 / 200 * 0.9  # 20 calls need 19 intervals


def test_limiter_for_url_and_session():
    assert limiter_for_url("https://www.sec.gov/cgi-bin/browse-edgar") is SEC_LIMITER
    assert limiter_for_url("https://data.sec.gov/submissions/x.json") is SEC_LIMITER
    assert limiter_for_url("https://notsec.gov.example.com/") is None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    waits = []

    class Counting(RateLimiter):
        def wait(self):
            waits.append(1)

    try:
        session = rate_limited_session(Counting(1))
        for _ in range(3):
            assert session.get(f"http://127.0.0.1:{server.server_port}/", timeout=5).text == "ok"
    finally:
        server.shutdown()
        server.server_close()
    assert len(waits) == 3


def test_redact():
    assert redact("url?api_key=SECRET&x=1", "SECRET", None, "") == "url?api_key=***&x=1"


def test_fetch_json_retries_a_body_cut_off_mid_transfer():
    """A connection that drops mid-body (Content-Length not met) raises requests' ChunkedEncodingError,
    which is neither a ConnectionError nor a Timeout: it must be retried like them, not escape the
    collectors' per-item handling and end the whole fetch with a traceback."""
    import requests
    from local_http import RawServer

    from tenali_pipeline.sources.http import fetch_json

    def answer(path: str) -> bytes:
        if len(server.asked) == 1:  # promises 100 bytes, sends 11, hangs up
            return b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prices": '
        return b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"a": 1}'

    sleeps: list[float] = []
    with RawServer(answer) as server:
        body = fetch_json(requests.Session(), f"{server.base}/x", site="Example",
                          off_setting="TENALI_SOURCES_OFF=example", sleep=sleeps.append, base_delay=0.01)
    assert body == {"a": 1}
    assert len(server.asked) == 2 and len(sleeps) == 1


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_fetch_json_waits_as_long_as_retry_after_says_in_either_form(form):
    """RFC 9110 allows Retry-After as delay-seconds or as an HTTP-date (as SEC's and CDNs' 429s send
    it); both must set the wait, not fall back to a short random backoff that asks again too soon."""
    from email.utils import format_datetime

    import requests
    from local_http import LocalServer

    from tenali_pipeline.sources.http import fetch_json

    when = (str(40) if form == "seconds" else
            format_datetime(datetime.now(timezone.utc) + timedelta(seconds=40), usegmt=True))
    answers = [(429, {"Retry-After": when}, b"Too Many Requests"), (200, {"Content-Type": "application/json"}, b"[1]")]
    sleeps: list[float] = []
    with LocalServer(lambda handler: answers.pop(0)) as server:
        body = fetch_json(requests.Session(), f"{server.base}/x", site="Example",
                          off_setting="TENALI_SOURCES_OFF=example", sleep=sleeps.append, base_delay=0.01)
    assert body == [1]
    assert len(sleeps) == 1 and 35 <= sleeps[0] <= 40


def test_retry_after_seconds_reads_both_forms_and_ignores_junk():
    from tenali_pipeline.sources.http import retry_after_seconds

    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # already past: no extra wait
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None and retry_after_seconds("") is None
