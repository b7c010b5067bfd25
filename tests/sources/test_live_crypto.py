"""Replay Binance through ccxt: exchange `urls` are deep-merged to point at a 127.0.0.1 server that
serves exchangeInfo and klines built from real candles (realdata/crypto/freqtrade_UNITTEST_BTC-1m.json,
13,681 one-minute candles of a BTC-quoted pair, reshaped to Binance's kline arrays)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import polars as pl
import pytest

from local_http import LocalServer
from tenali_pipeline.sources.http import PartialFetchError, retry
from tenali_pipeline.sources.schema import CRYPTO_OHLCV

ccxt = pytest.importorskip("ccxt")
from tenali_pipeline.sources.live.crypto import CcxtCryptoClient, ExchangeUnavailableError  # noqa: E402

CANDLES = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "crypto" / "freqtrade_UNITTEST_BTC-1m.json"

# One Binance spot market, shaped like GET /api/v3/exchangeInfo (trimmed to one symbol).
EXCHANGE_INFO = {
    "timezone": "UTC",
    "serverTime": 1510617600000,
    "rateLimits": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    ],
    "exchangeFilters": [],
    "symbols": [
        {
            "symbol": "UNITTESTBTC",
            "status": "TRADING",
            "baseAsset": "UNITTEST",
            "baseAssetPrecision": 8,
            "quoteAsset": "BTC",
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": "0.00000100", "maxPrice": "100000.00000000", "tickSize": "0.00000100"},
                {"filterType": "LOT_SIZE", "minQty": "0.00100000", "maxQty": "100000.00000000", "stepSize": "0.00100000"},
            ],
            "permissions": ["SPOT"],
            "permissionSets": [["SPOT"]],
        }
    ],
}


def _klines() -> list[list]:
    if not CANDLES.exists():
        pytest.skip(f"real capture {CANDLES} not present (../shared/realdata is absent)")
    out = []
    for ts, o, h, low, c, v in json.loads(CANDLES.read_text()):
        # Binance kline: open time, OHLCV as strings, close time, quote volume, trades, taker vols, ignore.
        out.append([ts, f"{o:.8f}", f"{h:.8f}", f"{low:.8f}", f"{c:.8f}", f"{v:.8f}", ts + 59_999,
                    f"{v * c:.8f}", 10, "0", "0", "0"])
    return out


class FakeBinance:
    def __init__(self, klines: list[list], status_first: list[tuple[int, dict, dict]] | None = None):
        self.klines = klines
        self.status_first = list(status_first or [])  # answers for the first klines requests
        self.kline_requests: list[dict] = []
        self.http = LocalServer(self._respond)
        # Deep-merged into binance's urls; only spot markets so exchangeInfo is the only market call.
        self.exchange = ccxt.binance(
            {"urls": {"api": {"public": f"{self.http.base}/api/v3"}}, "options": {"fetchMarkets": {"types": ["spot"]}}, "rateLimit": 1}
        )

    def _respond(self, req) -> tuple[int, dict[str, str], bytes]:
        url = urlsplit(req.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        status, headers, body = 200, {}, None
        if url.path == "/api/v3/exchangeInfo":
            body = EXCHANGE_INFO
        elif url.path == "/api/v3/klines":
            self.kline_requests.append(q)
            if self.status_first:
                status, headers, body = self.status_first.pop(0)
            else:
                limit = int(q.get("limit", 500))
                if "startTime" in q:
                    body = [k for k in self.klines if k[0] >= int(q["startTime"])][:limit]
                else:
                    body = self.klines[-limit:]
        else:
            status, body = 404, {"code": -1, "msg": "not found"}
        return status, {"Content-Type": "application/json", **headers}, json.dumps(body).encode()

    def close(self):
        self.http.close()


@pytest.fixture
def binance():
    servers = []

    def make(**kwargs):
        servers.append(FakeBinance(_klines(), **kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def test_paginates_until_caught_up_and_retries_429(binance):
    too_many = (429, {"Retry-After": "0"}, {"code": -1003, "msg": "Too many requests; current limit is 6000 request weight per 1 MINUTE."})
    fake = binance(status_first=[too_many])
    first_ts = fake.klines[0][0]
    client = CcxtCryptoClient("binance", ["UNITTEST/BTC"], timeframe="1m", since=first_ts, exchange=fake.exchange, base_delay=0.01)

    df = client.fetch()

    assert df.schema == pl.Schema(CRYPTO_OHLCV)
    assert df.height == len(fake.klines) > 13_000  # every real candle, none twice
    assert df["timestamp"].is_sorted() and df["timestamp"].n_unique() == df.height
    assert df["timestamp"][0] == dt.datetime.fromtimestamp(first_ts / 1000, dt.timezone.utc)
    assert df.row(0, named=True)["close"] == pytest.approx(float(fake.klines[0][4]))
    assert set(df["symbol"]) == {"UNITTEST/BTC"} and set(df["exchange"]) == {"binance"}
    assert set(df["timeframe"]) == {"1m"} and set(df["source"]) == {"ccxt"}
    # 1 throttled + 14 full-or-partial pages + 1 empty page; never above Binance's 1000 maximum.
    assert len(fake.kline_requests) == 16
    assert all(int(q["limit"]) <= 1000 for q in fake.kline_requests)
    starts = [int(q["startTime"]) for q in fake.kline_requests[1:]]
    assert starts == sorted(starts) and starts[1] == fake.klines[1000][0]
    assert client.exchange.enableRateLimit is True


def test_limit_caps_total_and_page(binance):
    fake = binance()
    client = CcxtCryptoClient("binance", ["UNITTEST/BTC"], "1m", since=fake.klines[0][0], limit=1500, exchange=fake.exchange)

    df = client.fetch()

    assert df.height == 1500
    assert [int(q["limit"]) for q in fake.kline_requests] == [1000, 500]


def test_since_as_iso_date_and_unknown_symbol(binance):
    fake = binance()
    client = CcxtCryptoClient("binance", ["UNITTEST/BTC"], "1m", since="2017-11-14T00:00:00", limit=10, exchange=fake.exchange)
    df = client.fetch()
    assert df["timestamp"][0] == dt.datetime(2017, 11, 14, tzinfo=dt.timezone.utc)

    # one failing symbol fails alone, named with its cause; the others' candles ride on the error
    with pytest.raises(PartialFetchError, match=r"ETH/USDT: ValueError: binance does not list 'ETH/USDT'") as err:
        CcxtCryptoClient("binance", ["ETH/USDT", "UNITTEST/BTC"], "1m", since="2017-11-14T00:00:00", limit=10,
                         exchange=fake.exchange).fetch()
    assert list(err.value.failures) == ["ETH/USDT"] and set(err.value.partial["symbol"]) == {"UNITTEST/BTC"}


def test_region_block_is_clear_error_not_retried(binance):
    blocked = (451, {}, {"code": 0, "msg": "Service unavailable from a restricted location according to 'b. Eligibility'."})
    fake = binance(status_first=[blocked])
    client = CcxtCryptoClient("binance", ["UNITTEST/BTC"], "1m", since=fake.klines[0][0], exchange=fake.exchange)

    with pytest.raises(PartialFetchError, match=rf"UNITTEST/BTC: {ExchangeUnavailableError.__name__}: .*451.*another exchange"):
        client.fetch()
    assert len(fake.kline_requests) == 1


def test_server_error_is_retried(binance):
    fake = binance(status_first=[(502, {}, {"msg": "Bad Gateway"})])
    client = CcxtCryptoClient("binance", ["UNITTEST/BTC"], "1m", since=fake.klines[0][0], limit=5, exchange=fake.exchange, base_delay=0.01)

    assert client.fetch().height == 5
    assert len(fake.kline_requests) == 2


class PageBodies(FakeBinance):
    """Binance whose klines pages numbered in `bodies` (0-based) answer those raw bytes with HTTP 200."""

    def __init__(self, klines, bodies: dict[int, bytes]):
        super().__init__(klines)
        self.bodies = bodies

    def _respond(self, req):
        status, headers, body = super()._respond(req)
        page = len(self.kline_requests) - 1
        if "/klines" in req.path and page in self.bodies:
            return 200, {"Content-Type": "application/json"}, self.bodies[page]
        return status, headers, body


@pytest.mark.parametrize("bad", [b"<html><body><h1>We'll be back soon</h1></body></html>",
                                 b'[[1510617600000,"0.00001","0.00001","0.00001","0.00001","1.2',  # cut off mid-JSON
                                 ])
def test_a_page_that_is_not_json_is_retried_not_taken_for_the_end(bad):
    """ccxt turns a 200 body that is not JSON into an empty page; the collector must not stop there."""
    fake = PageBodies(_klines(), {1: bad})  # the second of 14 pages
    try:
        client = CcxtCryptoClient("binance", ["UNITTEST/BTC"], "1m", since=fake.klines[0][0], exchange=fake.exchange,
                                  base_delay=0.01)
        assert client.fetch().height == len(fake.klines)
        assert int(fake.kline_requests[2]["startTime"]) == int(fake.kline_requests[1]["startTime"])  # asked again
    finally:
        fake.close()


def test_a_page_that_stays_html_fails_its_symbol_by_name():
    fake = PageBodies(_klines(), {i: b"<html>Service Unavailable</html>" for i in range(10)})
    try:
        client = CcxtCryptoClient("binance", ["UNITTEST/BTC"], "1m", since=fake.klines[0][0], exchange=fake.exchange,
                                  attempts=2, base_delay=0.01)
        with pytest.raises(PartialFetchError, match=r"UNITTEST/BTC: RetriesExhausted: .*not JSON.*Service Unavailable"):
            client.fetch()
    finally:
        fake.close()


def test_a_429_with_an_http_date_retry_after_waits_until_then(binance, monkeypatch):
    from email.utils import format_datetime

    from tenali_pipeline.sources.live import crypto

    later = format_datetime(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30), usegmt=True)
    fake = binance(status_first=[(429, {"Retry-After": later}, {"code": -1003, "msg": "Too many requests"})])
    slept: list[float] = []
    monkeypatch.setattr(crypto, "retry", lambda fn, **kw: retry(fn, **{**kw, "sleep": slept.append}))
    client = CcxtCryptoClient("binance", ["UNITTEST/BTC"], "1m", since=fake.klines[0][0], limit=5,
                              exchange=fake.exchange, base_delay=0.01)

    assert client.fetch().height == 5
    assert len(slept) == 1 and 25 <= slept[0] <= 30


# --- through Dagster: raw responses kept, incremental runs, one failing symbol ---------------------


def _materialize(tmp_path, fake, symbols=("UNITTEST/BTC",), **settings):
    """Materialise raw_crypto_ohlcv with the live client on `fake`; (result, raw table or None)."""
    import dagster as dg

    from tenali_pipeline.defs.crypto import assets as crypto
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import LakeResource, SourcesResource

    class Replayed(SourcesResource):
        def crypto(self, archive=None):
            return CcxtCryptoClient("binance", self.crypto_symbols, "1m", since=fake.klines[0][0], exchange=fake.exchange,
                                    base_delay=0.01, archive=archive)

    result = dg.materialize(crypto.defs[:1], raise_on_error=False,
                            resources={"lake": LakeResource(root=str(tmp_path / "lake")),
                                       "sources": Replayed(mode="live", crypto_exchange="binance",
                                                           crypto_symbols=list(symbols), **settings)})
    lake = Lake(str(tmp_path / "lake"))
    key = "raw/crypto/crypto_ohlcv.parquet"
    return result, (lake.read_parquet(key) if lake.exists(key) else None)


def test_asset_keeps_the_exchange_json_and_a_second_run_asks_nothing(binance, tmp_path):
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.sources.archive import read_archive

    fake = binance()
    first, table = _materialize(tmp_path, fake)
    assert first.success and table.height == len(fake.klines)
    asked = len(fake.kline_requests)
    assert asked == 15

    lake = Lake(str(tmp_path / "lake"))
    kept = [k for k in lake.list("raw/crypto/responses") if k.endswith(".jsonl.gz")]
    assert len(kept) == 1
    data = lake.read_bytes(kept[0])
    records = read_archive(data)
    klines = [r for r in records if "/api/v3/klines" in r["url"]]
    assert len(klines) == asked and any("/api/v3/exchangeInfo" in r["url"] for r in records)
    assert json.loads(klines[0]["body"])[0][0] == fake.klines[0][0]
    assert all(r["status"] == 200 for r in records)

    # within refresh_hours: nothing is asked, not even the market list, and the table is the same
    second, again = _materialize(tmp_path, fake)
    assert second.success and len(fake.kline_requests) == asked
    assert again.equals(table)

    # once due: asked from the last stored candle minus one bar; merged without duplicates
    third, merged = _materialize(tmp_path, fake, refresh_hours=0.0)
    assert third.success
    starts = [int(q["startTime"]) for q in fake.kline_requests[asked:]]
    assert starts[0] == fake.klines[-1][0] - 60_000 and len(starts) == 2  # the last two candles, then an empty page
    assert merged.sort("timestamp").equals(table.sort("timestamp"))


def test_one_failing_symbol_fails_alone_and_the_others_land(binance, tmp_path):
    fake = binance()
    result, raw = _materialize(tmp_path, fake, symbols=("UNITTEST/BTC", "NOPE/BTC"))

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error.message
    assert "NOPE/BTC" in failure and "does not list" in failure and "UNITTEST/BTC:" not in failure
    assert set(raw["symbol"]) == {"UNITTEST/BTC"} and raw.height == len(fake.klines)

    # the symbol that landed is not asked again; the failed one is
    fake.kline_requests.clear()
    again, _ = _materialize(tmp_path, fake, symbols=("UNITTEST/BTC", "NOPE/BTC"))
    assert not again.success and fake.kline_requests == []
