"""Replay FRED through fredapi against a 127.0.0.1 server (fredapi's `root_url` points at it).

fredapi asks FRED for XML (its default file_type), so the real JSON captures in
realdata/fred/ are converted to the XML FRED serves for the same query.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import quoteattr

import polars as pl
import pytest

from local_http import LocalServer
from tenali_pipeline.sources.http import PartialFetchError
from tenali_pipeline.sources.schema import MACRO_OBSERVATIONS

pytest.importorskip("fredapi")
from tenali_pipeline.sources.live.macro import FredError, FredMacroClient  # noqa: E402

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "fred"
KEY = "abcdef0123456789abcdef0123456789"

SERIES = {
    "GDP": dict(title="Gross Domestic Product", units="Billions of Dollars", frequency="Quarterly",
                last_updated="2023-06-29 07:53:02-05"),
    "FEDFUNDS": dict(title="Federal Funds Effective Rate", units="Percent", frequency="Monthly",
                     last_updated="2023-07-03 15:18:01-05"),
}


def _attrs(d: dict) -> str:
    return " ".join(f"{k}={quoteattr(str(v))}" for k, v in d.items())


def observations_xml(capture: dict) -> bytes:
    """FRED's XML for the observations a JSON capture holds."""
    head = {k: v for k, v in capture.items() if k != "observations"} | {"file_type": "xml"}
    rows = "\n".join(f"  <observation {_attrs(o)}/>" for o in capture["observations"])
    return f'<?xml version="1.0" encoding="utf-8" ?>\n<observations {_attrs(head)}>\n{rows}\n</observations>'.encode()


def series_xml(series_id: str, **changed) -> bytes:
    meta = {"id": series_id, "realtime_start": "2023-07-18", "realtime_end": "2023-07-18", **SERIES[series_id], **changed}
    return f'<?xml version="1.0" encoding="utf-8" ?>\n<seriess><series {_attrs(meta)}/></seriess>'.encode()


def error_xml(code: int, message: str) -> bytes:
    return f'<?xml version="1.0" encoding="utf-8" ?>\n<error code="{code}" message="{message}"/>'.encode()


class FakeFred:
    """A 127.0.0.1 FRED: `answers[(path, series_id)]` is a list of (status, body); the last repeats."""

    def __init__(self):
        self.answers: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
        self.requests: list[str] = []
        self.http = LocalServer(self._respond)
        self.root_url = f"{self.http.base}/fred"

    def _respond(self, req) -> tuple[int, dict[str, str], bytes]:
        self.requests.append(req.path)
        url = urlsplit(req.path)
        sid = parse_qs(url.query).get("series_id", [""])[0]
        answers = self.answers.get((url.path, sid)) or [(400, error_xml(400, "Bad Request.  The series does not exist."))]
        status, body = answers.pop(0) if len(answers) > 1 else answers[0]
        return status, {"Content-Type": "text/xml; charset=UTF-8"}, body

    def close(self):
        self.http.close()


@pytest.fixture(autouse=True)
def _unpaced(monkeypatch):
    """The replays need not keep to FRED's 120 requests per minute."""
    from tenali_pipeline.sources.http import RateLimiter
    from tenali_pipeline.sources.live import macro

    monkeypatch.setattr(macro, "FRED_LIMITER", RateLimiter(10_000), raising=False)


@pytest.fixture
def fred():
    server = FakeFred()
    yield server
    server.close()


def _capture(name: str) -> dict:
    path = REALDATA / name
    if not path.exists():
        pytest.skip(f"real capture {path} not present (../shared/realdata is absent)")
    return json.loads(path.read_text())


