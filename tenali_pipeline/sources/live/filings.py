"""SEC EDGAR filings (10-K, 10-Q, 8-K, ...) through sec-edgar-downloader, parsed from the full
submission text.

Endpoints (constants in sec_edgar_downloader._constants, imported by name into its
_sec_gateway and _orchestrator modules):
- https://www.sec.gov/files/company_tickers_exchange.json: ticker -> CIK, fetched by the
  `Downloader` constructor itself;
- https://data.sec.gov/submissions/CIK##########.json (+ overflow pages such as
  CIK##########-submissions-001.json for companies with more than 1000 filings);
- https://www.sec.gov/Archives/edgar/data/{cik}/{accession without dashes}/{accession}.txt, the
  full submission (SGML header + every document), saved as full-submission.txt.

Rate limits: the SEC allows 10 requests per second per client and wants a User-Agent naming a
person or company and an email (SEC_EDGAR_IDENTITY="Name email@domain"); it answers abuse with
403. sec-edgar-downloader 5.1 enforces 10/s itself with a module-level pyrate_limiter Limiter
around every request it makes (process-wide, shared by all Downloader objects). That budget sees
neither our other SEC requests nor other processes, so every request it makes also waits on
`tenali_pipeline.sources.http.SEC_LIMITER`, which throttles the sec.gov requests of every SEC source
(XBRL, universe, IPOs, the EDGAR RSS feed, the sensor) across the machine's processes.

sec-edgar-downloader facts this client works around:
- a failure while saving a filing is printed to stdout and skipped, and a filing already on disk is
  counted as downloaded: we capture stdout (process-global: run one EDGAR fetch per process at a
  time), collect the failures, retry transient ones (429, 5xx, connection) and raise on the rest,
  then read what is on disk;
- its default `before` date is computed once at import: we always pass `before` explicitly;
- its requests carry no timeout: a stalled connection blocks until the OS gives up.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from contextlib import redirect_stdout
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import polars as pl
import requests

from ...text.filings import base_form
from .. import http
from ..http import PartialFetchError, TransientError, retry
from ..schema import FILINGS, conform

log = logging.getLogger(__name__)

_IDENTITY = re.compile(r"^\s*(?P<name>\S.*?)\s+(?P<email>[^@\s]+@[^@\s]+\.[^@\s]+)\s*$")
_FAILURE = re.compile(
    r"Error occurred while downloading filing for accession number (?:\{\}: \{\} )?(?P<acc>\d{10}-\d{2}-\d{6}):? (?P<why>.*)"
)
_TRANSIENT = re.compile(r"\b(429|5\d\d)\b|Connection|Timeout|timed out", re.I)


class _SecLimitedRequests:
    """Stands in for the `requests` module inside sec_edgar_downloader._sec_gateway (whose `_call_sec` makes every
    request of the library with `requests.get`): each GET first waits on `SEC_LIMITER`, looked up at call time."""

    def __init__(self, module):
        self._module = module

    def get(self, *args, **kwargs):
        http.SEC_LIMITER.wait()
        return self._module.get(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._module, name)


def _share_sec_budget() -> None:
    """Route sec-edgar-downloader's requests through `SEC_LIMITER` (idempotent): its own 10/s limiter is per
    process and blind to our other SEC requests, so filings next to XBRL or the sensor would exceed the SEC's 10/s."""
    from sec_edgar_downloader import _sec_gateway

    current = getattr(_sec_gateway, "requests", None)
    if isinstance(current, _SecLimitedRequests):
        return
    if not hasattr(current, "get"):  # another sec-edgar-downloader than the pinned 5.1: its own limit only
        log.warning("sec_edgar_downloader._sec_gateway has no `requests.get` to rate limit: its requests are not "
                    "counted in SEC_LIMITER (check the sec-edgar-downloader version pinned in pyproject.toml)")
        return
    _sec_gateway.requests = _SecLimitedRequests(current)


class EdgarDownloadError(RuntimeError):
    """Filings could not be downloaded for a reason retrying will not fix."""


class EdgarBlocked(EdgarDownloadError):
    """The SEC answered 403: it refuses this client (User-Agent or request rate). Asking again for the
    next company only prolongs the block, so the fetch stops."""


# --- parsing (pure) ----------------------------------------------------------------------------


def _header_values(header: str, key: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"^\s*{re.escape(key)}:\s*(.*)$", header, flags=re.M)]


def _yyyymmdd(value: str | None) -> date | None:
    return datetime.strptime(value, "%Y%m%d").date() if value else None


