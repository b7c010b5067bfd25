"""US IPOs (market domain): final prospectuses (424B4 / 424B1) listed in EDGAR's quarterly form index,
their cover pages parsed for offer price, shares, proceeds, ticker and exchange (live:
`sources/live/us_ipos.py`; sample: EDGAR-format covers of FB and GOOG run through the same parsers).

Unpartitioned: one index per quarter lists every filer. Incremental: a run within TENALI_REFRESH_HOURS
of the last successful one asks nothing (the current quarter's index is tens of MB); the state keeps
the last day covered and the accessions skipped (follow-ons, direct listings); a run asks from a week before that
day, never fetches an accession it already holds or skipped, and covers at most four quarters (so a
backfill from TENALI_START_DATE advances a year per run with the response archive bounded).
"""

import datetime as dt

import polars as pl

from ...sources.http import PartialFetchError
from ..common import source_assets

MAX_SKIPPED = 5_000


def _merge(previous: pl.DataFrame | None, new: pl.DataFrame | None) -> pl.DataFrame | None:
    if previous is None or previous.is_empty():
        return new
    if new is None:
        return previous
    both = pl.concat([previous, new.select(previous.columns)], how="vertical_relaxed")
    return both.unique("accession", keep="last", maintain_order=True).sort("filed", "accession")


def _fetch(run):
    state = run.read_state()
    now = dt.datetime.now(dt.timezone.utc)
    checked = state.get("checked")
    if (not run.sources.is_sample and run.previous is not None and checked
            and now - dt.datetime.fromisoformat(checked) < dt.timedelta(hours=run.sources.refresh_hours)):
        run.log.info(f"checked at {checked}, within TENALI_REFRESH_HOURS: nothing asked")
        run.new_state = state
        return run.previous
    through = state.get("through")
    since = dt.date.fromisoformat(through) - dt.timedelta(days=7) if through else None
    skipped = dict(state.get("skipped", {}))
    known = set(skipped) | (set(run.previous["accession"]) if run.previous is not None else set())
    client = run.sources.us_ipos(archive=run.archive)

    def remember(ok: bool):
        kept = {**skipped, **client.skipped}
        run.new_state = {"through": str(client.covered_through or through or ""),
                         "skipped": dict(list(kept.items())[-MAX_SKIPPED:])}
        if ok:  # a failed run is asked again at once
            run.new_state["checked"] = now.isoformat()

    try:
        new = client.fetch(since=since, known=known, max_quarters=None if run.sources.is_sample else 4)
    except PartialFetchError as exc:
        remember(False)
        raise PartialFetchError("EDGAR IPO prospectuses", exc.failures, partial=_merge(run.previous, exc.partial)) from exc
    remember(True)
    if client.skipped:
        run.log.info(f"{len(client.skipped)} prospectus(es) skipped (not an IPO): "
                     + "; ".join(f"{a}: {why}" for a, why in list(client.skipped.items())[:10]))
    return _merge(run.previous, new)


us_ipo_defs = source_assets(
    "us_ipos", name="us_ipos", group="us_ipos", time_column="filed", fetch=_fetch,
    description="US IPOs from EDGAR final prospectuses: offer price, shares, gross proceeds, ticker, exchange, SPAC flag.",
)