def test_replays_real_gdp_and_fedfunds(fred):
    for sid, name in [("GDP", "fredapi_gdp.json"), ("FEDFUNDS", "fredapi_fedfunds.json")]:
        fred.answers[("/fred/series", sid)] = [(200, series_xml(sid))]
        fred.answers[("/fred/series/observations", sid)] = [(200, observations_xml(_capture(name)))]

    df = FredMacroClient(["GDP", "FEDFUNDS"], api_key=KEY, root_url=fred.root_url).fetch()

    assert df.schema == pl.Schema(MACRO_OBSERVATIONS)
    gdp = df.filter(pl.col("series_id") == "GDP")
    assert gdp.height == 97
    first = gdp.row(0, named=True)
    assert first["date"] == dt.date(1999, 1, 1) and first["value"] == pytest.approx(9411.682)
    assert first["title"] == "Gross Domestic Product" and first["units"] == "Billions of Dollars"
    assert first["frequency"] == "Quarterly" and first["source"] == "fred"
    assert first["realtime_start"] == dt.date(2023, 5, 9)
    fed = df.filter(pl.col("series_id") == "FEDFUNDS")
    assert fed.height == 829
    # The capture's last value is "." (FRED's missing marker): null, not NaN, not dropped here.
    assert fed.row(-1, named=True)["date"] == dt.date(2023, 7, 1)
    assert fed.row(-1, named=True)["value"] is None
    assert fed["value"].null_count() == 1 and fed["value"].is_nan().sum() == 0
    # All vintages were asked for, with the key, in the XML fredapi parses.
    obs = [r for r in fred.requests if r.startswith("/fred/series/observations")]
    assert all("realtime_start=1776-07-04" in r and "realtime_end=9999-12-31" in r for r in obs)
    assert all(f"api_key={KEY}" in r for r in fred.requests)


def _vintaged_gdp() -> bytes:
    # Real GDP 2013Q4 vintages (fredapi docstring): 17102.5 on 2014-01-30, 17080.7 on 2014-02-28,
    # 17089.6 on 2014-03-27; and a quarter whose first vintage was missing.
    rows = [
        ("2014-01-30", "2014-02-27", "2013-10-01", "17102.5"),
        ("2014-02-28", "2014-03-26", "2013-10-01", "17080.7"),
        ("2014-03-27", "9999-12-31", "2013-10-01", "17089.6"),
        ("2014-04-30", "2014-05-28", "2014-01-01", "."),
        ("2014-05-29", "9999-12-31", "2014-01-01", "17044.0"),
        ("2013-01-30", "9999-12-31", "2012-10-01", "16000.0"),
    ]
    obs = [dict(realtime_start=a, realtime_end=b, date=d, value=v) for a, b, d, v in rows]
    return observations_xml({"realtime_start": "1776-07-04", "realtime_end": "9999-12-31", "observations": obs})


def test_first_vintage_keeps_publication_date(fred):
    fred.answers[("/fred/series", "GDP")] = [(200, series_xml("GDP"))]
    fred.answers[("/fred/series/observations", "GDP")] = [(200, _vintaged_gdp())]

    first = FredMacroClient(["GDP"], KEY, start="2013-01-01", root_url=fred.root_url).fetch()
    assert first.select("date", "value", "realtime_start").rows() == [
        (dt.date(2013, 10, 1), 17102.5, dt.date(2014, 1, 30)),
        (dt.date(2014, 1, 1), 17044.0, dt.date(2014, 5, 29)),  # first vintage with a value
    ]
    every = FredMacroClient(["GDP"], KEY, start="2013-01-01", root_url=fred.root_url, vintages="all").fetch()
    assert every.height == 5


def test_rate_limit_is_retried(fred, caplog):
    fred.answers[("/fred/series", "GDP")] = [(200, series_xml("GDP"))]
    fred.answers[("/fred/series/observations", "GDP")] = [
        (429, error_xml(429, "Too Many Requests.  Exceeded Rate Limit")),
        (200, _vintaged_gdp()),
    ]
    caplog.set_level(logging.WARNING)

    df = FredMacroClient(["GDP"], KEY, root_url=fred.root_url, base_delay=0.01).fetch()

    assert df.height == 3
    assert "rate limit" in caplog.text.lower()
    assert KEY not in caplog.text


def test_persistent_rate_limit_gives_up_without_leaking_key(fred, caplog):
    fred.answers[("/fred/series", "GDP")] = [(429, error_xml(429, "Too Many Requests.  Exceeded Rate Limit"))]
    caplog.set_level(logging.DEBUG)

    # a failing series fails alone, named with its cause
    with pytest.raises(PartialFetchError, match=r"GDP: RetriesExhausted: FRED series info for GDP.*429") as info:
        FredMacroClient(["GDP"], KEY, root_url=fred.root_url, attempts=2, base_delay=0.01).fetch()

    assert info.value.partial.is_empty()
    assert KEY not in str(info.value) and KEY not in caplog.text


