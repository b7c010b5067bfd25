"""Universe: the tradable instruments (financedatabase + SEC ticker map live; a fixed sample offline).

``raw_universe_snapshot`` / ``clean_universe_snapshot`` hold the latest refresh; ``universe`` folds
each refresh into the table kept so far (history.py), so delistings and renames are kept. Other
assets take their ticker lists from it with `history.universe_tickers(lake, ...)`.

A live snapshot taken less than ``refresh_hours`` ago is kept rather than asked again (the time is
in the partition state); the SEC ticker map is kept as served under ``raw/universe/responses/``.
"""

import datetime as dt

import dagster as dg
import polars as pl

from ...resources import LakeResource, SourcesResource
from ..common import FOLLOW_INPUTS, read_clean, source_assets, table_metadata
from .history import STATUSES, UNIVERSE_KEY, merge_snapshot



def _snapshot(run):
    sources = run.sources
    if sources.is_sample:  # fixed data
        return sources.universe().fetch()
    now = dt.datetime.now(dt.timezone.utc)
    taken = run.read_state().get("taken")
    if (run.previous is not None and run.previous.height and taken
            and now - dt.datetime.fromisoformat(taken) < dt.timedelta(hours=sources.refresh_hours)):
        run.log.info(f"the universe snapshot of {taken} is less than {sources.refresh_hours:g} h old: kept")
        return run.previous
    df = sources.universe(archive=run.archive).fetch()
    run.new_state = {"taken": now.isoformat()}
    return df


snapshot_defs = source_assets(
    "universe", name="universe_snapshot", group="universe", time_column=None,
    fetch=_snapshot,
    description="Equities by venue, country, sector and industry; ETFs; currency and crypto pairs; SEC CIKs.",
)
clean_snapshot = snapshot_defs[1]


@dg.asset(group_name="universe", deps=[clean_snapshot], kinds={"polars", "parquet"}, automation_condition=FOLLOW_INPUTS,
          description="Every instrument ever seen in the universe with first_seen, last_seen and status "
                      "(listed, delisted, renamed with renamed_to, missing): refreshes add, never drop.")
def universe(context: dg.AssetExecutionContext, lake: LakeResource, sources: SourcesResource) -> dg.MaterializeResult:
    store = lake.lake()
    snapshot = read_clean(store, "universe", "universe_snapshot")
    previous = store.read_parquet(UNIVERSE_KEY) if store.exists(UNIVERSE_KEY) else None
    if sources.is_off("universe") and previous is not None:
        # turned off (TENALI_SOURCES_OFF=universe): its empty snapshot says nothing about delistings, so
        # every instrument keeps its status instead of becoming "missing"
        context.log.warning("the universe source is off: the history is kept as it was")
        merged = previous
    else:
        merged = merge_snapshot(previous, snapshot, dt.date.today())
    uri = store.write_parquet(UNIVERSE_KEY, merged)
    counts = merged.group_by("asset_class", "status").len().sort("asset_class", "status")
    table = "| class | status | instruments |\n|---|---|---:|\n" + "\n".join(
        f"| {c} | {s} | {n:,} |" for c, s, n in counts.iter_rows())
    return dg.MaterializeResult(metadata={
        **table_metadata(merged, uri), "by_class_and_status": dg.MetadataValue.md(table),
        "listed_equities": merged.filter(pl.col("asset_class") == "equity", pl.col("status") == "listed").height,
        "sec_filers": merged.filter(pl.col("cik").is_not_null()).height,
    })


@dg.asset_check(asset=universe, blocking=True, description="One row per (class, symbol); known statuses; "
                "first_seen <= last_seen.")
def universe_history_is_consistent(lake: LakeResource) -> dg.AssetCheckResult:
    df = lake.lake().read_parquet(UNIVERSE_KEY)
    dupes = df.height - df.select("asset_class", "symbol").unique().height
    bad_status = df.filter(~pl.col("status").is_in(list(STATUSES))).height
    bad_dates = df.filter(pl.col("first_seen") > pl.col("last_seen")).height
    return dg.AssetCheckResult(passed=df.height > 0 and not (dupes or bad_status or bad_dates),
                               metadata={"duplicate_keys": dupes, "unknown_status": bad_status,
                                         "first_after_last": bad_dates, "rows": df.height})
