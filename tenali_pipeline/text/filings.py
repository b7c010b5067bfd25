"""Section-aware text from SEC filings (10-K, 10-Q, 8-K).

Input is what EDGAR serves: a full submission (``.txt``: an SGML header and ``<DOCUMENT>`` blocks,
of which the primary document is the one whose ``<TYPE>`` is the form), or the primary document
alone, in HTML / inline XBRL or (before about 2001) plain text.

From HTML we keep the reading order of the visible text: ``<head>``, scripts, styles, the inline
XBRL header (``ix:header``) and anything hidden (``display:none``, ``hidden``) are dropped; block
elements become lines; a table becomes one line per row with its cells separated by `` | ``, and
the split cells EDGAR tables use for figures (``$`` | ``1,234`` | ``)``) are joined back
(``$(1,234)``), so numbers survive whole. Page numbers, "Table of Contents" links and running page
footers are removed.

Sections are the items of the form: 10-K Items 1, 1A ... 16; 10-Q Part I Items 1-4 and Part II
Items 1, 1A, 2-6; 8-K Items 1.01 ... 9.01 (and the pre-2004 numbered 8-K items). Headings usually
appear twice, first in a table of contents with page numbers. Every heading line is a candidate;
each candidate is weighed by the real text between it and the next candidate (a TOC entry has none),
and the sections are the chain of candidates, in document order and in the form's item order, with
the most text (a weighted longest increasing subsequence). That skips the TOC, and also stray lines
that begin with "Item 7 ..." inside the body, without any rule about where the TOC ends. The cover
page before the first item and the signature block are left out; financial statements placed after the
signature block (F-pages starting with their index or the auditor's report) are kept.

Public API: :func:`extract_sections` (item key -> text), :func:`split_sections` (the same with
titles), :func:`filing_to_text` (a document with one heading line per item, an 8-K's exhibits after them),
:func:`exhibits_to_text`, :func:`html_to_text`, :func:`primary_document`, and :func:`main` for
``tenali filing-sections FILE [--form 10-K]``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# ---- the forms' items ---------------------------------------------------------------------------
ITEMS_10K = {
    "1": "Business",
    "1A": "Risk Factors",
    "1B": "Unresolved Staff Comments",
    "1C": "Cybersecurity",
    "2": "Properties",
    "3": "Legal Proceedings",
    "4": "Mine Safety Disclosures",
    "5": "Market for Registrant's Common Equity, Related Stockholder Matters and Issuer Purchases of Equity Securities",
    "6": "[Reserved]",
    "7": "Management's Discussion and Analysis of Financial Condition and Results of Operations",
    "7A": "Quantitative and Qualitative Disclosures About Market Risk",
    "8": "Financial Statements and Supplementary Data",
    "9": "Changes in and Disagreements with Accountants on Accounting and Financial Disclosure",
    "9A": "Controls and Procedures",
    "9B": "Other Information",
    "9C": "Disclosure Regarding Foreign Jurisdictions that Prevent Inspections",
    "10": "Directors, Executive Officers and Corporate Governance",
    "11": "Executive Compensation",
    "12": "Security Ownership of Certain Beneficial Owners and Management and Related Stockholder Matters",
    "13": "Certain Relationships and Related Transactions, and Director Independence",
    "14": "Principal Accountant Fees and Services",
    "15": "Exhibits and Financial Statement Schedules",
    "16": "Form 10-K Summary",
}
ITEMS_10Q = {
    ("I", "1"): "Financial Statements",
    ("I", "2"): "Management's Discussion and Analysis of Financial Condition and Results of Operations",
    ("I", "3"): "Quantitative and Qualitative Disclosures About Market Risk",
    ("I", "4"): "Controls and Procedures",
    ("II", "1"): "Legal Proceedings",
    ("II", "1A"): "Risk Factors",
    ("II", "2"): "Unregistered Sales of Equity Securities and Use of Proceeds",
    ("II", "3"): "Defaults Upon Senior Securities",
    ("II", "4"): "Mine Safety Disclosures",
    ("II", "5"): "Other Information",
    ("II", "6"): "Exhibits",
}
ITEMS_8K = {
    "1.01": "Entry into a Material Definitive Agreement",
    "1.02": "Termination of a Material Definitive Agreement",
    "1.03": "Bankruptcy or Receivership",
    "1.04": "Mine Safety - Reporting of Shutdowns and Patterns of Violations",
    "1.05": "Material Cybersecurity Incidents",
    "2.01": "Completion of Acquisition or Disposition of Assets",
    "2.02": "Results of Operations and Financial Condition",
    "2.03": "Creation of a Direct Financial Obligation or an Obligation under an Off-Balance Sheet Arrangement of a Registrant",
    "2.04": "Triggering Events That Accelerate or Increase a Direct Financial Obligation or an Obligation under an Off-Balance Sheet Arrangement",
    "2.05": "Costs Associated with Exit or Disposal Activities",
    "2.06": "Material Impairments",
    "3.01": "Notice of Delisting or Failure to Satisfy a Continued Listing Rule or Standard; Transfer of Listing",
    "3.02": "Unregistered Sales of Equity Securities",
    "3.03": "Material Modification to Rights of Security Holders",
    "4.01": "Changes in Registrant's Certifying Accountant",
    "4.02": "Non-Reliance on Previously Issued Financial Statements or a Related Audit Report or Completed Interim Review",
    "5.01": "Changes in Control of Registrant",
    "5.02": "Departure of Directors or Certain Officers; Election of Directors; Appointment of Certain Officers; "
            "Compensatory Arrangements of Certain Officers",
    "5.03": "Amendments to Articles of Incorporation or Bylaws; Change in Fiscal Year",
    "5.04": "Temporary Suspension of Trading Under Registrant's Employee Benefit Plans",
    "5.05": "Amendments to the Registrant's Code of Ethics, or Waiver of a Provision of the Code of Ethics",
    "5.06": "Change in Shell Company Status",
    "5.07": "Submission of Matters to a Vote of Security Holders",
    "5.08": "Shareholder Director Nominations",
    "6.01": "ABS Informational and Computational Material",
    "6.02": "Change of Servicer or Trustee",
    "6.03": "Change in Credit Enhancement or Other External Support",
    "6.04": "Failure to Make a Required Distribution",
    "6.05": "Securities Act Updating Disclosure",
    "6.06": "Static Pool",
    "7.01": "Regulation FD Disclosure",
    "8.01": "Other Events",
    "9.01": "Financial Statements and Exhibits",
}
# 8-Ks filed before August 2004 number their items 1-12; their titles varied, so only the key is known.
LEGACY_8K = [str(i) for i in range(1, 13)]

FORMS = ("10-K", "10-Q", "8-K")


def base_form(form: str | None) -> str | None:
    """'10-K405', '10-K/A', '10-KT' -> '10-K'; '10-QSB' -> '10-Q'; '8-K/A' -> '8-K'; others -> None."""
    m = re.match(r"\s*(10-K|10-Q|8-K)", (form or "").upper())
    return m.group(1) if m else None


# ---- full submissions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PrimaryDocument:
    content: str
    form: str | None
    document_format: str  # "html" or "text"


def _looks_like_html(text: str) -> bool:
    return bool(re.search(r"<(html|body|div|p|table|font|span)[\s>]", text[:20_000], re.I))


def primary_document(text: str, form: str | None = None) -> PrimaryDocument:
    """The primary document of a full submission (the first ``<DOCUMENT>`` whose ``<TYPE>`` is the
    form, else the first), or ``text`` itself when it is not a full submission."""
    if "<DOCUMENT>" not in text[:200_000]:
        return PrimaryDocument(text, form, "html" if _looks_like_html(text) else "text")
    header = re.search(r"CONFORMED SUBMISSION TYPE:\s*([^\n]+)", text[:50_000])
    form = form or (header.group(1).strip() if header else None)
    docs = []
    for body in re.findall(r"<DOCUMENT>(.*?)(?:</DOCUMENT>|\Z)", text, flags=re.S):
        doc_type = re.search(r"<TYPE>([^\n<]*)", body)
        filename = re.search(r"<FILENAME>([^\n<]*)", body)
        content = re.search(r"<TEXT>(.*?)(?:</TEXT>|\Z)", body, flags=re.S)
        docs.append((doc_type.group(1).strip().upper() if doc_type else "",
                     filename.group(1).strip().lower() if filename else "",
                     content.group(1) if content else body))
    if not docs:
        return PrimaryDocument(text, form, "text")
    wanted = (form or "").strip().upper()
    _, filename, content = next((d for d in docs if d[0] == wanted), docs[0])
    inner = re.fullmatch(r"\s*<(XBRL|XML)>(.*?)(?:</\1>)?\s*", content, flags=re.S | re.I)  # inline-XBRL wrapper
    content = (inner.group(2) if inner else content).strip()
    is_html = filename.endswith((".htm", ".html")) or _looks_like_html(content)
    return PrimaryDocument(content, form, "html" if is_html else "text")


# ---- HTML to text ------------------------------------------------------------------------------
_BLOCK = {
    "p", "div", "tr", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "table",
    "section", "article", "header", "footer", "main", "nav", "aside", "blockquote", "pre", "center",
    "address", "figure", "figcaption", "caption", "form", "fieldset", "body", "html",
}
_BREAK = {"br", "hr"}
_SKIP = {"head", "script", "style", "title", "noscript", "template", "ix:header", "meta", "link", "object", "svg"}
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_PREFIX_CELLS = {"$", "US$", "€", "£", "¥", "(", "$(", "($"}
_SUFFIX_CELL = re.compile(r"[)%]+|%\)|\)%|pts?\.?|bps")
_SPACES = re.compile(r"[ \t\r\n\f]+")
_CURRENCY_GAP = re.compile(r"(?<!\w)(\$|US\$|€|£|¥) (?=[\d(.])")  # "$ 85,777" -> "$85,777"


def _hidden(node) -> bool:
    attrs = node.attributes
    if "hidden" in attrs:
        return True
    style = attrs.get("style")
    return bool(style and _HIDDEN_STYLE.search(style))


def _render(node, out: list[str], cell_separator: str) -> None:
    """Append the visible text under ``node`` to ``out``: "\\n" around blocks, tables row by row."""
    stack: list[tuple[object, int]] = [(node, 0)]  # (node, 0 = enter | 1 = leave a block | 2 = leave <pre>)
    pre = 0
    while stack:
        n, phase = stack.pop()
        if phase:
            out.append("\n")
            pre -= phase == 2
            continue
        tag = n.tag
        if tag == "-text":
            text = n.text_content or ""
            out.append(text if pre else _SPACES.sub(" ", text))
            continue
        if tag.startswith(("-", "_")) or tag in _SKIP or (tag not in ("html", "body") and _hidden(n)):
            continue  # comments, doctype, skipped and hidden elements
        if tag in _BREAK:
            out.append("\n")
            continue
        if tag == "table":
            out.append("\n")
            out.extend(line + "\n" for line in _table_rows(n, cell_separator))
            continue
        if tag in _BLOCK:
            out.append("\n")
            pre += tag == "pre"
            stack.append((n, 2 if tag == "pre" else 1))
        stack.extend((c, 0) for c in reversed(list(n.iter(include_text=True))))


def _rows(table):
    for child in table.iter():
        if child.tag == "tr":
            yield child
        elif child.tag in ("thead", "tbody", "tfoot"):
            yield from (r for r in child.iter() if r.tag == "tr")


def _table_rows(table, cell_separator: str) -> list[str]:
    lines = []
    for row in _rows(table):
        if _hidden(row):
            continue
        cells, prefix = [], ""
        for cell in row.iter():
            if cell.tag not in ("td", "th") or _hidden(cell):
                continue
            parts: list[str] = []
            _render(cell, parts, cell_separator)
            text = _CURRENCY_GAP.sub(r"\1", _normalise_line(" ".join("".join(parts).split("\n"))))
            if not text:
                continue
            if text in _PREFIX_CELLS:
                prefix += text
            elif cells and not prefix and _SUFFIX_CELL.fullmatch(text):
                cells[-1] += text
            else:
                cells.append(prefix + text)
                prefix = ""
        if prefix:
            cells.append(prefix)
        if cells:
            lines.append(cell_separator.join(cells))
    return lines


_UNICODE_SPACES = re.compile(r"[\xa0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_ZERO_WIDTH = re.compile(r"[\u00ad\u200b-\u200d\u2060\ufeff]")  # soft hyphen and zero-width marks: invisible


def _normalise_line(line: str) -> str:
    line = _ZERO_WIDTH.sub("", _UNICODE_SPACES.sub(" ", line))
    return re.sub(r"[ \t]+", " ", line).strip()


def _tidy(text: str) -> str:
    lines = [_normalise_line(line) for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(html: str, *, cell_separator: str = " | ") -> str:
    """Visible text of an HTML / inline-XBRL document: one line per block, one per table row."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    out: list[str] = []
    if tree.root is not None:
        _render(tree.root, out, cell_separator)
    return _tidy("".join(out))