def test_bad_series_is_clear_error_without_key(fred):
    with pytest.raises(PartialFetchError, match=rf"NOPE: {FredError.__name__}: FRED returned HTTP 400 .*series does not exist"
                                                r".*NOPE: check the series id") as info:
        FredMacroClient(["NOPE"], KEY, root_url=fred.root_url).fetch()
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert sum(r.startswith("/fred/series?") for r in fred.requests) == 1  # not retried


def test_bad_key_names_fred_api_key(fred):
    fred.answers[("/fred/series", "GDP")] = [
        (400, error_xml(400, "Bad Request.  The value for variable api_key is not registered."))
    ]
    with pytest.raises(PartialFetchError, match=rf"GDP: {FredError.__name__}: .*FRED_API_KEY") as info:
        FredMacroClient(["GDP"], KEY, root_url=fred.root_url).fetch()
    assert KEY not in str(info.value)


def test_missing_key_names_env_var(monkeypatch):
    monkeypatch.delenv("FRED_API_KEY", raising=False)
    with pytest.raises(ValueError, match="FRED_API_KEY"):
        FredMacroClient(["GDP"], api_key=None)
    assert KEY not in repr(FredMacroClient(["GDP"], api_key=KEY))


@pytest.mark.parametrize("pasted", [f" {KEY}", f"  {KEY}\r\n"])
def test_a_key_with_surrounding_whitespace_is_used_not_taken_for_a_broken_connection(fred, monkeypatch, pasted):
    """FRED_API_KEY copied with a space or read from a file with its line end: urllib refuses the URL
    (InvalidURL, an HTTPException), which read as "FRED broke off its answer" and was retried."""
    fred.answers[("/fred/series", "GDP")] = [(200, series_xml("GDP"))]
    fred.answers[("/fred/series/observations", "GDP")] = [(200, observations_xml(_capture("fredapi_gdp.json")))]
    monkeypatch.setenv("FRED_API_KEY", pasted)

    df = FredMacroClient(["GDP"], None, root_url=fred.root_url, attempts=1).fetch()

    assert df.height == 97
    assert all(parse_qs(urlsplit(r).query)["api_key"] == [KEY] for r in fred.requests)


def test_unreachable_server_is_retried_then_clear(fred):
    root = fred.root_url
    fred.close()  # nothing listens there any more
    with pytest.raises(PartialFetchError, match="GDP: RetriesExhausted: FRED series info for GDP") as info:
        FredMacroClient(["GDP"], KEY, root_url=root, attempts=2, base_delay=0.01).fetch()
    assert "could not reach FRED" in str(info.value)
    assert KEY not in str(info.value)


def test_series_without_observations_mixes_with_others(fred):
    SERIES.setdefault("NEWSERIES", dict(title="A series with no data yet", units="Index", frequency="Monthly"))
    empty = observations_xml({"realtime_start": "1776-07-04", "realtime_end": "9999-12-31", "count": 0, "observations": []})
    fred.answers[("/fred/series", "NEWSERIES")] = [(200, series_xml("NEWSERIES"))]
    fred.answers[("/fred/series/observations", "NEWSERIES")] = [(200, empty)]
    fred.answers[("/fred/series", "GDP")] = [(200, series_xml("GDP"))]
    fred.answers[("/fred/series/observations", "GDP")] = [(200, _vintaged_gdp())]

    df = FredMacroClient(["NEWSERIES", "GDP"], KEY, root_url=fred.root_url).fetch()

    assert df.schema == pl.Schema(MACRO_OBSERVATIONS)
    assert df["series_id"].unique().to_list() == ["GDP"] and df.height == 3


# --- through Dagster: raw responses kept, incremental runs, one failing series ---------------------


def _fedfunds() -> bytes:
    obs = [dict(realtime_start=f"2023-0{m + 1}-03", realtime_end="9999-12-31", date=f"2023-0{m}-01", value=v)
           for m, v in ((1, "4.33"), (2, "4.57"), (3, "4.65"))]
    return observations_xml({"realtime_start": "1776-07-04", "realtime_end": "9999-12-31", "observations": obs})


