"""Review 4: news, filings and documents, from fetch to training text (scenarios found by running them)."""

from __future__ import annotations

import pytest

pytest.importorskip("feedparser")
responses = pytest.importorskip("responses")

from tenali_pipeline.sources.live.news import RssNewsClient  # noqa: E402

IDENTITY = "Jane Analyst jane@tenali.example"
SEC_FEED = "https://www.sec.gov/cgi-bin/browse-edgar?action=getcurrent&output=atom"
WIRE_FEED = "https://news.example/wire.rss"
STORY = "<html><body><article>" + "<p>Shares of the company rose after the quarterly results beat estimates.</p>" * 8 \
        + "</article></body></html>"


def _atom(link: str) -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Latest</title>
<entry><title>8-K - ACME CORP</title><link href="{link}"/><id>urn:sec:1</id><updated>2025-12-12T17:00:00-05:00</updated>
<summary>Item 2.02</summary></entry></feed>"""


WIRE = """<?xml version="1.0"?><rss version="2.0"><channel><title>Wire</title>
<item><title>Results</title><link>https://news.example/a</link><guid>w1</guid>
<pubDate>Fri, 12 Dec 2025 09:30:00 +0000</pubDate><description>Teaser.</description></item></channel></rss>"""


@responses.activate
def test_sec_identity_goes_to_sec_gov_only_feeds_robots_articles_and_redirects(monkeypatch):
    """The EDGAR identity names the user and their e-mail: sec.gov must get it, no other host may,
    neither for feeds nor robots.txt nor article pages, nor after sec.gov redirects elsewhere."""
    monkeypatch.setenv("SEC_EDGAR_IDENTITY", IDENTITY)
    responses.get(SEC_FEED, body=_atom("https://www.sec.gov/Archives/x-index.htm"), content_type="application/atom+xml")
    responses.get("https://www.sec.gov/robots.txt", body="User-agent: *\nAllow: /\n")
    responses.get("https://www.sec.gov/Archives/x-index.htm", status=301,
                  headers={"Location": "https://mirror.example/x-index.htm"})
    responses.get("https://mirror.example/x-index.htm", body=STORY, content_type="text/html")
    responses.get(WIRE_FEED, body=WIRE, content_type="application/rss+xml")
    responses.get("https://news.example/robots.txt", status=404)
    responses.get("https://news.example/a", body=STORY, content_type="text/html")

    client = RssNewsClient([SEC_FEED, WIRE_FEED], articles=["all"], article_delay=0, sleep=lambda s: None)
    df = client.fetch()

    assert df.height == 2 and df["article"].null_count() == 0, client.article_failures
    agents = [(c.request.url, c.request.headers.get("User-Agent")) for c in responses.calls]
    assert {u for u, _ in agents} >= {SEC_FEED, "https://www.sec.gov/robots.txt", "https://mirror.example/x-index.htm",
                                      WIRE_FEED, "https://news.example/robots.txt", "https://news.example/a"}
    for url, agent in agents:
        if "sec.gov" in url:
            assert agent == IDENTITY, url
        else:
            assert "jane@" not in (agent or "") and agent, (url, agent)


ODD_DATES = """<?xml version="1.0"?><rss version="2.0"><channel><title>Desk</title>
<item><title>No zone</title><link>https://news.example/1</link><guid>d1</guid>
<pubDate>Fri, 12 Dec 2025 09:30:00</pubDate><description>a</description></item>
<item><title>Eastern</title><link>https://news.example/2</link><guid>d2</guid>
<pubDate>Friday, December 12, 2025 - 9:30am ET</pubDate><description>b</description></item>
<item><title>Time only</title><link>https://news.example/3</link><guid>d3</guid>
<pubDate>9:30am ET</pubDate><description>c</description></item>
<item><title>Plain</title><link>https://news.example/4</link><guid>d4</guid>
<pubDate>Fri, 12 Dec 2025 09:30:00 +0100</pubDate><description>d</description></item>
</channel></rss>"""


@responses.activate
def test_entries_with_dates_feedparser_cannot_read_are_kept_not_dropped():
    """feedparser gives no parsed time for an RFC 822 date without its zone or an "ET" style date: those
    stories were dropped as undated. A string with no date in it at all (time only) still is."""
    import datetime as dt

    responses.get(WIRE_FEED, body=ODD_DATES, content_type="application/rss+xml")
    client = RssNewsClient([WIRE_FEED])
    df = client.fetch()

    got = {t: p.replace(tzinfo=None) for t, p in zip(df["title"], df["published"])}  # stored in UTC
    assert got == {"No zone": dt.datetime(2025, 12, 12, 9, 30), "Eastern": dt.datetime(2025, 12, 12, 14, 30),
                   "Plain": dt.datetime(2025, 12, 12, 8, 30)}
    assert client.undated == 1


def test_filing_text_drops_soft_hyphens():
    """A soft hyphen (&shy;, U+00AD) marks where a word may break; it is invisible and must not split
    words in the training text ("manage\\xadment")."""
    from tenali_pipeline.text.filings import document_text, html_to_text, plain_text

    html = "<html><body><p>Manage&shy;ment&#173;s discus\u00adsion</p><table><tr><td>Reve&shy;nue</td>" \
           "<td>$</td><td>1,234</td></tr></table></body></html>"
    assert html_to_text(html) == "Managements discussion\n\nRevenue | $1,234"
    assert document_text(html, "html") == "Managements discussion\n\nRevenue | $1,234"
    assert plain_text("opera\u00adtions   1,234") == "operations | 1,234"


def test_documents_decode_legacy_encodings_and_drop_soft_hyphens(tmp_path):
    """A Latin-1 / Windows-1252 text file or page (legacy reports, old SEC exhibits) was decoded as UTF-8
    with replacement characters: "Soci\ufffd\ufffd G\ufffdn\ufffdrale". Its text must be the document's."""
    from tenali_pipeline.sources.live.documents import LocalDocumentsClient

    (tmp_path / "memo.txt").write_bytes("Société Générale memo\nRevenue rose to €1.2bn – “strong”.\n".encode("cp1252"))
    (tmp_path / "page.html").write_bytes(
        '<html><head><meta charset="iso-8859-1"><title>Zürich</title></head><body><p>Umsatz gestiegen, Caf\xe9</p>'
        '<p>manage&shy;ment</p></body></html>'.encode("latin-1"))
    (tmp_path / "unicode.txt").write_bytes("\ufeffNotepad “Unicode” file".encode("utf-16-le"))
    (tmp_path / "utf8.md").write_text("# Straße\n\nmanage\u00adment ok", encoding="utf-8")

    df = LocalDocumentsClient(str(tmp_path)).fetch()
    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in df.iter_rows(named=True)}

    assert rows["memo.txt"]["text"] == "Société Générale memo\nRevenue rose to €1.2bn – “strong”."
    assert rows["page.html"]["title"] == "Zürich"
    assert rows["page.html"]["text"] == "Umsatz gestiegen, Café\nmanagement"
    assert rows["unicode.txt"]["text"] == "Notepad “Unicode” file"
    assert rows["utf8.md"]["text"] == "# Straße\n\nmanagement ok" and rows["utf8.md"]["title"] == "Straße"
    assert not any("\ufffd" in t for t in df["text"])


