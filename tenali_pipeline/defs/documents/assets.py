"""Documents: text files from a local folder or S3 prefix (generated lessons as the sample).

Live runs are incremental: the folder or prefix is listed each run, but a file whose size and
modification time are those the last run recorded (partition state) is not read again; removed
files drop out of the table. Files are their own raw record, so no responses are archived.
"""

from ..common import source_assets


def _fetch(run):
    client = run.sources.documents()
    if run.sources.is_sample:  # fixed data: nothing to update incrementally
        return client.fetch()
    try:
        return client.fetch(previous=run.previous, files=run.read_state().get("files"))
    finally:
        run.new_state = {"files": client.files}  # written by the factory after the rows
        run.log.info(f"{client.read} document(s) read, {client.reused} unchanged and kept")


defs = source_assets(
    "documents", name="documents", group="documents", time_column="date",
    fetch=_fetch,
    description="Free-text documents with a title and date.",
)
