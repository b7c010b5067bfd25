"""8-K exhibits: an Item 2.02 8-K only points to "the press release furnished as Exhibit 99.1"; the EX-99
documents of its full submission are kept (raw `exhibits` column), carried through cleaning and rendered after
the items. 10-K/10-Q rows and tables written before the column are unchanged."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from tenali_pipeline.buckets import Bucket
from tenali_pipeline.cleaning import clean
from tenali_pipeline.defs.filings import assets as filings_assets
from tenali_pipeline.lake import Lake
from tenali_pipeline.resources import LakeResource, SourcesResource
from tenali_pipeline.sources.live import filings as live
from tenali_pipeline.sources.live.filings import parse_full_submission
from tenali_pipeline.sources.sample import SampleFilingsClient
from tenali_pipeline.sources.schema import FILINGS, conform
from tenali_pipeline.text.filings import filing_to_text
from tenali_pipeline.text.render import render_filings

SEC = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "sec"

HEADER = """<SEC-DOCUMENT>0000950170-24-011111.txt : 20240125
<SEC-HEADER>0000950170-24-011111.hdr.sgml : 20240125
<ACCEPTANCE-DATETIME>20240125161502
ACCESSION NUMBER:		0000950170-24-011111
CONFORMED SUBMISSION TYPE:	{form}
PUBLIC DOCUMENT COUNT:		7
CONFORMED PERIOD OF REPORT:	20240125
ITEM INFORMATION:		Results of Operations and Financial Condition
ITEM INFORMATION:		Financial Statements and Exhibits
FILED AS OF DATE:		20240125

FILER:

	COMPANY DATA:
		COMPANY CONFORMED NAME:			ACME WIDGETS INC
		CENTRAL INDEX KEY:			0000012345
