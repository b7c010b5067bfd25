"""US IPOs from EDGAR, replayed from 127.0.0.1: a quarter's form.idx and 424B4 / 424B1 full submissions
(fixtures/us_ipos/, shaped on EDGAR's formats: FB's real offering, made-up others), HTTP Range and the
whole-file fallback, 429 then success, 403, a malformed index and an unreadable cover failing alone, a
follow-on skipped, a SPAC flagged; the sample twin joined to the sample market prices."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import logging
import re
from importlib import resources
from pathlib import Path

import polars as pl
import pytest

from local_http import LocalServer
from tenali_pipeline.ipo import listing_performance
from tenali_pipeline.sources.archive import ResponseArchive
from tenali_pipeline.sources.http import MalformedResponse, PartialFetchError, RateLimiter, SourceBlocked
from tenali_pipeline.sources.live.us_ipos import (CoverParseError, EdgarIpoClient, parse_cover, parse_form_index,
                                                  parse_prospectus, quarters)
from tenali_pipeline.sources.sample.market import SampleMarketClient
from tenali_pipeline.sources.sample.us_ipos import SampleUsIpoClient
from tenali_pipeline.sources.us_ipo_schema import US_IPO_KEYS, US_IPO_REQUIRED, US_IPOS, listings

FIX = Path(__file__).parent / "fixtures" / "us_ipos"
IDENTITY = "Tenali Research data@tenali.example"
D = dt.date

FB = "0001193125-12-240111"
SPAC = "0001144204-12-020931"
FOLLOW_ON = "0001193125-12-262044"
NO_PRICE = "0001193125-12-207311"
MLP = "0001047469-12-006822"  # answered 429 once
TEXT_424B1 = "0000950123-12-009121"


class FakeEdgar:
    """EDGAR's full index and archive on 127.0.0.1; `queued[path]` answers first (429, 403, ...)."""

    def __init__(self):
        self.files: dict[str, bytes] = {"/full-index/2012/QTR2/form.idx": (FIX / "form-2012-QTR2.idx").read_bytes()}
        for entry in parse_form_index((FIX / "form-2012-QTR2.idx").read_text()):
            fixture = FIX / f"{entry.accession}.txt"
            if fixture.exists():
                self.files[f"/Archives/{entry.path}"] = fixture.read_bytes()
        self.queued: dict[str, list[tuple[int, dict, bytes]]] = {}
        self.requests: list[tuple[str, dict]] = []
        self.honour_range = True
        self.http = LocalServer(self._respond)

    def path_of(self, accession: str) -> str:
        return next(p for p in self.files if p.endswith(f"/{accession}.txt"))

    def asked(self, accession: str) -> list[dict]:
        return [h for p, h in self.requests if p.endswith(f"/{accession}.txt")]

    def _respond(self, handler):
        self.requests.append((handler.path, dict(handler.headers)))
        if self.queued.get(handler.path):
            return self.queued[handler.path].pop(0)
        body = self.files.get(handler.path)
        if body is None:
            return 404, {"Content-Type": "text/html"}, b"<html><body><h1>Not Found</h1></body></html>"
        wanted = re.fullmatch(r"bytes=(\d+)-(\d+)", handler.headers.get("Range", ""))
        if wanted and self.honour_range:
            a, b = int(wanted.group(1)), int(wanted.group(2))
            part = body[a:b + 1]
            return 206, {"Content-Type": "text/plain", "Content-Range": f"bytes {a}-{a + len(part) - 1}/{len(body)}"}, part
        return 200, {"Content-Type": "text/plain"}, body

    def client(self, start="2012-04-01", end="2012-06-30", **kw) -> EdgarIpoClient:
        kw.setdefault("sleep", lambda s: None)
        return EdgarIpoClient(start, end, identity=IDENTITY, full_index_url=f"{self.http.base}/full-index",
                              archives_url=f"{self.http.base}/Archives", limiter=RateLimiter(1000), base_delay=0.0, **kw)


@pytest.fixture
def edgar():
    fake = FakeEdgar()
    yield fake
    fake.http.close()


