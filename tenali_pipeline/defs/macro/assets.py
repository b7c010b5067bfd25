"""Macro: economic series with their publication dates (fredapi live; statsmodels sample)."""

from ..common import source_assets

defs = source_assets(
    "macro", name="macro_series", group="macro", time_column="date",
    fetch=lambda sources, lake, context: sources.macro().fetch(),
    description="Economic observations with series metadata and the date each value was first published.",
)
