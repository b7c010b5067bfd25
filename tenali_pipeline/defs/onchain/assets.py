"""On-chain and DeFi (crypto domain): DefiLlama TVL, fees, revenue, DEX volume and stablecoin supply;
CoinGecko price, market cap and supply. Daily series.

Live runs are incremental (`update_incrementally`): a series or coin checked within
``refresh_hours`` is not asked again. DefiLlama serves a series' whole history per request, so a
due series is asked whole and replaces its rows (``whole=True``); a series DefiLlama does not have
(404) counts as checked, so it too is not asked again within that interval. CoinGecko serves date
ranges, so a due coin is asked from a week before its last day (at least 92 days back, where CoinGecko answers daily) and
merged. The JSON bodies are kept under ``raw/<source>/responses/``.

With ``TENALI_ONCHAIN_DAILY`` (on in the local and prod profiles) both sources are partitioned by day
instead (`rebuild_daily`, applied by `definitions.build_definitions`; why, in
`tenali_pipeline.days`): a run asks for its days, whatever it held before. DefiLlama still answers
with whole histories, so a backfill runs as one run over its range; CoinGecko is asked for the range
(at least 92 days, so that it answers daily) and the rows outside it are not written.
"""

import datetime as dt

import polars as pl

from ...sources.http import PartialFetchError
from ...sources.schema import COIN_MARKETS, DEFI_METRICS
from ..common import replace_definitions, source_assets, update_incrementally

ITEM = "_series"  # one DefiLlama series ("chain Ethereum tvl"): the item column while updating


def _with_item(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.concat_str("scope", "entity", "metric", separator=" ").alias(ITEM))


def _defillama(run):
    sources = run.sources
    if sources.is_sample:  # fixed data: nothing to update incrementally
        return sources.defillama().fetch()
    client = sources.defillama(archive=run.archive)
    if run.window is not None:  # daily: every series whole, the asset keeps the run's days
        try:
            return client.fetch()
        finally:
            if client.missing:
                run.log.info(f"DefiLlama has no {', '.join(client.missing)} (HTTP 404)")

    def fetch(since: dict) -> pl.DataFrame:
        try:
            return _with_item(client.fetch(only=set(since)))
        except PartialFetchError as exc:
            raise PartialFetchError("DefiLlama", exc.failures, partial=_with_item(exc.partial)) from exc

    previous = run.previous
    run.previous = _with_item(previous) if previous is not None else None
    try:
        table = update_incrementally(run, client.series_names(), key=ITEM, time_column="date",
                                     schema={**DEFI_METRICS, ITEM: pl.String}, fetch=fetch, whole=True)
    except PartialFetchError as exc:
        raise PartialFetchError("DefiLlama", exc.failures, partial=exc.partial.drop(ITEM)) from exc
    finally:
        run.previous = previous
    if client.missing:  # checked like the others: not asked again within the refresh interval
        run.log.info(f"DefiLlama has no {', '.join(client.missing)} (HTTP 404): not asked again for "
                     f"{sources.refresh_hours:g} h")
    return table.drop(ITEM)


def _coingecko(run):
    sources = run.sources
    if sources.is_sample:  # fixed data: nothing to update incrementally
        return sources.coingecko().fetch()
    if run.window is not None:  # daily: the run's days (the client widens the range to stay daily)
        first, last = run.window
        coins = list(sources.coingecko_coins)
        return sources.coingecko(archive=run.archive, end=last + dt.timedelta(days=1)).fetch(
            {c: first for c in coins})
    return update_incrementally(
        run, list(sources.coingecko_coins), key="coin_id", time_column="date", schema=COIN_MARKETS,
        fetch=lambda since: sources.coingecko(coins=list(since), archive=run.archive).fetch(since))


def defillama_assets(daily_from: str | None = None) -> list:
    """raw/clean DeFi metrics with their checks; `daily_from`: partitioned by day from that date."""
    return source_assets(
        "defillama", name="defi_metrics", group="onchain", time_column="date", fetch=_defillama,
        daily_from=daily_from,
        description="Daily DeFi metrics per chain and protocol (TVL, fees, revenue, DEX volume, stablecoin supply).",
    )


def coingecko_assets(daily_from: str | None = None) -> list:
    """raw/clean coin markets with their checks; `daily_from`: partitioned by day from that date."""
    return source_assets(
        "coingecko", name="coin_markets", group="onchain", time_column="date", fetch=_coingecko,
        daily_from=daily_from,
        description="Daily price, market cap, volume and implied circulating supply per coin.",
    )


defillama_defs = defillama_assets()
coingecko_defs = coingecko_assets()


# The assets of the daily job (ingest_onchain) and schedule, when TENALI_ONCHAIN_DAILY is on.
RAW_ASSETS = ("raw_defi_metrics", "raw_coin_markets")
ASSETS = (*RAW_ASSETS, "clean_defi_metrics", "clean_coin_markets")


def rebuild_daily(assets: list, checks: list, *, start: str) -> tuple[list, list]:
    """`assets` and `checks` with the on-chain sources rebuilt partitioned by day from `start`
    (applied by `definitions.build_definitions`, as `market.rebuild_instrument_sources` is)."""
    return replace_definitions(assets, checks, defillama_assets(daily_from=start) + coingecko_assets(daily_from=start))
