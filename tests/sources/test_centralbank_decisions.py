"""The central-bank decision parser on sentences worded as each bank words them (holds, cuts, hikes,
the Fed's ranges and fractions, the ECB's three rates, the RBI's repo rate), things that look like
decisions but are not, classification, and main-text extraction on the banks' page layouts."""

from __future__ import annotations

import pytest

from tenali_pipeline.sources.live.centralbank import (Decision, ExtractionError, classify, extract_text, number,
                                                      parse_decision)
from tenali_pipeline.text.render_centralbank import decision_sentence

FFR, RANGE = "federal funds rate target", "federal funds rate target range"
DFR, MRO, REPO = "deposit facility rate", "main refinancing operations rate", "policy repo rate"

CASES = [
    # Fed: since 2008 a target range; fractions written 4-1/4, 4–1/4 (en dash), 4 1/2 (no-break space), ¼
    ("fed", "In support of its goals, the Committee decided to lower the target range for the federal funds rate by "
            "1/4 percentage point to 4-1/4 to 4-1/2 percent.", Decision("cut", -25, 4.25, 4.5, RANGE)),
    ("fed", "In support of its goals, the Committee decided to lower the target range for the federal funds rate by "
            "1/2 percentage point to 4-3/4 to 5 percent.", Decision("cut", -50, 4.75, 5.0, RANGE)),
    ("fed", "The Committee decided to maintain the target range for the federal funds rate at 1\u20131/2 to 1-3/4 "
            "percent.", Decision("hold", 0, 1.5, 1.75, RANGE)),
    ("fed", "The Committee decided to maintain the target range for the federal funds rate at 4-1/4 to 4\u00a01/2 "
            "percent.", Decision("hold", 0, 4.25, 4.5, RANGE)),
    ("fed", "The Committee decided to raise the target range for the federal funds rate to 5-1/4 to 5-1/2 percent.",
     Decision("hike", None, 5.25, 5.5, RANGE)),  # the size is not stated: only the level
    ("fed", "The Committee decided to raise the target range for the federal funds rate by 3/4 percentage point to "
            "3-3/4 to 4 percent.", Decision("hike", 75, 3.75, 4.0, RANGE)),
    ("fed", "The Committee will maintain the target range for the federal funds rate at 0 to \u00bc percent and "
            "currently anticipates that economic conditions are likely to warrant exceptionally low levels.",
     Decision("hold", 0, 0.0, 0.25, RANGE)),
    ("fed", "The Federal Open Market Committee decided today to establish a target range for the federal funds rate "
            "of 0 to 1/4 percent.", Decision("set", None, 0.0, 0.25, RANGE)),
    # Fed before 2008: a single target, in basis points, sometimes without "by"
    ("fed", "The Federal Open Market Committee voted today to raise its target for the federal funds rate by 50 basis "
            "points to 6-1/2 percent.", Decision("hike", 50, 6.5, 6.5, FFR)),
    ("fed", "The Federal Open Market Committee decided today to lower its target for the federal funds rate by 50 "
            "basis points to 1 1/4 percent.", Decision("cut", -50, 1.25, 1.25, FFR)),
    ("fed", "The Federal Open Market Committee decided today to lower its target for the federal funds rate 75 basis "
            "points to 2-1/4 percent.", Decision("cut", -75, 2.25, 2.25, FFR)),
    ("fed", "The Federal Open Market Committee decided today to keep its target for the federal funds rate at 1 "
            "percent.", Decision("hold", 0, 1.0, 1.0, FFR)),
    # ECB: the decision, then the three rates "respectively" (the steering rate listed first)
    ("ecb", "The Governing Council today decided to lower the three key ECB interest rates by 25 basis points. In "
            "particular, the decision to lower the deposit facility rate \u2013 the rate through which the Governing "
            "Council steers the monetary policy stance \u2013 is based on its updated assessment of the inflation "
            "outlook. The interest rates on the deposit facility, the main refinancing operations and the marginal "
            "lending facility will be decreased to 3.00%, 3.15% and 3.40% respectively, with effect from 18 December "
            "2024.", Decision("cut", -25, 3.0, 3.0, DFR)),
    ("ecb", "The Governing Council today decided to keep the three key ECB interest rates unchanged. The interest rates "
            "on the main refinancing operations, the marginal lending facility and the deposit facility will remain "
            "unchanged at 4.50%, 4.75% and 4.00% respectively.", Decision("hold", 0, 4.5, 4.5, MRO)),
    ("ecb", "The Governing Council today decided to raise the three key ECB interest rates by 50 basis points. "
            "Accordingly, the interest rate on the main refinancing operations and the interest rates on the marginal "
            "lending facility and the deposit facility will be increased to 2.00%, 2.25% and 1.50% respectively, with "
            "effect from 2 November 2022.", Decision("hike", 50, 2.0, 2.0, MRO)),
    ("ecb", "At today's meeting the Governing Council of the ECB took the following monetary policy decisions: 1. The "
            "interest rate on the main refinancing operations of the Eurosystem will be decreased by 50 basis points to "
            "3.25%, starting from the operation to be settled on 12 November 2008.", Decision("cut", -50, 3.25, 3.25, MRO)),
    ("ecb", "The Governing Council decided to lower the interest rate on the deposit facility by 10 basis points to "
            "\u22120.50%.", Decision("cut", -10, -0.5, -0.5, DFR)),
    ("ecb", "The Governing Council today decided to lower the deposit facility rate \u2013 the rate through which the "
            "Governing Council steers the monetary policy stance \u2013 by 25 basis points. The spread between the rate "
            "on the marginal lending facility and the rate on the main refinancing operations will remain unchanged at "
            "25 basis points. Accordingly, the deposit facility rate will be decreased to 3.50% and the interest rates "
            "on the main refinancing operations and the marginal lending facility will be decreased to 3.65% and 3.90% "
            "respectively.", Decision("cut", -25, 3.5, 3.5, DFR)),
    # RBI: the MPC resolution ("decided to:" then the action), and the pre-MPC wording "from ... to"
    ("rbi", "On the basis of an assessment of the current and evolving macroeconomic situation, the Monetary Policy "
            "Committee (MPC) at its meeting today decided to:\n\nreduce the policy repo rate under the liquidity "
            "adjustment facility (LAF) by 25 basis points to 6.00 per cent with immediate effect.",
     Decision("cut", -25, 6.0, 6.0, REPO)),
    ("rbi", "The MPC decided to keep the policy repo rate unchanged at 6.50 per cent. Consequently, the standing deposit "
            "facility (SDF) rate remains at 6.25 per cent.", Decision("hold", 0, 6.5, 6.5, REPO)),
    ("rbi", "The MPC decided to increase the policy repo rate under the liquidity adjustment facility (LAF) by 50 basis "
            "points to 5.90 per cent with immediate effect.", Decision("hike", 50, 5.9, 5.9, REPO)),
    ("rbi", "On the basis of an assessment, it has been decided to: reduce the repo rate under the liquidity adjustment "
            "facility (LAF) by 25 basis points from 8.0 per cent to 7.75 per cent with immediate effect.",
     Decision("cut", -25, 7.75, 7.75, REPO)),
]


