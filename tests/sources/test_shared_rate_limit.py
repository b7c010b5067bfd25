"""RateLimiter(shared=path): one request budget for every process of the machine (the SEC's 10/s is per
client), kept in a flock-guarded file; a broken file or a missing fcntl falls back to per-process spacing."""

from __future__ import annotations

import importlib.util
import json
import logging
import multiprocessing
import os
import tempfile
import time

import pytest

from local_http import LocalServer
from tenali_pipeline.sources import http
from tenali_pipeline.sources.http import RateLimiter

pytestmark = pytest.mark.skipif(importlib.util.find_spec("fcntl") is None, reason="shared limiting needs fcntl.flock (Linux, macOS)")


def _calls(path: str, per_second: float, n: int, barrier, out) -> None:
    """Child process: n calls through its own limiter on the shared file, after the other child is ready.
    Its clock is frozen and its sleeps are recorded, so each call's slot (now + the wait owed) is what the
    file gave it, wherever the machine's load delays the process; the two still race for the file."""
    sleeps: list[float] = []
    limiter = RateLimiter(per_second, shared=path, clock=lambda: 1000.0, sleep=sleeps.append)
    barrier.wait()
    slots = []
    for _ in range(n):
        owed = len(sleeps)
        limiter.wait()
        slots.append(1000.0 + sum(sleeps[owed:]))
    out.put(slots)


def test_two_processes_share_one_budget(tmp_path):
    per_second, n = 4.0, 4
    interval = 1 / per_second
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_calls, args=(str(tmp_path / "rl" / "host"), per_second, n, barrier, out))
             for _ in range(2)]
    for p in procs:
        p.start()
    try:
        slots = sorted(out.get(timeout=120) + out.get(timeout=120))
    finally:
        for p in procs:
            p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    # one queue of slots, 1/per_second apart; each process alone would take 1000.0 for its first call (and
    # every slot twice)
    assert slots == pytest.approx([1000.0 + k * interval for k in range(2 * n)]), slots


def test_limiters_on_one_file_take_turns(tmp_path):
    """Two limiter objects (as in two processes) on one file: the second waits for the first's slot."""
    path, sleeps = tmp_path / "host", []
    a, b = (RateLimiter(10, shared=path, clock=lambda: 1000.0, sleep=sleeps.append) for _ in range(2))
    a.wait()
    b.wait()
    a.wait()
    assert sleeps == pytest.approx([0.1, 0.2])
    assert float(path.read_text()) == pytest.approx(1000.3)


@pytest.mark.parametrize("content", [b"", b"garbage", b"\xff\xfe\x00", b"nan", b"inf", b"-inf", b"1e300"])
def test_corrupt_state_file_counts_as_no_slot_taken(tmp_path, content):
    """Empty, unreadable or absurd (far ahead: a clock set back) content: no wait, and the file is rewritten."""
    path, sleeps = tmp_path / "host", []
    path.write_bytes(content)
    limiter = RateLimiter(10, shared=path, clock=lambda: 1000.0, sleep=sleeps.append)
    limiter.wait()
    assert sleeps == []
    assert float(path.read_text()) == pytest.approx(1000.1)
    limiter.wait()
    assert sleeps == pytest.approx([0.1])


def test_slot_taken_by_another_process_is_waited_for(tmp_path):
    path, sleeps = tmp_path / "host", []
    path.write_text("1000.05")
    RateLimiter(10, shared=path, clock=lambda: 1000.0, sleep=sleeps.append).wait()
    assert sleeps == pytest.approx([0.05])


