"""Keeping ingestion current: the end-of-day schedule, the new-data sensors and the automation sensor.

The schedule launches the raw source assets after the US close on weekdays; the automation sensor
then carries new data through cleaning, features, documents and the corpus (their
``AutomationCondition.eager()``). Between closes, `new_feed_entries` (news/sensors.py) and
`new_edgar_filings` (filings/sensors.py) poll cheaply every 15 minutes and launch `raw_news` /
`raw_filings` only when a feed or a company has something new. All of them start running by
themselves in the local and prod profiles; in the demo profile (sample data that never changes)
they are listed in the UI but stopped.

With TENALI_ONCHAIN_DAILY, the on-chain sources are partitioned by day and left out of
`ingest_sources`: `ingest_onchain` collects and cleans them, `daily_onchain` runs it each day at
01:00 UTC over the last `ONCHAIN_DAYS` complete days as one run (so that DefiLlama's and CoinGecko's
revisions of their latest days replace what was written the day before), and a backfill of that job
over any range fills the history.
"""

import datetime as dt

import dagster as dg

from .filings.sensors import build_new_edgar_filings_sensor
from .news.sensors import build_new_feed_entries_sensor
from .onchain.assets import ASSETS as ONCHAIN_ASSETS  # partitioned by day with TENALI_ONCHAIN_DAILY
from .onchain.assets import RAW_ASSETS as ONCHAIN_RAW_ASSETS

RAW_ASSETS = ("raw_market_prices", "raw_macro_series", "raw_crypto_ohlcv", "raw_filings", "raw_news", "raw_documents",
              # issue 12 sources: the universe snapshot, SEC XBRL fundamentals, DeFi metrics, coin markets
              # and central-bank communications (each turned off by TENALI_SOURCES_OFF if its site refuses us)
              "raw_universe_snapshot", "raw_fundamentals", "raw_defi_metrics", "raw_coin_markets", "raw_central_bank",
              "raw_india_announcements", "raw_india_bhavcopy", "raw_india_ipos", "raw_us_ipos")
# Partitioned into instrument buckets when TENALI_INSTRUMENT_BUCKETS > 1 (tenali_pipeline/buckets.py).
INSTRUMENT_ASSETS = ("raw_market_prices", "raw_filings", "raw_fundamentals")
ONCHAIN_DAYS = 3  # the sources revise their latest days; free to re-ask (whole histories; CoinGecko >= 92 days)


def build_schedules_and_sensors(profile: str, buckets: int = 1, universe: bool = False,
                                daily: bool = False) -> tuple[list, list, list]:
    """(schedules, sensors, jobs). With buckets, the per-instrument sources get their own partitioned job
    and the end-of-day schedule asks for every bucket (each run fetches only what is new); with `daily`,
    the on-chain sources get theirs and a daily schedule."""
    status = dg.DefaultScheduleStatus.STOPPED if profile == "demo" else dg.DefaultScheduleStatus.RUNNING
    sensor_status = dg.DefaultSensorStatus.STOPPED if profile == "demo" else dg.DefaultSensorStatus.RUNNING
    plain = [a for a in RAW_ASSETS if (buckets <= 1 or a not in INSTRUMENT_ASSETS)
             and not (daily and a in ONCHAIN_RAW_ASSETS)]
    ingest_job = dg.define_asset_job(
        "ingest_sources", selection=dg.AssetSelection.assets(*plain),
        description="Collect every source (raw_* assets); cleaning and what follows run by automation."
                    + (" The per-instrument sources are in ingest_instruments." if buckets > 1 else "")
                    + (" The on-chain sources are in ingest_onchain." if daily else ""))
    jobs = [ingest_job]
    schedules = [dg.ScheduleDefinition(
        name="end_of_day_ingestion", job=ingest_job, cron_schedule="30 17 * * 1-5",
        execution_timezone="America/New_York", default_status=status,
        description="Weekdays at 17:30 New York time, after the close: collect every source.",
    )]
    if buckets > 1:
        from ..buckets import bucket_keys

        instruments_job = dg.define_asset_job(
            "ingest_instruments", selection=dg.AssetSelection.assets(*INSTRUMENT_ASSETS),
            description=f"Market prices, filings and fundamentals of one instrument bucket (of {buckets}); "
                        "a backfill of every partition collects the whole universe.")
        keys = bucket_keys(buckets)

        @dg.schedule(name="end_of_day_instruments", job=instruments_job, cron_schedule="30 17 * * 1-5",
                     execution_timezone="America/New_York", default_status=status,
                     description=f"Weekdays at 17:30 New York time: one run per instrument bucket ({buckets}), "
                                 "each asking only for the days after those already held.")
        def end_of_day_instruments(context: dg.ScheduleEvaluationContext):
            day = context.scheduled_execution_time.strftime("%Y-%m-%d")
            return [dg.RunRequest(run_key=f"{day}-{k}", partition_key=k) for k in keys]

        jobs.append(instruments_job)
        schedules.append(end_of_day_instruments)
    if daily:
        onchain_job = dg.define_asset_job(
            "ingest_onchain", selection=dg.AssetSelection.assets(*ONCHAIN_ASSETS),
            description="DefiLlama and CoinGecko for a range of days, collected and cleaned; a backfill of any "
                        "range runs as one run, asking each series once.")
        jobs.append(onchain_job)
        schedules.append(_daily_onchain(onchain_job, status))
    automation = dg.AutomationConditionSensorDefinition(
        "follow_inputs", target=dg.AssetSelection.all(), default_status=sensor_status,
        description="Materialises derived assets whose inputs changed (their AutomationCondition).",
    )
    new_news = build_new_feed_entries_sensor(default_status=sensor_status)
    new_filings = build_new_edgar_filings_sensor(default_status=sensor_status, buckets=buckets, universe=universe)
    return schedules, [automation, new_news, new_filings], jobs


def _daily_onchain(job, status: dg.DefaultScheduleStatus) -> dg.ScheduleDefinition:
    """One run a day over the last `ONCHAIN_DAYS` complete days (clipped to the partitions' start): a
    partition range in the run's tags, as a single-run backfill launches it (the assets'
    `BackfillPolicy.single_run()`), since RunRequest takes one partition key only."""

    @dg.schedule(name="daily_onchain", job=job, cron_schedule="0 1 * * *", execution_timezone="UTC",
                 default_status=status,
                 description=f"Every day at 01:00 UTC: the last {ONCHAIN_DAYS} complete days (yesterday and the "
                             f"{ONCHAIN_DAYS - 1} before) as one run, from DefiLlama and CoinGecko, so that their "
                             "revisions of recent days replace the days already held.")
    def daily_onchain(context: dg.ScheduleEvaluationContext):
        # the job's days start at TENALI_START_DATE, which only the resolved job knows
        days = context.repository_def.get_job(job.name).partitions_def
        with dg.partition_loading_context(effective_dt=context.scheduled_execution_time):
            last = days.get_last_partition_window()
            if last is None:
                return dg.SkipReason(f"No complete day yet: the partitions start on {days.start:%Y-%m-%d}.")
            keys = days.get_partition_key_range_for_time_window(
                dg.TimeWindow(max(last.end - dt.timedelta(days=ONCHAIN_DAYS), days.start), last.end))
        return dg.RunRequest(run_key=f"{keys.start}..{keys.end}", tags={
            "dagster/asset_partition_range_start": keys.start, "dagster/asset_partition_range_end": keys.end})

    return daily_onchain
