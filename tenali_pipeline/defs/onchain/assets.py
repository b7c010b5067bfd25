"""On-chain and DeFi (crypto domain): DefiLlama TVL, fees, revenue, DEX volume and stablecoin supply;
CoinGecko price, market cap and supply. Daily series; each run fetches the whole history from
TENALI_START_DATE (backfill and update in one), which the sources serve in one request per series.
"""

from ..common import source_assets

defillama_defs = source_assets(
    "defillama", name="defi_metrics", group="onchain", time_column="date",
    fetch=lambda sources, lake, context: sources.defillama().fetch(),
    description="Daily DeFi metrics per chain and protocol (TVL, fees, revenue, DEX volume, stablecoin supply).",
)
coingecko_defs = source_assets(
    "coingecko", name="coin_markets", group="onchain", time_column="date",
    fetch=lambda sources, lake, context: sources.coingecko().fetch(),
    description="Daily price, market cap, volume and implied circulating supply per coin.",
)