@dataclass(frozen=True)
class Submission:
    accession: str
    form: str
    cik: str
    company: str
    filed: date
    period: date | None
    accepted: datetime | None  # EDGAR acceptance time, US Eastern (naive, as published)
    items: str | None  # 8-K "ITEM INFORMATION" lines joined with "; "
    filers: list[tuple[str, str]]  # (CIK, COMPANY CONFORMED NAME) of every filer, in order
    document: str
    document_format: str  # "html" or "text"
    document_filename: str | None
    # an 8-K's EX-99 exhibits (press release, shareholder letter, ...): {"type", "description", "filename",
    # "format", "document", "truncated"}, in document order; empty for other forms
    exhibits: tuple[dict, ...] = ()

    def exhibits_json(self) -> str | None:
        """The `exhibits` column of the filings table: a JSON list, None when there are none."""
        return json.dumps(list(self.exhibits), ensure_ascii=False) if self.exhibits else None


# An 8-K says "see the press release furnished as Exhibit 99.1": its substance is in the EX-99 documents.
_EXHIBIT_TYPE = re.compile(r"EX-99(?:\.\d+[A-Z]?)?", re.I)
_EXHIBIT_CHARS = 150_000  # one exhibit as served (HTML is mostly markup), cut at a tag
_EXHIBITS_CHARS = 200_000  # all of a filing's exhibits: a huge one cannot balloon the row


def _unwrap(content: str) -> str:
    inner = re.fullmatch(r"\s*<(XBRL|XML)>(.*)</\1>\s*", content, flags=re.S)  # inline-XBRL wrapper
    return (inner.group(2) if inner else content).strip()


def _is_html(filename: str | None, content: str) -> bool:
    return (filename or "").lower().endswith((".htm", ".html")) or bool(re.search(r"<html[\s>]", content[:5000], re.I))


