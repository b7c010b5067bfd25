"""Filing sections: full submissions and inline-XBRL HTML, the table of contents skipped, 10-K / 10-Q / 8-K items,
tables as ``a | b`` rows with whole numbers, noise removed; plus the real EDGAR files when ../shared/realdata exists."""

import json
import re
from pathlib import Path

import pytest

from tenali_pipeline.text.filings import (
    base_form,
    detect_form,
    extract_sections,
    filing_to_text,
    html_to_text,
    main,
    primary_document,
    split_sections,
)

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "sec"
needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real EDGAR files not present ({REALDATA})")

BUSINESS = "The Company designs, manufactures and markets smartphones, personal computers and wearables. " * 3
RISKS = "The Company's operations are subject to risks from global economic conditions and competition. " * 3
MDNA = "Total net sales increased 8% compared with the same period last year, driven by higher services revenue. " * 3

TOC_10K = """
<p style="text-align:center">TABLE OF CONTENTS</p>
<table>
<tr><td>PART I</td><td></td><td></td></tr>
<tr><td>Item 1.</td><td><a href="#b">Business</a></td><td>1</td></tr>
<tr><td>Item 1A.</td><td><a href="#r">Risk Factors</a></td><td>5</td></tr>
<tr><td>Item 1B.</td><td>Unresolved Staff Comments</td><td>17</td></tr>
<tr><td>PART II</td><td></td><td></td></tr>
<tr><td>Item 7.</td><td>Management&#8217;s Discussion and Analysis of Financial Condition and Results of Operations</td><td>20</td></tr>
<tr><td>Item 7A.</td><td>Quantitative and Qualitative Disclosures About Market Risk</td><td>29</td></tr>
<tr><td>Item 8.</td><td>Financial Statements and Supplementary Data</td><td>30</td></tr>
</table>
"""

TEN_K = f"""<?xml version='1.0' encoding='ASCII'?>
<html xmlns:ix="http://www.xbrl.org/2013/inlineXBRL"><head><title>acme-20231231</title>
<style>.x {{ color: red }}</style><script>var tracking = 1;</script></head><body>
<div style="display:none"><ix:header><ix:hidden><ix:nonNumeric name="dei:AmendmentFlag">false</ix:nonNumeric>
</ix:hidden><ix:resources><xbrli:context id="c-1">c-1 2023-01-01 2023-12-31</xbrli:context></ix:resources></ix:header></div>
<p>UNITED STATES SECURITIES AND EXCHANGE COMMISSION</p><p>FORM 10-K</p><p>ACME Corp.</p>
{TOC_10K}
<p>This Annual Report contains forward-looking statements about future events and results. We undertake no obligation to update them.</p>
<p>PART I</p>
<p><b>Item 1.&#160;&#160;&#160;&#160;Business</b></p>
<p>{BUSINESS}</p>
<div hidden>HIDDEN-BUSINESS-TEXT</div>
<p>Apple Corp. | 2023 Form 10-K | 1</p>
<p><a href="#toc">Table of Contents</a></p>
<p>Item 1A. Risk Factors</p>
<p>{RISKS}</p>
<p>Item 7 of this report discusses results; see below.</p>
<p>Apple Corp. | 2023 Form 10-K | 2</p>
<p>Item 1B. Unresolved Staff Comments</p><p>None.</p>
<p>PART II</p>
<p>ITEM 7. MANAGEMENT&#8217;S DISCUSSION AND ANALYSIS OF FINANCIAL CONDITION AND RESULTS OF OPERATIONS</p>
<p>{MDNA}</p>
<table>
<tr><td></td><td colspan="2">2023</td><td colspan="2">2022</td><td>Change</td></tr>
<tr><td>Net sales</td><td>$</td><td><ix:nonFraction name="us-gaap:Revenues">383,285</ix:nonFraction></td><td>$</td><td>394,328</td><td>(3</td><td>)%</td></tr>
<tr><td>Other income/(expense), net</td><td></td><td>(565</td><td>)</td><td>(334</td><td>)</td><td></td></tr>
</table>
<p>Apple Corp. | 2023 Form 10-K | 3</p>
<p>Item 7A. Quantitative and Qualitative Disclosures About Market Risk</p>
<p>A 100 basis point increase in interest rates would reduce the fair value of the portfolio by $2.1 billion.</p>
<p>Item 8. Financial Statements and Supplementary Data</p>
<p>The consolidated financial statements are set forth on pages F-1 through F-30 of this report.</p>
<p>SIGNATURES</p><p>Pursuant to the requirements of the Securities Exchange Act of 1934, the registrant has duly caused this report to be signed.</p>
</body></html>"""


