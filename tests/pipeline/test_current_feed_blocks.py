"""Universe mode (current_feed.py): a 403 or 429 from the SEC stops the tick's requests, since each further
one extends the SEC's ~10-minute block; what was read before counts and the unread forms keep their cursor.
EDGAR's feed is served on 127.0.0.1 by test_sensors.py's helpers."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import dagster as dg
import pytest

from test_sensors import atom, feed_server
from tenali_pipeline.buckets import Bucket, bucket_of
from tenali_pipeline.defs.filings import current_feed
from tenali_pipeline.resources import SourcesResource

UNIVERSE = {"AAPL": "0000320193", "MSFT": "0000789019"}


class Log:
    def __init__(self):
        self.warnings: list[str] = []

    def warning(self, message):
        self.warnings.append(message)

    def info(self, message):
        pass


@pytest.mark.parametrize("status", [403, 429])
def test_a_block_stops_the_tick_and_keeps_what_was_read(monkeypatch, status):
    pages = {"10-K": [("10-K", "Apple Inc.", "0000320193", "0000320193-26-000001")], "10-Q": [],
             "8-K": [("8-K", "MICROSOFT CORP", "0000789019", "0000789019-26-000007")]}
    refused, hits = set(), []

    def respond(req):
        q = parse_qs(urlsplit(req.path).query)
        form, start = q["type"][0], int(q["start"][0])
        hits.append(form)
        if form in refused:
            return status, {"Content-Type": "text/html"}, b"<html>Request Rate Threshold Exceeded</html>"
        return 200, {"Content-Type": "application/atom+xml"}, atom(pages[form][start:start + 100])

    with feed_server(monkeypatch, respond):
        sources = SourcesResource(mode="live", tickers_from_universe=True)
        _, cursor = current_feed.evaluate_universe(sources, None, UNIVERSE, buckets=8)  # the baseline
        before = json.loads(cursor)["seen"]
        # new filings of every form; the SEC refuses the 10-Q page
        pages["10-K"].insert(0, ("10-K", "Apple Inc.", "0000320193", "0000320193-26-000002"))
        pages["8-K"].insert(0, ("8-K", "MICROSOFT CORP", "0000789019", "0000789019-26-000008"))
        refused.add("10-Q")
        hits.clear()
        log = Log()
        result, cursor = current_feed.evaluate_universe(sources, cursor, UNIVERSE, log=log, buckets=8)

    assert hits == ["10-K", "10-Q"]  # nothing asked after the refusal: no 8-K page
    [request] = result  # the 10-K read before the block still asks for its bucket
    assert request.partition_key == Bucket(bucket_of("AAPL", 8), 8).key
    seen = json.loads(cursor)["seen"]
    assert seen["10-K"][0] == "0000320193-26-000002"
    assert seen["10-Q"] == before["10-Q"] and seen["8-K"] == before["8-K"]  # read next tick, from where they were
    [warning] = log.warnings
    assert f"HTTP {status}" in warning and "no further SEC requests this tick" in warning and "10-Q, 8-K" in warning


def test_a_block_on_the_first_form_asks_nothing_more_and_skips_naming_it(monkeypatch):
    hits = []

    def respond(req):
        hits.append(parse_qs(urlsplit(req.path).query)["type"][0])
        return 403, {"Content-Type": "text/html"}, b"<html>Undeclared Automated Tool</html>"

    with feed_server(monkeypatch, respond):
        sources = SourcesResource(mode="live", tickers_from_universe=True)
        cursor = json.dumps({"v": 2, "seen": {"10-K": ["a"], "10-Q": ["b"], "8-K": ["c"]}})
        result, new_cursor = current_feed.evaluate_universe(sources, cursor, UNIVERSE, buckets=8)

    assert hits == ["10-K"]
    assert isinstance(result, dg.SkipReason) and "403 Forbidden" in result.skip_message
    assert "SEC_EDGAR_IDENTITY" in result.skip_message and "no further SEC requests" in result.skip_message
    assert json.loads(new_cursor)["seen"] == {"10-K": ["a"], "10-Q": ["b"], "8-K": ["c"]}
