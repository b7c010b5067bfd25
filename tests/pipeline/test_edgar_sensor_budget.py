"""`new_edgar_filings` within its tick time budget, against the EDGAR stand-in of test_sensors.py on 127.0.0.1.

Dagster fails a sensor evaluation that outlives its gRPC timeout (60 s by default) and keeps the old
cursor, so a long ticker list polled from the first CIK every tick never reached the last ones. The
clock here is the number of requests the stand-in has answered (one second each): a budget of 3 lets
a tick start 3 requests, whatever the machine's speed. A 403 or 429 ends the tick at once (each further
request would extend the SEC's block); the refused company is first in line next tick.
"""

from __future__ import annotations

import json

import dagster as dg
import pytest
from test_sensors import Edgar, live_filings, sec, submissions, tick  # noqa: F401 (sec: the fixture)

from tenali_pipeline.defs.filings import sensors as edgar

COMPANIES = {"AAPL": 320193, "MSFT": 789019, "NVDA": 1045810, "AMZN": 1018724, "GOOGL": 1652044,
             "META": 1326801, "TSLA": 1318605}
CIK = {t: str(c).zfill(10) for t, c in COMPANIES.items()}


class Log:
    def __init__(self):
        self.lines: list[str] = []

    def info(self, msg):
        self.lines.append(msg)

    warning = info


def seven(server: Edgar) -> list[str]:
    """Seven companies in the SEC's ticker list, each with one 10-Q; their tickers in configured order."""
    server.tickers = {str(i): {"cik_str": c, "ticker": t, "title": t} for i, (t, c) in enumerate(COMPANIES.items())}
    for t, cik in CIK.items():
        server.subs[cik] = submissions([(f"{cik}-25-000001", "10-Q", "2025-10-30T16:00:00.000Z")])
    return list(COMPANIES)


def run(server: Edgar, tickers, cursor, budget: float = 3, log=None):
    """One tick of `evaluate`; returns (result, cursor, CIKs whose submissions it read, in order)."""
    server.hits.clear()
    result, after = edgar.evaluate(live_filings(*tickers), cursor, log, budget_s=budget,
                                   clock=lambda: float(len(server.hits)))
    polled = [h[len("/submissions/CIK"):-len(".json")] for h in server.hits if h.startswith("/submissions/")]
    return result, after, polled


def settled(server: Edgar, tickers) -> str:
    """The cursor after every company's 10-Q was seen (an unlimited tick)."""
    result, cursor, polled = run(server, tickers, None, budget=1e9)
    assert isinstance(result, dg.RunRequest) and len(polled) == len(tickers) and "next" not in json.loads(cursor)
    return cursor


def test_a_tick_stops_at_its_budget_and_the_next_one_goes_on_from_there(sec):
    tickers = seven(sec)
    order = [CIK[t] for t in tickers]
    log = Log()
    first, cursor, polled = run(sec, tickers, None, log=log)  # the ticker list takes the first second
    assert polled == order[:2] and json.loads(cursor)["next"] == order[2]
    assert isinstance(first, dg.RunRequest) and first.tags["tenali/new_filings"] == "2"
    assert any("polled 2 of 7 CIKs" in line and "the rest next tick" in line for line in log.lines)
    assert sec.hits[0] == "/files/company_tickers.json" and len(sec.hits) == 3

    seen, runs = list(polled), [first.run_key]
    for _ in range(3):  # ceil(7 / 3) ticks of 3 polls each reach everyone, in order, and wrap around
        result, cursor, polled = run(sec, tickers, cursor)
        assert len(polled) == 3 and "/files/company_tickers.json" not in sec.hits
        seen += polled
        if isinstance(result, dg.RunRequest):
            runs.append(result.run_key)
    assert seen == order + order[:4]
    assert json.loads(cursor)["next"] == order[4]
    assert len(set(runs)) == 3  # ticks 2 and 3 each saw new companies; tick 4 only known ones
    assert isinstance(result, dg.SkipReason) and "no new" in result.skip_message
    assert "polled 3 of 7 CIKs" in result.skip_message and "the rest next tick" in result.skip_message
    assert set(json.loads(cursor)["latest"]) == set(order)


def test_a_new_filing_of_a_company_polled_in_the_second_tick_is_found_then(sec):
    tickers = seven(sec)
    cursor = settled(sec, tickers)
    tsla = CIK["TSLA"]
    sec.subs[tsla] = submissions([(f"{tsla}-25-000002", "8-K", "2025-11-03T16:30:00.000Z"),
                                  (f"{tsla}-25-000001", "10-Q", "2025-10-30T16:00:00.000Z")])
    first, cursor, polled = run(sec, tickers, cursor, budget=4)
    assert tsla not in polled and isinstance(first, dg.SkipReason) and "polled 4 of 7 CIKs" in first.skip_message
    second, cursor, polled = run(sec, tickers, cursor, budget=4)
    assert polled == [CIK[t] for t in ("GOOGL", "META", "TSLA", "AAPL")]
    assert isinstance(second, dg.RunRequest) and second.tags["tenali/new_filings"] == "1"
    assert json.loads(cursor)["latest"][tsla]["acc"] == f"{tsla}-25-000002"
    assert isinstance(run(sec, tickers, cursor, budget=1e9)[0], dg.SkipReason)  # seen once, not again


