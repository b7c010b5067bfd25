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
from ...sources.incremental import upsert
from ..common import source_assets, unless_recently_checked

MAX_SKIPPED = 5_000


def _merge(previous: pl.DataFrame | None, new: pl.DataFrame | None) -> pl.DataFrame | None:
    return upsert(previous, new, ["accession"], sort=["filed", "accession"])


def _fetch(run):
    state = run.read_state()
    through = state.get("through")
    since = dt.date.fromisoformat(through) - dt.timedelta(days=7) if through else None
    skipped = dict(state.get("skipped", {}))
    known = set(skipped) | (set(run.previous["accession"]) if run.previous is not None else set())
    client = run.sources.us_ipos(archive=run.archive)

    def remember():  # also after a failure; `unless_recently_checked` adds "checked" only after a success
        kept = {**skipped, **client.skipped}
        run.new_state = {"through": str(client.covered_through or through or ""),
                         "skipped": dict(list(kept.items())[-MAX_SKIPPED:])}

    try:
        new = client.fetch(since=since, known=known, max_quarters=None if run.sources.is_sample else 4)
    except PartialFetchError as exc:
        remember()
        raise PartialFetchError("EDGAR IPO prospectuses", exc.failures, partial=_merge(run.previous, exc.partial)) from exc
    remember()
    if client.skipped:
        run.log.info(f"{len(client.skipped)} prospectus(es) skipped (not an IPO): "
                     + "; ".join(f"{a}: {why}" for a, why in list(client.skipped.items())[:10]))
    return _merge(run.previous, new)


us_ipo_defs = source_assets(
    "us_ipos", name="us_ipos", group="us_ipos", time_column="filed", fetch=unless_recently_checked(_fetch),
    description="US IPOs from EDGAR final prospectuses: offer price, shares, gross proceeds, ticker, exchange, SPAC flag.",
)
