"""Filings: SEC 10-K, 10-Q and 8-K primary documents (sec-edgar-downloader live; generated sample)."""

import tempfile
from pathlib import Path

from ..common import source_assets


def _fetch(sources, lake, context):
    # The downloader writes files before we parse them; keep them out of the lake (only the parsed
    # table is an asset) and away from the working directory.
    with tempfile.TemporaryDirectory(prefix="tenali-edgar-") as tmp:
        return sources.filings(Path(tmp)).fetch()


defs = source_assets(
    "filings", name="filings", group="filings", time_column="filed",
    fetch=_fetch,
    description="Filings with their header fields and primary document.",
)
