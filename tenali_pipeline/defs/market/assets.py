"""Market: daily stock prices (yfinance live; bokeh_sampledata sample).

Tickers: ``TENALI_TICKERS`` (a list), or ``TENALI_TICKERS=universe`` for every listed equity and ETF
of the `universe` asset ("10,000+ stocks" is then a universe filter, not a hand-written list); in
that mode `rebuild_instrument_sources` makes ``raw_market_prices`` and ``raw_filings`` depend on it.
"""


from ...sources.schema import MARKET_PRICES
from ..common import replace_definitions, source_assets, update_incrementally
from ..universe.history import UNIVERSE_KEY, universe_tickers


def read_universe(lake, what: str):
    """The universe table, or an error that says which asset to materialise first."""
    if not lake.exists(UNIVERSE_KEY):
        raise ValueError(f"TENALI_TICKERS=universe: {what} reads its list from the `universe` asset, which has not been "
                         "materialised yet; materialise raw_universe_snapshot, clean_universe_snapshot and universe "
                         "first (or set TENALI_TICKERS to a list of tickers)")
    return lake.read_parquet(UNIVERSE_KEY)


def market_tickers(lake) -> list[str]:
    """Listed equities and ETFs in the universe: what Yahoo serves daily prices for."""
    read_universe(lake, "raw_market_prices")
    tickers = sorted(set(universe_tickers(lake, asset_class="equity")) | set(universe_tickers(lake, asset_class="etf")))
    if not tickers:
        raise ValueError("TENALI_TICKERS=universe: the universe holds no listed equities or ETFs; check the "
                         "TENALI_UNIVERSE_* filters")
    return tickers


def _fetch(run):
    """This bucket's tickers, each asked only for the days after those already held (sources/incremental.py)."""
    sources = run.sources
    if sources.tickers_from_universe:
        tickers = market_tickers(run.lake)
        run.log.info(f"{len(tickers)} tickers from the universe: {', '.join(tickers[:20])}"
                     + (" ..." if len(tickers) > 20 else ""))
    else:
        tickers = [t.strip().upper() for t in sources.tickers]
    mine = run.bucket.select(tickers)
    return update_incrementally(run, mine, key="ticker", time_column="date", schema=MARKET_PRICES,
                                fetch=lambda since: run.sources.market(list(since), archive=run.archive).fetch(since),
                                compare=("adj_close",))


def build(deps: list | None = None, buckets: int = 1) -> list:
    """raw/clean market prices with their checks; `deps` for TENALI_TICKERS=universe."""
    return source_assets(
        "market", name="market_prices", group="market", time_column="date", fetch=_fetch, deps=deps,
        buckets=buckets,
        description="Daily OHLCV with dividends and splits per ticker.",
    )


defs = build()


def rebuild_instrument_sources(assets: list, checks: list, *, buckets: int, universe: bool) -> tuple[list, list]:
    """`assets` and `checks` with the per-instrument sources (market prices, filings, fundamentals)
    rebuilt for `buckets` instrument buckets and, for TENALI_TICKERS=universe, to depend on ``universe``
    (applied by `definitions.build_definitions`)."""
    from ..filings import assets as filings
    from ..fundamentals import assets as fundamentals

    deps = ["universe"] if universe else None
    return replace_definitions(assets, checks, build(deps=deps, buckets=buckets)
                               + filings.build(deps=deps, buckets=buckets) + fundamentals.build(buckets=buckets))