def test_financial_statements_after_the_signature_block_are_kept():
    """Many 10-Ks end with SIGNATURES followed by the F-pages (index, auditor's report, statements,
    notes) that Item 8 points to: the text stopped at the signatures and lost the financial statements.
    The signature block itself still stays out."""
    from tenali_pipeline.text.filings import extract_sections

    prose = "<p>" + "We make widgets and sell them to customers around the world. " * 8 + "</p>"
    html = f"""<html><body><p>FORM 10-K</p><p>ACME CORP</p>
<p>Item 1. Business</p>{prose}<p>Item 7. Management's Discussion and Analysis</p>{prose}
<p>Item 8. Financial Statements and Supplementary Data</p><p>See the financial statements beginning on page F-1.</p>
<p>Item 15. Exhibits and Financial Statement Schedules</p><p>(a) See the Index to Financial Statements on page F-1.</p>
<p>SIGNATURES</p><p>Pursuant to the requirements of the Exchange Act, the registrant has duly caused this report to be signed.</p>
<table><tr><td>/s/ Jane Doe</td><td>Chief Executive Officer</td></tr></table>
<p>INDEX TO CONSOLIDATED FINANCIAL STATEMENTS</p>
<p>Report of Independent Registered Public Accounting Firm (PCAOB ID 42)</p><p>We have audited the balance sheets.</p>
<p>CONSOLIDATED BALANCE SHEETS</p><table><tr><td>Total assets</td><td>$</td><td>1,234</td></tr></table>
<p>Note 1. Revenue is recognised when control passes.</p></body></html>"""

    last = extract_sections(html, "10-K")["15"]

    assert last.startswith("(a) See the Index")
    assert "Total assets | $1,234" in last and last.endswith("Note 1. Revenue is recognised when control passes.")
    assert "duly caused" not in last and "Jane Doe" not in last