# A 10-Q whose body headings carry no "Part" line: the part is inferred from the numbering restarting.
TEN_Q = f"""<html><body><p>FORM 10-Q</p>
<p>Part I</p><p>Item 1.</p><p>Financial Statements</p><p>3</p><p>Item 2.</p>
<p>Management's Discussion and Analysis of Financial Condition and Results of Operations</p><p>12</p>
<p>Part II</p><p>Item 1A.</p><p>Risk Factors</p><p>20</p><p>Item 6.</p><p>Exhibits</p><p>22</p>
<h2>Item 1. Financial Statements</h2>
<table><tr><th>(In millions)</th><th>Q3 2024</th></tr><tr><td>Total net sales</td><td>$ 85,777</td></tr></table>
<h2>Item 2. Management's Discussion and Analysis of Financial Condition and Results of Operations</h2>
<p>{MDNA}</p>
<h2>Item 1. Legal Proceedings</h2><p>The Company is subject to legal proceedings arising in the ordinary course of business.</p>
<h2>Item 1A. Risk Factors</h2><p>{RISKS}</p>
<h2>Item 6. Exhibits</h2><table><tr><td>31.1</td><td>Rule 13a-14(a) / 15d-14(a) Certification of the CEO.</td></tr></table>
<p>SIGNATURE</p><p>/s/ Jane Doe, Chief Financial Officer</p>
</body></html>"""

EIGHT_K_HTML = """<html><body><div style="display:none"><ix:header>dei:DocumentType 8-K</ix:header></div>
<p>FORM 8-K</p><p>CURRENT REPORT</p>
<table><tr><td>Item&#8201;2.02</td><td>Results of Operations and Financial Condition.</td></tr></table>
<p>On October 30, 2023, Acme Corp. issued a press release announcing its results for the fiscal quarter ended September 30, 2023.</p>
<p>Item 8.01 Other Events. On October 31, 2023, the Board of Directors declared a quarterly cash dividend of $0.24 per share.</p>
<p>Item 9.01 Financial Statements and Exhibits.</p>
<table><tr><td>(d)</td><td>Exhibits.</td></tr><tr><td>99.1</td><td>Press release issued by Acme Corp. on October 30, 2023.</td></tr></table>
<p>SIGNATURE</p><p>Pursuant to the requirements of the Securities Exchange Act of 1934 ...</p>
</body></html>"""

FULL_SUBMISSION = f"""<SEC-DOCUMENT>0000000001-23-000001.txt : 20231031
<SEC-HEADER>0000000001-23-000001.hdr.sgml : 20231031
ACCESSION NUMBER:		0000000001-23-000001
CONFORMED SUBMISSION TYPE:	8-K
ITEM INFORMATION:		Results of Operations and Financial Condition
</SEC-HEADER>
<DOCUMENT>
<TYPE>EX-99.1
<SEQUENCE>2
<FILENAME>ex991.htm
<TEXT>
<html><body><p>Item 1.01 This exhibit must not be read as the primary document.</p></body></html>
</TEXT>
</DOCUMENT>
<DOCUMENT>
<TYPE>8-K
<SEQUENCE>1
<FILENAME>acme-8k.htm
<DESCRIPTION>8-K
<TEXT>
<XBRL>
{EIGHT_K_HTML}
</XBRL>
</TEXT>
</DOCUMENT>
<DOCUMENT>
<TYPE>GRAPHIC
<FILENAME>logo.jpg
<TEXT>
begin 644 logo.jpg
M_]C_X  02D9)1@ ! 0   0 !  #_VP!#  @&!@<&!0@'!P<)
end
</TEXT>
</DOCUMENT>
</SEC-DOCUMENT>
"""

