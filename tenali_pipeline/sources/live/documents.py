"""Text documents (.txt, .md, .html) from a local folder or an object-store prefix.

Endpoints: none of its own. `root` is a local path, or any URI pyarrow understands
(`s3://bucket/prefix`, `gs://...`, `file:///...`) opened with `pyarrow.fs.FileSystem.from_uri`;
S3 credentials and region come from the usual AWS environment variables / profile.

Rate limits: one LIST per prefix (paged by pyarrow) and one GET per file; S3 allows 5,500 GET and
3,500 PUT per second per prefix, far above what this client issues.

Each file becomes one row: doc_id = sha1 of its URI (stable across runs), date = its modification
time as a UTC date, title = the first Markdown heading / HTML <title> / first non-empty line.

Incremental runs: `fetch(previous, files)` takes the rows held and what the last run saw of each
file (size and modification time, `self.files` after a fetch: keep it as state). The folder is
listed every run (one LIST), but a file whose size and mtime are unchanged is not read again: its
row is kept; a removed file's row drops out. A file that cannot be read fails alone (its old row
kept), named in the `PartialFetchError` raised at the end.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import re
from datetime import timezone
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import polars as pl
from pyarrow import fs

from ..http import PartialFetchError
from ..schema import DOCUMENTS, conform

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")
# ix:header is the hidden inline-XBRL header of SEC filings (contexts, units, hidden facts): not text.
_SKIP = {"script", "style", "noscript", "template", "ix:header"}
_BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "table", "ul", "ol"}


class _HtmlText(HTMLParser):
    """Visible text of an HTML page, one line per block element; <title> kept aside."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in _BLOCK:
            self.parts.append("\n")
        elif tag in ("td", "th"):  # cells of one row stay on one line, but apart ("Services 27,423")
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)
_INVISIBLE = re.compile(r"[\u00ad\u200b-\u200d\u2060\ufeff]")  # soft hyphens and zero-width marks


def decode(data: bytes, *, html: bool = False) -> str:
    """A file's text: UTF-8 (or UTF-16 with its BOM); else the charset an HTML page declares; else
    Windows-1252, the encoding of legacy Western files (HTML5's fallback), so that a Latin-1 "Société"
    is not turned into replacement characters."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    m = _META_CHARSET.search(data[:4096]) if html else None
    try:
        return data.decode(m.group(1).decode("ascii") if m else "cp1252", errors="replace")
    except LookupError:  # an unknown charset name
        return data.decode("cp1252", errors="replace")


def html_to_text(source: str) -> tuple[str, str | None]:
    """(visible text with one line per block, <title> or None)."""
    parser = _HtmlText()
    parser.feed(source)
    parser.close()
    lines = (re.sub(r"[ \t\r\f\v\xa0]+", " ", _INVISIBLE.sub("", line)).strip()
             for line in "".join(parser.parts).split("\n"))
    title = re.sub(r"\s+", " ", "".join(parser.title)).strip() or None
    return "\n".join(line for line in lines if line), title


def title_of(text: str, suffix: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if suffix in (".md", ".markdown"):
        heading = next((line for line in lines if line.startswith("#")), None)
        if heading:
            return heading.lstrip("#").strip()
    return lines[0][:200] if lines else ""


def open_uri(uri: str):
    """(filesystem, path) for a URI, via pyarrow (a seam for tests: pyarrow's types are immutable)."""
    return fs.FileSystem.from_uri(uri)


def _utc_date(mtime):
    if mtime is None:
        return None
    if mtime.tzinfo is None:  # pyarrow reports UTC; be explicit when a filesystem drops the zone
        mtime = mtime.replace(tzinfo=timezone.utc)
    return mtime.astimezone(timezone.utc).date()


class LocalDocumentsClient:
    """Every .txt/.md/.html file under `root` (a folder or an s3:// / gs:// / file:// URI)."""

    def __init__(self, root: str):
        self.root = str(root)
        self.files: dict[str, dict] = {}  # uri -> {"size", "mtime", "empty"} as of the last fetch: the state to keep
        self.reused = self.read = 0  # files kept from `previous` / read in the last fetch

    def _filesystem(self):
        if "://" in self.root and not self.root.startswith("file://"):
            filesystem, base = open_uri(self.root)
            scheme = self.root.split("://", 1)[0]
            return filesystem, base, (lambda p: f"{scheme}://{p}")
        local = unquote(urlsplit(self.root).path) if self.root.startswith("file://") else self.root
        base = str(Path(local).expanduser().resolve())
        if not Path(base).is_dir():
            raise FileNotFoundError(f"documents root {self.root!r} is not a folder: check the path (or use s3://bucket/prefix)")
        return fs.LocalFileSystem(), base, (lambda p: Path(p).as_uri())

    def fetch(self, previous: pl.DataFrame | None = None, files: dict[str, dict] | None = None) -> pl.DataFrame:
        """Every document under the root; files unchanged since `files` (and held in `previous`) are not read."""
        filesystem, base, to_uri = self._filesystem()
        infos = filesystem.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=False))
        held = {}
        if previous is not None and files:  # without the rows, what the state says of a file is no use
            held = {r["uri"]: r for r in previous.iter_rows(named=True)}
        seen_before = files or {}
        rows, failures = [], {}
        self.files, self.reused, self.read = {}, 0, 0
        for info in sorted(infos, key=lambda i: i.path):
            suffix = Path(info.path).suffix.lower()
            if info.type != fs.FileType.File or suffix not in SUFFIXES:
                continue
            uri = to_uri(info.path)
            stamp = {"size": info.size, "mtime": info.mtime.isoformat() if info.mtime is not None else None}
            before = seen_before.get(uri)
            unchanged = before is not None and before.get("size") == stamp["size"] and before.get("mtime") == stamp["mtime"]
            if unchanged and stamp["mtime"] is not None and (uri in held or (held and before.get("empty"))):
                self.files[uri] = before
                self.reused += 1
                if uri in held:
                    rows.append(held[uri])
                continue
            try:
                row = self._read(filesystem, info, uri, suffix)
            except (OSError, UnicodeError) as exc:
                log.warning("could not read document %s: %s", uri, exc)
                failures[uri] = f"{type(exc).__name__}: {exc}"
                if uri in held:
                    rows.append(held[uri])
                    if before is not None:
                        self.files[uri] = before
                continue
            self.read += 1
            self.files[uri] = {**stamp, "empty": row is None}
            if row is not None:
                rows.append(row)
        frame = pl.DataFrame(rows, schema=DOCUMENTS) if rows else pl.DataFrame(schema=DOCUMENTS)
        df = conform(frame, DOCUMENTS, what=f"documents under {self.root}")
        if failures:
            raise PartialFetchError(f"documents under {self.root}", failures, partial=df)
        return df

    def _read(self, filesystem, info, uri: str, suffix: str) -> dict | None:
        """One document's row, or None when it holds no text."""
        with filesystem.open_input_stream(info.path) as stream:
            raw = decode(stream.read(), html=suffix in (".html", ".htm"))
        text, title = html_to_text(raw) if suffix in (".html", ".htm") else (_INVISIBLE.sub("", raw).strip(), None)
        if not text:
            log.info("skipping empty document %s", info.path)
            return None
        return {
            "doc_id": hashlib.sha1(uri.encode()).hexdigest(),
            "uri": uri,
            "title": title or title_of(text, suffix),
            "text": text,
            "date": _utc_date(info.mtime),
            "source": "documents",
        }