def test_a_10k_whose_items_appear_only_in_a_cross_reference_index_is_kept_whole():
    """Some large filers (banks, conglomerates) lay their 10-K out as an annual report and map the items
    to pages in a "Form 10-K cross-reference index" at the end. The index rows were taken as the
    sections and everything before them dropped as the cover page: 25 kB of report became 271 characters."""
    from tenali_pipeline.text.filings import filing_to_text

    prose = "<p>" + "Our bank earned record profits across consumer and wholesale lines of business. " * 30 + "</p>"
    html = f"""<html><body><p>FORM 10-K</p><p>MEGABANK CORP</p>
<h2>Letter to shareholders</h2>{prose}<h2>Management's discussion and analysis</h2>{prose * 5}
<h2>Consolidated financial statements</h2><table><tr><td>Total assets</td><td>$</td><td>3,900,000</td></tr></table>
{prose * 3}<h2>Form 10-K cross-reference index</h2>
<table><tr><td>Item 1.</td><td>Business</td><td>4-10</td></tr><tr><td>Item 1A.</td><td>Risk Factors</td><td>11-30</td></tr>
<tr><td>Item 7.</td><td>Management's Discussion and Analysis</td><td>31-120</td></tr>
<tr><td>Item 8.</td><td>Financial Statements and Supplementary Data</td><td>121-250</td></tr></table>
<p>SIGNATURES</p><p>Pursuant to the requirements of the Exchange Act ... duly caused this report to be signed.</p>
</body></html>"""

    text = filing_to_text(html, "10-K", header="MEGABANK CORP filed a Form 10-K.")

    assert text.startswith("MEGABANK CORP filed a Form 10-K.\n\nFORM 10-K\n\nMEGABANK CORP\n\nLetter to shareholders")
    assert text.count("Our bank earned record profits") == 30 * 9
    assert "Total assets | $3,900,000" in text and "Item 8. | Financial Statements and Supplementary Data" in text


def _cny_filer() -> dict:
    """A 10-K filer reporting in RMB whose latest 10-K also tags the current year in USD (a convenience
    translation at 7.1 RMB per dollar), as Chinese filers of 10-Ks do."""
    def f(start, end, val, accn, filed):
        return {"start": start, "end": end, "val": val, "accn": accn, "fy": int(filed[:4]), "fp": "FY", "form": "10-K",
                "filed": filed}

    k23, k24 = "0001234567-23-000010", "0001234567-24-000010"
    return {"cik": 1234567, "entityName": "Jade Dragon Holdings", "facts": {"us-gaap": {
        "Revenues": {"label": "Revenues", "units": {
            "USD": [f("2023-01-01", "2023-12-31", 1_000_000_000, k24, "2024-03-28")],
            "CNY": [f("2022-01-01", "2022-12-31", 6_500_000_000, k23, "2023-03-30"),
                    f("2022-01-01", "2022-12-31", 6_500_000_000, k24, "2024-03-28"),
                    f("2023-01-01", "2023-12-31", 7_100_000_000, k24, "2024-03-28")]}},
        "NetIncomeLoss": {"label": "Net income", "units": {
            "USD": [f("2023-01-01", "2023-12-31", 100_000_000, k24, "2024-03-28")],
            "CNY": [f("2022-01-01", "2022-12-31", 650_000_000, k23, "2023-03-30"),
                    f("2023-01-01", "2023-12-31", 710_000_000, k24, "2024-03-28")]}},
        "EarningsPerShareDiluted": {"label": "EPS", "units": {
            "USD/shares": [f("2023-01-01", "2023-12-31", 0.5, k24, "2024-03-28")],
            "CNY/shares": [f("2023-01-01", "2023-12-31", 3.55, k24, "2024-03-28")]}},
    }}}