PLAIN_10K = """<PAGE>
                               FORM 10-K
                          TABLE OF CONTENTS
ITEM 1.  BUSINESS ........................................ 1
ITEM 7.  MANAGEMENT'S DISCUSSION AND ANALYSIS ............. 9
<PAGE>
ITEM 1.  BUSINESS

The Company designs and sells widgets through distributors in North America and Europe.

ITEM 7.  MANAGEMENT'S DISCUSSION AND ANALYSIS

Net revenues        1997      1996
Widgets          $ 1,234   $ 1,100

Revenues grew because widget volumes increased across both regions.
"""


def test_10k_items_skip_the_toc_and_keep_the_body():
    sections = extract_sections(TEN_K, "10-K")
    assert list(sections) == ["1", "1A", "1B", "7", "7A", "8"]
    assert sections["1"].startswith(BUSINESS.strip()[:60])
    assert sections["1A"].startswith(RISKS.strip()[:60])
    assert "Item 7 of this report discusses results" in sections["1A"]  # a reference stays text, not a heading
    assert sections["1B"] == "None."
    assert sections["7"].startswith(MDNA.strip()[:60])
    assert "F-1 through F-30" in sections["8"]
    assert "duly caused this report" not in sections["8"]  # the signature block is not Item 8
    text = "\n".join(sections.values())
    for noise in ("HIDDEN-BUSINESS-TEXT", "AmendmentFlag", "c-1 2023", "tracking", "color", "Table of Contents",
                  "Form 10-K | 2", "forward-looking statements about future events", "PART II"):
        assert noise not in text, noise


def test_tables_are_rows_of_cells_with_whole_numbers():
    mdna = extract_sections(TEN_K, "10-K")["7"]
    rows = [line for line in mdna.splitlines() if " | " in line]
    assert rows == ["2023 | 2022 | Change",
                    "Net sales | $383,285 | $394,328 | (3)%",
                    "Other income/(expense), net | (565) | (334)"]


def test_filing_to_text_has_one_heading_line_per_item():
    text = filing_to_text(TEN_K, "10-K", header="ACME Corp. filed a Form 10-K.")
    lines = text.splitlines()
    assert lines[0] == "ACME Corp. filed a Form 10-K."
    headings = [line for line in lines if re.fullmatch(r"Item \d+[A-Z]?\. .+", line)]
    assert headings == ["Item 1. Business", "Item 1A. Risk Factors", "Item 1B. Unresolved Staff Comments",
                        # the document's title is all capitals, so the form's title is used
                        "Item 7. Management's Discussion and Analysis of Financial Condition and Results of Operations",
                        "Item 7A. Quantitative and Qualitative Disclosures About Market Risk",
                        "Item 8. Financial Statements and Supplementary Data"]
    assert "<" not in text and ">" not in text


def test_10q_parts_are_tracked_and_inferred():
    sections = split_sections(TEN_Q)  # form read from the cover page
    assert [s.key for s in sections] == ["Part I Item 1", "Part I Item 2", "Part II Item 1", "Part II Item 1A",
                                         "Part II Item 6"]
    by_key = {s.key: s for s in sections}
    assert by_key["Part I Item 1"].text == "(In millions) | Q3 2024\nTotal net sales | $85,777"
    assert by_key["Part I Item 2"].text.startswith(MDNA.strip()[:60])
    assert by_key["Part II Item 1A"].heading == "Part II. Item 1A. Risk Factors"
    assert "Jane Doe" not in by_key["Part II Item 6"].text
    assert "31.1 | Rule 13a-14(a)" in by_key["Part II Item 6"].text


def test_8k_from_a_full_submission_takes_the_primary_document():
    doc = primary_document(FULL_SUBMISSION)
    assert doc.form == "8-K" and doc.document_format == "html" and "must not be read" not in doc.content
    sections = extract_sections(FULL_SUBMISSION)
    assert list(sections) == ["2.02", "8.01", "9.01"]
    assert sections["2.02"].startswith("On October 30, 2023, Acme Corp. issued a press release")
    # heading and paragraph on one line: split after the item's title
    assert sections["8.01"] == "On October 31, 2023, the Board of Directors declared a quarterly cash dividend of $0.24 per share."
    assert "99.1 | Press release issued by Acme Corp." in sections["9.01"]
    assert "Pursuant to the requirements" not in sections["9.01"]
    text = filing_to_text(FULL_SUBMISSION)
    assert "Item 8.01. Other Events\nOn October 31" in text
    assert "Item 2.02. Results of Operations and Financial Condition\n" in text


