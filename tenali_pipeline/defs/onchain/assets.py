"""On-chain and DeFi (crypto domain): DefiLlama TVL, fees, revenue, DEX volume and stablecoin supply;
CoinGecko price, market cap and supply. Daily series.

Live runs are incremental (`update_incrementally`): a series or coin checked within
``refresh_hours`` is not asked again. DefiLlama serves a series' whole history per request, so a
due series is asked whole and replaces its rows (``whole=True``); a series DefiLlama does not have
(404) counts as checked, so it too is not asked again within that interval. CoinGecko serves date
ranges, so a due coin is asked from a week before its last day (at least 92 days back, where CoinGecko answers daily) and
merged. The JSON bodies are kept under ``raw/<source>/responses/``.
"""


import polars as pl

from ...sources.http import PartialFetchError
from ...sources.schema import COIN_MARKETS, DEFI_METRICS
from ..common import source_assets, update_incrementally

ITEM = "_series"  # one DefiLlama series ("chain Ethereum tvl"): the item column while updating


def _with_item(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.concat_str("scope", "entity", "metric", separator=" ").alias(ITEM))


def _defillama(run):
    sources = run.sources
    if sources.is_sample:  # fixed data: nothing to update incrementally
        return sources.defillama().fetch()
    client = sources.defillama(archive=run.archive)

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
    return update_incrementally(
        run, list(sources.coingecko_coins), key="coin_id", time_column="date", schema=COIN_MARKETS,
        fetch=lambda since: sources.coingecko(coins=list(since), archive=run.archive).fetch(since))


defillama_defs = source_assets(
    "defillama", name="defi_metrics", group="onchain", time_column="date",
    fetch=_defillama,
    description="Daily DeFi metrics per chain and protocol (TVL, fees, revenue, DEX volume, stablecoin supply).",
)
coingecko_defs = source_assets(
    "coingecko", name="coin_markets", group="onchain", time_column="date",
    fetch=_coingecko,
    description="Daily price, market cap, volume and implied circulating supply per coin.",
)