def test_convenience_translations_do_not_mix_currencies_in_one_series():
    """With both RMB figures and the USD convenience translation of the latest year kept, the point-in-
    time view held two values for FY2023 revenue and the narrative set one currency against the other
    ("down 84.6% from 6.5 billion a year earlier" for a company that grew 9%)."""
    import datetime as dt

    import polars as pl

    from tenali_pipeline.sources.live.xbrl import as_of, normalise_companyfacts
    from tenali_pipeline.text.render_fundamentals import render_earnings

    df = normalise_companyfacts(_cny_filer(), ticker="JADE")

    assert set(df["unit"]) == {"CNY", "CNY/shares"}
    pit = as_of(df, dt.date(2024, 12, 31))
    assert pit.filter(pl.col("item") == "revenue").sort("period_end")["value"].to_list() == [6.5e9, 7.1e9]
    text = render_earnings(df).filter(pl.col("title").str.contains("2023-12-31"))["text"][0]
    assert "up 9.2%" in text and "down" not in text


@pytest.mark.parametrize("footer", ["{n} | ACME Corp. 2024 Form 10-K", "ACME CORP. ANNUAL REPORT ON FORM 10-K"])
def test_running_page_headers_with_a_leading_or_no_page_number_are_dropped(footer):
    """Running headers and footers were removed only when the page number ended the line: one that starts
    with it, or a header without one, stayed in the text once per page."""
    from tenali_pipeline.text.filings import document_text

    prose = "<p>Revenue grew because customers bought more widgets in every region this year.</p>"
    html = "<html><body>" + "".join(f"{prose}<p>{footer.format(n=n)}</p><hr>" for n in range(20, 26)) + \
           "<p>See the Annual Report on Form 10-K for 2023.</p></body></html>"

    assert document_text(html, "html").split("\n\n") == [
        "Revenue grew because customers bought more widgets in every region this year."] * 6 + [
        "See the Annual Report on Form 10-K for 2023."]


def test_an_rmb_filers_figures_are_written_in_rmb_not_dollars():
    """The earnings narrative wrote every figure with "$": an RMB filer's revenue of 7.1 billion yuan
    read as $7.10 billion."""
    import polars as pl

    from tenali_pipeline.sources.live.xbrl import normalise_companyfacts
    from tenali_pipeline.text.render_fundamentals import render_earnings

    text = render_earnings(normalise_companyfacts(_cny_filer(), ticker="JADE")).filter(
        pl.col("title").str.contains("2023-12-31"))["text"][0]
    assert "Revenue was CNY 7.10 billion, up 9.2% from CNY 6.50 billion" in text
    assert "Diluted earnings per share was CNY 3.55" in text and "$" not in text


def test_a_story_whose_guid_changed_between_runs_is_kept_once():
    """Runs were merged by entry id only: a feed that re-issued a story under a new GUID (same link) put
    it in the table, and so the corpus, twice."""
    import datetime as dt

    import polars as pl

    from tenali_pipeline.defs.news.assets import merge_runs
    from tenali_pipeline.sources.live.news import NEWS_TABLE

    def rows(*entries):
        return pl.DataFrame([{"feed": "f", "entry_id": e, "link": link, "title": t, "summary": "s",
                              "published": dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc), "source": "rss",
                              "article": None} for e, link, t in entries], schema=NEWS_TABLE)

    held = rows(("guid-1", "https://n.example/a", "old title"), ("guid-2", None, "no link"),
                ("guid-3", "https://n.example/c", "c"))
    fetched = rows(("guid-1b", "https://n.example/a", "new title"), ("guid-4", None, "no link either"))
    merged = merge_runs(held, fetched)
    assert merged["entry_id"].to_list() == ["guid-2", "guid-3", "guid-1b", "guid-4"]
    assert merged.filter(pl.col("link") == "https://n.example/a")["title"].to_list() == ["new title"]
