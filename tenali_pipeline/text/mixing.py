"""Mix the training split to domain weights by deterministic up- and down-sampling.

Tokens are estimated from UTF-8 bytes (``bytes / bytes_per_token``; 4 unless a figure measured with
the trained tokenizer is given). For domain ``d`` with weight ``w_d`` and ``a_d`` available tokens,
the target is ``t_d = w_d * total``.

The total (the choice, when ``total_tokens`` is not given): the input's own token estimate, reduced
where needed so that no domain has to be repeated more than ``max_repeats`` times
(``total = min(sum(a), min_d(max_repeats * a_d / w_d))``). Keeping the input size means mixing
changes the shares, not the size of the run; the cap follows the data-constrained scaling result
(Muennighoff et al., 2023) that up to about 4 passes over the same text cost little, while more
start to waste compute. A scarce domain therefore shrinks the mix instead of being repeated 20 times.
An explicit ``total_tokens`` is honoured as given (repeats may then exceed ``max_repeats``).

Sampling, per domain, with ``f = t_d / a_d``:
- up (``f >= 1``): every document ``floor(f)`` times, plus the remaining tokens drawn as below;
- down (``f < 1``): documents in a fixed pseudo-random order (a hash of doc_id and ``seed``) are
  taken while their tokens fit the remaining target (the document that crosses the target is
  taken when that lands closer to it, or when the domain would otherwise get no document at all).
  Same input and seed, same selection, on any machine.

Domains: a weighted domain with no documents is reported as ``missing`` and its weight is
redistributed over the present domains in proportion to their weights (``on_missing="redistribute"``,
the default) or the call fails (``on_missing="error"``). A domain present in the data but absent
from the weights gets weight 0: it is left out of the mix and listed as ``unweighted``.

The mixed frame keeps the document schema; repeated documents appear once per copy, in rounds: round
``k`` holds copy ``k`` of every document mixed in at least ``k`` times, in (date, doc_id) order like the
rest of the split, and the rounds follow one another. Copies are a round apart, never side by side:
the loader cuts the token stream into contiguous windows and shuffles only the windows, so adjacent
copies of a short document would share a window, and every copy after the first would be copied from
the context instead of learnt (the repeats would add tokens, not signal).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import polars as pl

# The seed's mix (domains as render.DOMAINS names them).
DEFAULT_WEIGHTS: dict[str, float] = {
    "market": 0.20,
    "economic": 0.15,
    "news_filings": 0.30,
    "technical": 0.10,
    "educational": 0.15,
    "crypto_forex": 0.10,
}


@dataclass(frozen=True)
class MixConfig:
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    total_tokens: int | None = None  # None: the input's estimate, capped so no domain needs > max_repeats passes
    max_repeats: float = 4.0
    bytes_per_token: float = 4.0
    on_missing: Literal["redistribute", "error"] = "redistribute"
    seed: int = 0


@dataclass
class DomainMix:
    weight: float  # effective weight (after redistribution)
    available_tokens: int
    available_documents: int
    target_tokens: int
    achieved_tokens: int
    documents: int  # rows in the mix, copies included
    unique_documents: int
    repeat_factor: float  # achieved / available tokens: > 1 up-sampled, < 1 down-sampled


@dataclass
class MixReport:
    total_target_tokens: int
    total_achieved_tokens: int
    input_tokens: int
    bytes_per_token: float
    capped_by_max_repeats: bool  # the total was reduced so that no domain exceeds max_repeats
    domains: dict[str, DomainMix]
    missing: list[str]  # weighted domains with no documents (weight redistributed or error)
    unweighted: list[str]  # domains in the data without a weight (left out)

    def shares(self) -> dict[str, float]:
        total = self.total_achieved_tokens or 1
        return {d: m.achieved_tokens / total for d, m in self.domains.items()}

    def to_dict(self) -> dict:
        out = asdict(self)
        for d, share in self.shares().items():
            out["domains"][d]["share"] = round(share, 4)
        return out

    def to_markdown(self) -> str:
        rows = [f"| {d} | {m.weight:.3f} | {share:.3f} | {m.target_tokens:,} | {m.achieved_tokens:,} | "
                f"{m.documents:,} | {m.repeat_factor:.2f} |"
                for (d, m), share in zip(self.domains.items(), self.shares().values())]
        head = ("| domain | weight | share | target tokens | achieved tokens | documents | repeat |\n"
                "|---|---:|---:|---:|---:|---:|---:|\n")
        notes = [f"missing (weight redistributed): {', '.join(self.missing)}"] if self.missing else []
        notes += [f"unweighted (left out): {', '.join(self.unweighted)}"] if self.unweighted else []
        return head + "\n".join(rows) + ("\n\n" + "\n".join(notes) if notes else "")


def estimate_tokens(texts: pl.Expr | str = "text", bytes_per_token: float = 4.0) -> pl.Expr:
    col = pl.col(texts) if isinstance(texts, str) else texts
    return (col.str.len_bytes() / bytes_per_token).ceil().cast(pl.Int64)


def _stable_hash(doc_id: str, seed: int) -> int:
    """Stable across processes, machines and library versions (unlike ``hash()`` or ``Expr.hash``)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}|{doc_id}".encode(), digest_size=8).digest(), "big")


