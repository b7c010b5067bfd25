"""Central-bank communications (economic domain): Fed, ECB and RBI statements, minutes and press
releases from their RSS feeds, full text extracted and the rate decision parsed (live); three
made-up banks in the same styles (sample).

Feeds list only their latest items, so ``raw_central_bank`` keeps what earlier runs collected and
adds the new items: pages already held are not fetched again, and feeds are fetched conditionally
(their ETag / Last-Modified kept in the partition state, which the factory writes after the rows and
only after a run in which nothing failed, so that an item whose page failed is offered again by the
next run). Feeds,
robots.txt and pages are kept as served under ``raw/centralbank/responses/``.
"""

import polars as pl

from ...sources.http import PartialFetchError
from ...sources.incremental import upsert
from ..common import source_assets

LEGACY_STATE_KEY = "raw/centralbank/feed_state.json"  # where the feed state lived before the factory kept state


def _merge(previous: pl.DataFrame | None, new: pl.DataFrame) -> pl.DataFrame:
    return upsert(previous, new, ["doc_id"], sort=["bank", "published", "doc_id"])


def _fetch(run):
    sources, lake, context = run.sources, run.lake, run.context
    previous = run.previous  # already without rows of the other mode (sample / live)
    known = previous["link"].to_list() if previous is not None else []
    state = {}
    if not sources.is_sample:
        state = run.read_state().get("feeds")
        if state is None:
            state = lake.read_json(LEGACY_STATE_KEY) if lake.exists(LEGACY_STATE_KEY) else {}
    client = sources.central_bank(known=known, state=state, archive=run.archive)
    try:
        new = client.fetch()
    except PartialFetchError as exc:
        raise PartialFetchError("central-bank communications", exc.failures,
                                partial=_merge(previous, exc.partial)) from exc
    finally:
        if client.skipped:
            context.log.info(f"robots.txt disallows {len(client.skipped)} page(s), not fetched: "
                             + ", ".join(client.skipped[:20]))
    merged = _merge(previous, new)
    context.log.info(f"{new.height} new communication(s); {merged.height} kept in all")
    if not sources.is_sample:  # only after a full success (new_state stays None on a PartialFetchError)
        run.new_state = {"feeds": client.state}
    return merged


defs = source_assets(
    "centralbank", name="central_bank", group="centralbank", time_column="published", fetch=_fetch,
    description="Central-bank statements, minutes and press releases: full text, and the rate decision "
                "(cut/hike/hold, change in basis points, new rate or range) where stated.",
)
