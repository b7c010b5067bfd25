"""From rendered documents to a clean corpus: quality filters, exact dedup, temporal split.

The split is by time, never at random: every document dated on or after ``val_start`` goes to
validation and the rest to training, so the model never trains on text describing days after the
validation window opens. Documents are dated by the last day they describe (see render.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

# Literal special-token strings are removed from source text, so no document can smuggle a
# control token (a fake end-of-text or chat turn) into training.
SPECIAL_TOKENS = ("<|endoftext|>", "<|user|>", "<|assistant|>", "<|pad|>")


@dataclass
class FilterConfig:
    min_chars: int = 80
    max_chars: int = 1_000_000
    min_alpha_ratio: float = 0.25  # letters / characters: drops tables of bare numbers and binary junk
    max_dup_line_ratio: float = 0.5  # share of lines that repeat another line of the same document


@dataclass
class CorpusResult:
    train: pl.DataFrame
    val: pl.DataFrame
    val_start: dt.date
    dropped: dict[str, int] = field(default_factory=dict)


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
    dropped = {}
    for reason, bad in reasons.items():
        before = df.height
        df = df.filter(~bad)
        dropped[reason] = before - df.height
    return df.drop("_chars", "_alpha", "_lines", "_unique_lines"), dropped


def dedup_exact(docs: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Keep the earliest document of each normalised text (ties broken by doc_id)."""
    before = docs.height
    out = (
        docs.with_columns(_h=_normalised(pl.col("text")).hash(seed=0))
        .sort("date", "doc_id")
        .unique(subset="_h", keep="first", maintain_order=True)
        .drop("_h")
    )
    return out, before - out.height


def default_val_start(dates: pl.Series, fraction: float = 0.1) -> dt.date:
    """The date from which the latest `fraction` of documents begin."""
    return dates.sort()[int(len(dates) * (1 - fraction))]


def build_corpus(docs: pl.DataFrame, *, val_start: dt.date | None = None, filters: FilterConfig | None = None) -> CorpusResult:
    if docs.is_empty():
        raise ValueError("No documents were rendered: materialise the source and document assets first.")
    kept, dropped = filter_documents(docs, filters or FilterConfig())
    kept, dropped["duplicate_exact"] = dedup_exact(kept)
    if kept.is_empty():
        raise ValueError(f"Every document was filtered out ({dropped}); loosen FilterConfig.")
    val_start = val_start or default_val_start(kept["date"])
    kept = kept.sort("date", "doc_id")
    train = kept.filter(pl.col("date") < val_start)
    val = kept.filter(pl.col("date") >= val_start)
    if train.is_empty() or val.is_empty():
        raise ValueError(
            f"The temporal split at {val_start} leaves {train.height} training and {val.height} validation "
            "documents; set TENALI_VAL_START inside the corpus's date range "
            f"({kept['date'].min()} to {kept['date'].max()})."
        )
    return CorpusResult(train=train, val=val, val_start=val_start, dropped=dropped)


def domain_stats(df: pl.DataFrame) -> dict[str, dict[str, int]]:
    stats = df.group_by("domain").agg(documents=pl.len(), bytes=pl.col("text").str.len_bytes().sum()).sort("domain")
    return {r["domain"]: {"documents": r["documents"], "bytes": int(r["bytes"])} for r in stats.iter_rows(named=True)}
