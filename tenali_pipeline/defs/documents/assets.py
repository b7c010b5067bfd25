"""Documents: text files from a local folder or S3 prefix (generated lessons as the sample)."""

from ..common import source_assets

defs = source_assets(
    "documents", name="documents", group="documents", time_column="date",
    fetch=lambda sources, lake, context: sources.documents().fetch(),
    description="Free-text documents with a title and date.",
)