@pytest.mark.parametrize("bank, text, expected", CASES, ids=[f"{b}-{i}" for i, (b, _, _) in enumerate(CASES)])
def test_decisions_as_each_bank_words_them(bank, text, expected):
    assert parse_decision(text, bank) == expected


@pytest.mark.parametrize("bank, text", [
    # what markets expected is not what the Committee decided
    ("fed", "Market participants expected the Committee to lower the target range for the federal funds rate by "
            "25 basis points at this meeting."),
    # a speech-like sentence with no decision verb after the trigger
    ("fed", "The Committee decided that the target range for the federal funds rate would be appropriate for some time."),
    # the reverse repo rate is not the policy rate
    ("rbi", "The reverse repo rate under the LAF will be increased to 3.75 per cent."),
    # a rate other than the bank's own
    ("ecb", "The Federal Reserve decided to lower the target range for the federal funds rate by 25 basis points."),
    ("fed", ""),
])
def test_things_that_are_not_decisions(bank, text):
    assert parse_decision(text, bank) is None


def test_numbers_and_classification():
    assert [number(s) for s in ("4-1/4", "4 1/4", "1/4", "6.00", "-0.50", "0", "5-3/4")] == \
        [4.25, 4.25, 0.25, 6.0, -0.5, 0.0, 5.75]
    with pytest.raises(ValueError):
        number("four")
    assert classify("Federal Reserve issues FOMC statement") == "statement"
    assert classify("Minutes of the Federal Open Market Committee, December 17-18, 2024") == "minutes"
    assert classify("Monetary policy decisions") == "statement"
    assert classify("Account of the monetary policy meeting of the Governing Council, 11-12 December 2024") == "minutes"
    assert classify("Monetary Policy Statement, 2024-25 Resolution of the Monetary Policy Committee (MPC) February 5 to "
                    "7, 2025") == "statement"
    assert classify("Minutes of the Monetary Policy Committee Meeting, February 5 to 7, 2025") == "minutes"
    assert classify("Speech by Governor: Monetary policy in an uncertain world") == "speech"
    assert classify("Federal Reserve Board announces approval of discount rate actions") == "press_release"


