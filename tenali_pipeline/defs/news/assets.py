"""News: RSS/Atom entries (feedparser live; generated from sample price moves)."""

import polars as pl

from ..common import source_assets

STATE_KEY = "state/news/http_cache.json"
RAW_KEY = "raw/news/news.parquet"


def _fetch(sources, lake, context):
    # ETag / Last-Modified per feed survive between runs in the lake, so live polling is conditional.
    state = lake.read_json(STATE_KEY) if (not sources.is_sample and lake.exists(STATE_KEY)) else {}
    client = sources.news(state)
    df = client.fetch()
    if not sources.is_sample:
        # A feed answers 304 or lists only recent entries: keep what earlier runs collected.
        if lake.exists(RAW_KEY):
            df = pl.concat([lake.read_parquet(RAW_KEY), df]).unique("entry_id", keep="last", maintain_order=True)
        lake.write_json(STATE_KEY, client.state)
    return df


defs = source_assets(
    "news", name="news", group="news", time_column="published",
    fetch=_fetch,
    description="News entries deduplicated by id, published time in UTC.",
)
