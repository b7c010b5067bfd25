"""Universe: financedatabase (the real library) replayed from 127.0.0.1 serving a small bz2-CSV snapshot,
the SEC ticker map (real capture when present), the filters' counts, and history across refreshes."""

from __future__ import annotations

import bz2
import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from local_http import LocalServer
from tenali_pipeline.defs.universe.history import cik_map, merge_snapshot, select_tickers
from tenali_pipeline.sources.http import SourceBlocked
from tenali_pipeline.sources.live.universe import FinanceDatabaseUniverseClient, parse_sec_tickers
from tenali_pipeline.sources.sample.universe import SampleUniverseClient
from tenali_pipeline.sources.schema import UNIVERSE

pytest.importorskip("financedatabase")

REAL = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "sec" / "company_tickers.json"
IDENTITY = "Tenali Research data@tenali.example"

# A stored snapshot in financedatabase's published column layout (equities has `delisted`, as 2.5 files do).
EQUITIES = """symbol,name,summary,currency,sector,industry_group,industry,exchange,mic,market,country,state,city,zipcode,website,market_cap,isin,cusip,figi,composite_figi,shareclass_figi,delisted
AAPL,Apple Inc.,Makes phones.,USD,Information Technology,Technology Hardware & Equipment,"Technology Hardware, Storage & Peripherals",NMS,XNAS,NASDAQ Global Select,United States,CA,Cupertino,95014,https://www.apple.com,Mega Cap,US0378331005,037833100,,,,False
BRK-B,Berkshire Hathaway Inc.,Insurance.,USD,Financials,Insurance,Insurance,NYQ,XNYS,New York Stock Exchange,United States,NE,Omaha,68131,,Mega Cap,,,,,,False
NA,Nano Labs Ltd,A ticker that reads as NA.,USD,Information Technology,Semiconductors & Semiconductor Equipment,Semiconductors & Semiconductor Equipment,NMS,XNAS,NASDAQ Global Select,China,,Hangzhou,,,Micro Cap,,,,,,False
TWTR,"Twitter, Inc.",Social network.,USD,Communication Services,Media & Entertainment,Interactive Media & Services,NYQ,XNYS,New York Stock Exchange,United States,CA,San Francisco,,,Large Cap,,,,,,True
RELIANCE.NS,Reliance Industries Limited,Energy.,INR,Energy,Energy,"Oil, Gas & Consumable Fuels",NSI,XNSE,National Stock Exchange of India,India,,Mumbai,,,Mega Cap,INE002A01018,,,,,False
500325.BO,Reliance Industries Limited,Energy.,INR,Energy,Energy,"Oil, Gas & Consumable Fuels",BSE,XBOM,Bombay Stock Exchange,India,,Mumbai,,,Mega Cap,INE002A01018,,,,,False
APC.F,Apple Inc.,Makes phones.,EUR,Information Technology,Technology Hardware & Equipment,"Technology Hardware, Storage & Peripherals",FRA,XFRA,Frankfurt Stock Exchange,United States,,,,,Mega Cap,US0378331005,,,,,False
SHEL.L,Shell plc,Energy.,GBp,Energy,Energy,"Oil, Gas & Consumable Fuels",LSE,XLON,London Stock Exchange,United Kingdom,,London,,,Mega Cap,,,,,,False
OTCX,Some OTC Corp,Pink sheets.,USD,Financials,Diversified Financials,Capital Markets,PNK,OTCM,OTC Markets,United States,,,,,Nano Cap,,,,,,False
"""
ETFS = """symbol,name,currency,summary,category_group,category,family,exchange,mic,isin
SPY,SPDR S&P 500 ETF Trust,USD,Tracks the S&P 500.,Equities,Large Blend,SPDR State Street Global Advisors,PCX,ARCX,US78462F1030
003D.BE,WISDOMTREE EURO HGD EQ.FD,EUR,,Financials,Developed Markets,WisdomTree Asset Management,BER,XBER,
"""
CURRENCIES = """symbol,name,base_currency,quote_currency,summary,exchange
EURUSD=X,EUR/USD,EUR,USD,Euro in dollars.,CCY
INR=X,USD/INR,USD,INR,Dollar in rupees.,CCY
AEDCHF=X,AED/CHF,AED,CHF,Dirham in francs.,CCY
"""
CRYPTOS = """symbol,name,cryptocurrency,currency,summary,exchange
BTC-USD,Bitcoin USD,BTC,USD,Bitcoin.,CCC
BTC-INR,Bitcoin INR,BTC,INR,Bitcoin.,CCC
AAVE-CAD,Aave CAD,AAVE,CAD,Aave.,CCC
"""
SEC_MAP = {"fields": ["cik", "name", "ticker", "exchange"],
           "data": [[320193, "Apple Inc.", "AAPL", "Nasdaq"], [1067983, "BERKSHIRE HATHAWAY INC", "BRK-B", "NYSE"],
                    [1418091, "Twitter, Inc.", "TWTR", "NYSE"], [884394, "SPDR S&P 500 ETF TRUST", "SPY", "NYSE"]]}


