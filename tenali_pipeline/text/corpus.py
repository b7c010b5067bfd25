"""From rendered documents to a clean corpus: quality filters, exact dedup, temporal split,
near-duplicate removal across the split, and (optionally) mixing the training split to domain weights.

The split is by time, never at random: every document dated on or after ``val_start`` goes to
validation and the rest to training, so the model never trains on text describing days after the
validation window opens. Documents are dated by the last day they describe (see render.py).

Order of :func:`build_corpus`: quality filters (counted per reason, the language filter among them)
-> exact dedup over everything (earliest copy kept) -> temporal split -> near-duplicate removal
(dedup.py: a training document near-identical to a validation document is dropped from training,
validation stays intact; among training documents the earliest is kept) -> mixing of the training
split (mixing.py, only when a MixConfig is given). Every step's counts land on the result. This
module holds the steps' pieces (filters, the exact-dedup hash, the default split date); text/stream.py
runs them over files a batch and a bucket at a time, and :func:`build_corpus` is its in-memory face.

Language filter (English, no model and no dependency): a document is dropped as ``non_english``
when fewer than ``min_ascii_letter_ratio`` (0.9) of its letters are ASCII (other scripts), or, when
it has at least ``language_min_words`` (30) words, fewer than ``min_stopword_ratio`` (5%) of its words
are common English function words ("the", "of", "and", ...; words that are also common in other
Latin-script languages, such as "a", "in", "no", "was", are left out of the list). Rendered and real
English finance text scores 15-40% (tables included), German, French, Spanish, Portuguese and Dutch
prose 0-3%. It is a coarse gate for stray foreign documents in English sources, not language ID:
set ``language=None`` to switch it off, and use a real identifier (fastText lid) for a multilingual crawl.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from tenali_model.tokenizer import SPECIAL_TOKENS

from .dedup import NearDupConfig, NearDupReport
from .mixing import MixConfig, MixReport

if TYPE_CHECKING:  # stream.py builds on this module
    from .stream import CorpusSummary

# Literal special-token strings are removed from source text, so no document can smuggle a
# control token (a fake end-of-text or chat turn) into training.
# (SPECIAL_TOKENS, the tokenizer's chat and end-of-text pieces, is one list owned by tenali_model.tokenizer.)


@dataclass
class FilterConfig:
    min_chars: int = 80
    max_chars: int = 1_000_000
    min_alpha_ratio: float = 0.25  # letters / characters: drops tables of bare numbers and binary junk
    max_dup_line_ratio: float = 0.5  # share of lines that repeat another line of the same document
    language: str | None = "en"  # None switches the language filter off
    min_ascii_letter_ratio: float = 0.9  # ASCII letters / all letters
    min_stopword_ratio: float = 0.05  # English function words / words, for documents of language_min_words or more
    language_min_words: int = 30


# Common English function words that are not also everyday words in other Latin-script languages.
ENGLISH_STOPWORDS = (
    "the of and to is that for it as with be by on not he this are or his from at which but have had they you "
    "were their one all we can her has there been if more when will would who than our these also into may such "
    "other any only its"
).split()
_STOPWORDS = r"\b(?:" + "|".join(ENGLISH_STOPWORDS) + r")\b"


@dataclass
class CorpusResult:
    """What :func:`build_corpus` returns: the tables in memory, and the build's summary (its counts,
    reports and split date, text/stream.py's ``CorpusSummary``) behind the same names as before."""

    train: pl.DataFrame  # mixed when a MixConfig was given (documents may repeat), else the deduplicated split
    val: pl.DataFrame
    summary: CorpusSummary
    train_unmixed: pl.DataFrame | None = None  # unique training documents (for the tokenizer), before mixing

    @property
    def val_start(self) -> dt.date:
        return self.summary.val_start

    @property
    def dropped(self) -> dict[str, int]:  # reason -> documents: filters, exact, near-duplicates
        return self.summary.dropped

    @property
    def near_duplicates(self) -> NearDupReport | None:  # per-domain near-duplicate counts and examples
        return self.summary.near_duplicates

    @property
    def mixing(self) -> MixReport | None:
        return self.summary.mixing

    def counts(self) -> dict:
        return self.summary.counts()


