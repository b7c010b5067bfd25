"""Live collectors: one module per source, each with one client whose `fetch()` returns a polars
DataFrame conformed to its schema in `tenali_pipeline.sources.schema`.

| module        | client                 | upstream                                   |
|---------------|------------------------|--------------------------------------------|
| market.py     | YFinanceMarketClient   | Yahoo Finance chart API via yfinance       |
| macro.py      | FredMacroClient        | FRED / ALFRED API via fredapi              |
| crypto.py     | CcxtCryptoClient       | any ccxt exchange's OHLCV endpoint         |
| filings.py    | EdgarFilingsClient     | SEC EDGAR via sec-edgar-downloader         |
| news.py       | RssNewsClient          | RSS / Atom feeds via requests + feedparser |
| documents.py  | LocalDocumentsClient   | a local folder or s3:// prefix (pyarrow)   |

Modules are imported on demand (the live extras are optional dependencies), e.g.
`from tenali_pipeline.sources.live.macro import FredMacroClient`.
"""
