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
  taken when that lands closer to it). Same input and seed, same selection, on any machine.

Domains: a weighted domain with no documents is reported as ``missing`` and its weight is
redistributed over the present domains in proportion to their weights (``on_missing="redistribute"``,
the default) or the call fails (``on_missing="error"``). A domain present in the data but absent
from the weights gets weight 0: it is left out of the mix and listed as ``unweighted``.

The mixed frame keeps the document schema; repeated documents appear once per copy, adjacent and
in (date, doc_id) order like the rest of the split (shuffling is the loader's job).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Literal

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


def _take(order: pl.DataFrame, target: int) -> pl.DataFrame:
    """A prefix of ``order`` whose tokens fit ``target``, plus the crossing row if that lands closer."""
    if target <= 0 or order.is_empty():
        return order.clear()
    cum = order["_tokens"].cum_sum()
    n = int((cum <= target).sum())
    if n < order.height:
        under = int(cum[n - 1]) if n else 0
        if int(cum[n]) - target < target - under:
            n += 1
    return order.head(n)


def mix(train: pl.DataFrame, config: MixConfig | None = None) -> tuple[pl.DataFrame, MixReport]:
    """The training split mixed to ``config.weights`` (see the module docstring) and its report."""
    cfg = config or MixConfig()
    if cfg.bytes_per_token <= 0 or cfg.max_repeats < 1:
        raise ValueError("bytes_per_token must be > 0 and max_repeats >= 1")
    if any(w < 0 for w in cfg.weights.values()) or not sum(cfg.weights.values()) > 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {cfg.weights}")
    df = train.with_columns(_tokens=estimate_tokens("text", cfg.bytes_per_token))
    avail = {r["domain"]: (int(r["tokens"]), int(r["docs"]))
             for r in df.group_by("domain").agg(tokens=pl.col("_tokens").sum(), docs=pl.len()).iter_rows(named=True)}
    missing = sorted(d for d, w in cfg.weights.items() if w > 0 and avail.get(d, (0, 0))[0] == 0)
    unweighted = sorted(d for d in avail if cfg.weights.get(d, 0) <= 0)
    if missing and cfg.on_missing == "error":
        raise ValueError(f"no training documents for weighted domain(s) {missing}; "
                         "render them or set their weight to 0")
    present = {d: w for d, w in cfg.weights.items() if w > 0 and d not in missing}
    if not present:
        raise ValueError(f"none of the weighted domains {sorted(cfg.weights)} has training documents")
    norm = sum(present.values())
    weights = {d: w / norm for d, w in present.items()}

    input_tokens = sum(avail[d][0] for d in weights) + sum(avail[d][0] for d in unweighted)
    capped = False
    if cfg.total_tokens is not None:
        total = int(cfg.total_tokens)
    else:
        cap = min(cfg.max_repeats * avail[d][0] / w for d, w in weights.items())
        total = int(min(input_tokens, round(cap)))
        capped = cap < input_tokens

    parts, domains = [], {}
    for d, w in sorted(weights.items()):
        target = round(w * total)
        docs = df.filter(pl.col("domain") == d)
        a_tokens, a_docs = avail[d]
        full, rest = divmod(target, a_tokens)
        order = docs.with_columns(_key=pl.Series([_stable_hash(i, cfg.seed) for i in docs["doc_id"]], dtype=pl.UInt64))
        order = order.sort("_key", "doc_id")
        chosen = [docs] * int(full) + [_take(order, int(rest)).drop("_key")]
        picked = pl.concat(chosen)
        achieved = int(picked["_tokens"].sum())
        domains[d] = DomainMix(weight=round(w, 6), available_tokens=a_tokens, available_documents=a_docs,
                               target_tokens=target, achieved_tokens=achieved, documents=picked.height,
                               unique_documents=picked["doc_id"].n_unique(),
                               repeat_factor=round(achieved / a_tokens, 4))
        parts.append(picked)
    mixed = pl.concat(parts).sort("date", "doc_id", maintain_order=True).drop("_tokens")
    report = MixReport(total_target_tokens=total, total_achieved_tokens=sum(m.achieved_tokens for m in domains.values()),
                       input_tokens=input_tokens, bytes_per_token=cfg.bytes_per_token, capped_by_max_repeats=capped,
                       domains=domains, missing=missing, unweighted=unweighted)
    return mixed.select(train.columns), report