def test_unusable_state_file_falls_back_to_this_process(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    sleeps = []
    limiter = RateLimiter(10, shared=blocker / "sub" / "host", clock=lambda: 5.0, sleep=sleeps.append)
    with caplog.at_level(logging.WARNING, logger=http.__name__):
        for _ in range(3):
            limiter.wait()
    assert sleeps == pytest.approx([0.1, 0.2])  # still spaced, within the process
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "TENALI_HOME" in warnings[0] and "within this process only" in warnings[0]


def test_without_fcntl_or_path_the_limiter_is_per_process(tmp_path, monkeypatch):
    sleeps = []
    unset = RateLimiter(10, shared=lambda: None, clock=lambda: 5.0, sleep=sleeps.append)
    for _ in range(3):
        unset.wait()
    assert sleeps == pytest.approx([0.1, 0.2])
    monkeypatch.setattr(http, "fcntl", None)
    sleeps.clear()
    limiter = RateLimiter(10, shared=tmp_path / "host", clock=lambda: 5.0, sleep=sleeps.append)
    assert limiter.state_file() is None
    for _ in range(3):
        limiter.wait()
    assert sleeps == pytest.approx([0.1, 0.2])
    assert not (tmp_path / "host").exists()


def test_sec_and_coingecko_limiters_share_under_tenali_home(tmp_path, monkeypatch):
    from tenali_pipeline.sources.live import coingecko

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.delenv("TENALI_HOME", raising=False)  # `dagster dev` by hand: a private folder in the temp dir
    private = tmp_path / "tmp" / f"tenali-{os.getuid()}"
    assert http.SEC_LIMITER.state_file() == private / "ratelimits" / "sec.gov"
    assert coingecko.PUBLIC_LIMITER.state_file() == private / "ratelimits" / "coingecko-public"
    assert private.stat().st_mode & 0o777 == 0o700
    monkeypatch.setenv("TENALI_HOME", str(tmp_path))
    assert http.limiter_for_url("https://data.sec.gov/x") is http.SEC_LIMITER
    assert http.SEC_LIMITER.state_file() == tmp_path / "ratelimits" / "sec.gov"
    assert coingecko.PUBLIC_LIMITER.state_file() == tmp_path / "ratelimits" / "coingecko-public"
    http.SEC_LIMITER.wait()
    assert float((tmp_path / "ratelimits" / "sec.gov").read_text()) > time.time() - 60


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="no user ids on this system")
def test_without_tenali_home_only_a_private_folder_of_ours_in_the_temp_dir_is_used(tmp_path, monkeypatch):
    """The temp dir is shared by every user: a folder there that others may write, or a link planted in
    its place, must not hold our state (another user could stall our collections through it)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("TENALI_HOME", raising=False)
    private = tmp_path / f"tenali-{os.getuid()}"
    private.mkdir(mode=0o777)
    private.chmod(0o777)
    assert http.home_state_file("sec.gov") is None and http.SEC_LIMITER.state_file() is None
    private.rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    private.symlink_to(tmp_path / "elsewhere")
    assert http.home_state_file("sec.gov") is None
    private.unlink()
    assert http.home_state_file("sec.gov") == private / "ratelimits" / "sec.gov"
    other = os.getuid() + 1  # a folder of ours under another user's name: as if that user had made it
    (tmp_path / f"tenali-{other}").mkdir(mode=0o700)
    monkeypatch.setattr(http.os, "getuid", lambda: other)
    assert http.home_state_file("sec.gov") is None


def test_sec_edgar_downloader_requests_wait_on_sec_limiter(tmp_path, monkeypatch):
    """The filings client's library has its own per-process 10/s: its requests must count in SEC_LIMITER too."""
    pytest.importorskip("sec_edgar_downloader")
    import requests
    from sec_edgar_downloader import _sec_gateway

    from tenali_pipeline.sources.live.filings import EdgarFilingsClient

    waits = []

    class Counting(RateLimiter):
        def wait(self):
            waits.append(1)

    body = json.dumps({"fields": ["cik", "name", "ticker", "exchange"], "data": [[320193, "Apple Inc.", "AAPL", "Nasdaq"]]})
    with LocalServer(lambda req: (200, {"Content-Type": "application/json"}, body.encode())) as server:
        monkeypatch.setattr(_sec_gateway, "requests", requests)  # undone after the test
        monkeypatch.setattr(_sec_gateway, "URL_CIK_MAPPING", f"{server.base}/files/company_tickers_exchange.json")
        monkeypatch.setattr(http, "SEC_LIMITER", Counting(10))
        client = EdgarFilingsClient(["AAPL"], identity="Tenali Research data@tenali.example", download_dir=tmp_path)
        downloader = client._downloader()  # fetches the ticker map
        client._downloader()  # installing twice does not wait twice per request
    assert downloader.ticker_to_cik_mapping["AAPL"] == "0000320193"
    assert waits == [1, 1]


def test_fred_defillama_and_nse_limiters_share_under_tenali_home(tmp_path, monkeypatch):
    """Per key (FRED) or per address (DefiLlama, NSE, whose bot wall answers bursts): every process of the
    machine counts against the same budget; NSE's assets (bhavcopy, announcements, IPOs) run at once."""
    from tenali_pipeline.sources.live import defillama, india, macro

    monkeypatch.setenv("TENALI_HOME", str(tmp_path))
    assert macro.FRED_LIMITER.state_file() == tmp_path / "ratelimits" / "fred"
    assert defillama.LIMITER.state_file() == tmp_path / "ratelimits" / "defillama"
    nse = india.host_limiter("https://www.nseindia.com/api/x", 3)
    assert nse.state_file() == tmp_path / "ratelimits" / "www.nseindia.com"
    assert india.host_limiter("https://www.nseindia.com/api/y", 3) is nse
