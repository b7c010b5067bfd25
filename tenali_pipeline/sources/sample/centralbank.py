"""Deterministic central-bank communications of three made-up banks, run through the live extractor
and decision parser.

Made-up institutions (as the sample DeFi chains are) so that no real central bank is ever quoted
saying words it did not say; each writes in the style of one real bank, so its statements exercise
that bank's decision patterns: the "Federal Reserve of Samplia" sets a target range for the federal
funds rate in fractions of a point ("by 1/4 percentage point to 4-1/4 to 4-1/2 percent") and
publishes minutes three weeks after each meeting; the "Demoland Central Bank" sets three key
interest rates (deposit facility, main refinancing operations, marginal lending facility) in basis
points; the "Reserve Bank of Exemplia" sets a policy repo rate "per cent". A few press releases
without a decision come with them. Meetings run 2000-01 .. 2013-02, inside the demo's date range.

Each item is a feed entry plus an HTML page laid out like its model bank's site (the Fed's
``#article`` columns with a Cloudflare e-mail line, the ECB's ``main > .section`` with a
reproduction notice, the RBI's table layout) and goes through `extract_text` and `make_row` exactly
as a live page does.
"""

from __future__ import annotations

import datetime as dt
import html
import zlib

import numpy as np
import polars as pl

from ..live.centralbank import extract_text, make_row, to_frame

SOURCE = "sample:generated"
# bank id -> (institution, style of the real bank it writes like, meetings per year, feed URL)
BANKS = {
    "samplia_fed": ("Federal Reserve of Samplia", "fed", 8, "https://www.samplia-fed.example/feeds/press_monetary.xml"),
    "demoland_cb": ("Demoland Central Bank", "ecb", 8, "https://www.demoland-cb.example/rss/press.html"),
    "exemplia_rb": ("Reserve Bank of Exemplia", "rbi", 6, "https://www.exemplia-rb.example/pressreleases_rss.xml"),
}


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32("|".join(map(str, key)).encode())])


def fed_number(x: float) -> str:
    """4.25 -> '4-1/4', 0.25 -> '1/4', 5.0 -> '5' (the Fed's way of writing rates)."""
    whole, frac = int(x), round((x - int(x)) * 4)
    part = {0: "", 1: "1/4", 2: "1/2", 3: "3/4"}[frac]
    if not whole:
        return part or "0"
    return f"{whole}-{part}" if part else str(whole)


def _change_words(bps: int, style: str) -> str:
    if style == "fed":
        return {25: "1/4 percentage point", 50: "1/2 percentage point", 75: "3/4 percentage point"}[abs(bps)]
    return f"{abs(bps)} basis points"


_GROWTH = {
    -1: ["economic activity has slowed and the labor market has softened",
         "growth has weakened markedly and business investment has fallen",
         "indicators point to a contraction in output in recent months"],
    0: ["economic activity has been expanding at a moderate pace",
        "growth has continued at a steady pace and employment has risen",
        "output has grown broadly in line with its potential"],
    1: ["economic activity has been expanding at a solid pace",
        "demand has strengthened and the labor market has tightened further",
        "growth has picked up and capacity utilisation is high"],
}
_PRICES = {
    -1: ["inflation has moved down and is running below the objective",
         "price pressures have eased considerably"],
    0: ["inflation remains close to the objective",
        "price developments have been broadly stable"],
    1: ["inflation has risen and remains elevated",
        "price pressures have broadened and inflation expectations have edged up"],
}