def plain_text(text: str) -> str:
    """A plain-text (pre-HTML) filing: SGML markup dropped, column gaps of 3+ spaces become `` | ``."""
    text = re.sub(r"</?(PAGE|TABLE|CAPTION|S|C|FN|PRE|F\d+)>", "", text, flags=re.I)
    lines = [re.sub(r"(?<=\S) {3,}(?=\S)", " | ", line.strip()) for line in text.replace("\r", "").split("\n")]
    return _tidy("\n".join(lines))


# ---- noise ---------------------------------------------------------------------------------------
_PAGE_NUMBER = re.compile(
    r"(?:page\s+)?(?:\d{1,3}|(?=[ivx])x{0,3}(?:ix|iv|v?i{0,3})|[a-z]-\d{1,3})(?:\s+of\s+\d{1,3})?", re.I)
_TOC_LINE = re.compile(r"(?:table\s+of\s+contents|index|page|\(continued\)|back\s+to\s+(?:top|contents))\.?", re.I)
_FOOTER_HINT = re.compile(r"form\s+(?:10-[kq]|8-k)|\bpage\b|annual report|quarterly report", re.I)


def _footer_shape(line: str) -> str | None:
    """The digit-blind shape of a line that may be a running page header or footer, else None: short,
    naming the report, and with the page number at either end ("21 | Acme 2024 Form 10-K") or none
    (a header that repeats verbatim, "ACME CORP. ANNUAL REPORT ON FORM 10-K")."""
    if len(line) >= 100 or not _FOOTER_HINT.search(line):
        return None
    return re.sub(r"\d+", "#", line) if re.search(r"^\s*\d|\d\s*$", line) else line


