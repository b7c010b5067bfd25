"""Shared pieces of asset definitions: table metadata, and the raw -> clean pair every source has.

Every source has the same shape of graph (``raw_<name>`` written as collected, ``clean_<name>``
conformed and checked), so one factory builds it and the per-source modules only say how to fetch.

Partitioning (why, in `tenali_pipeline.buckets`): the per-instrument sources (market prices, filings,
fundamentals) are ``bucketed``: with ``TENALI_INSTRUMENT_BUCKETS`` above 1 their raw and clean assets
are partitioned into that many instrument buckets, each run fetching one bucket's instruments. The
other sources hold tens to hundreds of items (series, symbols, feeds), each one request, and stay
unpartitioned; one failing item still fails only itself (`PartialFetchError`). The on-chain sources
are ``daily`` when ``TENALI_ONCHAIN_DAILY`` is on (the local and prod profiles): partitioned by the day
the rows describe, one file per day, a backfill of any range running as one run (why, in
`tenali_pipeline.days`).

Incremental runs: the fetch function gets this partition's raw table as last written
(`SourceRun.previous`) and asks the source only for what is newer; re-running a partition replaces its
file, so a killed run leaves no duplicates. Raw responses are kept under ``raw/<source>/responses/``
(`SourceRun.archive`, see `sources.archive`).
"""


import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
import polars as pl

from ..buckets import Bucket, bucket_keys, read_bucket, read_bucketed, seed_from_other_counts, write_bucket
from ..cleaning import KEYS, REQUIRED, clean, null_counts, schema_mismatches
from ..days import day_files, read_days, window_of, write_days
from ..lake import Lake
from ..resources import LakeResource, SourcesResource
from ..sources.archive import ResponseArchive
from ..sources.http import PartialFetchError
from ..sources.incremental import merge_updates, plan_updates, replace_items
from ..sources.schema import SCHEMAS


# Derived data follows its inputs: when the automation sensor is on, a new raw table is cleaned,
# and new clean tables flow into features, documents and the corpus, without a run being launched by
# hand. Tokenizer, shards and training are deliberate launches and have no condition.
FOLLOW_INPUTS = dg.AutomationCondition.eager()


@dataclass
class SourceRun:
    """What a fetch function gets: the clients, the lake, and this partition's state.

    - `bucket`: the instruments this run covers (`bucket.select(tickers)`); None for an unbucketed source.
    - `previous`: this partition's raw table as the last run wrote it (None the first time), so the
      fetch can ask only for what is new and return old and new rows together.
    - `archive`: record raw responses here (clients attach it to their sessions); it is saved by the asset.
    - `window`: (first, last) day of a daily source's partition range: fetch those days (rows outside
      it are not written); None for the other sources.
    """

    sources: SourcesResource
    lake: Lake
    context: dg.AssetExecutionContext
    bucket: Bucket | None = None
    previous: pl.DataFrame | None = None
    archive: ResponseArchive = field(default_factory=ResponseArchive)
    state_key: str = ""
    window: tuple[dt.date, dt.date] | None = None
    # set by the fetch; written after the raw table (a state ahead of the rows would hide them)
    new_state: dict | None = None

    @property
    def log(self):
        return self.context.log

    def read_state(self) -> dict:
        """Small JSON state of this partition (e.g. when each ticker was last checked); {} at first."""
        return self.lake.read_json(self.state_key) if self.state_key and self.lake.exists(self.state_key) else {}

    def write_state(self, state: dict) -> None:
        self.lake.write_json(self.state_key, state)


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


# (source, name) of the per-instrument sources, whose clean tables are folders of buckets.
BUCKETED: set[tuple[str, str]] = set()


def unless_recently_checked(fetch: Callable[[SourceRun], pl.DataFrame]) -> Callable[[SourceRun], pl.DataFrame]:
    """`fetch` for a source asked as a whole (not item by item): skipped, the rows held returned, when the
    last successful run was within TENALI_REFRESH_HOURS (live sources; `update_incrementally` does the
    same per item). A successful fetch adds ``checked`` to the state it sets; a failed one leaves it out,
    so the next run asks again at once."""

    def wrapped(run: SourceRun) -> pl.DataFrame:
        now = dt.datetime.now(dt.timezone.utc)
        checked = run.read_state().get("checked")
        if (not run.sources.is_sample and run.previous is not None and run.previous.height and checked
                and now - dt.datetime.fromisoformat(checked) < dt.timedelta(hours=run.sources.refresh_hours)):
            run.log.info(f"checked at {checked}, within TENALI_REFRESH_HOURS: nothing asked")
            return run.previous  # the state stays as it is (new_state None)
        table = fetch(run)
        run.new_state = {**(run.new_state or {}), "checked": now.isoformat()}
        return table

    return wrapped