def _normalised(text: pl.Expr) -> pl.Expr:
    return text.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def filter_documents(docs: pl.DataFrame, cfg: FilterConfig) -> tuple[pl.DataFrame, dict[str, int]]:
    """Apply the quality filters; return the kept documents and a count per reason."""
    text = pl.col("text")
    for token in SPECIAL_TOKENS:
        text = text.str.replace_all(token, "", literal=True)
    df = docs.with_columns(text=text)
    lines = pl.col("text").str.split("\n").list.eval(pl.element().str.strip_chars()).list.eval(
        pl.element().filter(pl.element() != ""))
    df = df.with_columns(
        _chars=pl.col("text").str.len_chars(),
        _alpha=pl.col("text").str.count_matches(r"\p{L}"),
        _lines=lines.list.len(),
        _unique_lines=lines.list.n_unique(),
    )
    reasons = {
        "too_short": pl.col("_chars") < cfg.min_chars,
        "too_long": pl.col("_chars") > cfg.max_chars,
        "low_alpha_ratio": pl.col("_alpha") < cfg.min_alpha_ratio * pl.col("_chars"),
        "repeated_lines": (pl.col("_lines") - pl.col("_unique_lines")) > cfg.max_dup_line_ratio * pl.col("_lines"),
    }
    if cfg.language is not None:
        if cfg.language != "en":
            raise ValueError(f"only the English language filter exists (language='en' or None), got {cfg.language!r}")
        words = pl.col("text").str.count_matches(r"\p{L}+")
        stops = pl.col("text").str.to_lowercase().str.count_matches(_STOPWORDS)
        reasons["non_english"] = (
            (pl.col("text").str.count_matches(r"[A-Za-z]") < cfg.min_ascii_letter_ratio * pl.col("_alpha"))
            | ((words >= cfg.language_min_words) & (stops < cfg.min_stopword_ratio * words))
        )
    # The temporal split cannot place a document without a date: it would reach neither side, uncounted.
    reasons["undated"] = pl.col("date").is_null()
    dropped = {}
    for reason, bad in reasons.items():
        before = df.height
        df = df.filter(~bad)
        dropped[reason] = before - df.height
    return df.drop("_chars", "_alpha", "_lines", "_unique_lines"), dropped


def first_copies(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` (h, date, doc_id, ...) sorted by hash, with ``first``: the earliest (date, doc_id) of its hash."""
    return df.sort("h", "date", "doc_id").with_columns(first=pl.col("h").is_first_distinct())


def dedup_exact(docs: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Keep the earliest document of each normalised text (ties broken by doc_id)."""
    marked = first_copies(docs.with_columns(h=_normalised(pl.col("text")).hash(seed=0)))
    out = marked.filter(pl.col("first")).drop("h", "first").sort("date", "doc_id")
    return out, docs.height - out.height


def val_start_from_counts(per_date: pl.DataFrame, fraction: float = 0.1) -> dt.date:
    """The date of the document at index ``int(n * (1 - fraction))`` in date order, from documents per
    date (``date``, ``len``): the latest ``fraction`` of documents begins there."""
    per_date = per_date.sort("date")
    cum = per_date["len"].cast(pl.Int64).cum_sum()
    idx = int(int(cum[-1]) * (1 - fraction))
    return per_date["date"][int((cum <= idx).sum())]


def default_val_start(dates: pl.Series, fraction: float = 0.1) -> dt.date:
    """The date from which the latest `fraction` of documents begin."""
    return val_start_from_counts(dates.to_frame("date").group_by("date").len(), fraction)


def build_corpus(docs: pl.DataFrame, *, val_start: dt.date | None = None, filters: FilterConfig | None = None,
                 near_dup: NearDupConfig | bool = True, mixing: MixConfig | None = None,
                 batch_rows: int = 5_000) -> CorpusResult:
    """Filter, deduplicate (exact, then near-duplicates across the split) and split ``docs`` by time;
    mix the training split when ``mixing`` is given. ``near_dup``: True for the default NearDupConfig,
    a config to tune it, False to skip it. The in-memory face of text/stream.py (the same stages, over
    a scratch folder); the frames come back sorted by (date, doc_id)."""
    from ..lake import Lake
    from .stream import CorpusKeys, StreamConfig, build_corpus_stream

    with tempfile.TemporaryDirectory(prefix="tenali-corpus-") as tmp:
        lake = Lake(tmp)
        lake.write_parquet("documents.parquet", docs, row_group_size=batch_rows)
        keys = CorpusKeys(train="train.parquet", train_unique="train_unique.parquet", val="val.parquet")
        summary = build_corpus_stream(lake, ["documents.parquet"], keys, work=Path(tmp) / "work", val_start=val_start,
                                      filters=filters, near_dup=near_dup, mixing=mixing,
                                      stream=StreamConfig(batch_rows=batch_rows))
        train, val = lake.read_parquet(keys.train), lake.read_parquet(keys.val)
        unique = lake.read_parquet(keys.train_unique).sort("date", "doc_id")
    return CorpusResult(train=train.sort("date", "doc_id", maintain_order=True) if mixing else unique,
                        val=val.sort("date", "doc_id"), summary=summary, train_unmixed=unique if mixing else None)


def domain_stats(df: pl.DataFrame) -> dict[str, dict[str, int]]:
    stats = df.group_by("domain").agg(documents=pl.len(), bytes=pl.col("text").str.len_bytes().sum()).sort("domain")
    return {r["domain"]: {"documents": r["documents"], "bytes": int(r["bytes"])} for r in stats.iter_rows(named=True)}
