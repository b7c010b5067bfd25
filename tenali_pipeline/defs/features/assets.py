"""Technical features over cleaned OHLCV of stocks and crypto (the logic lives in technicals/)."""

import dagster as dg
import polars as pl

from ...resources import LakeResource
from ...technicals.features import compute_features, event_counts
from ..common import FOLLOW_INPUTS, read_clean, table_metadata

FEATURES_KEY = "features/technical/daily.parquet"


@dg.asset(group_name="features", kinds={"polars", "parquet"}, automation_condition=FOLLOW_INPUTS,
          deps=["clean_market_prices", "clean_crypto_ohlcv"],
          description="Causal daily technical features per instrument: indicators (returns, SMA/EMA, RSI, MACD, "
                      "Bollinger, ATR, stochastic, OBV), candlestick patterns and smart-money events (swings, "
                      "BOS/CHoCH, order blocks, fair value gaps, liquidity pools and sweeps); "
                      "columns in technicals.features.COLUMNS.")
def technical_features(lake: LakeResource) -> dg.MaterializeResult:
    # One file, not partitioned: features are per instrument over its whole history (a 200-bar average
    # needs 200 earlier bars), and a daily file for 10,000 tickers x 25 years is ~60M rows, which
    # compute_features handles in memory on one machine. Split by instrument if that stops being true.
    store = lake.lake()
    stocks = read_clean(store, "market", "market_prices").select(
        "date", instrument="ticker", asset_class=pl.lit("equity"), open="open", high="high", low="low",
        close="close", adj_close="adj_close", volume="volume", source="source")
    crypto = read_clean(store, "crypto", "crypto_ohlcv").filter(pl.col("timeframe") == "1d").select(
        date=pl.col("timestamp").dt.date(), instrument="symbol", asset_class=pl.lit("crypto"), open="open",
        high="high", low="low", close="close", adj_close="close", volume="volume", source="source")
    # Annualised volatility over each market's own year: 252 sessions for equities, 365 days for crypto
    # (crypto's bars at 252 would be the volatility of 0.69 of a year, about 17% low against a stock's).
    df = pl.concat([compute_features(stocks, instrument_col="instrument", time_col="date"),
                    compute_features(crypto, instrument_col="instrument", time_col="date", periods_per_year=365)],
                   how="vertical_relaxed")
    uri = store.write_parquet(FEATURES_KEY, df)
    counts = event_counts(df)
    table = "| event | count |\n|---|---:|\n" + "\n".join(f"| {k} | {v:,} |" for k, v in counts.items())
    return dg.MaterializeResult(metadata={
        **table_metadata(df, uri, time_column="date"),
        "instruments": df["instrument"].n_unique(),
        "patterns": sum(v for k, v in counts.items() if k.startswith("cdl_")),
        "smc_events": sum(v for k, v in counts.items() if not k.startswith("cdl_")),
        "event_counts": dg.MetadataValue.md(table),
    })
