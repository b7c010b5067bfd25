"""Technical features over cleaned OHLCV of stocks and crypto (indicators in technicals/)."""

import dagster as dg
import polars as pl

from ...resources import LakeResource
from ...technicals.indicators import add_indicators
from ..common import clean_table, table_metadata

FEATURES_KEY = "features/technical/daily.parquet"


@dg.asset(group_name="features", kinds={"polars", "parquet"},
          deps=["clean_market_prices", "clean_crypto_ohlcv"],
          description="Causal daily indicators (returns, SMA, RSI, MACD, Bollinger, realised volatility) per instrument.")
def technical_features(lake: LakeResource) -> dg.MaterializeResult:
    store = lake.lake()
    stocks = store.read_parquet(clean_table("market", "market_prices")).select(
        "date", instrument="ticker", asset_class=pl.lit("equity"), open="open", high="high", low="low",
        close="close", adj_close="adj_close", volume="volume", source="source")
    crypto = store.read_parquet(clean_table("crypto", "crypto_ohlcv")).filter(pl.col("timeframe") == "1d").select(
        date=pl.col("timestamp").dt.date(), instrument="symbol", asset_class=pl.lit("crypto"), open="open",
        high="high", low="low", close="close", adj_close="close", volume="volume", source="source")
    df = add_indicators(pl.concat([stocks, crypto]), by="instrument")
    uri = store.write_parquet(FEATURES_KEY, df)
    return dg.MaterializeResult(metadata={**table_metadata(df, uri, time_column="date"),
                                          "instruments": df["instrument"].n_unique()})
