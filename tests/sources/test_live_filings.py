"""EDGAR: the full-submission parser on a real Apple 8-K, and sec-edgar-downloader replayed against a
127.0.0.1 server (its URL constants monkeypatched) serving real SEC captures from realdata/sec/."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from local_http import LocalServer
from tenali_pipeline.sources.http import PartialFetchError
from tenali_pipeline.sources.schema import FILINGS

pytest.importorskip("sec_edgar_downloader")
from tenali_pipeline.sources.live.filings import (  # noqa: E402
    EdgarDownloadError,
    EdgarFilingsClient,
    parse_full_submission,
)

SEC = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "sec"
ACC = "0001193125-19-292676"  # Apple 8-K filed 2019-11-15
IDENTITY = "Tenali Research data@tenali.example"


def _real(name: str) -> bytes:
    path = SEC / name
    if not path.exists():
        pytest.skip(f"real capture {path} not present (../shared/realdata is absent)")
    return path.read_bytes()


# --- parser ------------------------------------------------------------------------------------


def test_parses_real_apple_8k():
    sub = parse_full_submission(_real("aapl-8k-20191115-full-submission.txt").decode())

    assert sub.accession == ACC and sub.form == "8-K"
    assert sub.cik == "0000320193" and sub.company == "Apple Inc."
    assert sub.filed == dt.date(2019, 11, 15) and sub.period == dt.date(2019, 11, 7)
    assert sub.accepted == dt.datetime(2019, 11, 15, 6, 2, 24)
    assert sub.items == "Other Events; Financial Statements and Exhibits"
    assert sub.filers == [("0000320193", "Apple Inc.")]
    assert sub.document_filename == "d828969d8k.htm" and sub.document_format == "html"
    # Only the primary document, unwrapped from <XBRL>, none of the 18 exhibits.
    assert sub.document.startswith("<?xml") and sub.document.rstrip().endswith("</html>")
    assert "<XBRL>" not in sub.document and "<DOCUMENT>" not in sub.document and "EX-4.1" not in sub.document
    assert "Apple Inc." in sub.document


def test_parses_plain_text_primary_document_without_acceptance_time():
    text = """<SEC-DOCUMENT>0000950123-97-001234.txt : 19970312
<SEC-HEADER>0000950123-97-001234.hdr.sgml : 19970312
ACCESSION NUMBER:		0000950123-97-001234
CONFORMED SUBMISSION TYPE:	10-K
PUBLIC DOCUMENT COUNT:		2
CONFORMED PERIOD OF REPORT:	19961231
FILED AS OF DATE:		19970312

FILER:

	COMPANY DATA:
		COMPANY CONFORMED NAME:			EXAMPLE HOLDINGS CORP
		CENTRAL INDEX KEY:			0000012345
</SEC-HEADER>
<DOCUMENT>
<TYPE>EX-27
<SEQUENCE>2
<TEXT>
financial data schedule
</TEXT>
</DOCUMENT>
<DOCUMENT>
<TYPE>10-K
<SEQUENCE>1
<TEXT>
                       SECURITIES AND EXCHANGE COMMISSION
                             WASHINGTON, D.C. 20549
                                   FORM 10-K
