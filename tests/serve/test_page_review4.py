"""`tenali serve` and the chat page as a person meets them: ports, hosts, Ctrl-C during an answer; the
page in a real headless browser (long conversations, reading while an answer streams, a server that
goes away, a 401, an /info without some fields)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ts_helpers import LiveServer, StepGate, chat_page, free_port, never_sample, no_text_yet, served_port, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def never_served(monkeypatch):
    """Serving (old or new way) fails the test instead of running a server for ever."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("served"))
    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("served"))


@pytest.mark.parametrize("flag, value, says", [
    ("--port", "70000", "must be a TCP port, 1 to 65535"), ("--port", "-5", "must be a TCP port, 1 to 65535"),
    ("--log-level", "verbose", "invalid choice: 'verbose'"),
])
def test_serve_refuses_a_port_or_log_level_that_cannot_serve(ckpt, tok_path, capsys, never_served, flag, value, says):
    """--port 70000 served on port 4464 (70000 modulo 65536) under a banner naming 70000; --port -5 and
    --log-level verbose failed only after the model had loaded ("Unable to configure logger 'tenali'")."""
    from tenali_model.cli import main

    assert main(["serve", str(ckpt), "--tokenizer", str(tok_path), "--device", "cpu", flag, value]) == 2
    assert f"argument {flag}: {says}" in capsys.readouterr().err