def _drop_noise(lines: list[str]) -> list[str]:
    """Remove page numbers, TOC links and running page headers and footers ("Apple Inc. | Q3 2025 Form
    10-Q | 21"): a footer shape seen on three pages or more."""
    shapes = Counter(shape for shape in map(_footer_shape, lines) if shape)
    out = []
    for line in lines:
        bare = line.replace("|", " ").strip()
        if _PAGE_NUMBER.fullmatch(bare) or _TOC_LINE.fullmatch(bare):
            continue
        shape = _footer_shape(line)
        if shape and shapes[shape] >= 3:
            continue
        out.append(line)
    return out


def document_text(text_or_html: str, document_format: str | None = None, *, cell_separator: str = " | ") -> str:
    """Clean text of a primary document (HTML or plain text), noise lines removed."""
    fmt = document_format or ("html" if _looks_like_html(text_or_html) else "text")
    text = html_to_text(text_or_html, cell_separator=cell_separator) if fmt == "html" else plain_text(text_or_html)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(_drop_noise(text.split("\n")))).strip()


# ---- headings and sections -------------------------------------------------------------------------
_DASH = r"\-\u2010-\u2015"
_ITEM = re.compile(
    rf"(?:PART\s+(?P<part>IV|I{{1,3}})\b\s*[{_DASH}.,:;]*\s*)?"
    rf"ITEM\s+(?P<num>\d{{1,2}})(?:\.(?P<sub>\d{{2}}))?(?P<letter>[A-D])?(?=[\s.:;,){_DASH}]|$)"
    rf"\s*[{_DASH}.:;,)]*\s*(?P<title>.*)",
    re.I,
)
_PART = re.compile(rf"PART\s+(?P<part>IV|I{{1,3}})\b(?:\s*[{_DASH}.:;,]\s*|\s+|$)(?P<title>.*)", re.I)
_SIGNATURES = re.compile(r"signatures?\.?", re.I)
# The first heading of the financial statements section (F-pages).
_FINANCIALS = re.compile(r"(?:index\s+to\s+(?:the\s+)?(?:consolidated\s+)?financial\s+statements"
                         r"|reports?\s+of\s+independent\s+(?:registered\s+public\s+accounting\s+firms?|auditors?|"
                         r"accountants?))(?:\W.{0,100})?", re.I)