class FakeSites:
    """The financedatabase file host (no .parquet, bz2 CSVs) and www.sec.gov on one 127.0.0.1 server."""

    def __init__(self):
        self.files = {f"/fd/{name}.bz2": bz2.compress(text.encode()) for name, text in
                      (("equities", EQUITIES), ("etfs", ETFS), ("currencies", CURRENCIES), ("cryptos", CRYPTOS))}
        self.files["/files/company_tickers_exchange.json"] = json.dumps(SEC_MAP).encode()
        self.faults: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self.http = LocalServer(self._respond)

    def _respond(self, req):
        self.requests.append((req.path, req.headers.get("User-Agent", "")))
        queued = self.faults.get(req.path)
        if queued:
            return queued.pop(0), {}, b"<html>refused</html>"
        if req.path in self.files:
            return 200, {"ETag": '"v1"'}, self.files[req.path]
        return 404, {}, b"Not Found"

    def client(self, **kw) -> FinanceDatabaseUniverseClient:
        defaults = dict(mics=("XNYS", "XNAS", "XASE", "ARCX", "BATS", "XNSE", "XBOM"), quote_currencies=("USD", "INR"),
                        base_url=f"{self.http.base}/fd/", sec_url=f"{self.http.base}/files/company_tickers_exchange.json",
                        identity=IDENTITY, base_delay=0.01)
        return FinanceDatabaseUniverseClient(**{**defaults, **kw})


@pytest.fixture
def sites(tmp_path, monkeypatch):
    monkeypatch.setenv("FINANCEDATABASE_CACHE_DIR", str(tmp_path / "fdcache"))
    fake = FakeSites()
    yield fake
    fake.http.close()


def test_filters_yield_the_expected_counts_on_the_stored_snapshot(sites):
    df = sites.client().fetch()
    assert dict(df.schema) == UNIVERSE
    counts = dict(df.group_by("asset_class").len().iter_rows())
    # equities: AAPL, BRK-B, NA, TWTR (delisted, kept), RELIANCE.NS, 500325.BO; not Frankfurt, London or OTC
    assert counts == {"equity": 6, "etf": 1, "currency": 2, "crypto": 2}
    eq = df.filter(pl.col("asset_class") == "equity")
    assert set(eq["symbol"]) == {"AAPL", "BRK-B", "NA", "TWTR", "RELIANCE.NS", "500325.BO"}  # "NA" is not a null
    assert eq.filter(pl.col("symbol") == "TWTR")["delisted"].item() is True
    ciks = dict(df.filter(pl.col("cik").is_not_null()).select("symbol", "cik").iter_rows())
    assert ciks == {"AAPL": "0000320193", "BRK-B": "0001067983", "TWTR": "0001418091", "SPY": "0000884394"}
    # the SEC saw our identity; financedatabase fell back from .parquet (404) to the bz2 CSV
    assert any(p == "/files/company_tickers_exchange.json" and ua == IDENTITY for p, ua in sites.requests)
    assert ("/fd/equities.parquet" in [p for p, _ in sites.requests]) and "/fd/equities.bz2" in [p for p, _ in sites.requests]


def test_country_filter_and_an_empty_filter(sites):
    only_india = sites.client(classes=("equities",), countries=("India",)).fetch()
    assert sorted(only_india["symbol"]) == ["500325.BO", "RELIANCE.NS"]
    everything = sites.client(classes=("equities",), mics=()).fetch()
    assert everything.height == 9


def test_transient_fault_is_retried_and_403_names_the_setting(sites):
    sites.faults["/files/company_tickers_exchange.json"] = [503]
    assert sites.client(classes=("equities",)).fetch().height == 6
    sites.faults["/files/company_tickers_exchange.json"] = [403, 403]
    with pytest.raises(SourceBlocked, match=r"SEC \(www.sec.gov\).*SEC_EDGAR_IDENTITY"):
        sites.client(classes=("equities",)).fetch()