# --- parsing -------------------------------------------------------------------------------------------


def test_form_index_keeps_final_prospectuses_and_rejects_other_bodies():
    entries = parse_form_index((FIX / "form-2012-QTR2.idx").read_text())
    assert [(e.form, e.accession) for e in entries] == [
        ("424B1", TEXT_424B1), ("424B4", FOLLOW_ON), ("424B4", FB), ("424B4", MLP), ("424B4", NO_PRICE), ("424B4", SPAC)]
    fb = entries[2]
    assert (fb.company, fb.cik, fb.filed, fb.path) == ("Facebook Inc", "0001326801", D(2012, 5, 18),
                                                       f"edgar/data/1326801/{FB}.txt")
    assert [e.form for e in parse_form_index((FIX / "form-2012-QTR2.idx").read_text(), ["424B2"])] == ["424B2"]
    with pytest.raises(MalformedResponse, match="Form Type"):
        parse_form_index("<html><body>Service Unavailable</body></html>")
    assert quarters(D(2011, 11, 30), D(2012, 4, 1)) == [(2011, 4), (2012, 1), (2012, 2)]


def test_cover_pages_of_the_fixtures():
    def cover(acc):
        return parse_prospectus((FIX / f"{acc}.txt").read_text())[0]

    fb = cover(FB)  # "PRICE $38.00 A SHARE", columns price to public / discounts / proceeds, rows per share / total
    assert (fb.is_ipo, fb.offer_price, fb.shares_offered, fb.gross_proceeds, fb.ticker, fb.exchange, fb.is_spac) == (
        True, 38.0, 421_233_615, 16_006_877_370, "FB", "Nasdaq", False)
    spac = cover(SPAC)  # the units' symbol, not the shares' or warrants'
    assert (spac.offer_price, spac.shares_offered, spac.gross_proceeds, spac.ticker, spac.is_spac) == (
        10.0, 20_000_000, 200_000_000, "SMPLU", True)
    text = cover(TEXT_424B1)  # plain-text SGML table with dot leaders
    assert (text.offer_price, text.shares_offered, text.gross_proceeds, text.ticker, text.exchange) == (
        17.0, 12_500_000, 212_500_000, "DMLR", "NYSE")
    mlp = cover(MLP)
    assert (mlp.offer_price, mlp.shares_offered, mlp.ticker, mlp.exchange) == (20.0, 12_500_000, "LLEP", "NYSE")
    follow_on = cover(FOLLOW_ON)
    assert not follow_on.is_ipo and "follow-on" in follow_on.skip and follow_on.offer_price is None
    with pytest.raises(CoverParseError, match="offering price"):
        cover(NO_PRICE)


def test_cover_layouts_and_what_is_not_a_final_price():
    ads = parse_cover("PROSPECTUS 10,000,000 American Depositary Shares Representing 20,000,000 Class A Ordinary Shares "
                      "This is an initial public offering of American depositary shares. The initial public offering "
                      "price is US$17.50 per ADS. The ADSs have been approved for listing on the New York Stock Exchange "
                      "under the symbol “SMPL.” The date of this prospectus is March 3, 2021.")
    assert (ads.offer_price, ads.shares_offered, ads.gross_proceeds, ads.ticker, ads.exchange) == (
        17.5, 10_000_000, 175_000_000, "SMPL", "NYSE")
    american = parse_cover("3,000,000 Shares Prior to this offering, there has been no public market for our common "
                           "stock. Our common stock has been approved for listing on the NYSE American under the symbol "
                           "“SMPX”. Per Share Total Price to the public(1) $ 4.00 $ 12.0 million")
    assert (american.offer_price, american.gross_proceeds, american.exchange) == (4.0, 12_000_000, "NYSE American")
    direct = parse_cover("Registered stockholders may sell shares. We are not selling any shares. No public market "
                         "currently exists for our ordinary shares ... under the symbol “SPOT.”")
    assert direct.skip.startswith("direct listing") and direct.offer_price is None
    ranged = parse_cover("This is our initial public offering. We estimate that the initial public offering price "
                         "will be between $15.00 and $17.00 per share. An assumed initial public offering price of "
                         "$16.00 per share would ...")
    assert ranged.skip.startswith("price range") and ranged.offer_price is None