def test_plain_text_filings():
    sections = extract_sections(PLAIN_10K, "10-K405")
    assert list(sections) == ["1", "7"]
    assert sections["1"].startswith("The Company designs and sells widgets")
    assert "Widgets | $ 1,234 | $ 1,100" in sections["7"]


def test_unknown_forms_and_documents_without_items_are_kept_whole():
    assert extract_sections("<p>Proxy statement text.</p>", "DEF 14A") == {}
    assert filing_to_text("<p>Proxy statement text.</p>", "DEF 14A", header="H.") == "H.\n\nProxy statement text."
    assert filing_to_text("<html><body><p>FORM 10-K</p><p>No items in here at all.</p></body></html>") == \
        "FORM 10-K\n\nNo items in here at all."


def test_forms_and_detection():
    assert [base_form(f) for f in ("10-K405", "10-K/A", "10-Q", "8-K/A", "S-1", None)] == \
        ["10-K", "10-K", "10-Q", "8-K", None, None]
    assert detect_form("UNITED STATES\nFORM 10-Q\nQuarterly report") == "10-Q"
    assert detect_form("Item 2.02 Results of Operations") == "8-K"


def test_html_to_text_blocks_and_cells():
    html = "<div>a<br>b</div><table><tr><td>x</td><td>$</td><td>5</td></tr></table><pre>k  1\n  k 2</pre>"
    assert html_to_text(html) == "a\nb\n\nx | $5\n\nk 1\nk 2"  # blocks apart, a blank line between paragraphs
    assert html_to_text(html, cell_separator=" ") == "a\nb\n\nx $5\n\nk 1\nk 2"


def test_cli_prints_sections_as_json(tmp_path, capsys):
    path = tmp_path / "acme-10k.htm"
    path.write_text(TEN_K)
    assert main([str(path), "--form", "10-K"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["1", "1A", "1B", "7", "7A", "8"]
    assert main([str(path), "--text"]) == 0
    assert capsys.readouterr().out.startswith("Item 1. Business\n")
    assert main([str(tmp_path / "missing.htm")]) == 2


# ---- the real thing ---------------------------------------------------------------------------------
@needs_realdata
def test_real_apple_10q_has_its_parts_and_a_substantial_mdna():
    sections = extract_sections((REALDATA / "aapl-10-q-2025-08-01.html").read_text(encoding="utf-8"))
    assert list(sections) == ["Part I Item 1", "Part I Item 2", "Part I Item 3", "Part I Item 4",
                              "Part II Item 1", "Part II Item 1A", "Part II Item 2", "Part II Item 3",
                              "Part II Item 4", "Part II Item 5", "Part II Item 6"]
    mdna = sections["Part I Item 2"]
    assert len(mdna) > 10_000
    assert mdna.startswith("This Item and other sections of this Quarterly Report on Form 10-Q")
    assert "Total net sales | 94,036 | 85,777" in sections["Part I Item 1"]
    assert sections["Part II Item 3"] == "None."
    assert not any("Form 10-Q |" in line for text in sections.values() for line in text.splitlines())  # footers


@needs_realdata
def test_real_oracle_8k():
    sections = extract_sections((REALDATA / "Oracle.8-K.html").read_text(encoding="utf-8"), "8-K")
    assert list(sections) == ["5.07"]
    assert sections["5.07"].startswith("On November 14, 2024, Oracle Corporation")
    assert "Awo Ablo | 2,300,385,739 | 21,926,604 | 250,464,124" in sections["5.07"]


@needs_realdata
def test_real_apple_8k_full_submission():
    raw = (REALDATA / "aapl-8k-20191115-full-submission.txt").read_text(encoding="utf-8", errors="replace")
    sections = extract_sections(raw)
    assert list(sections) == ["8.01", "9.01"]  # the header's ITEM INFORMATION: Other Events; Financial Statements
    assert sections["8.01"].startswith("On November 15, 2019, Apple Inc.")
    assert "Underwriting Agreement" in sections["9.01"]
