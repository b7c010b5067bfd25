"""Review 4 of the India, central-bank, IPO and on-chain sources: scenarios that showed a stored row
differing from what the source published (units, dates, granularity)."""

from __future__ import annotations

import calendar
import datetime as dt
import json
from urllib.parse import parse_qs, urlsplit

import polars as pl
import requests

from local_http import LocalServer
from tenali_pipeline.sources.live.coingecko import CoinGeckoClient, parse_market_chart

D = dt.date


def _ms(day: dt.date, hour: int = 0) -> int:
    return (calendar.timegm(day.timetuple()) + hour * 3600) * 1000


class _Gecko:
    """CoinGecko on 127.0.0.1: daily 00:00 UTC points for a range over 90 days, hourly otherwise (as documented)."""

    def __init__(self):
        self.asked: list[dict] = []
        self.http = LocalServer(self._respond)

    def _respond(self, req):
        url = urlsplit(req.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path.endswith("/range"):
            self.asked.append(q)
            t0, t1 = int(q["from"]), int(q["to"])
            step = 86400 if t1 - t0 > 90 * 86400 else 3600
            first = -(-t0 // step) * step
            ms = [t * 1000 for t in range(first, t1, step)]
            price = {t: 100.0 + (t // 1000 - t0) / 3600 for t in ms}  # rises by 1 an hour: the hour is visible
            body = {"prices": [[t, price[t]] for t in ms], "market_caps": [[t, price[t] * 1e6] for t in ms],
                    "total_volumes": [[t, 1e9] for t in ms]}
        else:
            body = {"id": "bitcoin", "symbol": "btc", "market_data": {"max_supply": 21e6}}
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def test_coingecko_start_within_90_days_still_asks_a_daily_range():
    """TENALI_START_DATE a month back: the range asked must still span over 90 days, or CoinGecko answers
    hourly and each day is stored at its 23:00 price instead of the 00:00 UTC one the later (daily) runs store."""
    server = _Gecko()
    try:
        client = CoinGeckoClient(["bitcoin"], start="2024-05-10", end=D(2024, 6, 1), api=server.http.base,
                                 session=requests.Session(), base_delay=0.01)
        df = client.fetch()
    finally:
        server.http.close()
    [q] = server.asked
    assert int(q["from"]) == calendar.timegm(D(2024, 3, 1).timetuple())  # 92 days before the end
    assert df["date"].min() == D(2024, 5, 10)  # rows before the start date are not stored
    t0 = int(q["from"])
    # 2024-05-20's price is the one at 00:00 UTC that day, as in every daily answer
    assert df.filter(pl.col("date") == D(2024, 5, 20))["price_usd"].item() == \
        100.0 + (calendar.timegm(D(2024, 5, 20).timetuple()) - t0) / 3600


def test_coingecko_zero_market_cap_is_unknown_not_zero():
    """CoinGecko answers a market cap of 0 for days it has no supply for: stored as unknown, so no note
    says the coin was worth $0 (or fell 100% on the month) and no supply of 0 coins is implied."""
    day = D(2024, 1, 1)
    body = {"prices": [[_ms(day), 0.5], [_ms(day + dt.timedelta(days=1)), 0.6]],
            "market_caps": [[_ms(day), 0.0], [_ms(day + dt.timedelta(days=1)), 6e7]],
            "total_volumes": [[_ms(day), 1e5], [_ms(day + dt.timedelta(days=1)), 2e5]]}
    df = parse_market_chart(body)
    assert df["market_cap_usd"].to_list() == [None, 6e7]


def test_nse_past_issues_keep_equity_ipos_only():
    """NSE's past-issues list also carries the partly-paid line of a listed company's rights issue
    (ADANIENPP1) and non-equity issues (debt, InvITs): none is an IPO, so none may become an IPO row with
    a 'listed' status and an issue price. A bare PP suffix (CLOUDPP) is a real IPO's symbol and stays."""
    from tenali_pipeline.sources.live.india import parse_past_issues

    def item(symbol, name, kind, price):
        return {"symbol": symbol, "companyName": name, "securityType": kind, "ipoStartDate": "04-JUN-2024",
                "ipoEndDate": "06-JUN-2024", "listingDate": "11-JUN-2024", "issuePrice": price, "priceRange": price}

    df = parse_past_issues([
        item("ADANIENPP1", "Adani Enterprises Limited", "EQ", "   1800"),
        item("SOMEINVIT", "Some Infrastructure Investment Trust", "INVIT", "   100"),
        item("ABCNCD", "ABC Finance Limited", "DEBT", "  1000"),
        item("CLOUDPP", "Varanium Cloud Limited", "SME", "   122"),
        item("TATATECH", "Tata Technologies Limited", "EQ", "   500"),
    ])
    assert df.select("symbol", "security_type").rows() == [("CLOUDPP", "SME"), ("TATATECH", "EQ")]


def test_us_cover_stating_the_company_s_initial_public_offering_is_an_ipo():
    """"This is Uber Technologies, Inc.’s initial public offering." is how many covers say it; read as no
    IPO statement, the IPO was skipped as a follow-on (and never asked again)."""
    from tenali_pipeline.sources.live.us_ipos import parse_cover

    cover = ("PROSPECTUS 180,000,000 Shares Uber Technologies, Inc. Common Stock This is Uber Technologies, Inc.’s "
             "initial public offering. Uber Technologies, Inc. is offering 180,000,000 shares of its common stock. "
             "The initial public offering price is $45.00 per share. Our common stock has been approved for listing "
             "on the New York Stock Exchange under the symbol “UBER.” Per Share Total Public offering price $45.00 "
             "$8,100,000,000 The date of this prospectus is May 9, 2019.")
    got = parse_cover(cover)
    assert got.skip is None and (got.offer_price, got.shares_offered, got.ticker, got.exchange) == \
        (45.0, 180e6, "UBER", "NYSE")
    # a follow-on still is not one
    assert parse_cover(cover.replace("This is Uber Technologies, Inc.’s initial public offering. ", "")).skip


def test_us_cover_in_utf8_cut_inside_a_character_by_the_range_keeps_its_ticker():
    """A UTF-8 prospectus whose first `cover_bytes` end inside a multi-byte character was decoded as
    cp1252 whole: “UBER” became â€œUBER and the IPO was stored without its ticker (never joined to prices)."""
    import re as _re

    from tenali_pipeline.sources.http import RateLimiter
    from tenali_pipeline.sources.live.us_ipos import EdgarIpoClient, IndexEntry

    cover = ("<html><body><p>PROSPECTUS</p><p>180,000,000 Shares</p><p>Uber Technologies, Inc.</p><p>This is our "
             "initial public offering. The initial public offering price is $45.00 per share. Our common stock has "
             "been approved for listing on the New York Stock Exchange under the symbol “UBER.”</p>"
             "<p>The date of this prospectus is May 9, 2019.</p><p>" + "Résumé — " * 400 + "</p></body></html>")
    body = ("<SEC-DOCUMENT>\n<DOCUMENT>\n<TYPE>424B4\n<SEQUENCE>1\n<TEXT>\n" + cover + "\n</TEXT>\n</DOCUMENT>\n").encode()
    cut = next(i for i in range(body.index("Résumé".encode()), len(body)) if body[i] & 0xC0 == 0x80)  # mid-character

    def respond(req):
        a, b = map(int, _re.fullmatch(r"bytes=(\d+)-(\d+)", req.headers["Range"]).groups())
        part = body[a:b + 1]
        return 206, {"Content-Range": f"bytes {a}-{a + len(part) - 1}/{len(body)}"}, part

    with LocalServer(respond) as server:
        client = EdgarIpoClient("2019-04-01", "2019-06-30", identity="Tenali Research data@tenali.example",
                                archives_url=server.base, limiter=RateLimiter(1000), cover_bytes=cut, base_delay=0.0,
                                sleep=lambda s: None)
        got = client.prospectus(IndexEntry("424B4", "Uber Technologies, Inc.", "0001543151", D(2019, 5, 10),
                                           "edgar/data/1543151/0001193125-19-141057.txt"))
    assert (got.offer_price, got.ticker, got.exchange) == (45.0, "UBER", "NYSE")
