"""Fundamentals: SEC XBRL company facts for the universe's SEC filers (data.sec.gov live; generated
companyfacts documents offline), normalised into statement figures with their filing dates.

Each company's companyfacts JSON is kept as served under ``raw/fundamentals/companyfacts/`` (for
reproducibility); the table has one row per figure per filing, so restatements keep both values
and `sources.live.xbrl.as_of` gives what was known on any day.
"""

import dagster as dg
import polars as pl

from ...resources import LakeResource
from ...sources.live.xbrl import statements
from ..common import clean_table, source_assets
from ..universe.assets import universe
from ..universe.history import UNIVERSE_KEY, cik_map

RAW_JSON = "raw/fundamentals/companyfacts/CIK{cik}.json"


def _fetch(sources, lake, context):
    companies = cik_map(lake.read_parquet(UNIVERSE_KEY))
    context.log.info(f"company facts for {len(companies)} SEC filers in the universe")
    client = sources.fundamentals(companies, on_raw=lambda cik, body: lake.write_bytes(RAW_JSON.format(cik=cik), body))
    df = client.fetch()
    if client.missing:
        context.log.info(f"no XBRL facts at the SEC for {len(client.missing)}: {', '.join(client.missing[:50])}")
    return df


defs = source_assets(
    "fundamentals", name="fundamentals", group="fundamentals", time_column="filed", fetch=_fetch, deps=[universe],
    description="Income-statement, balance-sheet and cash-flow figures from SEC XBRL with the day each was filed.",
)
clean_fundamentals = defs[1]


@dg.asset_check(asset=clean_fundamentals, blocking=True,
                description="Every figure was filed on or after the end of the period it describes, and durations "
                            "start before they end: a figure known before its period ended would leak the future.")
def filed_after_period_end(lake: LakeResource) -> dg.AssetCheckResult:
    df = lake.lake().read_parquet(clean_table("fundamentals", "fundamentals"))
    early = df.filter(pl.col("filed") < pl.col("period_end")).height
    backwards = df.filter(pl.col("period_start") > pl.col("period_end")).height
    counts = {st: t.height for st, t in statements(df).items()} if df.height else {}
    return dg.AssetCheckResult(passed=early == 0 and backwards == 0,
                               metadata={"filed_before_period_end": early, "start_after_end": backwards,
                                         "statement_periods": dg.MetadataValue.json(counts)})
