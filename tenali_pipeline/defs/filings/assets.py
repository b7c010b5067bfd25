"""Filings: SEC 10-K, 10-Q and 8-K primary documents, and the EX-99 exhibits (press releases) of 8-Ks
(sec-edgar-downloader live; generated sample).

Companies: ``TENALI_TICKERS`` (a list), or ``TENALI_TICKERS=universe`` for every SEC filer in the
`universe` asset, asked for by CIK (which also reaches delisted and renamed companies) with the
universe's symbol filled in as the ticker.
"""

import tempfile
from pathlib import Path

import polars as pl

from ...sources.http import PartialFetchError
from ...sources.schema import FILINGS
from ..common import source_assets, update_incrementally
from ..market.assets import read_universe
from ..universe.history import cik_map


def _fetch(run):
    """This bucket's companies, each asked only for filings since its last one held."""
    sources, lake = run.sources, run.lake
    if sources.tickers_from_universe:
        companies = cik_map(read_universe(lake, "raw_filings"))
        if not companies:
            raise ValueError("TENALI_TICKERS=universe: the universe holds no SEC filers (no CIKs); check the "
                             "TENALI_UNIVERSE_* filters")
        run.log.info(f"{len(companies)} SEC filers from the universe")
    else:
        companies = {t.strip().upper(): None for t in sources.tickers}
    mine = run.bucket.select(companies)

    def fetch(since: dict) -> pl.DataFrame:
        asked = {symbol: companies[symbol] for symbol in since}
        # The downloader writes files before we parse them; keep them out of the lake (the full
        # submissions go to the response archive, the parsed table is the asset) and out of the cwd.
        with tempfile.TemporaryDirectory(prefix="tenali-edgar-") as tmp:
            by_universe = sources.tickers_from_universe
            client = sources.filings(Path(tmp), asked if by_universe else None, archive=run.archive,
                                     tickers=None if by_universe else list(asked))
            # the live client asks EDGAR by CIK in universe mode; the sample one always by symbol
            key = (lambda s: asked[s]) if by_universe and not sources.is_sample else (lambda s: s)
            by_symbol = {key(s): s for s in since}
            try:
                df = client.fetch(since={key(s): d for s, d in since.items()})
            except PartialFetchError as exc:
                raise PartialFetchError("SEC EDGAR filings", {by_symbol.get(k, k): v for k, v in exc.failures.items()},
                                        partial=_symbols(exc.partial, asked)) from exc
        return _symbols(df, asked)

    return update_incrementally(run, list(mine), key="ticker", time_column="filed", schema=FILINGS, fetch=fetch)


def _symbols(df: pl.DataFrame | None, asked: dict) -> pl.DataFrame | None:
    """Fill the universe's symbol in as the ticker of filings asked for by CIK."""
    if df is None:
        return None
    by_cik = {cik: symbol for symbol, cik in asked.items() if cik}
    if not by_cik:
        return df
    return df.with_columns(pl.coalesce(pl.col("ticker"), pl.col("cik").replace_strict(by_cik, default=None,
                                                                                    return_dtype=pl.String)).alias("ticker"))


def build(deps: list | None = None, buckets: int = 1) -> list:
    """raw/clean filings with their checks; `deps` for TENALI_TICKERS=universe."""
    return source_assets(
        "filings", name="filings", group="filings", time_column="filed", fetch=_fetch, deps=deps, buckets=buckets,
        description="Filings with their header fields, primary document and (8-Ks) EX-99 exhibits.",
    )


defs = build()