_BIN_SHIFT = 48  # a document's sampling key >> 48: 65,536 bins per domain for the streaming cut


def _keys(doc_ids: pl.Series, seed: int) -> pl.Series:
    return pl.Series([_stable_hash(i, seed) for i in doc_ids], dtype=pl.UInt64)


def _plan(avail: dict[str, tuple[int, int]], cfg: MixConfig) -> tuple[dict[str, float], list, list, int, int, bool]:
    """(weights, missing, unweighted, total, input_tokens, capped) from the available tokens per domain."""
    missing = sorted(d for d, w in cfg.weights.items() if w > 0 and avail.get(d, (0, 0))[0] == 0)
    unweighted = sorted(d for d in avail if cfg.weights.get(d, 0) <= 0)
    if missing and cfg.on_missing == "error":
        raise ValueError(f"no training documents for weighted domain(s) {missing}; "
                         "render them or set their weight to 0")
    present = {d: w for d, w in cfg.weights.items() if w > 0 and d not in missing}
    if not present:
        raise ValueError(f"none of the weighted domains {sorted(cfg.weights)} has training documents")
    norm = sum(present.values())
    weights = {d: w / norm for d, w in sorted(present.items())}
    input_tokens = sum(avail[d][0] for d in weights) + sum(avail[d][0] for d in unweighted)
    capped = False
    if cfg.total_tokens is not None:
        total = int(cfg.total_tokens)
    else:
        cap = min(cfg.max_repeats * avail[d][0] / w for d, w in weights.items())
        total = int(min(input_tokens, round(cap)))
        capped = cap < input_tokens
    return weights, missing, unweighted, total, input_tokens, capped


def _cut(rows: pl.DataFrame, before: int, target: int, only: bool = False) -> set[str]:
    """doc_ids taken from the bin that crosses ``target``: ``rows`` (key, doc_id, tokens) of that bin,
    ``before`` the tokens of the bins below it. A prefix in (key, doc_id) order whose tokens fit, plus
    the crossing row when that lands closer to the target, or when it would otherwise be the domain's
    only chance (``only``: nothing else of the domain is taken), so a weighted domain never vanishes."""
    rows = rows.sort("_key", "doc_id")
    cum = rows["_tokens"].cum_sum() + before
    n = int((cum <= target).sum())
    if n < rows.height:
        under = int(cum[n - 1]) if n else before
        if int(cum[n]) - target < target - under or (only and n == 0 and before == 0):
            n += 1
    return set(rows["doc_id"].head(n).to_list())