def test_a_cursor_without_a_position_or_with_a_bad_one_starts_at_the_first_company(sec, monkeypatch):
    tickers = seven(sec)
    old = json.loads(settled(sec, tickers))  # a cursor written before the position existed has none
    assert set(old) == {"v", "ciks", "latest"}
    for position in (None, 5, "abc", "", "0000000042", ["x"]):
        cursor = dict(old) if position is None else {**old, "next": position}
        result, after, polled = run(sec, tickers, json.dumps(cursor))
        assert polled == [CIK[t] for t in ("AAPL", "MSFT", "NVDA")], position
        assert isinstance(result, dg.SkipReason) and "polled 3 of 7 CIKs" in result.skip_message
        assert json.loads(after) == {**old, "next": CIK["AMZN"]}
    # the registered sensor keeps to the module's budget
    monkeypatch.setattr(edgar, "BUDGET_S", 0.0)
    result, after = tick(edgar.new_edgar_filings, json.dumps(old), live_filings(*tickers))
    assert isinstance(result, dg.SkipReason) and "polled 0 of 7 CIKs" in result.skip_message
    assert json.loads(after)["next"] == CIK["AAPL"]


def test_a_stale_position_after_the_ticker_list_shrank_wraps_safely(sec):
    tickers = seven(sec)
    full = settled(sec, tickers)
    _, cursor, _ = run(sec, tickers, full, budget=5)
    assert json.loads(cursor)["next"] == CIK["META"]
    fewer = ["AAPL", "MSFT", "NVDA"]  # META and TSLA are no longer configured
    result, after, polled = run(sec, fewer, cursor, budget=2)
    assert polled == [CIK["AAPL"], CIK["MSFT"]] and json.loads(after)["next"] == CIK["NVDA"]
    assert set(json.loads(after)["ciks"]) == set(fewer) and set(json.loads(after)["latest"]) == {CIK[t] for t in fewer}
    assert CIK["META"] not in after and CIK["TSLA"] not in after
    # from NVDA, the last configured company, on around to the first ones; a tick that reaches all keeps no position
    result, after, polled = run(sec, fewer, after, budget=3)
    assert polled == [CIK["NVDA"], CIK["AAPL"], CIK["MSFT"]] and "next" not in json.loads(after)
    assert isinstance(result, dg.SkipReason) and result.skip_message == "no new 10-K/10-Q/8-K filings for 3 CIK(s)"


# --- 403 / 429: the SEC's block grows with every refused request, so the tick stops asking at once ------------


@pytest.mark.parametrize("status, fix", [(429, "resumes next tick"),
                                         (403, "SEC_EDGAR_IDENTITY to 'Name email@domain'")])
def test_a_refused_request_stops_the_tick_and_the_next_one_starts_at_that_company(sec, status, fix):
    tickers = seven(sec)
    order = [CIK[t] for t in tickers]
    cursor = settled(sec, tickers)
    nvda = CIK["NVDA"]
    sec.subs[CIK["MSFT"]] = submissions([(f"{CIK['MSFT']}-25-000002", "8-K", "2025-11-03T16:30:00.000Z")])
    sec.fail[f"/submissions/CIK{nvda}"] = status
    log = Log()
    result, after, polled = run(sec, tickers, cursor, budget=1e9, log=log)
    assert polled == order[:3]  # AAPL, MSFT, then NVDA refused: nothing after it
    state = json.loads(after)
    assert state["next"] == nvda
    assert state["latest"][CIK["MSFT"]]["acc"] == f"{CIK['MSFT']}-25-000002"  # learned before the refusal: kept
    assert isinstance(result, dg.RunRequest) and result.tags["tenali/new_filings"] == "1"
    warned = [line for line in log.lines if f"HTTP {status}" in line]
    assert warned and fix in warned[0] and "no further SEC requests this tick" in warned[0]
    assert any("polled 2 of 7 CIKs before the SEC refused a request" in line for line in log.lines)

    # still refused: the next tick asks NVDA once and stops, skipping with the cause and the fix
    result, again, polled = run(sec, tickers, after, budget=1e9)
    assert polled == [nvda] and json.loads(again)["next"] == nvda
    assert isinstance(result, dg.SkipReason) and f"HTTP {status}" in result.skip_message and fix in result.skip_message
    assert "polled 0 of 7 CIKs" in result.skip_message
    assert json.loads(again)["latest"] == state["latest"]

    # the block lifted: the tick goes on from NVDA, round to MSFT
    sec.fail.clear()
    result, done, polled = run(sec, tickers, again, budget=1e9)
    assert polled == order[2:] + order[:2] and "next" not in json.loads(done)


@pytest.mark.parametrize("status", [403, 429])
def test_a_refused_ticker_list_stops_before_any_company_is_polled(sec, status):
    tickers = seven(sec)
    _, cursor, _ = run(sec, tickers[:3], None, budget=1e9)  # three tickers known; the other four need the list
    sec.fail["/files/"] = status
    result, after, polled = run(sec, tickers, cursor, budget=1e9)
    assert sec.hits == ["/files/company_tickers.json"] and polled == []
    assert isinstance(result, dg.SkipReason) and f"HTTP {status}" in result.skip_message
    state = json.loads(after)
    assert state["next"] == CIK["AAPL"] and set(state["ciks"]) == set(tickers[:3])  # the rest looked up next tick
    assert state["latest"] == json.loads(cursor)["latest"]


@pytest.mark.parametrize("status", [500, 503, 404])
def test_other_http_errors_concern_one_company_only(sec, status):
    tickers = seven(sec)
    order = [CIK[t] for t in tickers]
    cursor = settled(sec, tickers)
    sec.fail[f"/submissions/CIK{CIK['NVDA']}"] = status
    log = Log()
    result, after, polled = run(sec, tickers, cursor, budget=1e9, log=log)
    assert polled == order and "next" not in json.loads(after)
    assert isinstance(result, dg.SkipReason) and f"HTTP {status}" in result.skip_message
    assert "no further SEC requests" not in result.skip_message