# --- the live client, replayed -------------------------------------------------------------------------


def test_quarter_replayed_with_429_a_follow_on_a_spac_and_an_unreadable_cover(edgar, caplog):
    edgar.queued[edgar.path_of(MLP)] = [(429, {"Retry-After": "0"}, b"Too Many Requests")]
    archive = ResponseArchive()
    client = edgar.client(archive=archive)
    with caplog.at_level(logging.INFO, logger="tenali_pipeline.sources.live.us_ipos"):
        with pytest.raises(PartialFetchError) as err:
            client.fetch()
    exc = err.value
    assert list(exc.failures) == [NO_PRICE] and "CoverParseError" in exc.failures[NO_PRICE]
    assert NO_PRICE in str(exc) and "the others were kept" in str(exc)
    df = exc.partial
    assert df.schema == pl.Schema(US_IPOS)
    assert sorted(df["accession"]) == sorted([FB, SPAC, MLP, TEXT_424B1])
    fb = df.filter(pl.col("ticker") == "FB").row(0, named=True)
    assert fb == {"cik": "0001326801", "company": "Facebook Inc", "accession": FB, "form": "424B4",
                  "filed": D(2012, 5, 18), "ticker": "FB", "exchange": "Nasdaq", "offer_price": 38.0,
                  "shares_offered": 421_233_615.0, "gross_proceeds": 16_006_877_370.0, "is_spac": False,
                  "source": "sec-edgar"}
    assert df.filter(pl.col("is_spac"))["ticker"].to_list() == ["SMPLU"]
    assert df.filter(pl.col("accession") == TEXT_424B1)["form"].item() == "424B1"
    # the follow-on is skipped with its reason, logged and kept in `skipped`
    assert list(client.skipped) == [FOLLOW_ON] and "follow-on" in client.skipped[FOLLOW_ON]
    assert any(FOLLOW_ON in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    # 429 then success: the MLP was asked twice; every filing asked for its first bytes only
    assert len(edgar.asked(MLP)) == 2
    for accession in (FB, SPAC, FOLLOW_ON, TEXT_424B1):
        assert [h.get("Range") for h in edgar.asked(accession)] == ["bytes=0-524287"]
    assert {h["User-Agent"] for _, h in edgar.requests} == {IDENTITY}
    # raw responses kept: the index, the 429 and every filing
    kept = [(r["url"].split("/")[-1], r["status"]) for r in archive.records]
    assert ("form.idx", 200) in kept and (f"{MLP}.txt", 429) in kept and (f"{FB}.txt", 206) in kept
    # a later run starts again the day before the failed filing, to ask for it once more
    assert client.covered_through == D(2012, 5, 2)


def test_403_names_the_identity_and_the_setting_that_turns_the_source_off(edgar):
    edgar.queued["/full-index/2012/QTR2/form.idx"] = [(403, {"Content-Type": "text/html"},
                                                       b"<html><h1>Your Request Originates from an Undeclared "
                                                       b"Automated Tool</h1></html>")]
    with pytest.raises(SourceBlocked, match="SEC_EDGAR_IDENTITY") as err:
        edgar.client().fetch()
    assert "TENALI_SOURCES_OFF=us_ipos" in str(err.value) and "403" in str(err.value)
    # a 403 on a filing stops the fetch as well: every later request would be refused too
    edgar.queued[edgar.path_of(FB)] = [(403, {}, b"Forbidden")]
    with pytest.raises(SourceBlocked):
        edgar.client(start="2012-05-10").fetch()


def test_since_known_and_max_quarters(edgar):
    client = edgar.client(end="2012-12-31")
    df = client.fetch(since=D(2012, 5, 10), known={MLP}, max_quarters=1)
    assert sorted(df["accession"]) == sorted([FB, TEXT_424B1]) and list(client.skipped) == [FOLLOW_ON]
    assert not edgar.asked(SPAC) and not edgar.asked(NO_PRICE) and not edgar.asked(MLP)
    assert [p for p, _ in edgar.requests if p.endswith("form.idx")] == ["/full-index/2012/QTR2/form.idx"]
    assert client.covered_through == D(2012, 6, 30)


def test_a_failing_quarter_index_fails_alone(edgar):
    edgar.files["/full-index/2012/QTR3/form.idx"] = b"<html><body>Service Unavailable</body></html>"
    # 2012 Q1: a past quarter whose index is missing (404) fails too; Q2 is kept
    client = edgar.client(start="2012-01-01", end="2012-09-30")
    with pytest.raises(PartialFetchError) as err:
        client.fetch(known={NO_PRICE})
    failures = err.value.failures
    assert set(failures) == {"form.idx 2012 Q1", "form.idx 2012 Q3"}
    assert "NotFound" in failures["form.idx 2012 Q1"] and "MalformedResponse" in failures["form.idx 2012 Q3"]
    assert err.value.partial.height == 4
    assert client.covered_through == D(2011, 12, 31)


def test_an_index_not_published_yet_is_empty(edgar):
    today = dt.date.today()
    client = edgar.client(start=today.isoformat(), end=today.isoformat())
    assert client.fetch().height == 0 and client.covered_through < today


def test_a_cover_cut_short_by_the_range_is_fetched_whole(edgar):
    df = edgar.client(cover_bytes=1500).fetch(known={NO_PRICE, MLP, SPAC, FOLLOW_ON, TEXT_424B1})
    assert df["offer_price"].to_list() == [38.0]
    assert [h.get("Range") for h in edgar.asked(FB)] == ["bytes=0-1499", None]
    # a server that ignores Range answers the whole file at once: one request
    edgar.requests.clear()
    edgar.honour_range = False
    assert edgar.client(cover_bytes=1500).fetch(known={NO_PRICE, MLP, SPAC, FOLLOW_ON, TEXT_424B1}).height == 1
    assert len(edgar.asked(FB)) == 1


def test_identity_is_required(monkeypatch):
    monkeypatch.delenv("SEC_EDGAR_IDENTITY", raising=False)
    with pytest.raises(ValueError, match="SEC_EDGAR_IDENTITY"):
        EdgarIpoClient("2012-04-01")
    with pytest.raises(ValueError, match="before start"):
        EdgarIpoClient("2012-04-01", "2012-01-01", identity=IDENTITY)


# --- schema, listings and the sample twin ----------------------------------------------------------------


def test_keys_and_required_columns_are_in_the_schema():
    for source, columns in {**US_IPO_KEYS, **US_IPO_REQUIRED}.items():
        assert source == "us_ipos" and set(columns) <= set(US_IPOS)


def test_listing_date_moves_back_to_a_first_bar_just_before_the_filing():
    ipos = pl.DataFrame([
        dict(cik="1", company="New Co", accession="a-1", form="424B4", filed=D(2012, 6, 28), ticker="NEWCO",
             exchange="NYSE", offer_price=10.0, shares_offered=1e6, gross_proceeds=1e7, is_spac=False, source="t"),
        dict(cik="1", company="New Co", accession="a-2", form="424B4", filed=D(2012, 6, 29), ticker="NEWCO",
             exchange="NYSE", offer_price=10.0, shares_offered=1e6, gross_proceeds=1e7, is_spac=False, source="t"),
        dict(cik="2", company="Old Co", accession="b-1", form="424B4", filed=D(2012, 6, 28), ticker="OLDCO",
             exchange="NYSE", offer_price=20.0, shares_offered=1e6, gross_proceeds=2e7, is_spac=False, source="t"),
        dict(cik="3", company="Unlisted Co", accession="c-1", form="424B4", filed=D(2012, 6, 28), ticker=None,
             exchange=None, offer_price=5.0, shares_offered=1e6, gross_proceeds=5e6, is_spac=False, source="t"),
    ], schema=US_IPOS)
    prices = pl.DataFrame({"ticker": ["NEWCO", "NEWCO", "OLDCO", "OLDCO"],
                           "date": [D(2012, 6, 27), D(2012, 6, 28), D(2010, 1, 4), D(2012, 6, 28)],
                           "close": [11.0, 12.0, 19.0, 21.0]})
    got = listings(ipos, prices)
    assert got.select("ticker", "accession", "listing_date", "issue_price").rows() == [
        ("NEWCO", "a-1", D(2012, 6, 27), 10.0),  # priced on the 26th, listed the 27th, filed the 28th
        ("OLDCO", "b-1", D(2012, 6, 28), 20.0),  # a ticker with older history: the filing date stands
    ]
    assert listings(ipos)["listing_date"].to_list() == [D(2012, 6, 28), D(2012, 6, 28)]
    perf = listing_performance(got, prices, ticker="ticker")
    assert perf.filter(pl.col("ticker") == "NEWCO")["day1_return"].item() == pytest.approx(0.1)


def _bokeh_close(ticker: str, day: str) -> float:
    """The close straight from bokeh_sampledata's CSV, not through the sample client."""
    raw = resources.files("bokeh_sampledata").joinpath("_data", "stocks.csv.gz").read_bytes()
    for row in csv.DictReader(io.StringIO(gzip.decompress(raw).decode())):
        if row["Ticker"] == ticker and row["Date"] == day:
            return float(row["Close"])
    raise AssertionError(f"{ticker} {day} not in bokeh_sampledata")


def test_sample_twin_has_the_live_schema_and_gives_fb_its_first_day_return():
    client = SampleUsIpoClient()
    ipos = client.fetch()
    assert ipos.schema == pl.Schema(US_IPOS) and ipos["accession"].is_unique().all()
    assert ipos.filter(pl.col("is_spac"))["ticker"].to_list() == ["SMPLU"]
    assert len(client.skipped) == 1 and "follow-on" in next(iter(client.skipped.values()))
    assert ipos.filter(pl.col("source") != "sample:generated").height == 0

    prices = SampleMarketClient().fetch()
    perf = listing_performance(listings(ipos, prices), prices, ticker="ticker")
    fb = perf.filter(pl.col("ticker") == "FB").row(0, named=True)
    assert fb["first_date"] == D(2012, 5, 18) and fb["issue_price"] == 38.0
    assert fb["day1_return"] == pytest.approx(_bokeh_close("FB", "2012-05-18") / 38.0 - 1)
    goog = perf.filter(pl.col("ticker") == "GOOG").row(0, named=True)
    assert goog["day1_return"] == pytest.approx(_bokeh_close("GOOG", "2004-08-19") / 85.0 - 1)
    assert perf.filter(pl.col("ticker") == "SMPLU")["first_date"].item() is None  # no prices for the SPAC

    # incremental: from a later day, with what is held already known
    later = SampleUsIpoClient().fetch(since=D(2012, 1, 1), known=set(ipos.filter(pl.col("ticker") == "SMPLU")["accession"]))
    assert later["ticker"].to_list() == ["FB"]


def test_the_us_ipo_asset_and_its_documents_on_the_sample(materialize_sample):
    """Through Dagster: the sample twin -> raw/clean (checks pass) -> listing-performance documents from the
    sample market prices; a second run fetches no accession again."""
    import dagster as dg

    from tenali_pipeline.defs.market import assets as market
    from tenali_pipeline.defs.us_ipos import assets as us_ipos

    _, lake, assets, resources = materialize_sample(us_ipos.us_ipo_defs + market.build(), ("us_ipo_documents",))
    docs_df = lake.read_parquet("documents/us_ipo_documents.parquet")
    assert set(docs_df["instrument"]) == {"FB", "GOOG"} and set(docs_df["domain"]) == {"market"}
    again = dg.materialize([a for a in assets if a.key.path[-1] == "raw_us_ipos"], resources=resources)
    assert again.success
    assert again.asset_materializations_for_node("raw_us_ipos")[0].metadata["new_rows"].value == 0
