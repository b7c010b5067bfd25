"""Raw HTTP responses, kept next to the normalised Parquet so a run can be reproduced and re-parsed.

A client records every response it receives into a `ResponseArchive`; the raw asset saves it as one
gzipped JSON-lines file per run and partition, ``raw/<source>/responses/<YYYY-MM-DD>/<part>-<HHMMSS>-<run>.jsonl.gz``,
each line ``{"url", "status", "fetched_at", "content_type", "body"}`` (``body`` is text, or base64 for
binary bodies with ``"encoding": "base64"``). One file per run rather than one per response keeps a
10,000-ticker day to a few dozen objects.

Secrets never land in the archive: query parameters named like a key or token are masked in the
URL, and request headers are not kept at all.

Hooks: a `requests.Session` gets a response hook (`attach`); yfinance's default curl_cffi transport
has no hooks, so `recording_curl_session` subclasses its Session; clients that read bytes themselves
(feeds, urllib for fredapi) call `record` directly.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_PARAMS = {"api_key", "apikey", "key", "token", "access_token", "x_cg_pro_api_key", "x_cg_demo_api_key",
                 "secret", "password", "sig", "signature"}


def mask_url(url: str) -> str:
    """`url` with the values of secret-looking query parameters replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*:/,")))


class ResponseArchive:
    """Collects raw responses during one fetch (thread-safe); `to_bytes` gives the file to keep."""

    def __init__(self, *, max_body_bytes: int = 50_000_000):
        self.records: list[dict] = []
        self.max_body_bytes = max_body_bytes
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.records)

    def record(self, url: str, status: int | None, body: bytes | str | None, *, content_type: str = "") -> None:
        if body is None:
            body = b""
        entry = {"url": mask_url(str(url)), "status": status,
                 "fetched_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                 "content_type": content_type}
        if isinstance(body, str):
            entry["body"] = body
        elif len(body) > self.max_body_bytes:
            entry["body"], entry["truncated_from"] = "", len(body)
        else:
            try:
                entry["body"] = body.decode("utf-8")
            except UnicodeDecodeError:
                entry["body"], entry["encoding"] = base64.b64encode(body).decode("ascii"), "base64"
        with self._lock:
            self.records.append(entry)

    def requests_hook(self, response, *args, **kwargs):
        """A `requests` response hook: ``session.hooks["response"].append(archive.requests_hook)``."""
        self.record(response.url, response.status_code, response.content,
                    content_type=response.headers.get("Content-Type", ""))
        return response

    def attach(self, session):
        """Record every response `session` (a `requests.Session`) receives from now on; returns it."""
        if self.requests_hook not in session.hooks["response"]:
            session.hooks["response"].append(self.requests_hook)
        return session

    def to_bytes(self) -> bytes:
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records)
        return gzip.compress(lines.encode("utf-8"), mtime=0)

    def save(self, lake, source: str, part: str, run_id: str) -> str | None:
        """Write the archive under ``raw/<source>/responses/``; nothing when no response was recorded."""
        if not self.records:
            return None
        now = dt.datetime.now(dt.timezone.utc)
        key = f"raw/{source}/responses/{now:%Y-%m-%d}/{part}-{now:%H%M%S}-{run_id[:8]}.jsonl.gz"
        return lake.write_bytes(key, self.to_bytes())


def read_archive(data: bytes) -> list[dict]:
    """The records of a saved archive (for re-parsing and tests)."""
    out = []
    for line in gzip.decompress(data).decode("utf-8").splitlines():
        r = json.loads(line)
        if r.get("encoding") == "base64":
            r["body"] = base64.b64decode(r["body"])
        out.append(r)
    return out


def recording_curl_session(archive: ResponseArchive, **kwargs):
    """A curl_cffi Session (yfinance's default transport, impersonating Chrome) that records responses."""
    from curl_cffi import requests as curl_requests

    class RecordingSession(curl_requests.Session):
        def request(self, method, url, *args, **kw):
            response = super().request(method, url, *args, **kw)
            archive.record(response.url, response.status_code, response.content,
                           content_type=response.headers.get("Content-Type", ""))
            return response

    kwargs.setdefault("impersonate", "chrome")
    return RecordingSession(**kwargs)