def mix_batches(batches, write, config: MixConfig | None = None) -> MixReport:
    """Mix a training split that arrives in batches: ``batches()`` returns a fresh iterator over it
    (it is read twice, then once per round of copies), ``write(df)`` receives the mixed rows batch by
    batch, round after round. Memory: a batch and 65,536 bins per domain. Down-sampling takes
    documents in (key, doc_id) order, key a stable hash of doc_id and seed: the bins of keys below the
    crossing bin whole, the crossing bin's documents sorted (pass 2), so the result is the same as
    sorting the whole domain."""
    cfg = config or MixConfig()
    if cfg.bytes_per_token <= 0 or cfg.max_repeats < 1:
        raise ValueError("bytes_per_token must be > 0 and max_repeats >= 1")
    if any(w < 0 for w in cfg.weights.values()) or not sum(cfg.weights.values()) > 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {cfg.weights}")

    def prepared(df):
        df = df.with_columns(_tokens=estimate_tokens("text", cfg.bytes_per_token), _key=_keys(df["doc_id"], cfg.seed))
        return df.with_columns(_bin=(pl.col("_key") // (1 << _BIN_SHIFT)).cast(pl.Int64))

    # Pass 1: tokens and documents per domain, and tokens per (domain, key bin).
    avail: dict[str, list[int]] = {}
    bins: dict[str, np.ndarray] = {}
    for df in batches():
        df = prepared(df)
        for d, tokens, docs in df.group_by("domain").agg(pl.col("_tokens").sum(), pl.len()).iter_rows():
            a = avail.setdefault(d, [0, 0])
            a[0] += int(tokens)
            a[1] += int(docs)
        for (d,), part in df.select("domain", "_bin", "_tokens").partition_by("domain", as_dict=True).items():
            if d not in bins:
                bins[d] = np.zeros(1 << (64 - _BIN_SHIFT), dtype=np.int64)
            np.add.at(bins[d], part["_bin"].to_numpy(), part["_tokens"].to_numpy())
    avail_t = {d: (a[0], a[1]) for d, a in avail.items()}
    weights, missing, unweighted, total, input_tokens, capped = _plan(avail_t, cfg)
    plan = {}
    for d, w in weights.items():
        target = round(w * total)
        full, rest = divmod(target, avail_t[d][0])
        cut_bin, before = -1, 0
        if rest > 0:
            cum = np.cumsum(bins[d])
            cut_bin = int(np.searchsorted(cum, rest, side="right"))
            before = int(cum[cut_bin - 1]) if cut_bin else 0
        plan[d] = {"target": target, "full": int(full), "rest": int(rest), "bin": cut_bin, "before": before}
    # Pass 2: the documents of each domain's crossing bin decide where the cut falls inside it.
    crossing: dict[str, list[pl.DataFrame]] = {d: [] for d in plan}
    for df in batches():
        df = prepared(df)
        for d, p in plan.items():
            if p["bin"] >= 0:
                crossing[d].append(df.filter((pl.col("domain") == d) & (pl.col("_bin") == p["bin"]))
                                   .select("_key", "doc_id", "_tokens"))
    chosen = {d: _cut(pl.concat(crossing[d]), p["before"], p["rest"], only=p["full"] == 0) if p["bin"] >= 0 else set()
              for d, p in plan.items()}
    # Pass 3, in rounds: round c writes copy c + 1 of every document mixed in more than c times, in
    # (date, doc_id) order, so a document's copies are a round apart (see the module docstring).
    achieved = {d: [0, 0, 0] for d in plan}  # tokens, rows, unique documents
    most = {d: p["full"] + (1 if p["bin"] >= 0 else 0) for d, p in plan.items()}  # copies at most, per domain
    for c in range(max(most.values(), default=0)):
        live = [d for d in plan if most[d] > c]
        for df in batches():
            df = df.filter(pl.col("domain").is_in(live))
            if df.is_empty():
                continue
            df = prepared(df)
            copies = pl.lit(0, dtype=pl.Int64)
            for d in live:
                p = plan[d]
                extra = (pl.col("_bin") < p["bin"]) | ((pl.col("_bin") == p["bin"]) & pl.col("doc_id").is_in(list(chosen[d])))
                copies = pl.when(pl.col("domain") == d).then(p["full"] + extra.cast(pl.Int64)).otherwise(copies)
            df = df.with_columns(_copies=copies).filter(pl.col("_copies") > c)
            if c == 0:
                for d, tokens, rows, docs in (df.group_by("domain")
                                              .agg((pl.col("_tokens") * pl.col("_copies")).sum(), pl.col("_copies").sum(),
                                                   pl.len())
                                              .iter_rows()):
                    achieved[d][0] += int(tokens)
                    achieved[d][1] += int(rows)
                    achieved[d][2] += int(docs)
            if not df.is_empty():
                write(df.select(pl.exclude("_tokens", "_key", "_bin", "_copies")).sort("date", "doc_id", maintain_order=True))
    domains = {d: DomainMix(weight=round(weights[d], 6), available_tokens=avail_t[d][0],
                            available_documents=avail_t[d][1], target_tokens=p["target"],
                            achieved_tokens=achieved[d][0], documents=achieved[d][1], unique_documents=achieved[d][2],
                            repeat_factor=round(achieved[d][0] / avail_t[d][0], 4))
               for d, p in plan.items()}
    return MixReport(total_target_tokens=total, total_achieved_tokens=sum(m.achieved_tokens for m in domains.values()),
                     input_tokens=input_tokens, bytes_per_token=cfg.bytes_per_token, capped_by_max_repeats=capped,
                     domains=domains, missing=missing, unweighted=unweighted)


def mix(train: pl.DataFrame, config: MixConfig | None = None) -> tuple[pl.DataFrame, MixReport]:
    """The training split mixed to ``config.weights`` (see the module docstring) and its report: the
    one-batch case of :func:`mix_batches`."""
    parts: list[pl.DataFrame] = []
    report = mix_batches(lambda: iter([train]), parts.append, config)
    mixed = pl.concat(parts) if parts else train.clear()
    return mixed.select(train.columns), report
