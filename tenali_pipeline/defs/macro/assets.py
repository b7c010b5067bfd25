"""Macro: economic series with their publication dates (fredapi live; statsmodels sample).

Live runs are incremental: FRED's ``last_updated`` of each series is kept in the state, and a series
FRED has not updated since the last run keeps its rows without its observations being asked again
(one series-info request each). FRED's XML is kept under ``raw/macro/responses/`` (key masked).
"""

from ..common import source_assets


def _fetch(run):
    client = run.sources.macro(archive=run.archive)
    if run.sources.is_sample:  # fixed data: nothing to update incrementally
        return client.fetch()
    state = run.read_state()
    try:
        return client.fetch(previous=run.previous, last_updated=state.get("last_updated", {}))
    finally:
        # written by the factory after the rows (also after the partial rows of a failed run)
        run.new_state = {"last_updated": client.last_updated}
        if client.unchanged:
            run.log.info(f"{len(client.unchanged)} series unchanged at FRED, observations not asked: "
                         + ", ".join(client.unchanged))


defs = source_assets(
    "macro", name="macro_series", group="macro", time_column="date",
    fetch=_fetch,
    description="Economic observations with series metadata and the date each value was first published.",
)