def _exhibits(docs: list[tuple[str, str | None, str, str]]) -> tuple[dict, ...]:
    """The EX-99 documents that are HTML or text (not PDFs, images, XBRL or JSON), each cut to `_EXHIBIT_CHARS`
    and together to `_EXHIBITS_CHARS`: one that does not fit in what is left is cut, and none follow it."""
    kept, room = [], _EXHIBITS_CHARS
    for doc_type, filename, description, content in docs:
        if not _EXHIBIT_TYPE.fullmatch(doc_type) or room <= 0:
            continue
        ext = (filename or "").lower().rpartition(".")[2] if "." in (filename or "") else ""
        content = _unwrap(content)
        if ext not in ("htm", "html", "txt", "") or not content or re.match(r"begin \d{3} ", content):
            continue  # a PDF or image (uuencoded in the submission), XML, JSON, ...
        fmt = "html" if _is_html(filename, content) else "text"
        cap = min(_EXHIBIT_CHARS, room)
        truncated = len(content) > cap
        if truncated:
            cut = content.rfind("<", 0, cap) if fmt == "html" else -1  # not inside a tag
            content = content[:cut if cut > cap // 2 else cap]
        room -= cap if truncated else len(content)
        kept.append({"type": doc_type.upper(), "description": description or None, "filename": filename,
                     "format": fmt, "document": content, "truncated": truncated})
    return tuple(kept)


def parse_full_submission(text: str) -> Submission:
    """Parse an EDGAR full submission (.txt): its SGML header and its primary document, which is
    the first <DOCUMENT> whose <TYPE> equals the submission type (the first document otherwise), and
    for an 8-K its EX-99 exhibits (the press release an Item 2.02 8-K only points to)."""
    head = re.search(r"<SEC-HEADER>(.*?)</SEC-HEADER>", text, flags=re.S)
    if head is None:
        raise ValueError("not an EDGAR full submission: no <SEC-HEADER> block")
    header = head.group(1)

    def one(key: str) -> str | None:
        values = _header_values(header, key)
        return values[0] if values else None

    accepted = re.search(r"<ACCEPTANCE-DATETIME>(\d{14})", text)
    form = one("CONFORMED SUBMISSION TYPE") or ""
    docs = []
    for body in re.findall(r"<DOCUMENT>(.*?)</DOCUMENT>", text, flags=re.S):
        doc_type = re.search(r"<TYPE>([^\n<]*)", body)
        filename = re.search(r"<FILENAME>([^\n<]*)", body)
        description = re.search(r"<DESCRIPTION>([^\n<]*)", body)
        content = re.search(r"<TEXT>(.*?)</TEXT>", body, flags=re.S)
        docs.append(
            (
                doc_type.group(1).strip() if doc_type else "",
                filename.group(1).strip() if filename else None,
                description.group(1).strip() if description else None,
                content.group(1) if content else "",
            )
        )
    if not docs:
        raise ValueError("EDGAR full submission has no <DOCUMENT>")
    primary = next((d for d in docs if d[0] == form), docs[0])
    _, filename, _, content = primary
    content = _unwrap(content)
    exhibits = _exhibits([d for d in docs if d is not primary]) if base_form(form) == "8-K" else ()
    items = _header_values(header, "ITEM INFORMATION")
    return Submission(
        accession=one("ACCESSION NUMBER") or "",
        form=form,
        cik=(one("CENTRAL INDEX KEY") or "").zfill(10),
        company=one("COMPANY CONFORMED NAME") or "",
        filed=_yyyymmdd(one("FILED AS OF DATE")),
        period=_yyyymmdd(one("CONFORMED PERIOD OF REPORT")),
        accepted=datetime.strptime(accepted.group(1), "%Y%m%d%H%M%S") if accepted else None,
        items="; ".join(items) if items else None,
        filers=list(zip(_header_values(header, "CENTRAL INDEX KEY"), _header_values(header, "COMPANY CONFORMED NAME"))),
        document=content,
        document_format="html" if _is_html(filename, content) else "text",
        document_filename=filename,
        exhibits=exhibits,
    )


# --- downloading -------------------------------------------------------------------------------


def parse_identity(identity: str | None) -> tuple[str, str]:
    """Split "Name email@domain" into (name, email); a clear error when missing or malformed."""
    identity = identity or os.environ.get("SEC_EDGAR_IDENTITY")
    match = _IDENTITY.match(identity or "")
    if not match:
        raise ValueError(
            "SEC EDGAR identity missing or malformed: set SEC_EDGAR_IDENTITY to 'Your Name "
            "you@example.com' (the SEC requires a name and a contact email in the User-Agent)"
        )
    return match.group("name"), match.group("email")


class EdgarFilingsClient:
    """Filings of `forms` for each ticker or CIK, filed in [after, before], newest `limit` each."""

    def __init__(
        self,
        tickers_or_ciks: list[str],
        forms: tuple[str, ...] = ("10-K", "10-Q", "8-K"),
        identity: str | None = None,
        download_dir: str | os.PathLike = "edgar",
        limit: int | None = None,
        after: str | date | None = None,
        before: str | date | None = None,
        *,
        attempts: int = 4,
        base_delay: float = 2.0,
        archive=None,
    ):
        self.name, self.email = parse_identity(identity)
        self.archive = archive  # sources.archive.ResponseArchive: keeps each full submission read
        self.companies = [str(c).strip().upper() for c in tickers_or_ciks]
        self.forms = tuple(forms)
        self.download_dir = Path(download_dir)
        self.limit = limit
        self.after = date.fromisoformat(str(after)) if after else date(1994, 1, 1)
        self.before = date.fromisoformat(str(before)) if before else None
        self.attempts, self.base_delay = attempts, base_delay

    def fetch(self, since: dict[str, date | None] | None = None) -> pl.DataFrame:
        """Filings of every company, or of those in `since` filed on or after their day (None: from
        `after`). One failing company fails alone: it is named in the `PartialFetchError` raised at the
        end, which carries the others' rows. Each full submission read is recorded in `archive`."""
        before = self.before or date.today()
        downloader = self._call(self._downloader, what="SEC ticker list")
        since = since if since is not None else {c: None for c in self.companies}
        rows, failures = [], {}
        blocked = None
        for company in self.companies:
            if company not in since:
                continue
            if blocked is not None:  # the SEC refuses this client: do not keep asking (fair access)
                failures[company] = f"not asked: the SEC refused this client earlier in the run ({blocked})"
                continue
            after = max(self.after, since[company]) if since[company] else self.after
            try:
                got = []
                for form in self.forms:
                    what = f"SEC {form} filings of {company}"
                    self._call(lambda: self._get(downloader, form, company, before, after), what=what)
                    got += self._read_saved(company, form, before, after, cik=self._cik_of(downloader, company))
                rows += got
            except Exception as exc:  # noqa: BLE001 - named in the PartialFetchError, never swallowed
                log.warning("EDGAR filings of %s failed: %s", company, exc)
                failures[company] = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, EdgarBlocked):
                    blocked = f"403 for {company}"
        frame = pl.DataFrame(rows, schema={**FILINGS}) if rows else pl.DataFrame(schema=FILINGS)
        frame = conform(frame, FILINGS, what="SEC EDGAR filings")
        if failures:
            raise PartialFetchError("SEC EDGAR filings", failures, partial=frame)
        return frame

    def _downloader(self):
        from sec_edgar_downloader import Downloader

        _share_sec_budget()  # before the constructor, which fetches the ticker map
        return Downloader(self.name, self.email, self.download_dir)

    def _get(self, downloader, form: str, company: str, before: date, after: date) -> int:
        out = io.StringIO()
        with redirect_stdout(out):  # where the downloader reports (and swallows) failures
            count = downloader.get(form, company, limit=self.limit, after=after, before=before)
        failures = [m.groupdict() for m in _FAILURE.finditer(out.getvalue())]
        if failures:
            listed = "; ".join(f"{f['acc']}: {f['why'][:160]}" for f in failures)
            if any(_TRANSIENT.search(f["why"]) for f in failures):
                raise TransientError(f"{len(failures)} {form} filing(s) of {company} failed to download ({listed})")
            error = EdgarBlocked if any(re.match(r"\s*403\b", f["why"]) for f in failures) else EdgarDownloadError
            raise error(
                f"{len(failures)} {form} filing(s) of {company} failed to download ({listed}): "
                "a 403 means the SEC refused the User-Agent or the request rate (check "
                "SEC_EDGAR_IDENTITY); a 404 means the filing is not in the EDGAR archive"
            )
        return count

    @staticmethod
    def _cik_of(downloader, company: str) -> str | None:
        """The 10-digit CIK asked for: the CIK given, or the downloader's ticker map entry."""
        if company.isdigit():
            return company.zfill(10)
        mapping = getattr(downloader, "ticker_to_cik_mapping", None) or {}
        cik = mapping.get(company)
        return str(cik).zfill(10) if cik else None

    def _read_saved(self, company: str, form: str, before: date, after: date, cik: str | None = None) -> list[dict]:
        folder = company.zfill(10) if company.isdigit() else company
        paths = sorted((self.download_dir / "sec-edgar-filings" / folder / form).glob("*/full-submission.txt"))
        texts = [p.read_text(encoding="utf-8", errors="replace") for p in paths]
        subs = [(parse_full_submission(t), t) for t in texts]
        # The folder may hold filings from earlier runs: keep what this request selects.
        subs = [(s, t) for s, t in subs if s.form == form and after <= s.filed <= before]
        subs = sorted(subs, key=lambda st: (st[0].filed, st[0].accession), reverse=True)[: self.limit]
        if self.archive is not None:
            for s, text in subs:
                self.archive.record(f"https://www.sec.gov/Archives/edgar/data/{int(s.cik)}/"
                                    f"{s.accession.replace('-', '')}/{s.accession}.txt", 200, text,
                                    content_type="text/plain")
        subs = [s for s, _ in subs]
        # A combined filing (a utility and its subsidiaries file one 10-K) names several filers, the
        # one asked for not necessarily first: the row is the company asked for.
        filer = {s.accession: next(((c.zfill(10), n) for c, n in s.filers if c.zfill(10) == cik), (s.cik, s.company))
                 for s in subs}
        return [
            {
                "cik": filer[s.accession][0],
                "ticker": None if company.isdigit() else company,
                "company": filer[s.accession][1],
                "form": s.form,
                "accession": s.accession,
                "filed": s.filed,
                "period": s.period,
                "items": s.items,
                "document": s.document,
                "document_format": s.document_format,
                "source": "sec-edgar",
                "exhibits": s.exhibits_json(),
            }
            for s in subs
        ]

    def _call(self, fn, *, what: str):
        def attempt():
            try:
                return fn()
            except requests.HTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status == 429 or (status or 0) >= 500:
                    raise TransientError(f"{what}: SEC answered HTTP {status}") from exc
                if status == 403:
                    raise EdgarBlocked(
                        f"{what}: SEC answered 403 Forbidden: set SEC_EDGAR_IDENTITY to a real name "
                        "and email and stay under 10 requests per second"
                    ) from exc
                raise EdgarDownloadError(f"{what}: SEC answered HTTP {status} ({exc}): check the ticker or CIK") from exc
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise TransientError(f"{what}: could not reach the SEC ({exc})") from exc

        return retry(attempt, attempts=self.attempts, base_delay=self.base_delay, what=what)
