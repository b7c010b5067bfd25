"""Shared pieces of asset definitions: table metadata, and the raw -> clean pair every source has.

Every source has the same shape of graph (``raw_<name>`` written as collected, ``clean_<name>``
conformed and checked), so one factory builds it and the per-source modules only say how to fetch.

Partitioning: these assets are not partitioned yet. The sample data is small enough that one run
rebuilds a source, which keeps `tenali demo` a single run. Live ingestion at scale (10,000+
tickers over decades) needs time-window partitions with instruments batched inside each run, not a
date x ticker grid (far past Dagster's ~100,000-partition advice); that arrives with the live
ingestion issue and changes only this factory and the fetch functions.
"""


from collections.abc import Callable

import dagster as dg
import polars as pl

from ..cleaning import KEYS, REQUIRED, clean, null_counts, schema_mismatches
from ..lake import Lake
from ..resources import LakeResource, SourcesResource
from ..sources.http import PartialFetchError
from ..sources.schema import SCHEMAS


# Derived data follows its inputs: when the automation sensor is on, a new raw table is cleaned,
# and new clean tables flow into features, documents and the corpus, without a run being launched by
# hand. Tokenizer, shards and training are deliberate launches and have no condition.
FOLLOW_INPUTS = dg.AutomationCondition.eager()


def table_metadata(df: pl.DataFrame, uri: str, *, time_column: str | None = None) -> dict:
    meta: dict = {
        "dagster/row_count": df.height,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=c, type=str(t)) for c, t in df.schema.items()]),
        "uri": dg.MetadataValue.path(uri),
    }
    if "source" in df.columns and df.height:
        sources = sorted(set(df["source"].unique().to_list()))
        meta["sources"] = ", ".join(sources)
        meta["sample_data"] = all(s.startswith("sample:") for s in sources)
    if time_column and df.height:
        meta["first"] = str(df[time_column].min())
        meta["last"] = str(df[time_column].max())
    return meta


def fmt_counts(counts: dict) -> dg.MetadataValue:
    return dg.MetadataValue.json({k: v for k, v in counts.items()})


def source_assets(
    source: str,
    *,
    name: str,
    group: str,
    fetch: Callable[[SourcesResource, Lake, dg.AssetExecutionContext], pl.DataFrame],
    time_column: str | None,
    description: str,
    deps: list | None = None,
) -> list:
    """Build ``raw_<name>``, ``clean_<name>`` and the blocking checks on the clean table.

    - A source can be turned off (``TENALI_SOURCES_OFF=fundamentals,coingecko``), e.g. for a site that
      refuses automated access: its assets then write an empty table marked ``disabled`` and its
      checks pass, so the rest of the graph still builds, visibly without it.
    - One failing item (a ticker, a series, a coin) fails only itself: a client raises
      `PartialFetchError` at the end, the raw asset writes what the others returned, then fails with a
      message naming every failed item. A malformed table fails the blocking checks, so nothing
      downstream is written from it.
    """
    raw_key, clean_key = f"raw/{source}/{name}.parquet", f"clean/{source}/{name}.parquet"

    @dg.asset(name=f"raw_{name}", group_name=group, kinds={"polars", "parquet"}, deps=deps or [],
              description=f"{description} As collected by the source client (sample or live).")
    def raw_asset(context: dg.AssetExecutionContext, lake: LakeResource, sources: SourcesResource) -> dg.MaterializeResult:
        store = lake.lake()
        if sources.is_off(source):
            uri = store.write_parquet(raw_key, pl.DataFrame(schema=SCHEMAS[source]))
            return dg.MaterializeResult(metadata={"disabled": True, "uri": dg.MetadataValue.path(uri),
                                                  "dagster/row_count": 0, "client": sources.mode})
        try:
            df = fetch(sources, store, context)
        except PartialFetchError as exc:
            if exc.partial is not None and exc.partial.height:
                store.write_parquet(raw_key, exc.partial)
                context.log.warning(f"kept {exc.partial.height} rows from the items that succeeded")
            raise dg.Failure(description=str(exc), metadata={"failed": dg.MetadataValue.json(exc.failures)}) from exc
        uri = store.write_parquet(raw_key, df)
        return dg.MaterializeResult(metadata={**table_metadata(df, uri, time_column=time_column),
                                              "client": sources.mode})

    @dg.asset(name=f"clean_{name}", group_name=group, deps=[raw_asset], kinds={"polars", "parquet"},
              automation_condition=FOLLOW_INPUTS,
              description=f"{description} Conformed to the schema, impossible and duplicate rows dropped, sorted by key.")
    def clean_asset(lake: LakeResource) -> dg.MaterializeResult:
        store = lake.lake()
        result = clean(source, store.read_parquet(raw_key))
        uri = store.write_parquet(clean_key, result.df)
        return dg.MaterializeResult(metadata={**table_metadata(result.df, uri, time_column=time_column),
                                              "dropped": fmt_counts(result.dropped),
                                              "dropped_total": sum(result.dropped.values())})

    @dg.asset_check(asset=clean_asset, name="schema_and_nulls", blocking=True,
                    description="Columns and dtypes match the source schema; required columns have no nulls; "
                                "rows unless the source is off (TENALI_SOURCES_OFF).")
    def schema_check(lake: LakeResource, sources: SourcesResource) -> dg.AssetCheckResult:
        df = lake.lake().read_parquet(clean_key)
        problems = schema_mismatches(df, source)
        nulls = null_counts(df, REQUIRED[source]) if not problems else {}
        disabled = sources.is_off(source)
        return dg.AssetCheckResult(passed=not problems and not nulls and (df.height > 0 or disabled),
                                   metadata={"schema_problems": ", ".join(problems) or "none", "disabled": disabled,
                                             "null_counts": dg.MetadataValue.json(nulls), "rows": df.height})

    @dg.asset_check(asset=clean_asset, name="unique_key", blocking=True,
                    description=f"One row per key ({', '.join(KEYS[source])}).")
    def key_check(lake: LakeResource) -> dg.AssetCheckResult:
        df = lake.lake().read_parquet(clean_key)
        dupes = df.height - df.select(KEYS[source]).unique().height
        return dg.AssetCheckResult(passed=dupes == 0, metadata={"duplicate_keys": dupes})

    return [raw_asset, clean_asset, schema_check, key_check]


def clean_table(source: str, name: str) -> str:
    """The lake key of a clean table, for downstream assets."""
    return f"clean/{source}/{name}.parquet"


def polling_sensor(name: str, asset: str, description: str, evaluate,
                   default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.STOPPED) -> dg.SensorDefinition:
    """A sensor that polls a source every 15 minutes and materialises `asset` when it has news.

    `evaluate(sources, cursor, log) -> (RunRequest | SkipReason, new_cursor)` holds the logic (and is
    what tests drive); the cursor is written only when it changed.
    """

    @dg.sensor(name=name, target=dg.AssetSelection.assets(asset), minimum_interval_seconds=900,
               default_status=default_status, description=description)
    def _sensor(context: dg.SensorEvaluationContext, sources: SourcesResource):
        result, cursor = evaluate(sources, context.cursor, context.log)
        if cursor is not None and cursor != context.cursor:
            context.update_cursor(cursor)
        return result

    return _sensor