def update_incrementally(
    run: SourceRun,
    items: list[str],
    *,
    key: str,
    time_column: str,
    fetch: Callable[[dict], pl.DataFrame],
    schema: dict,
    compare: tuple[str, ...] = (),
    whole: bool = False,
) -> pl.DataFrame:
    """The raw table of `items` after asking the source only for what is new (sources/incremental.py).

    `whole`: the source answers with an item's whole history each time (SEC companyfacts), so the
    fetched rows replace that item's rows; only the check interval keeps it from being asked again.

    `fetch(since)` gets {item: first day, or None for the whole history} and returns their rows,
    raising `PartialFetchError` for items that failed. Items that left the configuration are dropped;
    an item whose overlapping `compare` values changed is fetched whole again. The check times go to
    the partition's state, written after the table; failures are re-raised with the whole table.
    """
    previous = run.previous
    if previous is not None:
        gone = previous.filter(~pl.col(key).is_in(items))[key].unique().to_list()
        if gone:
            run.log.info(f"dropping {len(gone)} item(s) no longer configured: {', '.join(sorted(map(str, gone))[:20])}")
            previous = previous.filter(pl.col(key).is_in(items))
    state = run.read_state()
    now = dt.datetime.now(dt.timezone.utc)
    due = plan_updates(previous, items, key=key, time_column=time_column, checked=state.get("checked", {}), now=now,
                       min_interval=dt.timedelta(hours=run.sources.refresh_hours))
    where = f"{run.bucket}: " if run.bucket is not None and run.bucket.count > 1 else ""
    run.log.info(f"{where}{len(items)} item(s), {len(due)} due ({sum(d is None for d in due.values())} new, "
                 "the rest from their last day)")
    failures: dict[str, str] = {}

    def ask(since: dict) -> pl.DataFrame | None:
        if not since:
            return None
        try:
            return fetch(since)
        except PartialFetchError as exc:
            failures.update(exc.failures)
            return exc.partial

    fetched = ask(due)
    if whole:
        # replace only the items the source answered for: a failed item keeps its rows whatever name
        # the client gave its failure (xbrl says "AAPL (CIK 0000320193)")
        done = fetched[key].unique().to_list() if fetched is not None else []
        base = previous if previous is not None else pl.DataFrame(schema=schema)
        table = replace_items(base, fetched, done, key=key, time_column=time_column) if fetched is not None else previous
        fetched = None
    table, adjusted = (merge_updates(previous, fetched, key=key, time_column=time_column, compare=compare)
                       if fetched is not None else (table if whole else previous, []))
    adjusted = [i for i in adjusted if i not in failures]
    if adjusted:  # e.g. Yahoo re-based adj_close after a dividend or split: take those histories whole again
        run.log.info(f"history changed at the source for {', '.join(map(str, adjusted))}: fetching it whole")
        fresh = ask({i: None for i in adjusted})
        if fresh is not None:
            table = replace_items(table, fresh, [i for i in adjusted if i not in failures], key=key,
                                  time_column=time_column)
    table = table if table is not None else pl.DataFrame(schema=schema)
    checked = {**state.get("checked", {}), **{i: now.isoformat() for i in due if i not in failures}}
    run.new_state = {"checked": {i: v for i, v in checked.items() if i in items}}
    if failures:
        raise PartialFetchError(run.context.asset_key.to_user_string(), failures, partial=table)
    return table


def _same_mode(df: pl.DataFrame | None, sources: SourcesResource) -> pl.DataFrame | None:
    """Never carry sample rows into a live lake, or the reverse."""
    if df is None or "source" not in df.columns:
        return df
    is_sample = pl.col("source").str.starts_with("sample:")
    return df.filter(is_sample if sources.is_sample else ~is_sample)


