"""A small, fixed universe shaped exactly like financedatabase's files and the SEC ticker map.

The rows are the demo's companies (the sample market and filings tickers, with their real CIKs)
plus a few Indian listings, ETFs, currency and crypto pairs, a foreign secondary listing and an
OTC line that the default venue filter drops, and a delisted company that is kept and marked. It
goes through the same `build_universe` as the live client, so the filters are exercised offline.
"""

from __future__ import annotations

import polars as pl

from ..live.universe import ASSET_CLASSES, build_universe, parse_sec_tickers

SOURCE = "sample:generated"

_EQ = ["symbol", "name", "currency", "sector", "industry_group", "industry", "exchange", "mic", "market", "country",
       "market_cap", "isin", "delisted"]
EQUITIES = [
    ("AAPL", "Apple Inc.", "USD", "Information Technology", "Technology Hardware & Equipment",
     "Technology Hardware, Storage & Peripherals", "NMS", "XNAS", "NASDAQ Global Select", "United States", "Mega Cap",
     "US0378331005", "False"),
    ("MSFT", "Microsoft Corporation", "USD", "Information Technology", "Software & Services", "Software", "NMS",
     "XNAS", "NASDAQ Global Select", "United States", "Mega Cap", "US5949181045", "False"),
    ("IBM", "International Business Machines Corporation", "USD", "Information Technology", "Software & Services",
     "IT Services", "NYQ", "XNYS", "New York Stock Exchange", "United States", "Large Cap", "US4592001014", "False"),
    ("GOOG", "Alphabet Inc.", "USD", "Communication Services", "Media & Entertainment", "Interactive Media & Services",
     "NMS", "XNAS", "NASDAQ Global Select", "United States", "Mega Cap", "US02079K1079", "False"),
    ("FB", "Facebook, Inc.", "USD", "Communication Services", "Media & Entertainment", "Interactive Media & Services",
     "NMS", "XNAS", "NASDAQ Global Select", "United States", "Mega Cap", "US30303M1027", "False"),
    ("YHOO", "Yahoo! Inc.", "USD", "Communication Services", "Media & Entertainment", "Interactive Media & Services",
     "NMS", "XNAS", "NASDAQ Global Select", "United States", "Large Cap", "US9843321061", "True"),
    ("RELIANCE.NS", "Reliance Industries Limited", "INR", "Energy", "Energy", "Oil, Gas & Consumable Fuels", "NSI",
     "XNSE", "National Stock Exchange of India", "India", "Mega Cap", "INE002A01018", "False"),
    ("TCS.NS", "Tata Consultancy Services Limited", "INR", "Information Technology", "Software & Services",
     "IT Services", "NSI", "XNSE", "National Stock Exchange of India", "India", "Mega Cap", "INE467B01029", "False"),
    ("500325.BO", "Reliance Industries Limited", "INR", "Energy", "Energy", "Oil, Gas & Consumable Fuels", "BSE",
     "XBOM", "Bombay Stock Exchange", "India", "Mega Cap", "INE002A01018", "False"),
    ("APC.F", "Apple Inc.", "EUR", "Information Technology", "Technology Hardware & Equipment",
     "Technology Hardware, Storage & Peripherals", "FRA", "XFRA", "Frankfurt Stock Exchange", "United States",
     "Mega Cap", "US0378331005", "False"),
    ("SMPLY", "Sample OTC Holdings Corp.", "USD", "Financials", "Diversified Financials", "Capital Markets", "PNK",
     "OTCM", "OTC Markets", "United States", "Nano Cap", None, "False"),
]
_ETF = ["symbol", "name", "currency", "category_group", "category", "family", "exchange", "mic", "isin"]
ETFS = [
    ("SPY", "SPDR S&P 500 ETF Trust", "USD", "Equities", "Large Blend", "SPDR State Street Global Advisors", "PCX",
     "ARCX", "US78462F1030"),
    ("QQQ", "Invesco QQQ Trust", "USD", "Equities", "Large Growth", "Invesco", "NMS", "XNAS", "US46090E1038"),
    ("NIFTYBEES.NS", "Nippon India ETF Nifty 50 BeES", "INR", "Equities", "Large Cap", "Nippon Life India", "NSI",
     "XNSE", "INF204KB14I2"),
]
_CCY = ["symbol", "name", "base_currency", "quote_currency", "exchange"]
CURRENCIES = [("EURUSD=X", "EUR/USD", "EUR", "USD", "CCY"), ("INR=X", "USD/INR", "USD", "INR", "CCY"),
              ("GBPJPY=X", "GBP/JPY", "GBP", "JPY", "CCY")]
_CRYPTO = ["symbol", "name", "cryptocurrency", "currency", "exchange"]
CRYPTOS = [("BTC-USD", "Bitcoin USD", "BTC", "USD", "CCC"), ("ETH-USD", "Ethereum USD", "ETH", "USD", "CCC"),
           ("BTC-INR", "Bitcoin INR", "BTC", "INR", "CCC"), ("BTC-EUR", "Bitcoin EUR", "BTC", "EUR", "CCC")]

# company_tickers_exchange.json shape; CIKs as the sample filings use them.
SEC_TICKERS = {
    "fields": ["cik", "name", "ticker", "exchange"],
    "data": [[320193, "Apple Inc.", "AAPL", "Nasdaq"], [789019, "MICROSOFT CORP", "MSFT", "Nasdaq"],
             [51143, "INTERNATIONAL BUSINESS MACHINES CORP", "IBM", "NYSE"], [1288776, "Google Inc.", "GOOG", "Nasdaq"],
             [1326801, "Facebook Inc", "FB", "Nasdaq"], [1011006, "YAHOO INC", "YHOO", "Nasdaq"],
             [884394, "SPDR S&P 500 ETF TRUST", "SPY", "NYSE"], [1067839, "INVESCO QQQ TRUST, SERIES 1", "QQQ", "Nasdaq"]],
}

SAMPLE_MICS = ("XNYS", "XNAS", "XASE", "ARCX", "BATS", "XNSE", "XBOM")


def frames() -> dict[str, pl.DataFrame]:
    """The four financedatabase files of the sample, as the library would return them (all text)."""
    def frame(cols, rows):
        return pl.DataFrame(rows, schema={c: pl.String for c in cols}, orient="row")

    return {"equities": frame(_EQ, EQUITIES), "etfs": frame(_ETF, ETFS),
            "currencies": frame(_CCY, CURRENCIES), "cryptos": frame(_CRYPTO, CRYPTOS)}


class SampleUniverseClient:
    def __init__(self, classes=ASSET_CLASSES, *, mics=SAMPLE_MICS, countries=(), quote_currencies=("USD", "INR")):
        self.classes, self.mics, self.countries, self.quote_currencies = tuple(classes), mics, countries, quote_currencies

    def fetch(self) -> pl.DataFrame:
        data = {cls: f for cls, f in frames().items() if cls in self.classes}
        return build_universe(data, parse_sec_tickers(SEC_TICKERS), mics=self.mics, countries=self.countries,
                              quote_currencies=self.quote_currencies, source=SOURCE)