def test_unreachable_database_fails_with_a_message_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FINANCEDATABASE_CACHE_DIR", str(tmp_path / "empty"))
    with LocalServer(lambda req: (403, {}, b"Forbidden")) as server:
        client = FinanceDatabaseUniverseClient(("cryptos",), base_url=f"{server.base}/fd/", base_delay=0.01)
        with pytest.raises(SourceBlocked, match="financedatabase.*cryptos.*TENALI_UNIVERSE_CLASSES"):
            client.fetch()


def test_real_sec_ticker_map_parses():
    if not REAL.exists():
        pytest.skip(f"real capture {REAL} not present (../shared/realdata is absent)")
    m = parse_sec_tickers(json.loads(REAL.read_text()))
    assert m.height > 9000
    assert m.filter(pl.col("ticker") == "AAPL")["cik"].item() == "0000320193"
    assert m["cik"].str.len_chars().eq(10).all() and m["ticker"].is_unique().all()


def _snap(rows, source="t"):
    base = {c: None for c in UNIVERSE}
    return pl.DataFrame([{**base, "asset_class": "equity", "delisted": False, "source": source, **r} for r in rows],
                        schema=UNIVERSE)


def test_history_keeps_delistings_and_renames():
    d1, d2, d3 = dt.date(2024, 1, 2), dt.date(2024, 6, 3), dt.date(2024, 9, 2)
    first = merge_snapshot(None, _snap([{"symbol": "FB", "cik": "0001326801"}, {"symbol": "TWTR", "cik": "0001418091"},
                                        {"symbol": "IBM", "cik": "0000051143"}]), d1)
    # FB becomes META (same CIK); TWTR is marked delisted by the database; IBM unchanged
    second = merge_snapshot(first, _snap([{"symbol": "META", "cik": "0001326801"},
                                          {"symbol": "TWTR", "cik": "0001418091", "delisted": True},
                                          {"symbol": "IBM", "cik": "0000051143"}]), d2)
    rows = {r["symbol"]: r for r in second.iter_rows(named=True)}
    assert rows["FB"]["status"] == "renamed" and rows["FB"]["renamed_to"] == "META"
    assert (rows["FB"]["first_seen"], rows["FB"]["last_seen"]) == (d1, d1)
    assert rows["META"]["status"] == "listed" and rows["META"]["first_seen"] == d2
    assert rows["TWTR"]["status"] == "delisted" and rows["TWTR"]["last_seen"] == d2
    assert rows["IBM"]["first_seen"] == d1 and rows["IBM"]["last_seen"] == d2
    # TWTR then vanishes from the database: kept as missing, the rename stays recorded
    third = merge_snapshot(second, _snap([{"symbol": "META", "cik": "0001326801"}, {"symbol": "IBM", "cik": "0000051143"}]), d3)
    rows = {r["symbol"]: r for r in third.iter_rows(named=True)}
    assert rows["TWTR"]["status"] == "missing" and rows["TWTR"]["last_seen"] == d2
    assert rows["FB"]["renamed_to"] == "META" and third.height == 4
    assert select_tickers(third) == ["IBM", "META"]
    assert select_tickers(third, statuses=("listed", "renamed", "missing")) == ["FB", "IBM", "META", "TWTR"]
    assert cik_map(third) == {"META": "0001326801", "TWTR": "0001418091", "IBM": "0000051143"}
    with pytest.raises(ValueError, match="unknown universe status"):
        select_tickers(third, statuses=("active",))


def test_sample_universe_is_deterministic_and_filtered():
    df = SampleUniverseClient().fetch()
    assert df.equals(SampleUniverseClient().fetch()) and (df["source"] == "sample:generated").all()
    assert {"APC.F", "SMPLY", "GBPJPY=X", "BTC-EUR"}.isdisjoint(set(df["symbol"]))
    assert df.filter(pl.col("symbol") == "YHOO")["delisted"].item() is True
    history = merge_snapshot(None, df, dt.date(2013, 3, 1))
    assert select_tickers(history, with_cik=True) == ["AAPL", "FB", "GOOG", "IBM", "MSFT"]
    assert select_tickers(history, mics=("XNSE", "XBOM")) == ["500325.BO", "RELIANCE.NS", "TCS.NS"]