def test_a_port_in_use_is_refused_before_the_model_loads(ckpt, tok_path, capsys, monkeypatch, never_served):
    """A port in use was found only after the model had loaded (minutes for a large one), under a
    "Serving ... on http://..." banner, and ended in uvicorn's exit 3."""
    import tenali_model.serve.loading as loading

    from tenali_model.cli import main

    monkeypatch.setattr(loading, "load_served", lambda *a, **k: pytest.fail("loaded the model first"))
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        assert main(["serve", str(ckpt), "--tokenizer", str(tok_path), "--device", "cpu",
                     "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} is in use" in err and "--port" in err
    assert main(["serve", str(ckpt), "--device", "cpu", "--host", "nosuch.invalid", "--port", str(free_port())]) == 2
    assert "cannot listen on nosuch.invalid" in capsys.readouterr().err


def test_serving_every_interface_without_an_api_key_is_warned(ckpt, tok_path, capsys, monkeypatch):
    import uvicorn

    from tenali_model.cli import main

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: None)
    argv = ["serve", str(ckpt), "--tokenizer", str(tok_path), "--device", "cpu", "--port", "0"]
    monkeypatch.delenv("TENALI_API_KEY", raising=False)
    assert main(argv + ["--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert "warning: --host 0.0.0.0" in err and "TENALI_API_KEY" in err
    assert main(argv + ["--host", "127.0.0.1"]) == 0
    assert "warning" not in capsys.readouterr().err
    monkeypatch.setenv("TENALI_API_KEY", "sekret")
    assert main(argv + ["--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert "warning" not in err and "sekret" not in err


def test_port_0_serves_on_a_free_port_that_the_banner_names(ckpt, tok_path, capsys, monkeypatch):
    """--port 0 was refused ("must be a TCP port, 1 to 65535"): a script (these tests too) that wanted a
    throwaway server picked a free port and passed it on, and another process could take it meanwhile."""
    import uvicorn

    from tenali_model.cli import main

    ran = []
    monkeypatch.setattr(uvicorn.Server, "run",
                        lambda self, sockets=None: ran.append((self.config.port, sockets[0].getsockname()[1])))
    assert main(["serve", str(ckpt), "--tokenizer", str(tok_path), "--device", "cpu", "--port", "0"]) == 0
    [(config_port, bound)] = ran
    assert bound != 0 and config_port == bound
    assert f" on http://127.0.0.1:{bound} " in capsys.readouterr().out


# `tenali serve` in a process of its own whose answers do not end by themselves: no stop tokens, no end
# of text, and after a few tokens each decoding step waits until the engine is told to stop (slow steps
# only made that likely: a loaded machine let an answer run to max_tokens before the Ctrl-C landed).
_SLOW_SERVER = """
import sys, time
import tenali_model.serve as serve, tenali_model.serve.app as app, tenali_model.serve.engine as eng
from tenali_model.tokenizer import EOT, load_tokenizer
serve.SHUTDOWN_GRACE = float(sys.argv[1])
eot = load_tokenizer(sys.argv[2]).token_id(EOT)
real_limit, real_step = eng.Engine._limit, eng.Engine._step
def limit(self, logits):
    logits = real_limit(self, logits)
    logits[:, eot] = float("-inf")
    return logits
def step(self):
    give_up = time.monotonic() + 120
    while self.steps >= 3 and not self._stop and time.monotonic() < give_up:
        time.sleep(0.01)
    real_step(self)
eng.Engine._limit, eng.Engine._step = limit, step
app.stop_ids = lambda tok: []
from tenali_model.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        pass
    return False


@pytest.mark.parametrize("grace, interrupts", [(0.5, 1), (600, 2)])
def test_ctrl_c_during_an_answer_ends_it_cleanly(ckpt, tok_path, tmp_path, grace, interrupts):
    """Ctrl-C waited for every answer in progress to run to its end (up to --request-timeout); a second
    Ctrl-C then cut the streams without "data: [DONE]" and printed CancelledError tracebacks. Now the
    answers get a grace period (none after a second Ctrl-C), then end with an error chunk and [DONE]."""
    import http.client

    stdout = tmp_path / "stdout"
    with stdout.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SLOW_SERVER, str(grace), str(tok_path), "serve", str(ckpt), "--tokenizer",
             str(tok_path), "--device", "cpu", "--port", "0", "--threads", "1"],
            cwd=REPO_ROOT, stdout=out, stderr=subprocess.PIPE, text=True)
    try:
        port = served_port(proc, stdout)  # printed before uvicorn listens: a refused connection is retried
        deadline = time.time() + 180
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.2)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=180)
        conn.request("POST", "/v1/chat/completions", json.dumps(
            {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 120, "seed": 1}),
            {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.readline().startswith(b"data:")  # the answer is under way
        proc.send_signal(signal.SIGINT)
        if interrupts == 2:
            # A second SIGINT sent before the server handled the first merges with it (one pending
            # signal): wait for the shutdown to begin (the listening socket closed), then send it.
            wait_until(lambda: _refused(port), "the server began shutting down", seconds=120)
            proc.send_signal(signal.SIGINT)
        body = resp.read().decode()
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    events = [line[6:] for line in body.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]", body[-500:]
    assert "the server is shutting down" in json.loads(events[-2])["error"]["message"]
    assert '"finish_reason": "length"' not in body  # it did not run on to max_tokens
    assert proc.returncode == 0 and "Traceback" not in err, err


# --- the chat page in a headless browser ------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
needs_browser = pytest.mark.skipif(not CHROMIUM.exists(), reason="no browser: /usr/bin/chromium is missing")


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def slow(monkeypatch, served):
    """{"s": seconds each decoding step sleeps}; answers run to max_tokens: no turn markers stop them, and
    the untrained model's end of text (1 in ~600 tokens) is never sampled, the first token included."""
    import tenali_model.serve.engine as eng
    from tenali_model.tokenizer import EOT

    real, delay = eng.decode_slots, {"s": 0.0}

    def decode(*a, **k):
        time.sleep(delay["s"])
        return real(*a, **k)

    monkeypatch.setattr(eng, "decode_slots", decode)
    never_sample(monkeypatch, served.tokenizer.token_id(EOT))
    monkeypatch.setattr("tenali_model.serve.app.stop_ids", lambda tok: [])
    return delay


def _page(served, browser, viewport=None, **options):
    """(page, app, server), the page loaded in a 1200 x 700 window unless `viewport` says otherwise."""
    return chat_page(served, browser, viewport=viewport or {"width": 1200, "height": 700}, **options)


def _answer(page, text, states=("done",)):
    n = page.locator(".assistant").count()
    page.fill("#prompt", text)
    page.click("#send")
    page.wait_for_function(f"(() => {{ const a = document.querySelectorAll('.assistant')[{n}]; "
                           f"return a && {json.dumps(list(states))}.includes(a.dataset.state); }})()", timeout=60_000)


@needs_browser
def test_a_long_conversation_scrolls_in_the_log_and_leaves_a_reader_where_they_are(served, browser, slow, monkeypatch):
    """The page grew with the conversation (the grid row took the log's height), so the box and its
    buttons went below the screen; and each streamed chunk pulled a reader who had scrolled up back down."""
    with _page(served, browser) as (page, app, server):
        page.fill("#max_tokens", "100")
        for i in range(4):
            _answer(page, f"{i}. What did the shares of Apple and Microsoft close at on Friday, and why?")
        assert page.evaluate("document.getElementById('log').scrollHeight > document.getElementById('log').clientHeight")
        assert page.evaluate("document.documentElement.scrollHeight") <= 700
        box = page.locator("#form").bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= 700, box
        # at the end, the log follows a new answer; scrolled up, it stays put while the answer streams on
        slow["s"] = 0.05
        # once it shows text (a few tokens), 60 more of its 100 after the scroll; then it waits for the stop
        gate = StepGate(monkeypatch, pass_while=no_text_yet(served.tokenizer))
        page.fill("#prompt", "And the 10-year yield?")
        page.click("#send")
        page.wait_for_function("document.querySelectorAll('.assistant')[4].textContent.length > 0", timeout=60_000)
        page.evaluate("document.getElementById('log').scrollTop = 0")
        shown = page.evaluate("document.querySelectorAll('.assistant')[4].textContent.length")
        gate.allow(60)
        page.wait_for_function(f"document.querySelectorAll('.assistant')[4].textContent.length > {shown} + 20",
                               timeout=60_000)
        assert page.evaluate("document.getElementById('log').scrollTop") == 0
        page.click("#stop")
        page.wait_for_selector(".assistant[data-state=stopped]", timeout=60_000)


@needs_browser
def test_a_server_that_goes_away_and_comes_back(served, browser, slow, monkeypatch):
    """Were "network error" and "Failed to fetch": neither said the server was gone, nor what to do."""
    # the answer is still streaming when the server goes (once it shows text its steps wait until the
    # engine stops): the server's 2 s of grace end with the stream cut, not with the answer finished
    gate = StepGate(monkeypatch, pass_while=no_text_yet(served.tokenizer))
    with _page(served, browser) as (page, app, server):
        page.fill("#max_tokens", "100")
        page.fill("#prompt", "What did Apple close at?")
        page.click("#send")
        page.wait_for_function("document.querySelectorAll('.assistant')[0].textContent.length > 0", timeout=60_000)
        server.__exit__(None, None, None)
        page.wait_for_selector(".assistant[data-state=error]", timeout=60_000)
        assert "connection to the server was lost" in page.inner_text("#error")
        page.fill("#prompt", "Hello again")
        page.click("#send")
        page.wait_for_function("document.getElementById('error').textContent.includes('could not reach the server')",
                               timeout=60_000)
        assert page.input_value("#prompt") == "Hello again"  # kept, to send once the server is back
        gate.open()
        with LiveServer(app, port=server.port):
            page.fill("#max_tokens", "4")
            page.click("#send")
            page.wait_for_function("document.querySelectorAll('.assistant')[1]?.dataset.state === 'done'",
                                   timeout=60_000)
            assert page.inner_text("#error") == ""


@needs_browser
def test_a_401_sends_the_reader_to_the_key_field_and_the_key_stays_in_it(served, browser):
    with _page(served, browser, api_key="sekret") as (page, app, server):
        assert page.get_attribute("#apikey", "placeholder") == "required"
        page.fill("#max_tokens", "4")
        page.fill("#prompt", "What did Apple close at?")
        page.click("#send")
        page.wait_for_function("document.getElementById('error').textContent.includes('401')", timeout=60_000)
        assert '"API key" field' in page.inner_text("#error")
        assert page.evaluate("document.activeElement.id") == "apikey"
        page.keyboard.type("sekret")
        page.click("#send")
        page.wait_for_selector(".assistant[data-state=done]", timeout=60_000)
        # the key goes in the header only: never in the address or the browser's storage
        assert "sekret" not in page.url
        assert page.evaluate("JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie") \
            .count("sekret") == 0


@needs_browser
def test_keyboard_use_keeps_the_focus_and_right_to_left_text_reads_right_to_left(served, browser, slow, monkeypatch):
    """Stop pressed from the keyboard dropped the focus to the page's start (the button it was on became
    disabled); an Arabic question was laid out left to right."""
    # the answer is still under way (Stop enabled) until it is stopped: once it shows text its steps wait
    StepGate(monkeypatch, pass_while=no_text_yet(served.tokenizer))
    with _page(served, browser) as (page, app, server):
        page.fill("#max_tokens", "100")
        page.focus("#prompt")
        page.keyboard.type("ما هو سعر سهم أبل؟")
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelectorAll('.assistant')[0]?.textContent.length > 0", timeout=60_000)
        assert page.evaluate("getComputedStyle(document.querySelector('.user')).direction") == "rtl"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "stop"
        page.keyboard.press("Enter")
        page.wait_for_selector(".assistant[data-state=stopped]", timeout=60_000)
        assert page.evaluate("document.activeElement.id") == "prompt"


@needs_browser
def test_info_without_some_fields_still_shows_the_rest(served, browser):
    """An /info without architecture (an older or another server) stopped the panel with "could not
    load /info: TypeError", and one without parameters read "NaNM parameters"; an evaluation whose
    figures are all null (NaN on the server) left an empty table."""
    from tenali_model.serve.app import ServeOptions, create_app

    app = create_app(served, ServeOptions(max_batch=2, api_key=""))
    with LiveServer(app) as server:
        page = browser.new_page()
        page.route("**/info", lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(
            {"model": "tenali-test", "context": 128, "auth": True, "release": {"evaluation": {"bits_per_byte": None}}})))
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('model-name').textContent === 'tenali-test'")
        page.wait_for_function("document.getElementById('apikey').placeholder === 'required'", timeout=60_000)
        sub = page.inner_text("#model-sub")
        assert sub == "context 128 tokens", sub
        assert page.inner_text("#eval-table") == "no release figures"
        page.close()


def test_ctrl_c_while_the_model_loads_is_no_traceback(ckpt, tok_path):
    code = ("import sys, tenali_model.serve.loading as loading\n"
            "def load(*a, **k): raise KeyboardInterrupt\n"
            "loading.load_served = load\n"
            "from tenali_model.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code, "serve", str(ckpt), "--tokenizer", str(tok_path),
                           "--device", "cpu", "--port", "0"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "interrupted while loading the model" in proc.stderr, proc.stderr
    assert proc.returncode == 130
