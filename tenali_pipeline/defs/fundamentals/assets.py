"""Fundamentals: SEC XBRL company facts for the universe's SEC filers (data.sec.gov live; generated
companyfacts documents offline), normalised into statement figures with their filing dates.

Each company's companyfacts JSON is kept as served under ``raw/fundamentals/companyfacts/`` (for
reproducibility); the table has one row per figure per filing, so restatements keep both values
and `sources.live.xbrl.as_of` gives what was known on any day.
"""

import dagster as dg
import polars as pl

from ...sources.live.xbrl import statements
from ...sources.schema import FUNDAMENTALS
from ..common import source_assets, update_incrementally
from ..universe.assets import universe
from ..universe.history import UNIVERSE_KEY, cik_map

RAW_JSON = "raw/fundamentals/companyfacts/CIK{cik}.json"


def _fetch(run):
    """This bucket's SEC filers; each company's whole companyfacts, at most once per refresh interval."""
    companies = run.bucket.select(cik_map(run.lake.read_parquet(UNIVERSE_KEY)))
    lake = run.lake

    def fetch(since: dict) -> pl.DataFrame:
        client = run.sources.fundamentals({s: companies[s] for s in since},
                                          on_raw=lambda cik, body: lake.write_bytes(RAW_JSON.format(cik=cik), body))
        try:
            return client.fetch()
        finally:
            if client.missing:
                run.log.info(f"no XBRL facts at the SEC for {len(client.missing)}: {', '.join(client.missing[:50])}")

    return update_incrementally(run, list(companies), key="ticker", time_column="filed", schema=FUNDAMENTALS,
                                fetch=fetch, whole=True)


def filed_after_period_end(df: pl.DataFrame) -> dg.AssetCheckResult:
    """Every figure was filed on or after the end of the period it describes, and durations start before
    they end: a figure known before its period ended would leak the future."""
    early = df.filter(pl.col("filed") < pl.col("period_end")).height
    backwards = df.filter(pl.col("period_start") > pl.col("period_end")).height
    counts = {st: t.height for st, t in statements(df).items()} if df.height else {}
    return dg.AssetCheckResult(passed=early == 0 and backwards == 0,
                               metadata={"filed_before_period_end": early, "start_after_end": backwards,
                                         "statement_periods": dg.MetadataValue.json(counts)})


def build(buckets: int = 1) -> list:
    """raw/clean fundamentals with their checks, in `buckets` instrument buckets."""
    return source_assets(
        "fundamentals", name="fundamentals", group="fundamentals", time_column="filed", fetch=_fetch, deps=[universe],
        buckets=buckets,
        description="Income-statement, balance-sheet and cash-flow figures from SEC XBRL with the day each was filed.",
        checks={"filed_after_period_end": (" ".join(filed_after_period_end.__doc__.split()), filed_after_period_end)},
    )


defs = build()
