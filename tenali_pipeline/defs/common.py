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


@dataclass
class _RunFiles:
    """Where one run of a source's raw and clean assets reads and writes, by layout: one file
    (``raw/<source>/<name>.parquet``), the run's instrument bucket (`tenali_pipeline.buckets`) or the run's
    days (`tenali_pipeline.days`). The assets and checks are written once against it."""

    store: Lake
    source: str
    name: str
    time_column: str | None
    bucket: Bucket | None = None
    window: tuple[dt.date, dt.date] | None = None  # (first, last) day of a daily run

    def _folder(self, stage: str) -> str:
        return f"{stage}/{self.source}/{self.name}"

    @property
    def _span(self) -> str:
        first, last = self.window
        return str(first) if first == last else f"{first}..{last}"

    @property
    def label(self) -> str:
        """Names the run's state file and response archive."""
        if self.window:
            first, last = self.window
            return f"{self.name}-{first}" if first == last else f"{self.name}-{first}-to-{last}"
        if self.bucket:
            return self.bucket.name
        return self.name

    @property
    def where(self) -> str:
        """The run's partition, for messages."""
        if self.window:
            return f" (days {self._span})"
        return f" ({self.bucket})" if self.bucket and self.bucket.count > 1 else ""

    @property
    def meta(self) -> dict:
        return {"days": self._span} if self.window else {}

    def keep(self, df: pl.DataFrame) -> pl.DataFrame:
        """The rows this run writes: those of its days, for a daily run."""
        return df.filter(pl.col(self.time_column).is_between(*self.window)) if self.window else df

    def missing(self, stage: str) -> str:
        if self.window:
            first, last = self.window
            held = sum(first <= d <= last for d in day_files(self.store, self._folder(stage)))
            return f" for {(last - first).days + 1 - held} day(s) of {first}..{last}"
        return f" for {self.bucket}" if self.bucket else ""

    def read(self, stage: str) -> pl.DataFrame | None:
        """The run's table as last written; None when it (or a day of it) has not been written."""
        if self.window:
            first, last = self.window
            held = {d: k for d, k in day_files(self.store, self._folder(stage)).items() if first <= d <= last}
            if len(held) < (last - first).days + 1:
                return None
            return self.store.read_parquet_files([k for _, k in sorted(held.items())], schema=SCHEMAS[self.source])
        if self.bucket:
            return read_bucket(self.store, self._folder(stage), self.bucket)
        key = f"{self._folder(stage)}.parquet"
        return self.store.read_parquet(key) if self.store.exists(key) else None

    def address(self, stage: str) -> str:
        """Where the run's table is (a folder of days, for a daily run)."""
        folder = self._folder(stage)
        if self.window:
            return self.store.uri(folder)
        return self.store.uri(self.bucket.file(folder) if self.bucket else f"{folder}.parquet")

    def write(self, stage: str, df: pl.DataFrame, *, merge: bool = False) -> str:
        """Write the run's table. `merge` (after a partial failure): a daily run keeps the rows of its
        days whose key `df` lacks; the other layouts get the whole table from the fetch anyway."""
        if self.window:
            first, last = self.window
            return write_days(self.store, self._folder(stage), df, time_column=self.time_column, first=first,
                              last=last, keys=KEYS[self.source] if merge else None)
        if self.bucket:
            return write_bucket(self.store, self._folder(stage), self.bucket, df)
        return self.store.write_parquet(f"{self._folder(stage)}.parquet", df)

    def drop_other_layout(self, log) -> None:
        """A clean table written as one file and as days (TENALI_ONCHAIN_DAILY switched): `read_clean`
        reads whichever is there, so the other goes. Both derive from raw, which stays."""
        one = f"{self._folder('clean')}.parquet"
        other = ([one] if self.store.exists(one) else []) if self.window else list(
            day_files(self.store, self._folder("clean")).values())
        if other:
            log.info(f"removing {len(other)} clean file(s) of the other layout (TENALI_ONCHAIN_DAILY changed): "
                     f"{', '.join(other[:3])}{' ...' if len(other) > 3 else ''}")
            self.store.delete(other)


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
      refuses automated access: its clean asset then writes an empty table, the raw one (marked
      ``disabled``) keeps the rows it holds for when the source is back on, and its checks pass, so
      the rest of the graph still builds, visibly without it.
    - A sample run stops rather than replace live rows (demo and local share ``$TENALI_HOME/lake``).
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
    raw_dir = f"raw/{source}/{name}"
    partitions = dg.StaticPartitionsDefinition(bucket_keys(buckets)) if bucketed and buckets > 1 else None
    part_note = (f" Partitioned into {buckets} instrument buckets (TENALI_INSTRUMENT_BUCKETS)." if partitions else "")
    backfill = None
    if daily:
        partitions = dg.DailyPartitionsDefinition(start_date=daily_from)
        backfill = dg.BackfillPolicy.single_run()  # each series asked once per backfill, not once per day
        part_note = (f" Partitioned by day from {daily_from} (TENALI_ONCHAIN_DAILY); a backfill of any range "
                     "runs as one run.")

    def files_of(context, store: Lake) -> _RunFiles:
        """Where this run (an asset's, or its check's op context) reads and writes."""
        bucket = window = None
        if bucketed:
            bucket = Bucket.from_key(context.partition_key, buckets) if partitions else Bucket.whole()
        if daily:
            window = window_of(context)
        return _RunFiles(store, source, name, time_column, bucket=bucket, window=window)

    @dg.asset(name=f"raw_{name}", group_name=group, kinds={"polars", "parquet"}, deps=deps or [],
              partitions_def=partitions, backfill_policy=backfill,
              description=f"{description} As collected by the source client (sample or live).{part_note}")
    def raw_asset(context: dg.AssetExecutionContext, lake: LakeResource, sources: SourcesResource) -> dg.MaterializeResult:
        store = lake.lake()
        files = files_of(context, store)
        if sources.is_off(source):
            # Turned off (a site refusing us): nothing is asked and the rows held stay as they are (a feed's
            # history cannot be fetched again); an empty table only where nothing is held. The clean
            # table is empty meanwhile, so the rest of the graph builds without the source.
            empty = pl.DataFrame(schema=SCHEMAS[source])
            held = None if daily else files.read("raw")
            uri = files.write("raw", empty, merge=True) if held is None else files.address("raw")
            return dg.MaterializeResult(metadata={"disabled": True, "uri": dg.MetadataValue.path(uri),
                                                  "dagster/row_count": held.height if held is not None else 0,
                                                  "client": sources.mode, **files.meta})
        # a daily run asks for its days whatever it held; the others ask only for what is new
        previous = None if daily else files.read("raw")
        if previous is None and bucketed:
            previous = seed_from_other_counts(store, raw_dir, files.bucket, bucket_column)
        kept = _same_mode(previous, sources)
        if sources.is_sample and previous is not None and kept.height < previous.height:
            # demo and local share $TENALI_HOME/lake by default: a sample run would replace the live rows,
            # whose history (feeds list only their latest items) cannot be fetched again
            raise dg.Failure(
                f"raw_{name}: the lake holds {previous.height - kept.height} live rows{files.where} "
                f"({files.address('raw')}) and the sources are in sample mode, which would replace them. Run the "
                "demo on another lake (TENALI_HOME or TENALI_LAKE_ROOT), or set TENALI_SOURCES=live.")
        # sample runs keep their own state: their check times must not hold back a live run on the same lake
        state_key = "" if daily else f"state/{source}/{files.label}{'.sample' if sources.is_sample else ''}.json"
        run = SourceRun(sources=sources, lake=store, context=context, bucket=files.bucket,
                        previous=kept, window=files.window, state_key=state_key)
        try:
            df = files.keep(fetch(run))
        except PartialFetchError as exc:
            partial = files.keep(exc.partial) if exc.partial is not None else None
            if partial is not None and partial.height:
                # the items that answered replace theirs; those that failed keep the rows they had
                files.write("raw", partial, merge=True)
                context.log.warning(f"kept {partial.height} rows from the items that succeeded")
                if run.new_state is not None:
                    run.write_state(run.new_state)
            run.archive.save(store, source, files.label, context.run_id)
            raise dg.Failure(description=f"{exc}{files.where}",
                             metadata={"failed": dg.MetadataValue.json(exc.failures)}) from exc
        except Exception:
            run.archive.save(store, source, files.label, context.run_id)  # what the source said is evidence
            raise
        if daily and df.is_empty():
            context.log.warning(f"{source} has no rows{files.where} (before the configured series begin?)")
        uri = files.write("raw", df)
        if run.new_state is not None:
            run.write_state(run.new_state)
        archived = run.archive.save(store, source, files.label, context.run_id)
        meta = {**table_metadata(df, uri, time_column=time_column), "client": sources.mode,
                "responses_kept": len(run.archive), **files.meta}
        if archived:
            meta["responses"] = dg.MetadataValue.path(archived)
        if kept is not None:  # rows of the other mode (sample rows in a live lake) are not counted as held
            meta["new_rows"] = df.height - kept.height
        return dg.MaterializeResult(metadata=meta)

    @dg.asset(name=f"clean_{name}", group_name=group, deps=[raw_asset], kinds={"polars", "parquet"},
              automation_condition=FOLLOW_INPUTS, partitions_def=partitions, backfill_policy=backfill,
              description=f"{description} Conformed to the schema, impossible and duplicate rows dropped, "
                          f"sorted by key.{part_note}")
    def clean_asset(context: dg.AssetExecutionContext, lake: LakeResource,
                    sources: SourcesResource) -> dg.MaterializeResult:
        files = files_of(context, lake.lake())
        # a source turned off is cleaned as empty: its raw rows are kept, unused, for when it is back on
        raw = pl.DataFrame(schema=SCHEMAS[source]) if sources.is_off(source) else files.read("raw")
        if raw is None:
            raise dg.Failure(f"raw_{name} has not been materialised{files.missing('raw')}: run it first "
                             f"(the same partitions)")
        result = clean(source, raw)
        uri = files.write("clean", result.df)
        if not bucketed:
            files.drop_other_layout(context.log)
        return dg.MaterializeResult(metadata={**table_metadata(result.df, uri, time_column=time_column),
                                              "dropped": fmt_counts(result.dropped),
                                              "dropped_total": sum(result.dropped.values()), **files.meta})

    def read_clean_of(context: dg.AssetCheckExecutionContext, store: Lake) -> pl.DataFrame:
        files = files_of(context.op_execution_context, store)
        df = files.read("clean")
        if df is None:
            raise FileNotFoundError(f"clean_{name} has not been materialised{files.missing('clean')}")
        return df

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
    if day_files(lake, f"clean/{source}/{name}"):
        return read_days(lake, f"clean/{source}/{name}", SCHEMAS[source])
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