</SEC-HEADER>
"""


def _document(doc_type: str, sequence: int, filename: str, text: str, description: str | None = None) -> str:
    """One <DOCUMENT> of a full submission, as EDGAR writes it (`submission` fills in {form} afterwards)."""
    described = f"<DESCRIPTION>{description}\n" if description else ""
    return (f"<DOCUMENT>\n<TYPE>{doc_type}\n<SEQUENCE>{sequence}\n<FILENAME>{filename}\n{described}<TEXT>\n{text}"
            "</TEXT>\n</DOCUMENT>\n")


PRIMARY = _document("{form}", 1, "acme-20240125.htm", description="{form}", text="""<XBRL>
<?xml version='1.0' encoding='ASCII'?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>{form}</title></head><body>
<div style="display:none"><ix:header>dei:DocumentType {form}</ix:header></div>
<p>UNITED STATES SECURITIES AND EXCHANGE COMMISSION</p><p>FORM {form}</p><p>CURRENT REPORT</p>
<p><b>Item 2.02 Results of Operations and Financial Condition.</b></p>
<p>On January 25, 2024, Acme Widgets, Inc. issued a press release announcing its results for the fourth quarter
of fiscal 2023. A copy of the press release is furnished as Exhibit 99.1 to this Current Report on Form 8-K.</p>
<p><b>Item 9.01 Financial Statements and Exhibits.</b></p>
<table><tr><td>(d)</td><td>Exhibits.</td></tr><tr><td>99.1</td><td>Press release dated January 25, 2024.</td></tr></table>
<p>SIGNATURES</p><p>Pursuant to the requirements of the Securities Exchange Act of 1934 ...</p>
</body></html>
</XBRL>
""")

PRESS_RELEASE = _document("EX-99.1", 2, "acme-ex99_1.htm", description="EX-99.1", text="""\
<html><head><title>EX-99.1</title><style>p {{ margin: 0 }}</style></head><body>
<p style="text-align:center"><b>Acme Widgets Reports Record Fourth Quarter Results</b></p>
<p>SPRINGFIELD, January 25, 2024 &#8212; Acme Widgets, Inc. (NYSE: ACME) today reported fourth quarter revenue of
$1,234 million, up 12% year over year, and diluted earnings per share of $2.05.</p>
<table>
<tr><td></td><td colspan="2">Three Months Ended</td></tr>
<tr><td>Revenue</td><td>$</td><td>1,234</td><td>$</td><td>1,102</td></tr>
<tr><td>Net income (loss)</td><td>$</td><td>(45</td><td>)</td><td>$</td><td>88</td></tr>
</table>
<script>var tracking = 1;</script>
</body></html>
""")

PDF = _document("EX-99.2", 3, "acme-ex99_2.pdf", description="INVESTOR PRESENTATION", text="""<PDF>
begin 644 acme-ex99_2.pdf
M)5!$1BTQ+C0*)>+CS],*,2`P(&]B:@H\/"]4>7!E("]#871A;&]G"B]086=E
end
</PDF>
""")

OTHERS = (_document("GRAPHIC", 4, "acme-logo.jpg", text="""begin 644 acme-logo.jpg
M_]C_X``02D9)1@`!`0$`8`!@``#_VP!#``(!`0(!`0("`@("`@("`P4#`P,#
end
""") + _document("EX-101.SCH", 5, "acme-20240125.xsd", text="""<XBRL>
<?xml version="1.0" encoding="utf-8"?><xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"></xs:schema>
</XBRL>
""") + _document("JSON", 6, "MetaLinks.json", text='{{"version": "2.2", "instance": {{}}}}\n'))

SUPPLEMENT = _document("EX-99.3", 7, "acme-ex99_3.txt", description="SUPPLEMENTAL DATA", text="""\
Segment        Revenue      Margin
Widgets        $900         31%
""")


def submission(form: str = "8-K", exhibits: str = PRESS_RELEASE + PDF + SUPPLEMENT) -> str:
    return (HEADER + PRIMARY + exhibits + OTHERS + "</SEC-DOCUMENT>\n").format(form=form)


def _row(sub) -> dict:
    return {"cik": sub.cik, "ticker": "ACME", "company": sub.company, "form": sub.form, "accession": sub.accession,
            "filed": sub.filed, "period": sub.period, "items": sub.items, "document": sub.document,
            "document_format": sub.document_format, "source": "sec-edgar", "exhibits": sub.exhibits_json()}


def _frame(*rows: dict) -> pl.DataFrame:
    return conform(pl.DataFrame(list(rows), schema=FILINGS), FILINGS, what="test filings")


# --- parsing -----------------------------------------------------------------------------------


def test_an_8k_keeps_its_ex99_press_release_and_text_exhibits_not_pdfs_images_or_xbrl():
    sub = parse_full_submission(submission())

    assert sub.form == "8-K" and sub.document_filename == "acme-20240125.htm" and sub.document_format == "html"
    assert "Item 2.02" in sub.document and "Record Fourth Quarter" not in sub.document  # the primary alone
    assert [(e["type"], e["filename"], e["format"]) for e in sub.exhibits] == [
        ("EX-99.1", "acme-ex99_1.htm", "html"), ("EX-99.3", "acme-ex99_3.txt", "text")]
    release, supplement = sub.exhibits
    assert release["document"].startswith("<html>") and release["document"].endswith("</html>")
    assert "$1,234 million" in release["document"] and release["truncated"] is False
    assert release["description"] == "EX-99.1" and supplement["description"] == "SUPPLEMENTAL DATA"
    assert json.loads(sub.exhibits_json()) == list(sub.exhibits)


@pytest.mark.parametrize("form", ["10-K", "10-Q"])
def test_a_periodic_reports_ex99_is_not_kept(form):
    sub = parse_full_submission(submission(form))
    assert sub.form == form and sub.exhibits == () and sub.exhibits_json() is None


def test_an_amended_8k_keeps_its_exhibits_too():
    assert [e["type"] for e in parse_full_submission(submission("8-K/A")).exhibits] == ["EX-99.1", "EX-99.3"]


def test_an_8k_without_ex99_has_no_exhibits():
    sub = parse_full_submission(submission(exhibits=PDF))  # only the PDF presentation
    assert sub.exhibits == () and sub.exhibits_json() is None


def test_exhibits_are_capped_each_and_together(monkeypatch):
    monkeypatch.setattr(live, "_EXHIBIT_CHARS", 2_000)
    monkeypatch.setattr(live, "_EXHIBITS_CHARS", 3_000)
    big = "".join(f"<p>Paragraph {i} of the shareholder letter.</p>\n" for i in range(200))
    docs = "".join(_document(f"EX-99.{n}", n + 1, f"ex99_{n}.htm", f"<html><body>{big}</body></html>\n")
                   for n in (1, 2, 3))
    exhibits = parse_full_submission(submission(exhibits=docs)).exhibits

    assert [e["type"] for e in exhibits] == ["EX-99.1", "EX-99.2"]  # the total was spent on the first two
    assert all(e["truncated"] for e in exhibits)
    assert len(exhibits[0]["document"]) <= 2_000 and len(exhibits[1]["document"]) <= 1_000
    assert all(e["document"].rstrip().endswith("</p>") for e in exhibits)  # cut between tags, not inside one
    assert sum(len(e["document"]) for e in exhibits) <= 3_000


# --- cleaning and rendering ----------------------------------------------------------------------


def test_an_8k_renders_its_press_release_after_the_items_as_plain_text():
    row = _row(parse_full_submission(submission()))
    text = render_filings(clean("filings", _frame(row)).df)["text"][0]

    items, release = text.index("Item 2.02. Results of Operations"), text.index("\nExhibit 99.1\n")
    assert items < text.index("Item 9.01.") < release < text.index("\nExhibit 99.3. SUPPLEMENTAL DATA\n")
    assert "Acme Widgets Reports Record Fourth Quarter Results" in text[release:]
    assert "Revenue | $1,234 | $1,102" in text and "Net income (loss) | $(45) | $88" in text  # split cells joined
    assert "Widgets | $900 | 31%" in text  # the plain-text exhibit's columns
    assert "<" not in text and ">" not in text and "tracking" not in text and "margin: 0" not in text
    assert "PDF" not in text and "begin 644" not in text


def test_a_10k_renders_as_before():
    sub = parse_full_submission(submission("10-K"))
    row = _row(sub)
    text = render_filings(_frame(row))["text"][0]
    without = render_filings(_frame(row).drop("exhibits"))["text"][0]
    assert text == without and "Exhibit 99.1\n" not in text and "Record Fourth Quarter" not in text
    assert text.endswith(filing_to_text(sub.document, "10-K", document_format="html"))


def test_an_old_raw_table_without_the_column_cleans_and_renders(tmp_path):
    rows = SampleFilingsClient(["AAPL"]).fetch()
    path = tmp_path / "raw-filings.parquet"
    rows.drop("exhibits").write_parquet(path)  # written before the column existed
    cleaned = clean("filings", pl.read_parquet(path))

    assert cleaned.df.columns == list(FILINGS) and cleaned.df["exhibits"].null_count() == cleaned.df.height
    docs = render_filings(cleaned.df)
    assert docs.height == rows.height and not docs["text"].str.contains("Exhibit 99.1. Press release").any()


def test_the_sample_8ks_carry_a_press_release_like_the_live_parser_writes():
    rows = SampleFilingsClient(["AAPL", "MSFT"]).fetch()
    eight_k = rows.filter(pl.col("form") == "8-K")
    assert eight_k.height and eight_k["exhibits"].null_count() == 0
    assert rows.filter(pl.col("form") != "8-K")["exhibits"].null_count() == rows.height - eight_k.height
    live_keys = set(parse_full_submission(submission()).exhibits[0])
    for value in eight_k["exhibits"]:
        (exhibit,) = json.loads(value)
        assert set(exhibit) == live_keys and exhibit["type"] == "EX-99.1" and exhibit["format"] == "html"
    text = render_filings(clean("filings", eight_k.head(1)).df)["text"][0]
    assert "\nExhibit 99.1. Press release\n" in text and "Net sales | $" in text
    assert SampleFilingsClient(["AAPL", "MSFT"]).fetch().equals(rows)  # deterministic


def test_an_incremental_run_on_an_older_raw_table_keeps_the_new_rows_exhibits(tmp_path):
    """raw_filings upserts what it fetched into the table it holds: one written before the column must not drop
    the column from the fetched rows (every later 8-K would lose its press release)."""
    whole = SampleFilingsClient(["AAPL"]).fetch()
    cutoff = dt.date(2012, 1, 1)
    lake = Lake(str(tmp_path / "lake"))
    older = whole.filter(pl.col("filed") < cutoff).drop("exhibits")  # written before the column existed
    lake.write_parquet(Bucket.whole().file("raw/filings/filings"), older)
    made = filings_assets.build(buckets=1)
    resources = {"lake": LakeResource(root=str(tmp_path / "lake")), "sources": SourcesResource(tickers=["AAPL"])}
    assert dg.materialize(made[:2], resources=resources, instance=dg.DagsterInstance.ephemeral()).success

    got = lake.read_parquet(Bucket.whole().file("clean/filings/filings"))
    assert got.height == whole.height
    fetched = got.filter((pl.col("form") == "8-K") & (pl.col("filed") >= cutoff))
    assert fetched.height and fetched["exhibits"].null_count() == 0
    assert got.filter((pl.col("form") == "8-K") & (pl.col("filed") < cutoff - dt.timedelta(days=60)))["exhibits"] \
        .null_count() > 0  # held rows (not asked again) keep their null


# --- a real 8-K ------------------------------------------------------------------------------------


def _real_8k() -> str:
    path = SEC / "aapl-8k-20191115-full-submission.txt"
    if not path.exists():
        pytest.skip(f"real capture {path} not present (../shared/realdata is absent)")
    return path.read_text(encoding="utf-8", errors="replace")


def test_real_apple_8k_keeps_no_exhibit_but_ex99():
    """Apple's 2019-11-15 8-K (notes offering, Item 8.01) has 18 exhibits, none EX-99: underwriting agreement,
    indenture and opinion (EX-1.1, 4.1, 5.1), graphics, XBRL, a zip, JSON, Excel: none is kept."""
    sub = parse_full_submission(_real_8k())
    assert sub.form == "8-K" and sub.exhibits == () and sub.exhibits_json() is None


def test_real_apple_8k_html_exhibit_typed_ex99_is_kept_and_rendered():
    """The same submission with its EX-1.1 (real EDGAR exhibit HTML) typed EX-99.1: kept as served, and rendered
    after the items as clean text."""
    text = _real_8k().replace("<TYPE>EX-1.1", "<TYPE>EX-99.1", 1)
    sub = parse_full_submission(text)
    assert [(e["type"], e["filename"], e["format"]) for e in sub.exhibits] == [
        ("EX-99.1", "d828969dex11.htm", "html")]
    rendered = render_filings(clean("filings", _frame({**_row(sub), "ticker": "AAPL"})).df)["text"][0]
    head, _, exhibit = rendered.partition("\nExhibit 99.1")
    assert "Item 8.01" in head and "Apple Inc." in exhibit and "Underwriting Agreement" in exhibit
    assert "<" not in exhibit and "&nbsp;" not in exhibit and "&#" not in exhibit


def test_filing_sections_text_of_a_full_submission_shows_the_press_release(tmp_path, capsys):
    from tenali_pipeline.text.filings import main

    (tmp_path / "full-submission.txt").write_text(submission())
    assert main([str(tmp_path / "full-submission.txt"), "--text"]) == 0
    out = capsys.readouterr().out
    assert out.index("Item 2.02. Results of Operations") < out.index("\nExhibit 99.1\n")
    assert "Acme Widgets Reports Record Fourth Quarter Results" in out