def _materialize(tmp_path, fred, **settings):
    """Materialise raw_macro_series with the live client replayed from `fred`; (result, raw table or None)."""
    import dagster as dg

    from tenali_pipeline.defs.macro import assets as macro
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import LakeResource, SourcesResource

    class Replayed(SourcesResource):
        def macro(self, archive=None):
            return FredMacroClient(self.fred_series, KEY, root_url=fred.root_url, archive=archive, attempts=2,
                                   base_delay=0.01)

    result = dg.materialize(macro.defs[:1], raise_on_error=False,
                            resources={"lake": LakeResource(root=str(tmp_path / "lake")),
                                       "sources": Replayed(mode="live", fred_series=["GDP", "FEDFUNDS"], **settings)})
    lake = Lake(str(tmp_path / "lake"))
    key = "raw/macro/macro_series.parquet"
    return result, (lake.read_parquet(key) if lake.exists(key) else None)


def _observation_requests(fred) -> list[str]:
    return [r for r in fred.requests if r.startswith("/fred/series/observations")]


def test_asset_keeps_fred_xml_without_the_key(fred, tmp_path):
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.sources.archive import read_archive

    for sid, body in (("GDP", _vintaged_gdp()), ("FEDFUNDS", _fedfunds())):
        fred.answers[("/fred/series", sid)] = [(200, series_xml(sid))]
        fred.answers[("/fred/series/observations", sid)] = [(200, body)]

    result, raw = _materialize(tmp_path, fred)

    assert result.success and raw.height == 6
    lake = Lake(str(tmp_path / "lake"))
    kept = [k for k in lake.list("raw/macro/responses") if k.endswith(".jsonl.gz")]
    assert len(kept) == 1
    data = lake.read_bytes(kept[0])
    records = read_archive(data)
    assert len(records) == 4 == result.asset_materializations_for_node("raw_macro_series")[0].metadata[
        "responses_kept"].value
    gdp = next(r for r in records if "observations" in r["url"] and "series_id=GDP" in r["url"])
    assert gdp["body"] == _vintaged_gdp().decode() and gdp["status"] == 200
    assert all("api_key=***" in r["url"] for r in records)
    assert KEY.encode() not in gzip.decompress(data)  # nowhere: not in a URL, not in a body


def test_second_run_asks_only_series_info_and_keeps_the_table(fred, tmp_path):
    for sid, body in (("GDP", _vintaged_gdp()), ("FEDFUNDS", _fedfunds())):
        fred.answers[("/fred/series", sid)] = [(200, series_xml(sid))]
        fred.answers[("/fred/series/observations", sid)] = [(200, body)]
    first, table = _materialize(tmp_path, fred)
    assert first.success and len(_observation_requests(fred)) == 2
    fred.requests.clear()

    second, again = _materialize(tmp_path, fred)

    assert second.success
    assert _observation_requests(fred) == []  # FRED has not updated either series: no observations asked
    assert sorted(fred.requests) == sorted(f"/fred/series?series_id={s}&api_key={KEY}" for s in ("GDP", "FEDFUNDS"))
    assert again.equals(table)

    # FRED updates GDP: only GDP's observations are asked, FEDFUNDS keeps its rows
    fred.answers[("/fred/series", "GDP")] = [(200, series_xml("GDP", last_updated="2023-07-27 07:46:03-05"))]
    fred.requests.clear()
    third, _ = _materialize(tmp_path, fred)
    assert third.success
    assert [r.split("&")[0] for r in _observation_requests(fred)] == ["/fred/series/observations?series_id=GDP"]


def test_one_failing_series_fails_alone_and_keeps_its_old_rows(fred, tmp_path):
    for sid, body in (("GDP", _vintaged_gdp()), ("FEDFUNDS", _fedfunds())):
        fred.answers[("/fred/series", sid)] = [(200, series_xml(sid))]
        fred.answers[("/fred/series/observations", sid)] = [(200, body)]
    first, table = _materialize(tmp_path, fred)
    assert first.success

    # both series updated at FRED; GDP's new vintage arrives, FEDFUNDS's observations keep failing
    revised = _vintaged_gdp().replace(b'value="17044.0"', b'value="17045.5"')
    fred.answers[("/fred/series", "GDP")] = [(200, series_xml("GDP", last_updated="2023-07-27 07:46:03-05"))]
    fred.answers[("/fred/series/observations", "GDP")] = [(200, revised)]
    fred.answers[("/fred/series", "FEDFUNDS")] = [(200, series_xml("FEDFUNDS", last_updated="2023-08-01 15:16:01-05"))]
    fred.answers[("/fred/series/observations", "FEDFUNDS")] = [(500, error_xml(500, "Internal Server Error"))]

    result, raw = _materialize(tmp_path, fred)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error.message
    assert "FEDFUNDS" in failure and "500" in failure and "GDP:" not in failure and KEY not in failure
    assert raw.filter(pl.col("series_id") == "GDP", pl.col("date") == dt.date(2014, 1, 1))["value"].to_list() == [17045.5]
    assert raw.filter(pl.col("series_id") == "FEDFUNDS").equals(table.filter(pl.col("series_id") == "FEDFUNDS"))

    # the failed series is asked again by the next run (its last_updated was not recorded as seen)
    fred.answers[("/fred/series/observations", "FEDFUNDS")] = [(200, _fedfunds())]
    fred.requests.clear()
    fixed, _ = _materialize(tmp_path, fred)
    assert fixed.success
    assert [r.split("&")[0] for r in _observation_requests(fred)] == ["/fred/series/observations?series_id=FEDFUNDS"]


