"""The chat page in a real headless browser (Debian's chromium driven by Playwright): stream, then stop;
refused requests, cut streams, long conversations, New chat mid-answer, unreadable fields."""

import contextlib
import json
from pathlib import Path

import pytest

from ts_helpers import LiveServer, StepGate, chat_page, never_sample, no_text_yet, wait_until

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="no browser: /usr/bin/chromium is missing (apt-get install chromium; .ci/run does)")


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


def test_the_page_streams_an_answer_and_stops_one(served, browser, monkeypatch):
    from tenali_model.serve.app import ServeOptions, create_app
    from tenali_model.tokenizer import EOT

    # served is the session's model: the release is put back after this test
    monkeypatch.setattr(served, "release", {"created": "2026-11-22", "evaluation": {"bits_per_byte": 1.2345, "val_loss": 2.5}})
    # An untrained model may end an answer at once; here answers run to max_tokens, so the stop button has work.
    monkeypatch.setattr("tenali_model.serve.app.stop_ids", lambda tok: [])
    never_sample(monkeypatch, served.tokenizer.token_id(EOT))
    app = create_app(served, ServeOptions(max_batch=2, api_key=""))
    with LiveServer(app) as server:
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('model-name').textContent === 'tenali-test'")
        assert "bits_per_byte" in page.inner_text("#eval-table") and "1.2345" in page.inner_text("#eval-table")
        # 1. a streamed answer
        page.fill("#max_tokens", "24")
        page.fill("#prompt", "What did Apple close at?")
        page.click("#send")
        page.wait_for_selector(".assistant[data-state=done]", timeout=60_000)
        answer = page.locator(".assistant").first
        assert "finish:" in answer.inner_text()
        assert page.locator(".user").first.inner_text() == "What did Apple close at?"
        # 2. an answer stopped mid-way frees its slot (once it shows text its steps wait for the stop: it
        # cannot end first)
        StepGate(monkeypatch, pass_while=no_text_yet(served.tokenizer))
        page.fill("#max_tokens", "100")
        page.fill("#prompt", "And the 10-year yield?")
        page.click("#send")
        page.wait_for_function("document.querySelectorAll('.assistant')[1].textContent.length > 0", timeout=60_000)
        assert app.state.engine.active == 1
        page.click("#stop")
        page.wait_for_selector(".assistant[data-state=stopped]", timeout=60_000)
        wait_until(lambda: not app.state.engine.active, "the stopped answer's slot freed")
        assert app.state.engine.active == 0
        assert page.inner_text("#error") == ""
        page.close()


# --- the page's failure paths and limits --------------------------------------------------------------


@contextlib.contextmanager
def _chat_page(served, browser, **options):
    """(page, app, posted chat bodies) for a live app with these ServeOptions, the page loaded."""
    posted = []

    def listen(page):
        page.on("request", lambda r: posted.append(r.post_data_json) if r.url.endswith("/v1/chat/completions") else None)

    with chat_page(served, browser, before_load=listen, **options) as (page, app, _):
        yield page, app, posted


def _ask(page, text, state="done"):
    """Send text; wait for its answer (the new last one) to reach state."""
    n = page.locator(".assistant").count()
    page.fill("#prompt", text)
    page.click("#send")
    page.wait_for_function(f"(() => {{ const a = document.querySelectorAll('.assistant'); "
                           f"return a.length > {n} && a[{n}].dataset.state === '{state}'; }})()", timeout=60_000)


def test_the_default_max_tokens_fits_a_small_context(served, browser):
    # The demo model's context is 128 tokens, as here: a max_tokens of 128 is refused (400) by the server.
    with _chat_page(served, browser) as (page, app, posted):
        assert int(page.input_value("#max_tokens")) < app.state.engine.max_len
        _ask(page, "What did Apple close at?")
        assert page.inner_text("#error") == ""


def test_a_refused_request_gives_the_prompt_back_and_leaves_no_turn_behind(served, browser):
    with _chat_page(served, browser, api_key="sekret") as (page, app, posted):
        page.fill("#max_tokens", "8")
        page.fill("#prompt", "What did Apple close at?")
        page.click("#send")
        page.wait_for_function("document.getElementById('error').textContent.includes('401')", timeout=60_000)
        page.wait_for_selector("#send:not([disabled])", timeout=60_000)
        assert page.locator(".msg").count() == 0  # the refused turn is not shown as part of the chat
        # the text is back in the box, to send again once the key is in
        assert page.input_value("#prompt") == "What did Apple close at?"
        page.fill("#apikey", "sekret")
        page.click("#send")
        page.wait_for_selector(".assistant[data-state=done]", timeout=60_000)
        assert page.inner_text("#error") == ""
        # the retry is the whole conversation: one user turn, not the failed one as well
        assert posted[-1]["messages"] == [{"role": "user", "content": "What did Apple close at?"}]


