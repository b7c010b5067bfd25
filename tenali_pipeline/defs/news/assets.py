"""News: RSS/Atom entries (feedparser live; generated from sample price moves).

Live runs are incremental: each feed is asked conditionally (its ETag / Last-Modified kept in the
partition state, written by the factory after the rows, so a killed run never hides entries behind
a 304), and the entries collected before are kept. Feed bodies and 304s are kept under
``raw/news/responses/``. A failing feed fails alone: the others' entries land, then the asset fails
naming it.

Full articles (``TENALI_NEWS_ARTICLES``, off by default; sources/live/news.py): texts already in the
table are passed back so that no page is fetched twice, and pages that failed for good (404, not
HTML) are kept in the partition state so that they are not asked again; robots.txt and article
pages are kept with the feed bodies.
"""

import polars as pl

from ...sources.http import PartialFetchError
from ...sources.live.news import ARTICLE, NEWS_TABLE
from ..common import source_assets

LEGACY_STATE_KEY = "state/news/http_cache.json"  # where the HTTP cache lived before the factory kept state


def merge_runs(previous: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """The entries held and those just fetched, one row per story: by entry id, then by link (a feed
    that changed a story's GUID between runs lists it again under the same link), the newest kept."""
    both = pl.concat([previous, new], how="diagonal_relaxed").unique("entry_id", keep="last", maintain_order=True)
    return both.filter(pl.col("link").is_null() | pl.col("link").is_last_distinct()).select(list(NEWS_TABLE))


def _fetch(run):
    sources, lake = run.sources, run.lake
    if sources.is_sample:
        return sources.news().fetch()
    state = run.read_state()
    cache = state.get("http_cache")
    if cache is None:
        cache = lake.read_json(LEGACY_STATE_KEY) if lake.exists(LEGACY_STATE_KEY) else {}
    previous = run.previous
    known = {}
    if previous is not None and ARTICLE in previous.columns:
        known = dict(previous.filter(pl.col(ARTICLE).is_not_null()).select("entry_id", ARTICLE).iter_rows())
    given_up = state.get("articles_given_up", {})
    client = sources.news(cache, archive=run.archive, known_articles=known, skip_articles=given_up)
    df = client.fetch()
    # A feed answers 304 or lists only recent entries: keep what earlier runs collected (a table
    # written before the article column existed gets it, empty).
    if previous is not None:
        df = merge_runs(previous, df)
    if client.articles_fetched or client.articles_disallowed or client.article_failures:
        run.log.info(f"articles: {client.articles_fetched} fetched, {len(client.articles_disallowed)} disallowed by "
                     f"robots.txt, {len(client.article_failures)} failed (those entries keep their summaries)")
        for link, why in sorted(client.article_failures.items()):
            run.log.warning(f"article {link} not fetched: {why}")
    ids = set(df["entry_id"].to_list())
    given_up = {k: v for k, v in {**given_up, **client.articles_given_up}.items() if k in ids}
    run.new_state = {"http_cache": client.state, **({"articles_given_up": given_up} if given_up else {})}
    if client.errors:
        raise PartialFetchError("news feeds", client.errors, partial=df)
    return df


defs = source_assets(
    "news", name="news", group="news", time_column="published",
    fetch=_fetch,
    description="News entries deduplicated by id, published time in UTC.",
)