class SampleCentralBankClient:
    def __init__(self, feeds=None, *, start: str = "2000-01-01", end: str = "2013-03-01", seed: int = 17,
                 min_chars: int = 200):
        # Configured (real) feeds are ignored on purpose: the sample only describes made-up banks.
        self.start, self.end, self.seed, self.min_chars = dt.date.fromisoformat(start), dt.date.fromisoformat(end), seed, min_chars
        self.skipped: list[str] = []
        self.state: dict = {}

    # -- the path of each bank's rate ------------------------------------------------------------
    def meetings(self, bank: str) -> list[tuple[dt.date, int, int]]:
        """[(meeting day, change in bps, new rate in bps)] for `bank`, deterministic."""
        _, style, per_year, _ = BANKS[bank]
        rng = _rng(self.seed, bank)
        rate = {"fed": 550, "ecb": 300, "rbi": 800}[style]
        step = {"fed": 25, "ecb": 25, "rbi": 25}[style]
        out, cycle = [], 0
        for year in range(self.start.year, self.end.year + 1):
            for k in range(per_year):
                month = 1 + (12 * k) // per_year
                day = dt.date(year, month, 1) + dt.timedelta(days=int(rng.integers(8, 24)))
                if not (self.start <= day < self.end):
                    continue
                if rng.random() < 0.25:
                    cycle = int(rng.choice([-1, 0, 1], p=[0.4, 0.3, 0.3]))
                move = 0
                if cycle and rng.random() < 0.6:
                    move = cycle * step * int(rng.choice([1, 1, 1, 2]))
                floor = 0 if style != "rbi" else 300
                move = max(move, floor - rate)
                rate += move
                out.append((day, move, rate))
        return out

    # -- text in each bank's style ---------------------------------------------------------------
    def _statement(self, bank: str, day: dt.date, move: int, rate: int) -> tuple[str, list[str]]:
        name, style, _, _ = BANKS[bank]
        rng = _rng(self.seed, bank, day)
        direction = (move > 0) - (move < 0)
        growth = _GROWTH[direction][int(rng.integers(len(_GROWTH[direction])))]
        prices = _PRICES[direction][int(rng.integers(len(_PRICES[direction])))]
        verb = {1: "raise", -1: "lower", 0: "maintain"}[direction]
        if style == "fed":
            lo, hi = rate / 100, rate / 100 + 0.25
            rng_text = f"{fed_number(lo)} to {fed_number(hi)} percent"
            decision = (f"In support of its goals, the Committee decided to {verb} the target range for the federal funds "
                        f"rate by {_change_words(move, style)} to {rng_text}." if move else
                        f"In support of its goals, the Committee decided to maintain the target range for the federal "
                        f"funds rate at {rng_text}.")
            paras = [f"Information received since the Federal Open Market Committee met in "
                     f"{(day - dt.timedelta(days=45)):%B} indicates that {growth}. On a 12-month basis, {prices}.",
                     "The Committee seeks to achieve maximum employment and inflation at the rate of 2 percent over "
                     "the longer run. Uncertainty about the economic outlook remains elevated.",
                     decision,
                     "In considering the extent and timing of additional adjustments to the target range, the "
                     "Committee will carefully assess incoming data, the evolving outlook, and the balance of risks.",
                     f"Voting for the monetary policy action were the members of the Committee of the {name}."]
            return "Federal Reserve of Samplia issues FOMC statement", paras
        if style == "ecb":
            dfr = rate / 100
            mro, mlf = dfr + 0.75, dfr + 1.5
            first = (f"The Governing Council today decided to {verb} the three key interest rates by "
                     f"{_change_words(move, style)}." if move else
                     "The Governing Council today decided to keep the three key interest rates unchanged.")
            how = {1: "increased to", -1: "decreased to", 0: "remain unchanged at"}[direction]
            verb_be = "will" if not move else "will be"
            paras = [first,
                     f"The decision is based on the Governing Council's updated assessment: {growth}, and {prices}.",
                     f"The interest rates on the deposit facility, the main refinancing operations and the marginal "
                     f"lending facility {verb_be} {how} {dfr:.2f}%, {mro:.2f}% and {mlf:.2f}% respectively, with effect "
                     f"from {(day + dt.timedelta(days=6)).day} {(day + dt.timedelta(days=6)):%B %Y}.",
                     "The Governing Council is determined to ensure that inflation stabilises sustainably at its "
                     "medium-term target and will follow a data-dependent, meeting-by-meeting approach.",
                     f"{name}, Directorate General Communications."]
            return "Monetary policy decisions", paras
        action = {1: "increase", -1: "reduce", 0: "keep"}[direction]
        rr = rate / 100
        decision = (f"{action} the policy repo rate under the liquidity adjustment facility (LAF) by "
                    f"{abs(move)} basis points to {rr:.2f} per cent with immediate effect." if move else
                    f"keep the policy repo rate under the liquidity adjustment facility (LAF) unchanged at {rr:.2f} per cent.")
        paras = [f"On the basis of an assessment of the current and evolving macroeconomic situation, the Monetary "
                 f"Policy Committee (MPC) at its meeting today ({day:%B} {day.day}, {day.year}) decided to:",
                 decision,
                 f"Consequently, the standing deposit facility (SDF) rate stands adjusted to {rr - 0.25:.2f} per cent "
                 f"and the marginal standing facility (MSF) rate to {rr + 0.25:.2f} per cent.",
                 f"The MPC noted that {growth}, while {prices}.",
                 "The minutes of the MPC's deliberations will be published in two weeks."]
        fy = day.year if day.month >= 4 else day.year - 1
        return (f"Monetary Policy Statement, {fy}-{str(fy + 1)[2:]} Resolution of the Monetary Policy Committee (MPC) "
                f"{day:%B} {day.day}, {day.year}", paras)

    def _minutes(self, bank: str, day: dt.date, move: int, rate: int) -> tuple[str, list[str]]:
        rng = _rng(self.seed, bank, day, "minutes")
        direction = (move > 0) - (move < 0)
        views = ["Participants observed that " + _GROWTH[direction][int(rng.integers(3))] + ".",
                 "Several participants noted that " + _PRICES[direction][int(rng.integers(2))] + ".",
                 "Market participants had expected the Committee to adjust the target range for the federal funds rate "
                 "at this meeting; measures of policy expectations moved little over the intermeeting period.",
                 "Staff projected that output growth would be close to its potential rate over the next two years."]
        lo = rate / 100
        rng_text = f"{fed_number(lo)} to {fed_number(lo + 0.25)} percent"
        verb = {1: "raise", -1: "lower", 0: "maintain"}[direction]
        action = (f"After assessing the outlook, the Committee decided to {verb} the target range for the federal funds "
                  f"rate by {_change_words(move, 'fed')} to {rng_text}." if move else
                  f"After assessing the outlook, the Committee decided to maintain the target range for the federal "
                  f"funds rate at {rng_text}.")
        return (f"Minutes of the Federal Open Market Committee, {day:%B} {day.day}, {day.year}",
                ["Developments in Financial Markets and Open Market Operations"] + views +
                ["Committee Policy Action", action, "The vote encompassed approval of the statement issued after the meeting."])

    # -- pages laid out like the model bank's site ------------------------------------------------
    @staticmethod
    def _page(style: str, title: str, day: dt.date, paras: list[str]) -> str:
        body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paras)
        if style == "fed":
            return (f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head><body>"
                    f"<nav class='navbar'><ul><li><a href='/'>Home</a></li><li><a href='/newsevents.htm'>News &amp; Events"
                    f"</a></li></ul></nav><div id='content'><div id='article'><div class='heading col-xs-12 col-sm-8 col-md-8'>"
                    f"<p class='article__time'>{day:%B} {day.day}, {day.year}</p><h3 class='title'><em>{html.escape(title)}"
                    f"</em></h3><p class='releaseTime'>For release at 2:00 p.m. EST</p></div>"
                    f"<div class='col-xs-12 col-sm-8 col-md-8'>{body}<p>For media inquiries, please email "
                    f"<a href='/cdn-cgi/l/email-protection'><span class='__cf_email__'>[email&#160;protected]</span></a> "
                    f"or call 202-452-2955.</p><p><a href='a1.htm'>Implementation Note issued {day:%B} {day.day}, "
                    f"{day.year}</a></p></div></div></div><footer><p>Last Update: {day:%B} {day.day}, {day.year}</p>"
                    f"</footer></body></html>")
        if style == "ecb":
            return (f"<!DOCTYPE html><html lang='en'><head><title>{html.escape(title)}</title></head><body>"
                    f"<header class='header'><a href='/home/html/index.en.html'>European Central Bank</a></header>"
                    f"<main><div class='title'><ul><li>PRESS RELEASE</li></ul><h1 class='ecb-pressContentTitle'>"
                    f"{html.escape(title)}</h1><p class='ecb-publicationDate'>{day.day} {day:%B %Y}</p></div>"
                    f"<div class='section'>{body}<p>Reproduction is permitted provided that the source is acknowledged."
                    f"</p></div><div class='related-topics'><ul><li><a href='/mopo'>Monetary policy</a></li></ul></div>"
                    f"</main><footer><p>Copyright 2026</p></footer></body></html>")
        return (f"<html><head><title>Reserve Bank - Press Releases</title></head><body><div id='header'>"
                f"<a href='/'>Home</a></div><table class='tablebg' width='100%'><tr><td class='tableheader'><b>"
                f"{html.escape(title)}</b></td><td align='right' class='tableheader'><b>Date : </b>{day:%b %d, %Y}</td>"
                f"</tr><tr><td class='tablecontent2' colspan='2'>{body}<p>(Official Spokesperson)<br>Chief General "
                f"Manager</p><p>Press Release: {day.year}-{str(day.year + 1)[2:]}/{int(zlib.crc32(title.encode()) % 2000)}"
                f"</p></td></tr></table></body></html>")

    def items(self) -> list[dict]:
        """Every item as {bank, feed, link, title, published, html}: what a feed and its pages serve."""
        out = []
        for bank, (_, style, _, feed) in BANKS.items():
            host = feed.split("/")[2]
            for day, move, rate in self.meetings(bank):
                title, paras = self._statement(bank, day, move, rate)
                released = dt.datetime(day.year, day.month, day.day, 18, 0, tzinfo=dt.timezone.utc)
                out.append(dict(bank=bank, feed=feed, link=f"https://{host}/press/{day:%Y%m%d}a.htm", title=title,
                                published=released, html=self._page(style, title, day, paras)))
                if style == "fed":
                    later = day + dt.timedelta(days=21)
                    if later < self.end:
                        title, paras = self._minutes(bank, day, move, rate)
                        out.append(dict(bank=bank, feed=feed, link=f"https://{host}/monetarypolicy/fomcminutes{day:%Y%m%d}.htm",
                                        title=title, published=released + dt.timedelta(days=21),
                                        html=self._page(style, title, later, paras)))
            for year in range(self.start.year, self.end.year):
                day = dt.date(year, 6, 1) + dt.timedelta(days=int(_rng(self.seed, bank, year).integers(0, 60)))
                title = f"{BANKS[bank][0]} announces results of its annual survey of bank lending"
                paras = [f"The {BANKS[bank][0]} today published the results of its annual survey of bank lending "
                         f"conditions for {year}.",
                         "Banks reported that credit standards for loans to enterprises were broadly unchanged, while "
                         "demand for housing loans increased slightly over the survey period.",
                         "The survey is conducted among a representative sample of banks and is published each year."]
                out.append(dict(bank=bank, feed=feed, link=f"https://{host}/press/{day:%Y%m%d}s.htm", title=title,
                                published=dt.datetime(day.year, day.month, day.day, 14, 0, tzinfo=dt.timezone.utc),
                                html=self._page(style, title, day, paras)))
        return out

    def fetch(self) -> pl.DataFrame:
        rows = []
        for item in self.items():
            institution, style, _, _ = BANKS[item["bank"]]
            _, text = extract_text(item["html"], url=item["link"], min_chars=self.min_chars)
            rows.append(make_row(bank=item["bank"], feed=item["feed"], link=item["link"], title=item["title"],
                                 published=item["published"], text=text, source=SOURCE, institution=institution,
                                 style=style))
        return to_frame(rows)
