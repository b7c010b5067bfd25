"""Filings: SEC 10-K, 10-Q and 8-K primary documents (sec-edgar-downloader live; generated sample).

Companies: ``TENALI_TICKERS`` (a list), or ``TENALI_TICKERS=universe`` for every SEC filer in the
`universe` asset, asked for by CIK (which also reaches delisted and renamed companies) with the
universe's symbol filled in as the ticker.
"""

import tempfile
from pathlib import Path

import polars as pl

from ..common import source_assets
from ..market.assets import read_universe
from ..universe.history import cik_map


def _fetch(sources, lake, context):
    companies = None
    if sources.tickers_from_universe:
        companies = cik_map(read_universe(lake, "raw_filings"))
        if not companies:
            raise ValueError("TENALI_TICKERS=universe: the universe holds no SEC filers (no CIKs); check the "
                             "TENALI_UNIVERSE_* filters")
        context.log.info(f"{len(companies)} SEC filers from the universe")
    # The downloader writes files before we parse them; keep them out of the lake (only the parsed
    # table is an asset) and away from the working directory.
    with tempfile.TemporaryDirectory(prefix="tenali-edgar-") as tmp:
        df = sources.filings(Path(tmp), companies).fetch()
    if companies:
        by_cik = {cik: symbol for symbol, cik in companies.items()}
        df = df.with_columns(pl.coalesce(pl.col("ticker"), pl.col("cik").replace_strict(by_cik, default=None,
                                                                                        return_dtype=pl.String)).alias("ticker"))
    return df


def build(deps: list | None = None) -> list:
    """raw/clean filings with their checks; `deps` for TENALI_TICKERS=universe."""
    return source_assets(
        "filings", name="filings", group="filings", time_column="filed", fetch=_fetch, deps=deps,
        description="Filings with their header fields and primary document.",
    )


defs = build()