def test_a_silent_server_times_out_and_is_retried():
    asked = []

    def slow(req):
        asked.append(req.path)
        time.sleep(0.6)
        return 200, {"Content-Type": "text/xml"}, series_xml("GDP")

    with LocalServer(slow) as server:
        client = FredMacroClient(["GDP"], KEY, root_url=f"{server.base}/fred", timeout=0.2, attempts=2, base_delay=0.01)
        with pytest.raises(PartialFetchError, match=r"GDP: RetriesExhausted: .*did not answer within 0.2s") as info:
            client.fetch()
        # the client gave up on each request after 0.2 s, whether or not the server's (possibly starved)
        # threads had taken it yet: the second is still in the listen queue, and closing now would drop it
        give_up = time.monotonic() + 60
        while len(asked) < 2 and time.monotonic() < give_up:
            time.sleep(0.01)
    assert len(asked) == 2 and KEY not in str(info.value)


def test_a_body_cut_off_mid_transfer_is_retried():
    """FRED's connection dropping mid-body surfaces from urllib's read() as http.client.IncompleteRead
    (neither a URLError nor a timeout): it must be retried like them, not fail the series at once."""
    from local_http import RawServer

    gdp = _capture("fredapi_gdp.json")
    bodies = [series_xml("GDP"), observations_xml(gdp)]

    def answer(path: str) -> bytes:
        body = bodies[0] if "/series/observations" not in path else bodies[1]
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=UTF-8\r\nContent-Length: %d\r\n\r\n" % len(body)
        first_try = sum(1 for p in server.asked if p.split("?")[0] == path.split("?")[0]) == 1
        return head + (body[: len(body) // 2] if first_try else body)  # each path: cut off once

    with RawServer(answer) as server:
        client = FredMacroClient(["GDP"], KEY, root_url=f"{server.base}/fred", attempts=3, base_delay=0.01)
        df = client.fetch()
    assert len(server.asked) == 4
    assert df.height == len(gdp["observations"]) and df["date"].min() == dt.date(1999, 1, 1)


def test_requests_are_paced_to_freds_rate_limit(fred, monkeypatch):
    """FRED allows 120 requests per minute per key; a long series list (one metadata request per series
    even when nothing changed) must be paced to that rather than run into 429s and retry blind."""
    from tenali_pipeline.sources.http import RateLimiter

    fred.answers[("/fred/series", "GDP")] = [(200, series_xml("GDP"))]
    fred.answers[("/fred/series/observations", "GDP")] = [(200, observations_xml(_capture("fredapi_gdp.json")))]
    sleeps: list[float] = []
    limiter = RateLimiter(2, clock=lambda: 100.0, sleep=sleeps.append)  # a frozen clock: every wait is owed
    FredMacroClient(["GDP"], KEY, root_url=fred.root_url, limiter=limiter).fetch()
    assert len(fred.requests) == 2 and sleeps == [0.5]

    from tenali_pipeline.sources.live import macro

    shared: list[float] = []  # without a limiter of its own, a client waits on the process-wide one
    monkeypatch.setattr(macro, "FRED_LIMITER", RateLimiter(2, clock=lambda: 100.0, sleep=shared.append))
    FredMacroClient(["GDP"], KEY, root_url=fred.root_url).fetch()
    assert shared == [0.5]