def test_new_chat_during_an_answer_starts_an_empty_conversation(served, browser, monkeypatch):
    from tenali_model.tokenizer import EOT

    # the first answer is still under way at "New chat": once it shows text its steps wait (but for its
    # cancellation)
    gate = StepGate(monkeypatch, pass_while=no_text_yet(served.tokenizer))
    never_sample(monkeypatch, served.tokenizer.token_id(EOT))
    monkeypatch.setattr("tenali_model.serve.app.stop_ids", lambda tok: [])
    with _chat_page(served, browser) as (page, app, posted):
        page.fill("#max_tokens", "100")
        page.fill("#prompt", "And the 10-year yield?")
        page.click("#send")
        page.wait_for_function("document.querySelectorAll('.assistant')[0].textContent.length > 0", timeout=60_000)
        assert app.state.engine.active == 1
        page.click("#clear")
        page.wait_for_selector("#send:not([disabled])", timeout=60_000)
        gate.open()
        page.fill("#max_tokens", "4")
        _ask(page, "Hello")
        assert posted[-1]["messages"] == [{"role": "user", "content": "Hello"}]
        assert page.locator(".msg").count() == 2


def test_a_long_conversation_drops_its_oldest_turns_and_keeps_the_system_message(served, browser):
    from tenali_model.tokenizer import SYSTEM

    system_id = served.tokenizer.token_id(SYSTEM)
    with _chat_page(served, browser) as (page, app, posted):
        prompts = []
        engine = app.state.engine
        submit = engine.submit
        engine.submit = lambda prompt, params, **k: (prompts.append(list(prompt)), submit(prompt, params, **k))[1]
        page.fill("#system", "Answer briefly.")
        page.fill("#max_tokens", "16")
        question = "What did the shares of Apple and Microsoft close at on Friday, and why did they move?"
        for i in range(4):
            _ask(page, f"{i}. {question}")
            assert page.inner_text("#error") == ""
        assert len(prompts) >= 4
        # every prompt the model saw starts with the system message, none with the middle of a turn
        assert all(p[0] == system_id for p in prompts), [p[:3] for p in prompts]
        # and the oldest turns did go: the last request does not carry the first question
        assert "0. " + question not in json.dumps(posted[-1]["messages"])
        assert posted[-1]["messages"][0] == {"role": "system", "content": "Answer briefly."}
        assert posted[-1]["messages"][-1] == {"role": "user", "content": f"3. {question}"}


def test_an_unreadable_sampling_field_is_reported_not_replaced_by_the_default(served, browser):
    with _chat_page(served, browser) as (page, app, posted):
        page.fill("#temperature", "")
        page.click("#temperature")
        page.keyboard.type("1e")  # half an exponent: the input's value reads ""
        page.fill("#prompt", "What did Apple close at?")
        page.click("#send")
        page.wait_for_function("document.getElementById('error').textContent.includes('temperature')",
                               timeout=60_000)
        assert posted == []
        assert page.input_value("#prompt") == "What did Apple close at?"


def test_enter_that_confirms_an_input_method_composition_does_not_send(served, browser):
    with _chat_page(served, browser) as (page, app, posted):
        page.fill("#prompt", "東京")
        page.evaluate("""document.getElementById('prompt').dispatchEvent(new KeyboardEvent('keydown',
            {key: 'Enter', isComposing: true, bubbles: true, cancelable: true}))""")
        page.wait_for_timeout(300)
        assert page.locator(".msg").count() == 0 and posted == []


def test_a_stream_cut_before_its_end_is_an_error_not_a_finished_answer(served, browser):
    def chunk(content):
        return "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]})

    with _chat_page(served, browser) as (page, app, posted):
        # two events in one read, the third split across nothing: the connection closes without [DONE]
        page.route("**/v1/chat/completions", lambda route: route.fulfill(
            status=200, content_type="text/event-stream", body=chunk("Hel") + "\n\n" + chunk("lo") + "\n\n"))
        _ask(page, "What did Apple close at?", state="error")
        assert page.locator(".assistant").first.inner_text().startswith("Hello")
        assert "ended" in page.inner_text("#error")


def test_a_narrow_screen_gets_one_column_with_the_buttons_in_view_and_no_404(served, browser):
    # At 400 px the wide two-column grid (conversation | 300 px sidebar) left the conversation ~80 px
    # wide and pushed "New chat" off screen; the page also asked for /favicon.ico, which is a 404.
    from tenali_model.serve.app import ServeOptions, create_app

    app = create_app(served, ServeOptions(max_batch=2, api_key=""))
    with LiveServer(app) as server:
        page = browser.new_page(viewport={"width": 400, "height": 800})
        missing = []
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('model-name').textContent === 'tenali-test'")
        page.wait_for_load_state("networkidle")
        width, height = 400, 800
        log = page.locator("#log").bounding_box()
        assert log["width"] >= 300, log
        assert log["x"] >= 0 and log["x"] + log["width"] <= width + 0.5, log
        for sel in ("#send", "#stop", "#clear", "#prompt"):
            box = page.locator(sel).bounding_box()
            assert box is not None, sel
            assert box["x"] >= 0 and box["y"] >= 0, (sel, box)
            assert box["x"] + box["width"] <= width + 0.5 and box["y"] + box["height"] <= height + 0.5, (sel, box)
        # nothing wider than the screen: no sideways scrolling
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        # the settings and model information are still there, below the conversation, not beside it
        aside = page.locator("aside").bounding_box()
        assert aside["y"] >= log["y"] + log["height"] and aside["width"] >= 300, aside
        assert "vocab_size" in page.inner_text("#model-table")
        # headless chromium asks for no favicon, so a 404 would not show here: the page must name its icon
        assert page.locator("head link[rel~=icon]").count() == 1
        assert missing == [], missing
        page.close()
