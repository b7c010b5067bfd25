"""The chat page in a real headless browser (Debian's chromium driven by Playwright): stream, then stop."""

import time
from pathlib import Path

import pytest

from ts_helpers import LiveServer

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
    import tenali_model.serve.engine as eng
    from tenali_model.serve.app import ServeOptions, create_app

    served.release = {"created": "2026-11-22", "evaluation": {"bits_per_byte": 1.2345, "val_loss": 2.5}}
    real = eng.decode_slots
    delay = {"s": 0.0}
    monkeypatch.setattr(eng, "decode_slots", lambda *a, **k: (time.sleep(delay["s"]), real(*a, **k))[1])
    # An untrained model may end an answer at once; here answers run to max_tokens, so the stop button has work.
    monkeypatch.setattr("tenali_model.serve.app.stop_ids", lambda tok: [])
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
        page.wait_for_selector(".assistant[data-state=done]", timeout=20_000)
        answer = page.locator(".assistant").first
        assert "finish:" in answer.inner_text()
        assert page.locator(".user").first.inner_text() == "What did Apple close at?"
        # 2. a slow answer stopped mid-way frees its slot
        delay["s"] = 0.05
        page.fill("#max_tokens", "100")
        page.fill("#prompt", "And the 10-year yield?")
        page.click("#send")
        page.wait_for_function("document.querySelectorAll('.assistant')[1].textContent.length > 0", timeout=20_000)
        assert app.state.engine.active == 1
        page.click("#stop")
        page.wait_for_selector(".assistant[data-state=stopped]", timeout=10_000)
        deadline = time.time() + 5
        while app.state.engine.active and time.time() < deadline:
            time.sleep(0.02)
        assert app.state.engine.active == 0
        assert page.inner_text("#error") == ""
        page.close()