def test_decision_sentences_for_the_documents():
    row = dict(decision="cut", change_bps=-25.0, rate_low=4.25, rate_high=4.5, rate_name=RANGE)
    assert decision_sentence(row) == "Decision: a cut of 25 basis points in the federal funds rate target range, to 4.25-4.50%."
    assert decision_sentence({**row, "decision": "hold", "change_bps": 0.0}) == \
        "Decision: the federal funds rate target range was left unchanged at 4.25-4.50%."
    assert decision_sentence(dict(decision="hike", change_bps=None, rate_low=5.9, rate_high=5.9, rate_name=REPO)) == \
        "Decision: an increase in the policy repo rate, to 5.90%."
    assert decision_sentence(dict(decision=None)) is None


LEGACY_FED = """<HTML><BODY BGCOLOR="#FFFFFF">
<FONT SIZE=+1><I>Release Date: November 6, 2002</I></FONT>
<TABLE WIDTH="600"><TR><TD>
<!------------DO NOT REMOVE:  Wireless Generation------------->
<p>For immediate release
<p>The Federal Open Market Committee decided today to lower its target for the federal funds rate by 50 basis points to 1&nbsp;1/4 percent.
<p>In a related action, the Board of Governors approved a 50 basis point reduction in the discount rate to 3/4 percent.
<p>The Committee continues to believe that an accommodative stance of monetary policy, coupled with still-robust underlying growth in productivity, is providing important ongoing support to economic activity.
<!------------DO NOT REMOVE:  Wireless Generation------------->
<a href="../default.htm">2002 Monetary policy</a><HR NOSHADE>
<font size="-1"><a href="/">Home</a> | <a href="/newsevents.htm">News and events</a><br><b>Last update: November 6, 2002</b></font>
</TD></TR></TABLE></BODY></HTML>"""


def test_legacy_page_with_unclosed_paragraphs():
    """Fed pages before 2006 leave <p> unclosed; an HTML5 parser closes them, so no text repeats,
    and the navigation text outside the paragraphs is left out."""
    _, text = extract_text(LEGACY_FED, url="https://www.federalreserve.gov/boarddocs/press/monetary/2002/20021106/")
    assert text.count("50 basis point") == 2 and text.count("discount rate") == 1
    assert "Last update" not in text and "2002 Monetary policy" not in text and "News and events" not in text
    assert parse_decision(text, "fed") == Decision("cut", -50, 1.25, 1.25, FFR)


def test_a_page_without_text_names_itself():
    shell = "<html><body><div id='root'></div><script>render()</script><p>Loading...</p></body></html>"
    with pytest.raises(ExtractionError, match=r"https://www.ecb.europa.eu/x.en.html: only 10 characters"):
        extract_text(shell, url="https://www.ecb.europa.eu/x.en.html")