</TEXT>
</DOCUMENT>
</SEC-DOCUMENT>
"""
    sub = parse_full_submission(text)
    assert sub.form == "10-K" and sub.document_format == "text" and sub.accepted is None
    assert sub.document.startswith("SECURITIES AND EXCHANGE COMMISSION") and "schedule" not in sub.document
    assert sub.items is None and sub.period == dt.date(1996, 12, 31) and sub.cik == "0000012345"
    with pytest.raises(ValueError, match="SEC-HEADER"):
        parse_full_submission("<html>not a submission</html>")


# --- downloader replay -------------------------------------------------------------------------


class FakeSec:
    """www.sec.gov + data.sec.gov on 127.0.0.1; `archive[accession]` is a list of (status, body)."""

    def __init__(self):
        tickers = json.loads(_real("company_tickers.json"))
        # The downloader reads company_tickers_exchange.json ({"fields", "data"}); the capture is
        # company_tickers.json ({"0": {"cik_str", "ticker", "title"}}): same companies, reshaped.
        mapping = {
            "fields": ["cik", "name", "ticker", "exchange"],
            "data": [[t["cik_str"], t["title"], t["ticker"], None] for t in tickers.values()],
        }
        self.files = {
            "/files/company_tickers_exchange.json": json.dumps(mapping).encode(),
            "/submissions/CIK0000320193.json": _real("CIK0000320193.json"),
            "/submissions/CIK0000320193-submissions-001.json": _real("CIK0000320193-submissions-001.json"),
        }
        self.archive: dict[str, list[tuple[int, bytes]]] = {
            ACC: [(200, _real("aapl-8k-20191115-full-submission.txt"))]
        }
        self.requests: list[tuple[str, str]] = []
        self.forbidden: set[str] = set()  # paths answered 403, as the SEC answers abuse
        self.http = LocalServer(self._respond)
        self.base = self.http.base

    def _respond(self, req) -> tuple[int, dict[str, str], bytes]:
        self.requests.append((req.path, req.headers.get("User-Agent", "")))
        status, body = 404, b"<Error><Code>NoSuchKey</Code></Error>"
        if req.path in self.forbidden:
            status, body = 403, b"<h1>Your Request Originates from an Undeclared Automated Tool</h1>"
        elif req.path in self.files:
            status, body = 200, self.files[req.path]
        elif req.path.startswith("/Archives/edgar/data/"):
            answers = self.archive.get(req.path.rsplit("/", 1)[-1].removesuffix(".txt"))
            if answers:
                status, body = answers.pop(0) if len(answers) > 1 else answers[0]
        return status, {}, body

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]


@pytest.fixture
def sec(monkeypatch):
    from sec_edgar_downloader import _orchestrator, _sec_gateway

    fake = FakeSec()
    # The constants are imported by name into these two modules: patch them there.
    monkeypatch.setattr(_sec_gateway, "URL_CIK_MAPPING", f"{fake.base}/files/company_tickers_exchange.json")
    monkeypatch.setattr(_orchestrator, "URL_SUBMISSIONS", f"{fake.base}/submissions/{{submission}}")
    monkeypatch.setattr(_orchestrator, "URL_FILING", f"{fake.base}/Archives/edgar/data/{{cik}}/{{acc_num_no_dash}}/{{document}}")
    yield fake
    fake.http.close()


def test_downloads_and_parses_real_8k(sec, tmp_path):
    client = EdgarFilingsClient(["aapl"], forms=("8-K",), identity=IDENTITY, download_dir=tmp_path, after="2019-11-15", before="2019-11-15")

    df = client.fetch()

    assert df.schema == pl.Schema(FILINGS)
    assert df.height == 1
    row = df.row(0, named=True)
    assert row["accession"] == ACC and row["form"] == "8-K" and row["ticker"] == "AAPL"
    assert row["cik"] == "0000320193" and row["company"] == "Apple Inc."
    assert row["filed"] == dt.date(2019, 11, 15) and row["period"] == dt.date(2019, 11, 7)
    assert row["items"] == "Other Events; Financial Statements and Exhibits"
    assert row["document_format"] == "html" and row["source"] == "sec-edgar"
    assert (tmp_path / "sec-edgar-filings" / "AAPL" / "8-K" / ACC / "full-submission.txt").exists()
    paths = sec.paths()
    assert paths[0] == "/files/company_tickers_exchange.json"
    assert "/submissions/CIK0000320193.json" in paths
    assert "/submissions/CIK0000320193-submissions-001.json" in paths  # no limit: overflow page too
    assert f"/Archives/edgar/data/320193/000119312519292676/{ACC}.txt" in paths
    assert all(ua == IDENTITY for _, ua in sec.requests)


def test_cik_input_and_rerun_reads_files_on_disk(sec, tmp_path):
    kwargs = dict(forms=("8-K",), identity=IDENTITY, download_dir=tmp_path, limit=1, after="2019-11-15", before="2019-11-15")
    first = EdgarFilingsClient(["320193"], **kwargs).fetch()
    assert first["ticker"].to_list() == [None] and first["cik"].to_list() == ["0000320193"]
    assert (tmp_path / "sec-edgar-filings" / "0000320193" / "8-K" / ACC / "full-submission.txt").exists()
    archive_hits = sum(p.startswith("/Archives/") for p in sec.paths())

    again = EdgarFilingsClient(["320193"], **kwargs).fetch()

    assert again.equals(first)
    assert sum(p.startswith("/Archives/") for p in sec.paths()) == archive_hits  # already on disk


def test_swallowed_download_failure_is_raised_with_accession(sec, tmp_path):
    # Two 8-Ks in range; the archive has no 0000320193-19-000117 (404), which the downloader only prints.
    client = EdgarFilingsClient(["AAPL"], forms=("8-K",), identity=IDENTITY, download_dir=tmp_path, after="2019-10-30", before="2019-11-15")

    with pytest.raises(PartialFetchError, match=r"AAPL: EdgarDownloadError: .*0000320193-19-000117: 404 Client Error"):
        client.fetch()


def test_transient_download_failure_is_retried(sec, tmp_path):
    sec.archive[ACC].insert(0, (503, b"Service Unavailable"))
    client = EdgarFilingsClient(
        ["AAPL"], forms=("8-K",), identity=IDENTITY, download_dir=tmp_path, limit=1,
        after="2019-11-15", before="2019-11-15", base_delay=0.01,
    )

    assert client.fetch()["accession"].to_list() == [ACC]
    assert sum(p.endswith(f"{ACC}.txt") for p in sec.paths()) == 2


def test_forbidden_is_clear_error_not_retried(sec, tmp_path):
    sec.forbidden.add("/files/company_tickers_exchange.json")
    client = EdgarFilingsClient(["AAPL"], forms=("8-K",), identity=IDENTITY, download_dir=tmp_path)
    with pytest.raises(EdgarDownloadError, match="403 Forbidden.*SEC_EDGAR_IDENTITY"):
        client.fetch()
    assert len(sec.requests) == 1


def test_unknown_ticker_is_clear_error(sec, tmp_path):
    client = EdgarFilingsClient(["NOSUCHTICKER"], forms=("8-K",), identity=IDENTITY, download_dir=tmp_path)
    with pytest.raises(PartialFetchError, match="NOSUCHTICKER: ValueError"):
        client.fetch()


def test_persistent_server_errors_give_up(sec, tmp_path):
    sec.archive[ACC] = [(500, b"Internal Server Error")]
    client = EdgarFilingsClient(
        ["AAPL"], forms=("8-K",), identity=IDENTITY, download_dir=tmp_path, limit=1,
        after="2019-11-15", before="2019-11-15", attempts=2, base_delay=0.01,
    )
    with pytest.raises(PartialFetchError, match="AAPL: RetriesExhausted: SEC 8-K filings of AAPL"):
        client.fetch()


def test_identity_is_required(monkeypatch, tmp_path):
    monkeypatch.delenv("SEC_EDGAR_IDENTITY", raising=False)
    with pytest.raises(ValueError, match="SEC_EDGAR_IDENTITY"):
        EdgarFilingsClient(["AAPL"], download_dir=tmp_path)
    with pytest.raises(ValueError, match="SEC_EDGAR_IDENTITY"):
        EdgarFilingsClient(["AAPL"], identity="no-email-here", download_dir=tmp_path)
    monkeypatch.setenv("SEC_EDGAR_IDENTITY", IDENTITY)
    client = EdgarFilingsClient(["AAPL"], download_dir=tmp_path)
    assert (client.name, client.email) == ("Tenali Research", "data@tenali.example")



PARENT, SUBSIDIARY = ("0001326160", "Duke Energy CORP"), ("0000030371", "DUKE ENERGY CAROLINAS, LLC")


def _combined_10k(*filers) -> str:
    """A combined 10-K (one filing, several registrants) with its filers in the order given."""
    blocks = "".join(f"\nFILER:\n\n\tCOMPANY DATA:\n\t\tCOMPANY CONFORMED NAME:\t\t\t{name}\n"
                     f"\t\tCENTRAL INDEX KEY:\t\t\t{cik}\n" for cik, name in filers)
    return ("<SEC-DOCUMENT>0001326160-24-000034.txt : 20240223\n<SEC-HEADER>0001326160-24-000034.hdr.sgml : 20240223\n"
            "ACCESSION NUMBER:\t\t0001326160-24-000034\nCONFORMED SUBMISSION TYPE:\t10-K\n"
            "CONFORMED PERIOD OF REPORT:\t20231231\nFILED AS OF DATE:\t\t20240223\n" + blocks +
            "</SEC-HEADER>\n<DOCUMENT>\n<TYPE>10-K\n<SEQUENCE>1\n<FILENAME>duk-20231231.htm\n<TEXT>\n"
            "<html><body>FORM 10-K combined annual report</body></html>\n</TEXT>\n</DOCUMENT>\n</SEC-DOCUMENT>\n")


@pytest.mark.parametrize("company, folder, filers, want", [
    ("30371", "0000030371", (PARENT, SUBSIDIARY), SUBSIDIARY),  # a subsidiary asked for by CIK
    ("DUK", "DUK", (SUBSIDIARY, PARENT), PARENT),  # the parent asked for by ticker, listed second
])
def test_combined_filing_is_attributed_to_the_company_asked_for(tmp_path, monkeypatch, company, folder, filers, want):
    # Utilities file one 10-K for the parent and its subsidiaries; the company asked for is not
    # necessarily the first filer in the header, and must not be recorded as another registrant.
    acc = "0001326160-24-000034"
    saved = tmp_path / "sec-edgar-filings" / folder / "10-K" / acc / "full-submission.txt"
    saved.parent.mkdir(parents=True)
    saved.write_text(_combined_10k(*filers))

    class Downloader:  # what sec-edgar-downloader leaves behind: the file on disk, its ticker map
        ticker_to_cik_mapping = {"DUK": "0001326160"}

        def get(self, *args, **kwargs):
            return 1

    monkeypatch.setattr(EdgarFilingsClient, "_downloader", lambda self: Downloader())
    df = EdgarFilingsClient([company], forms=("10-K",), identity=IDENTITY, download_dir=tmp_path,
                            after="2024-01-01", before="2024-03-01").fetch()
    row = df.row(0, named=True)
    assert (row["cik"], row["company"], row["accession"]) == (*want, acc)


def test_a_403_stops_asking_for_the_other_companies(sec, tmp_path):
    # The SEC answers 403 to a client it refuses; asking for each of the next (up to thousands of)
    # companies in universe mode prolongs the block. The rest are named as not asked.
    sec.forbidden.add("/submissions/CIK0000320193.json")
    client = EdgarFilingsClient(["AAPL", "MSFT", "789019"], forms=("10-K", "8-K"), identity=IDENTITY,
                                download_dir=tmp_path, base_delay=0.01)

    with pytest.raises(PartialFetchError) as info:
        client.fetch()

    assert set(info.value.failures) == {"AAPL", "MSFT", "789019"}
    assert "403" in info.value.failures["AAPL"] and "not asked" in info.value.failures["MSFT"]
    assert [p for p in sec.paths() if p.startswith("/submissions/")] == ["/submissions/CIK0000320193.json"]


def test_a_403_on_a_filing_the_downloader_swallows_also_stops_the_fetch(sec, tmp_path):
    sec.archive[ACC] = [(403, b"<h1>Your Request Originates from an Undeclared Automated Tool</h1>")]
    client = EdgarFilingsClient(["AAPL", "MSFT"], forms=("8-K",), identity=IDENTITY, download_dir=tmp_path,
                                limit=1, after="2019-11-15", before="2019-11-15", base_delay=0.01)

    with pytest.raises(PartialFetchError, match=r"AAPL: EdgarBlocked: .*403 Client Error.*MSFT: not asked"):
        client.fetch()
    assert "/submissions/CIK0000789019.json" not in sec.paths()
