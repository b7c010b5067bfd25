"""Keeping ingestion current: the end-of-day schedule, the new-data sensors and the automation sensor.

The schedule launches the raw source assets after the US close on weekdays; the automation sensor
then carries new data through cleaning, features, documents and the corpus (their
``AutomationCondition.eager()``). Between closes, `new_feed_entries` (news/sensors.py) and
`new_edgar_filings` (filings/sensors.py) poll cheaply every 15 minutes and launch `raw_news` /
`raw_filings` only when a feed or a company has something new. All of them start running by
themselves in the local and prod profiles; in the demo profile (sample data that never changes)
they are listed in the UI but stopped.
"""

import dagster as dg

from .filings.sensors import build_new_edgar_filings_sensor
from .news.sensors import build_new_feed_entries_sensor

RAW_ASSETS = ("raw_market_prices", "raw_macro_series", "raw_crypto_ohlcv", "raw_filings", "raw_news", "raw_documents",
              # issue 12 sources: the universe snapshot, SEC XBRL fundamentals, DeFi metrics, coin markets
              # and central-bank communications (each turned off by TENALI_SOURCES_OFF if its site refuses us)
              "raw_universe_snapshot", "raw_fundamentals", "raw_defi_metrics", "raw_coin_markets", "raw_central_bank")

ingest_job = dg.define_asset_job(
    "ingest_sources",
    selection=dg.AssetSelection.assets(*RAW_ASSETS),
    description="Collect every source (raw_* assets); cleaning and what follows run by automation.",
)


def build_schedules_and_sensors(profile: str) -> tuple[list, list]:
    status = dg.DefaultScheduleStatus.STOPPED if profile == "demo" else dg.DefaultScheduleStatus.RUNNING
    sensor_status = dg.DefaultSensorStatus.STOPPED if profile == "demo" else dg.DefaultSensorStatus.RUNNING
    end_of_day = dg.ScheduleDefinition(
        name="end_of_day_ingestion", job=ingest_job, cron_schedule="30 17 * * 1-5",
        execution_timezone="America/New_York", default_status=status,
        description="Weekdays at 17:30 New York time, after the close: collect every source.",
    )
    automation = dg.AutomationConditionSensorDefinition(
        "follow_inputs", target=dg.AssetSelection.all(), default_status=sensor_status,
        description="Materialises derived assets whose inputs changed (their AutomationCondition).",
    )
    new_news = build_new_feed_entries_sensor(default_status=sensor_status)
    new_filings = build_new_edgar_filings_sensor(default_status=sensor_status)
    return [end_of_day], [automation, new_news, new_filings]
