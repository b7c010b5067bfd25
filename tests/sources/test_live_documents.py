"""Local documents from tmp_path folders, and the s3:// code path with pyarrow's `from_uri`
answered by a local filesystem laid out as bucket/prefix (no network, no credentials: moto cannot
intercept pyarrow's C++ S3 client, and moto's server mode needs flask, which is not installed)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import polars as pl
import pytest
from pyarrow import fs

from tenali_pipeline.sources.live import documents
from tenali_pipeline.sources.live.documents import LocalDocumentsClient, html_to_text
from tenali_pipeline.sources.schema import DOCUMENTS

# 2024-03-01 23:30 in New York is already 2024-03-02 in UTC.
LATE_EVENING_NY = dt.datetime(2024, 3, 2, 4, 30, tzinfo=dt.timezone.utc).timestamp()


def _write(folder, files):
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        os.utime(path, (LATE_EVENING_NY, LATE_EVENING_NY))


FILES = {
    "notes/fomc.md": "\n\n# FOMC minutes, January\n\nParticipants noted **inflation** remained elevated.\n",
    "memo.txt": "\ufeffQuarterly memo\nRevenue grew 4%.\n",
    "report.html": "<html><head><title>Q4 &amp; FY report</title><style>p{}</style></head>"
    "<body><h1>Results</h1><p>Net income rose.</p><script>var x=1;</script><p>Margins held.</p></body></html>",
    "empty.txt": "   \n",
    "data.csv": "a,b\n1,2\n",
}


def test_reads_local_folder(tmp_path):
    _write(tmp_path, FILES)

    df = LocalDocumentsClient(str(tmp_path)).fetch()

    assert df.schema == pl.Schema(DOCUMENTS)
    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in df.iter_rows(named=True)}
    assert set(rows) == {"fomc.md", "memo.txt", "report.html"}  # empty and .csv skipped
    md = rows["fomc.md"]
    assert md["uri"] == (tmp_path / "notes" / "fomc.md").as_uri()
    assert md["doc_id"] == hashlib.sha1(md["uri"].encode()).hexdigest()
    assert md["title"] == "FOMC minutes, January" and "inflation" in md["text"]
    assert md["date"] == dt.date(2024, 3, 2) and md["source"] == "documents"
    assert rows["memo.txt"]["title"] == "Quarterly memo"
    html = rows["report.html"]
    assert html["title"] == "Q4 & FY report"
    assert html["text"] == "Results\nNet income rose.\nMargins held."
    # A file:// root names the same documents with the same ids.
    assert LocalDocumentsClient(tmp_path.as_uri()).fetch().equals(df)


def test_s3_uri_code_path(tmp_path, monkeypatch):
    _write(tmp_path / "research-bucket" / "docs", {"a.md": "# Alpha\nbody", "deep/b.txt": "Beta\nbody"})
    seen = []

    def fake_from_uri(uri):
        seen.append(uri)
        # What S3FileSystem would see: paths of the form "bucket/key".
        return fs.SubTreeFileSystem(str(tmp_path), fs.LocalFileSystem()), "research-bucket/docs"

    monkeypatch.setattr(documents, "open_uri", fake_from_uri)

    df = LocalDocumentsClient("s3://research-bucket/docs").fetch()

    assert seen == ["s3://research-bucket/docs"]
    assert df["uri"].to_list() == ["s3://research-bucket/docs/a.md", "s3://research-bucket/docs/deep/b.txt"]
    assert df["title"].to_list() == ["Alpha", "Beta"]
    assert df["doc_id"][0] == hashlib.sha1(b"s3://research-bucket/docs/a.md").hexdigest()


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        LocalDocumentsClient(str(tmp_path / "nope")).fetch()
    assert LocalDocumentsClient(str(tmp_path)).fetch().height == 0


def test_html_to_text_keeps_blocks():
    text, title = html_to_text("<div>One&nbsp;two</div><ul><li>a</li><li>b</li></ul>")
    assert text == "One two\na\nb" and title is None


# --- through Dagster: unchanged files not read again, removed files drop out, one bad file --------


def _materialize(tmp_path, root):
    import dagster as dg

    from tenali_pipeline.defs.documents import assets as docs
    from tenali_pipeline.lake import Lake
    from tenali_pipeline.resources import LakeResource, SourcesResource

    result = dg.materialize(docs.defs[:1], raise_on_error=False,
                            resources={"lake": LakeResource(root=str(tmp_path / "lake")),
                                       "sources": SourcesResource(mode="live", documents_root=str(root))})
    lake = Lake(str(tmp_path / "lake"))
    key = "raw/documents/documents.parquet"
    return result, (lake.read_parquet(key) if lake.exists(key) else None)


@pytest.fixture
def reads(monkeypatch):
    """The paths each fetch opens; a path in `reads.fail` raises PermissionError as an unreadable file does."""
    opened, fail = [], set()
    real = LocalDocumentsClient._read

    def counting(self, filesystem, info, uri, suffix):
        opened.append(info.path.rsplit("/", 1)[-1])
        if info.path.rsplit("/", 1)[-1] in fail:
            raise PermissionError(13, "Permission denied", info.path)
        return real(self, filesystem, info, uri, suffix)

    monkeypatch.setattr(LocalDocumentsClient, "_read", counting)
    counting.opened, counting.fail = opened, fail
    return counting


def test_second_run_reads_nothing_and_changes_are_picked_up(tmp_path, reads):
    root = tmp_path / "docs"
    _write(root, FILES)

    first, table = _materialize(tmp_path, root)
    assert first.success and table.height == 3
    assert sorted(reads.opened) == ["empty.txt", "fomc.md", "memo.txt", "report.html"]

    reads.opened.clear()
    second, again = _materialize(tmp_path, root)
    assert second.success and reads.opened == []  # listed, but no file read again
    assert again.equals(table)

    # one file edited, one removed: only the edited one is read; the removed one drops out
    (root / "memo.txt").write_text("Quarterly memo, revised\nRevenue grew 5%.\n", encoding="utf-8")
    (root / "report.html").unlink()
    reads.opened.clear()
    third, changed = _materialize(tmp_path, root)
    assert third.success and reads.opened == ["memo.txt"]
    titles = dict(zip(changed["uri"].str.split("/").list.last(), changed["title"]))
    assert titles == {"fomc.md": "FOMC minutes, January", "memo.txt": "Quarterly memo, revised"}


def test_an_unreadable_file_fails_alone_and_keeps_its_old_row(tmp_path, reads):
    root = tmp_path / "docs"
    _write(root, FILES)
    first, table = _materialize(tmp_path, root)
    assert first.success

    (root / "notes" / "fomc.md").write_text("# FOMC minutes, March\n\nRates held.\n", encoding="utf-8")
    (root / "memo.txt").write_text("Quarterly memo, revised\n", encoding="utf-8")
    reads.fail.add("fomc.md")
    result, raw = _materialize(tmp_path, root)

    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).event_specific_data.error.message
    assert "fomc.md" in failure and "Permission denied" in failure and "memo.txt" not in failure
    by_name = dict(zip(raw["uri"].str.split("/").list.last(), raw["title"]))
    assert by_name["fomc.md"] == "FOMC minutes, January" and by_name["memo.txt"] == "Quarterly memo, revised"

    reads.fail.clear()
    reads.opened.clear()
    fixed, _ = _materialize(tmp_path, root)
    assert fixed.success and reads.opened == ["fomc.md"]  # asked again; the others are unchanged


REALDATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "realdata", "sec")


def test_html_to_text_drops_the_inline_xbrl_header_and_keeps_cells_apart():
    # An SEC inline-XBRL document: its hidden ix:header (contexts, units, dei facts) is not text, and the
    # cells of a financial table must not run into each other ("Services27,423 24,213").
    html = ('<html><body><div style="display:none"><ix:header><ix:hidden><ix:nonNumeric name="dei:AmendmentFlag">'
            'false</ix:nonNumeric></ix:hidden><ix:resources><xbrli:context id="c-1"><xbrli:entity>'
            '<xbrli:identifier scheme="http://www.sec.gov/CIK">0000320193</xbrli:identifier></xbrli:entity>'
            '</xbrli:context></ix:resources></ix:header></div>'
            '<p>FORM 10-Q</p><table><tr><td>Services</td><td>27,423</td><td>24,213</td></tr>'
            '<tr><td>California</td><td>94-2404110</td></tr></table></body></html>')
    text, _ = html_to_text(html)
    assert text == "FORM 10-Q\nServices 27,423 24,213\nCalifornia 94-2404110"


def test_html_to_text_of_a_real_apple_10q():
    path = os.path.join(REALDATA, "aapl-10-q-2025-08-01.html")
    if not os.path.exists(path):
        pytest.skip("real capture ../shared/realdata/sec/aapl-10-q-2025-08-01.html is absent")
    with open(path, encoding="utf-8") as f:
        text, _ = html_to_text(f.read())
    assert text.startswith("UNITED STATES\nSECURITIES AND EXCHANGE COMMISSION")
    assert "us-gaap:" not in text and "iso4217:USD" not in text
    assert "Total net sales 94,036 85,777 313,695 296,105" in text
