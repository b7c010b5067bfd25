"""Technical-analysis features over OHLCV bars, as polars expressions; no Dagster here.

    features.py     compute_features(df): the one entry point, and COLUMNS (every output column, documented)
    indicators.py   returns, volatility, SMA/EMA, RSI, MACD, Bollinger, ATR, stochastic, OBV, VWAP
    patterns.py     candlestick patterns, stamped on the bar completing them
    smc.py          smart-money concepts: swings, BOS/CHoCH, order blocks, fair value gaps, liquidity
    cli.py          ``tenali features INPUT OUTPUT``
"""