_TRAILING_PAGE = re.compile(r"(?:\s*[|.]+)*\s+\d{1,3}$|\s*\|+$")


def _apostrophes(s: str) -> str:
    return s.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")


def _comparable(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", _apostrophes(s).lower()).strip()


@dataclass(frozen=True)
class Section:
    key: str  # "1A", "7", "Part I Item 2", "2.02"
    part: str | None  # "I" / "II" for 10-Q items, else None
    item: str  # "1A", "2", "2.02"
    title: str  # the document's own title when it has a usable one, else the form's
    text: str

    @property
    def heading(self) -> str:
        """'Item 1A. Risk Factors', 'Part I. Item 2. Management's ...', 'Item 2.02. Results of ...'."""
        head = f"Item {self.item}. {self.title}".rstrip()
        return f"Part {self.part}. {head}" if self.part else head


@dataclass
class _Candidate:
    line: int  # index of the heading line
    body: int  # index of the first body line (after a title on the next line)
    order: int  # position in the form's item list
    part: str | None
    item: str
    title: str
    inline: str  # body text that followed the title on the heading line
    weight: int = 0


class _Form:
    def __init__(self, form: str, legacy_8k: bool = False):
        self.form = form
        if form == "10-Q":
            self.keys = list(ITEMS_10Q)
            self.titles = dict(ITEMS_10Q)
        elif form == "8-K" and legacy_8k:
            self.keys, self.titles = [(None, k) for k in LEGACY_8K], {}
        elif form == "8-K":
            self.keys, self.titles = [(None, k) for k in ITEMS_8K], {(None, k): v for k, v in ITEMS_8K.items()}
        else:
            self.keys, self.titles = [(None, k) for k in ITEMS_10K], {(None, k): v for k, v in ITEMS_10K.items()}
        self.order = {k: i for i, k in enumerate(self.keys)}

    def key(self, part: str | None, item: str) -> str:
        return f"Part {part} Item {item}" if part else item


def detect_form(text: str) -> str:
    """The form named on the cover page; failing that, 8-K if 8-K-style items (2.02) appear, else 10-K."""
    cover = _UNICODE_SPACES.sub(" ", text[:20_000])
    m = re.search(r"FORM\s+(10-K|10-Q|8-K)", cover, re.I)
    if m:
        return m.group(1).upper()
    if re.search(r"(?im)^\s*item\s+\d\.\d\d\b", text):
        return "8-K"
    return "10-K"


def _item_heading(line: str, next_line: str | None, form: _Form):
    """(part, item, title, inline, title_on_next_line) when ``line`` is an item heading, else None."""
    m = _ITEM.fullmatch(line.replace("|", " ").strip())
    if not m:
        return None
    item = m.group("num") + ("." + m.group("sub") if m.group("sub") else "") + (m.group("letter") or "").upper()
    if m.group("sub") and form.form != "8-K":
        return None
    part = m.group("part").upper() if m.group("part") else None
    title = _TRAILING_PAGE.sub("", re.sub(r"\s*\|\s*", " ", m.group("title"))).strip(" .:;-")
    if title and title[0].islower():
        return None  # "Item 7 of this report ...": a reference, not a heading
    inline, on_next = "", False
    canonical = form.titles.get((None, item)) or next((v for (p, k), v in form.titles.items() if k == item), None)
    if canonical and len(title) > len(canonical) + 30 and _comparable(title).startswith(_comparable(canonical)):
        # "Item 8.01 Other Events. On November 7, ..." -- the heading and its first paragraph on one line
        cut = _split_after_title(m.group("title"), canonical)
        title, inline = m.group("title")[:cut].strip(" .:;-|"), m.group("title")[cut:].lstrip(" .:;-|")
    elif len(title) > 200:
        return None
    if not title and next_line and len(next_line) <= 200 and not next_line[0].islower() \
            and not _ITEM.fullmatch(next_line.replace("|", " ").strip()) and not _part_line(next_line):
        title, on_next = _TRAILING_PAGE.sub("", next_line).strip(" .:;-|"), True
    return part, item, title, inline, on_next


def _split_after_title(raw: str, canonical: str) -> int:
    """Index in ``raw`` just after the words of ``canonical``."""
    words = len(_comparable(canonical).split())
    seen, i = 0, 0
    for m in re.finditer(r"[A-Za-z0-9]+", _apostrophes(raw)):
        seen += 1
        i = m.end()
        if seen == words:
            break
    return i


def _candidates(lines: list[str], form: _Form) -> list[_Candidate]:
    found: list[_Candidate] = []
    part, part_fresh, last_order = None, False, -1
    nonblank = [i for i, line in enumerate(lines) if line]
    for pos, i in enumerate(nonblank):
        line = lines[i]
        nxt = lines[nonblank[pos + 1]] if pos + 1 < len(nonblank) else None
        head = _item_heading(line, nxt, form) if "item" in line[:40].lower() else None
        if head is None:
            pm = _part_line(line)
            if pm:
                part, part_fresh = pm.group("part").upper(), True
            continue
        explicit, item, title, inline, on_next = head
        this_part = None
        if form.form == "10-Q":
            if explicit:
                this_part = explicit
            elif part_fresh or part is None:
                this_part = part or "I"
            else:  # no part line since the last item: a restart of the numbering means the other part
                this_part = part
                if (part, item) in form.order and form.order[(part, item)] <= last_order:
                    this_part = "II" if part == "I" else "I"
            part, part_fresh = this_part, False
        key = (this_part, item)
        if key not in form.order:
            continue
        last_order = form.order[key]
        body = nonblank[pos + 1] + 1 if on_next else i + 1
        found.append(_Candidate(i, body, form.order[key], this_part, item, title, inline))
    return found


def _part_line(line: str):
    """A "PART II — OTHER INFORMATION" line (not "Part II of this report ...")."""
    bare = line.replace("|", " ").strip()
    m = _PART.fullmatch(bare) if len(bare) < 150 else None
    if m and (not m.group("title") or not m.group("title")[0].islower()) and "item" not in bare.lower():
        return m
    return None


def _is_weightless(line: str) -> bool:
    return not line.replace("|", " ").strip() or _part_line(line) is not None


def _choose(cands: list[_Candidate], lines: list[str]) -> list[_Candidate]:
    """The chain of candidates in increasing item order with the most body text."""
    for j, c in enumerate(cands):
        end = cands[j + 1].line if j + 1 < len(cands) else len(lines)
        c.weight = len(c.inline) + sum(len(line) for line in lines[c.body:end] if not _is_weightless(line))
    # weighted longest increasing subsequence; +1 per candidate so empty real items ("None.") join the chain
    best = [c.weight + 1 for c in cands]
    prev = [-1] * len(cands)
    for j, c in enumerate(cands):
        for i in range(j):
            if cands[i].order < c.order and best[i] + c.weight + 1 > best[j]:
                best[j], prev[j] = best[i] + c.weight + 1, i
    if not cands:
        return []
    j = max(range(len(cands)), key=lambda k: (best[k], k))
    chain = []
    while j >= 0:
        chain.append(cands[j])
        j = prev[j]
    return chain[::-1]


def _section_text(c: _Candidate, lines: list[str], end: int) -> str:
    body = lines[c.body:end]
    for k, line in enumerate(body):
        if _SIGNATURES.fullmatch(line.replace("|", " ").strip()):
            # the signature block ends the text, but many 10-Ks put their financial statements (the
            # F-pages Item 8 points to) after it: those are kept
            after = next((j for j in range(k + 1, len(body))
                          if _FINANCIALS.fullmatch(body[j].replace("|", " ").strip())), None)
            body = body[:k] + ([""] + body[after:] if after is not None else [])
            break
    while body and _is_weightless(body[-1]):
        body.pop()
    text = "\n".join(([c.inline] if c.inline else []) + body)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def split_sections(text_or_html: str, form: str | None = None, *, document_format: str | None = None) -> list[Section]:
    """The form's items in document order (see the module docstring); [] for other forms."""
    return _split(text_or_html, form, document_format)[0]


def _split(text_or_html: str, form: str | None, document_format: str | None) -> tuple[list[Section], str]:
    """(the sections, the cleaned text of the whole primary document)."""
    doc = primary_document(text_or_html, form)
    text = document_text(doc.content, document_format or doc.document_format)
    name = base_form(doc.form) or (detect_form(text) if doc.form is None else None)
    if name is None:
        return [], text
    lines = text.split("\n")
    spec = _Form(name)
    chain = _choose(_candidates(lines, spec), lines)
    if not chain and name == "8-K":
        spec = _Form(name, legacy_8k=True)
        chain = _choose(_candidates(lines, spec), lines)
    sections = []
    for j, c in enumerate(chain):
        end = chain[j + 1].line if j + 1 < len(chain) else len(lines)
        canonical = spec.titles.get((c.part, c.item), "")
        usable = c.title and not c.title.isupper() and len(c.title) <= 200
        title = c.title if usable else (canonical or c.title.title())
        sections.append(Section(spec.key(c.part, c.item), c.part, c.item, title, _section_text(c, lines, end)))
    return sections, text


def extract_sections(text_or_html: str, form: str | None = None) -> dict[str, str]:
    """Item key -> section text, in document order: ``{"1A": ..., "7": ...}`` for a 10-K,
    ``{"Part I Item 2": ...}`` for a 10-Q, ``{"2.02": ...}`` for an 8-K. Accepts a full submission
    (``.txt``), an HTML / inline-XBRL primary document or a plain-text one. The form is read from
    the submission header or the cover page when not given; forms other than 10-K/10-Q/8-K give {}."""
    return {s.key: s.text for s in split_sections(text_or_html, form)}


# Text outside the items that a filing may have without being read whole (cover page, TOC, signatures).
_UNSECTIONED_CHARS = 20_000


def exhibit_heading(exhibit: dict) -> str:
    """'Exhibit 99.1', with the filer's description when it says more than the type ('Exhibit 99.1. Press
    release dated October 30, 2023')."""
    number = re.sub(r"^EX-", "", (exhibit.get("type") or "").strip(), flags=re.I) or "99"
    description = _normalise_line(exhibit.get("description") or "").strip(" .")
    generic = not description or re.fullmatch(r"(EX(HIBIT)?[-\s.]*)?[\d.]+[A-Z]?", description, re.I)
    return f"Exhibit {number}" if generic else f"Exhibit {number}. {description}"


def exhibits_to_text(exhibits: list[dict] | None) -> str:
    """Each exhibit (an 8-K's press release: the `exhibits` column of the filings table) under its heading,
    cleaned like a primary document; an exhibit with no text left is omitted."""
    parts = []
    for exhibit in exhibits or []:
        text = document_text(exhibit.get("document") or "", exhibit.get("format"))
        if text:
            parts.append(f"{exhibit_heading(exhibit)}\n{text}")
    return "\n\n".join(parts)


def filing_to_text(text_or_html: str, form: str | None = None, *, header: str | None = None,
                   document_format: str | None = None, exhibits: list[dict] | None = None) -> str:
    """The filing as training text: optional ``header`` paragraph, then each item as a heading line
    (``Item 1A. Risk Factors``) followed by its text. A document in which no item is recognised is
    returned whole (cleaned), so nothing is lost when a filing does not follow the form; so is one whose
    items hold less text than the rest of it (more than `_UNSECTIONED_CHARS`): a 10-K laid out as an annual
    report with a "Form 10-K cross-reference index" at the end has item headings only in that index.
    `exhibits` (an 8-K's press release, where its figures are) follow the items, each under its heading."""
    sections, text = _split(text_or_html, form, document_format)
    covered = sum(len(s.text) for s in sections)
    if sections and len(text) - covered <= max(covered, _UNSECTIONED_CHARS):
        body = "\n\n".join(f"{s.heading}\n{s.text}".strip() for s in sections)
    else:
        body = text
    appended = exhibits_to_text(exhibits)
    body = f"{body}\n\n{appended}".strip() if appended else body
    return f"{header}\n\n{body}".strip() if header else body


# ---- command line --------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``tenali filing-sections``, for the ``tenali`` command's subparser."""
    parser.add_argument("file", help="full submission .txt, or a primary document (.htm/.html/.txt)")
    parser.add_argument("--form", help="10-K, 10-Q or 8-K (default: from the submission header or cover page)")
    parser.add_argument("--text", action="store_true", help="print the document with item headings instead of JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the item -> text JSON of ``args.file`` (or the rendered document with ``--text``)."""
    path = Path(args.file)
    if not path.is_file():
        print(f"tenali filing-sections: no such file: {path}", file=sys.stderr)
        return 2
    raw = path.read_text(encoding="utf-8", errors="replace")
    if args.text:
        exhibits = None
        if "<SEC-HEADER>" in raw[:20_000]:  # a full submission: an 8-K's press release is in its EX-99 documents
            from ..sources.live.filings import parse_full_submission  # (that module imports this one)

            exhibits = list(parse_full_submission(raw).exhibits)
        print(filing_to_text(raw, args.form, exhibits=exhibits))
    else:
        print(json.dumps(extract_sections(raw, args.form), indent=2, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``tenali filing-sections FILE [--form 10-K] [--text]``."""
    parser = argparse.ArgumentParser(prog="tenali filing-sections",
                                     description="Print the items of an SEC filing (10-K, 10-Q, 8-K) as JSON.")
    return run(add_arguments(parser).parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