def source_assets(
    source: str,
    *,
    name: str,
    group: str,
    fetch: Callable[[SourceRun], pl.DataFrame],
    time_column: str | None,
    description: str,
    deps: list | None = None,
    buckets: int | None = None,
    bucket_column: str = "ticker",
    checks: dict[str, tuple[str, Callable[[pl.DataFrame], dg.AssetCheckResult]]] | None = None,
    daily_from: str | None = None,
) -> list:
    """Build ``raw_<name>``, ``clean_<name>`` and the blocking checks on the clean table.

    - `buckets`: None for an unbucketed source (one file ``raw/<source>/<name>.parquet``); a count for a
      per-instrument source (files per bucket; partitioned when the count is above 1), whose rows carry
      their instrument in `bucket_column`.
    - `checks`: more blocking checks on the clean table, ``{name: (description, check(df))}``; each gets
      this run's table (its bucket's, when partitioned; its days', when daily).
    - `daily_from`: partition by day from this date (``tenali_pipeline.days``); the fetch gets the
      run's days in `SourceRun.window` and nothing of the previous runs (re-running a day asks again).
    - A source can be turned off (``TENALI_SOURCES_OFF=fundamentals,coingecko``), e.g. for a site that
      refuses automated access: its assets then write an empty table marked ``disabled`` and its
      checks pass, so the rest of the graph still builds, visibly without it.
    - One failing item (a ticker, a series, a coin) fails only itself: a client raises
      `PartialFetchError` at the end, the raw asset writes what the others returned, then fails with a
      message naming every failed item. A malformed table fails the blocking checks, so nothing
      downstream is written from it.
    """
    bucketed, daily = buckets is not None, daily_from is not None
    if bucketed and daily:
        raise ValueError(f"{name}: a source is bucketed or daily, not both")
    if bucketed:
        BUCKETED.add((source, name))
    raw_key, clean_key = f"raw/{source}/{name}.parquet", f"clean/{source}/{name}.parquet"
    raw_dir, clean_dir = f"raw/{source}/{name}", f"clean/{source}/{name}"
    partitions = dg.StaticPartitionsDefinition(bucket_keys(buckets)) if bucketed and buckets > 1 else None
    part_note = (f" Partitioned into {buckets} instrument buckets (TENALI_INSTRUMENT_BUCKETS)." if partitions else "")
    backfill = None
    if daily:
        partitions = dg.DailyPartitionsDefinition(start_date=daily_from)
        backfill = dg.BackfillPolicy.single_run()  # each series asked once per backfill, not once per day
        part_note = (f" Partitioned by day from {daily_from} (TENALI_ONCHAIN_DAILY); a backfill of any range "
                     "runs as one run.")

    def bucket_of_run(context) -> Bucket | None:
        if not bucketed:
            return None
        return Bucket.from_key(context.partition_key, buckets) if partitions else Bucket.whole()

    def read_raw(store: Lake, bucket: Bucket | None) -> pl.DataFrame | None:
        if bucket is None:
            return store.read_parquet(raw_key) if store.exists(raw_key) else None
        return read_bucket(store, raw_dir, bucket)

    def write(store: Lake, bucket: Bucket | None, stage: str, df: pl.DataFrame) -> str:
        if bucket is None:
            return store.write_parquet(raw_key if stage == "raw" else clean_key, df)
        return write_bucket(store, raw_dir if stage == "raw" else clean_dir, bucket, df)

    def read_clean_of(context: dg.AssetCheckExecutionContext, store: Lake) -> pl.DataFrame:
        if daily:
            return read_days(store, clean_dir, SCHEMAS[source], *window_of(context.op_execution_context))
        bucket = bucket_of_run(context.op_execution_context)
        if bucket is None:
            return store.read_parquet(clean_key)
        return store.read_parquet(bucket.file(clean_dir))

    @dg.asset(name=f"raw_{name}", group_name=group, kinds={"polars", "parquet"}, deps=deps or [],
              partitions_def=partitions, backfill_policy=backfill,
              description=f"{description} As collected by the source client (sample or live).{part_note}")
    def raw_asset(context: dg.AssetExecutionContext, lake: LakeResource, sources: SourcesResource) -> dg.MaterializeResult:
        store = lake.lake()
        if daily:
            return raw_days(context, store, sources)
        bucket = bucket_of_run(context)
        if sources.is_off(source):
            uri = write(store, bucket, "raw", pl.DataFrame(schema=SCHEMAS[source]))
            return dg.MaterializeResult(metadata={"disabled": True, "uri": dg.MetadataValue.path(uri),
                                                  "dagster/row_count": 0, "client": sources.mode})
        previous = read_raw(store, bucket)
        if previous is None and bucket is not None:
            previous = seed_from_other_counts(store, raw_dir, bucket, bucket_column)
        part = bucket.file("x").split("/")[-1].removesuffix(".parquet") if bucket else name
        run = SourceRun(sources=sources, lake=store, context=context, bucket=bucket,
                        previous=_same_mode(previous, sources),
                        state_key=f"state/{source}/{part if bucket else name}.json")
        try:
            df = fetch(run)
        except PartialFetchError as exc:
            if exc.partial is not None and exc.partial.height:
                write(store, bucket, "raw", exc.partial)
                context.log.warning(f"kept {exc.partial.height} rows from the items that succeeded")
                if run.new_state is not None:
                    run.write_state(run.new_state)
            run.archive.save(store, source, part, context.run_id)
            where = f" ({bucket})" if bucket and bucket.count > 1 else ""
            raise dg.Failure(description=f"{exc}{where}",
                             metadata={"failed": dg.MetadataValue.json(exc.failures)}) from exc
        except Exception:
            run.archive.save(store, source, part, context.run_id)  # what the source said is evidence
            raise
        uri = write(store, bucket, "raw", df)
        if run.new_state is not None:
            run.write_state(run.new_state)
        archived = run.archive.save(store, source, part, context.run_id)
        meta = {**table_metadata(df, uri, time_column=time_column), "client": sources.mode,
                "responses_kept": len(run.archive)}
        if archived:
            meta["responses"] = dg.MetadataValue.path(archived)
        if previous is not None:
            meta["new_rows"] = df.height - previous.height
        return dg.MaterializeResult(metadata=meta)

    def drop_other_layout(context, store: Lake, keys) -> None:
        """The clean table written as one file and as days (TENALI_ONCHAIN_DAILY switched): `read_clean`
        reads whichever is there, so the other goes. Both are derived from raw, which stays."""
        keys = list(keys)
        if keys:
            context.log.info(f"removing {len(keys)} clean file(s) of the other layout (TENALI_ONCHAIN_DAILY "
                             f"changed): {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}")
            store.delete(keys)

    def raw_days(context: dg.AssetExecutionContext, store: Lake, sources: SourcesResource) -> dg.MaterializeResult:
        """A daily source's run: fetch the partition range, write one file per day of it."""
        first, last = window_of(context)
        span = str(first) if first == last else f"{first}..{last}"
        if sources.is_off(source):
            uri = write_days(store, raw_dir, pl.DataFrame(schema=SCHEMAS[source]), time_column=time_column,
                             first=first, last=last)
            return dg.MaterializeResult(metadata={"disabled": True, "uri": dg.MetadataValue.path(uri),
                                                  "dagster/row_count": 0, "client": sources.mode, "days": span})
        run = SourceRun(sources=sources, lake=store, context=context, window=(first, last))
        part = f"{name}-{first}" if first == last else f"{name}-{first}-to-{last}"

        def in_window(df: pl.DataFrame) -> pl.DataFrame:
            return df.filter(pl.col(time_column).is_between(first, last))

        try:
            df = in_window(fetch(run))
        except PartialFetchError as exc:
            partial = in_window(exc.partial) if exc.partial is not None else None
            if partial is not None and partial.height:
                # the items that answered replace theirs; those that failed keep the rows they had
                write_days(store, raw_dir, partial, time_column=time_column, first=first, last=last,
                           keys=KEYS[source])
                context.log.warning(f"kept {partial.height} rows from the items that succeeded")
            run.archive.save(store, source, part, context.run_id)
            raise dg.Failure(description=f"{exc} (days {span})",
                             metadata={"failed": dg.MetadataValue.json(exc.failures)}) from exc
        except Exception:
            run.archive.save(store, source, part, context.run_id)
            raise
        if df.is_empty():
            context.log.warning(f"{source} has no rows for {span} (before the configured series begin?)")
        uri = write_days(store, raw_dir, df, time_column=time_column, first=first, last=last)
        archived = run.archive.save(store, source, part, context.run_id)
        meta = {**table_metadata(df, uri, time_column=time_column), "client": sources.mode, "days": span,
                "responses_kept": len(run.archive)}
        if archived:
            meta["responses"] = dg.MetadataValue.path(archived)
        return dg.MaterializeResult(metadata=meta)

    def clean_days(context: dg.AssetExecutionContext, store: Lake) -> dg.MaterializeResult:
        first, last = window_of(context)
        held = {d for d in day_files(store, raw_dir) if first <= d <= last}
        missing = (last - first).days + 1 - len(held)
        if missing:
            raise dg.Failure(f"raw_{name} has not been materialised for {missing} day(s) of {first}..{last}: "
                             "run it for those days first (the same partitions)")
        result = clean(source, read_days(store, raw_dir, SCHEMAS[source], first, last))
        uri = write_days(store, clean_dir, result.df, time_column=time_column, first=first, last=last)
        drop_other_layout(context, store, [clean_key] if store.exists(clean_key) else [])
        return dg.MaterializeResult(metadata={**table_metadata(result.df, uri, time_column=time_column),
                                              "days": str(first) if first == last else f"{first}..{last}",
                                              "dropped": fmt_counts(result.dropped),
                                              "dropped_total": sum(result.dropped.values())})

    @dg.asset(name=f"clean_{name}", group_name=group, deps=[raw_asset], kinds={"polars", "parquet"},
              automation_condition=FOLLOW_INPUTS, partitions_def=partitions, backfill_policy=backfill,
              description=f"{description} Conformed to the schema, impossible and duplicate rows dropped, "
                          f"sorted by key.{part_note}")
    def clean_asset(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        store = lake.lake()
        if daily:
            return clean_days(context, store)
        bucket = bucket_of_run(context)
        raw = read_raw(store, bucket)
        if raw is None:
            raise dg.Failure(f"raw_{name} has not been materialised{f' for {bucket}' if bucket else ''}: run it first")
        result = clean(source, raw)
        uri = write(store, bucket, "clean", result.df)
        if bucket is None:
            drop_other_layout(context, store, day_files(store, clean_dir).values())
        return dg.MaterializeResult(metadata={**table_metadata(result.df, uri, time_column=time_column),
                                              "dropped": fmt_counts(result.dropped),
                                              "dropped_total": sum(result.dropped.values())})

    @dg.asset_check(asset=clean_asset, name="schema_and_nulls", blocking=True,
                    description="Columns and dtypes match the source schema; required columns have no nulls; "
                                "rows unless the source is off (TENALI_SOURCES_OFF) or the bucket holds no instrument.")
    def schema_check(context: dg.AssetCheckExecutionContext, lake: LakeResource,
                     sources: SourcesResource) -> dg.AssetCheckResult:
        df = read_clean_of(context, lake.lake())
        problems = schema_mismatches(df, source)
        nulls = null_counts(df, REQUIRED[source]) if not problems else {}
        disabled = sources.is_off(source)
        # A bucket may hold no configured instrument (5 tickers in 32 buckets), a day may come before
        # every configured series began: empty is then right.
        may_be_empty = disabled or (bucketed and buckets > 1) or daily
        return dg.AssetCheckResult(passed=not problems and not nulls and (df.height > 0 or may_be_empty),
                                   metadata={"schema_problems": ", ".join(problems) or "none", "disabled": disabled,
                                             "null_counts": dg.MetadataValue.json(nulls), "rows": df.height})

    @dg.asset_check(asset=clean_asset, name="unique_key", blocking=True,
                    description=f"One row per key ({', '.join(KEYS[source])}).")
    def key_check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
        df = read_clean_of(context, lake.lake())
        dupes = df.height - df.select(KEYS[source]).unique().height
        return dg.AssetCheckResult(passed=dupes == 0, metadata={"duplicate_keys": dupes})

    def extra_check(check_name: str, description: str, check: Callable[[pl.DataFrame], dg.AssetCheckResult]):
        @dg.asset_check(asset=clean_asset, name=check_name, blocking=True, description=description)
        def _check(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
            return check(read_clean_of(context, lake.lake()))

        return _check

    extra = [extra_check(n, d, fn) for n, (d, fn) in (checks or {}).items()]
    return [raw_asset, clean_asset, schema_check, key_check, *extra]


def replace_definitions(assets: list, checks: list, new: list) -> tuple[list, list]:
    """`assets` and `checks` with those of the same keys swapped for `new` (a source rebuilt for the
    settings: buckets, the universe, days). Rebuilt rather than mapped: `map_asset_specs` adds an edge
    to the graph but not to the run's step order, and cannot change partitions."""
    new_checks = [x for x in new if isinstance(x, dg.AssetChecksDefinition)]
    new_assets = [x for x in new if not isinstance(x, dg.AssetChecksDefinition)]
    replaced = {k for a in new_assets for k in a.keys}
    return ([a for a in assets if not (set(getattr(a, "keys", ())) & replaced)] + new_assets,
            [c for c in checks if not ({k.asset_key for k in c.check_keys} & replaced)] + new_checks)


def read_clean(lake: Lake, source: str, name: str) -> pl.DataFrame:
    """A clean table for downstream assets: the one file, every bucket of a bucketed source, or every
    day held of a daily one (its clean asset keeps only one of the two layouts)."""
    if (source, name) in BUCKETED:
        return read_bucketed(lake, f"clean/{source}/{name}", asset=f"clean_{name}")
    days = day_files(lake, f"clean/{source}/{name}")
    if days:
        return lake.read_parquet_files([k for _, k in sorted(days.items())], schema=SCHEMAS[source])
    return lake.read_parquet(clean_table(source, name))


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
