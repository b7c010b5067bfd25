"""Near-duplicate detection: MinHash signatures over word shingles, banded LSH, verified pairs.

A document is lower-cased, split into words (letters and digits) and turned into the set of its
``shingle_size``-word shingles (5 by default; a document shorter than that is one shingle). Two
documents are near-duplicates when the Jaccard similarity of their shingle sets, estimated from
``num_perm`` MinHash permutations, is at least ``threshold`` (0.8). LSH (``datasketch.MinHashLSH``)
finds candidate pairs, banded for recall (:func:`lsh_params`: a pair at the threshold is proposed
with probability >= 0.95); every candidate is then checked against the estimate, so LSH only decides
what is compared, never what is dropped. Shingles are hashed with CRC-32 (fast, deterministic
across processes and machines); the MinHash scheme mixes those values before permuting them.

Policy (:func:`drop_near_duplicates`), after exact dedup and the temporal split:
- validation is the reference and stays intact: it is indexed first and never loses a document;
- a training document near-identical to a validation document is dropped from training
  (``near_duplicate_val``), whatever its source: a 10-K/A that repeats a validation 10-K, a wire story
  syndicated by two feeds, the same article under two URLs;
- among training documents, the earliest (by date, then doc_id) of each near-duplicate group is kept
  and the later ones are dropped (``near_duplicate_train``), as exact dedup keeps the earliest copy;
- counts are reported per domain of the dropped document.

The API streams: :class:`NearDupIndex` takes documents in batches (``add``), answers queries
(``query``), and :meth:`NearDupIndex.filter_batch` does query-then-insert for one batch in order, so
a corpus can be fed chunk by chunk (one Parquet row group or one partition at a time) without
materialising it. The index itself is in memory (about ``num_perm`` x 8 bytes per document plus the
LSH buckets): right for the demo and for millions of documents, not for the 100B-token corpus.

At that scale the same interface (reference set, ``threshold``, ``num_perm``, shingle size, earliest
kept, per-domain counts) should be backed by datatrove's staged MinHash dedup: ``MinhashDedupSignature``
(signatures per task, sharded), ``MinhashDedupBuckets`` (one task per band), ``MinhashDedupCluster``
(union-find over the bucket matches) and ``MinhashDedupFilter`` (drop all but one per cluster), each
stage a set of independent file-based tasks that map onto partitioned Dagster assets. The
"validation wins" rule maps onto datatrove's index-based filtering: build a MinHash index from the
validation shards first (``MinhashBuildIndex``) and pass it to the bucket stage (``index_folder``)
so matches against it drop the training side (``only_dedup_in_index=False`` to also dedup training
against itself). Two differences to keep in mind: datatrove's buckets match on an identical band,
without the Jaccard check done here, and its clusters keep the first document of the input order, so
"earliest kept" needs the training shards written in (date, doc_id) order. datatrove is not a
dependency yet (DESIGN.md: datatrove 0.10.1 + xxhash install with the project's pins).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class NearDupConfig:
    threshold: float = 0.8  # Jaccard similarity of shingle sets at or above which two documents are near-duplicates
    num_perm: int = 128  # MinHash permutations: more = a tighter estimate, slower and bigger
    shingle_size: int = 5  # words per shingle
    seed: int = 1  # MinHash permutation seed: signatures are comparable only under the same seed
    batch_size: int = 2_000  # documents signed per batch in drop_near_duplicates


def shingles(text: str, size: int = 5) -> set[bytes]:
    """Word ``size``-grams of the lower-cased text, as UTF-8 bytes."""
    words = _WORD.findall(text.lower())
    if len(words) <= size:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i:i + size]).encode() for i in range(len(words) - size + 1)}


def lsh_params(threshold: float, num_perm: int, recall: float = 0.95) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest spurious candidates) that still propose a pair at
    the threshold with probability >= ``recall``. datasketch's own optimum weighs misses and spurious
    candidates equally and finds only ~40% of pairs at exactly J=0.8 with 128 permutations; here a
    spurious candidate costs one signature comparison, a miss costs a duplicate, so recall wins."""
    if num_perm < 4:
        raise ValueError(f"num_perm must be at least 4, got {num_perm}")
    for rows in range(num_perm // 2, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold ** rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


def _crc32(b: bytes) -> int:
    return zlib.crc32(b)


class NearDupIndex:
    """An in-memory MinHash LSH index of documents by key; add in batches, query by text."""

    def __init__(self, config: NearDupConfig | None = None):
        from datasketch import MinHash, MinHashLSH

        self.config = cfg = config or NearDupConfig()
        if not 0 < cfg.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {cfg.threshold}")
        self._lsh = MinHashLSH(num_perm=cfg.num_perm, params=lsh_params(cfg.threshold, cfg.num_perm))
        self._proto = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=_crc32)
        self._signatures: dict[object, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._signatures)

    def __contains__(self, key) -> bool:
        return key in self._signatures

    def signature(self, text: str):
        """The MinHash of ``text``'s shingles (an empty text has the all-max signature)."""
        m = self._proto.copy()
        m.update_batch(list(shingles(text, self.config.shingle_size)))
        return m

    def signatures(self, texts: Iterable[str]) -> list:
        return [self.signature(t) for t in texts]

    def add(self, keys: Sequence, texts: Sequence[str] | None = None, *, signatures: Sequence | None = None) -> None:
        """Insert a batch of documents (``texts`` or precomputed ``signatures``); keys must be new."""
        sigs = signatures if signatures is not None else self.signatures(texts or [])
        if len(sigs) != len(keys):
            raise ValueError(f"{len(keys)} keys for {len(sigs)} documents")
        with self._lsh.insertion_session(buffer_size=max(1, len(keys))) as session:
            for key, sig in zip(keys, sigs):
                if key in self._signatures:
                    raise ValueError(f"key already indexed: {key!r}")
                session.insert(key, sig, check_duplication=False)
                self._signatures[key] = sig.hashvalues

    def _matches(self, sig) -> list:
        """Indexed keys whose estimated Jaccard with ``sig`` reaches the threshold, sorted by similarity."""
        if not len(self._signatures):
            return []
        found = []
        for key in self._lsh.query(sig):
            similarity = float(np.count_nonzero(self._signatures[key] == sig.hashvalues)) / self.config.num_perm
            if similarity >= self.config.threshold:
                found.append((-similarity, str(key), key))
        return [key for *_, key in sorted(found)]

    def query(self, text: str | None = None, *, signature=None) -> list:
        """Keys of indexed near-duplicates of ``text`` (most similar first)."""
        return self._matches(signature if signature is not None else self.signature(text or ""))

    def query_batch(self, texts: Sequence[str]) -> list[list]:
        return [self._matches(s) for s in self.signatures(texts)]

    def filter_batch(self, keys: Sequence, texts: Sequence[str]) -> list[list]:
        """In order: query each document, insert it if it matched nothing. Returns the matches per
        document (empty = kept and now indexed), so later documents of the same batch see earlier ones."""
        out = []
        for key, sig in zip(keys, self.signatures(texts)):
            hits = self._matches(sig)
            if not hits:
                self.add([key], signatures=[sig])
            out.append(hits)
        return out


@dataclass
class NearDupReport:
    near_duplicate_val: int = 0  # training documents dropped as near-duplicates of validation documents
    near_duplicate_train: int = 0  # training documents dropped as near-duplicates of earlier training documents
    by_domain: dict[str, dict[str, int]] | None = None  # domain -> {"near_duplicate_val": n, "near_duplicate_train": m}
    examples: list[dict] | None = None  # a few (dropped, kept_because_of) doc_id pairs, for inspection

    def to_dict(self) -> dict:
        return {"near_duplicate_val": self.near_duplicate_val, "near_duplicate_train": self.near_duplicate_train,
                "by_domain": self.by_domain or {}, "examples": self.examples or []}


def drop_near_duplicates(train: pl.DataFrame, val: pl.DataFrame, config: NearDupConfig | None = None,
                         *, max_examples: int = 5) -> tuple[pl.DataFrame, NearDupReport]:
    """Drop training documents that near-duplicate a validation document or an earlier training
    document (see the module docstring). Validation is returned untouched by the caller; the kept
    training rows keep their order."""
    cfg = config or NearDupConfig()
    index = NearDupIndex(cfg)
    val_keys = [("val", d) for d in val["doc_id"].to_list()]
    texts = val["text"].to_list()
    for start in range(0, len(val_keys), cfg.batch_size):
        stop = start + cfg.batch_size
        index.add(val_keys[start:stop], texts[start:stop])

    order = train.with_row_index("_row").sort("date", "doc_id")
    rows, ids, texts = order["_row"].to_list(), order["doc_id"].to_list(), order["text"].to_list()
    domains = order["domain"].to_list()
    dropped: dict[int, str] = {}
    examples: list[dict] = []
    for start in range(0, len(rows), cfg.batch_size):
        stop = start + cfg.batch_size
        hits = index.filter_batch([("train", d) for d in ids[start:stop]], texts[start:stop])
        for offset, found in enumerate(hits):
            if not found:
                continue
            k = start + offset
            side, match = next((f for f in found if f[0] == "val"), found[0])  # a validation match decides
            dropped[rows[k]] = f"near_duplicate_{side}"
            if len(examples) < max_examples:
                examples.append({"dropped": ids[k], "domain": domains[k], "matches": match, "matched_split": side})
    by_domain: dict[str, dict[str, int]] = {}
    for r, d in zip(rows, domains):
        if r in dropped:
            counts = by_domain.setdefault(d, {"near_duplicate_val": 0, "near_duplicate_train": 0})
            counts[dropped[r]] += 1
    keep = pl.Series([r not in dropped for r in range(train.height)], dtype=pl.Boolean)
    report = NearDupReport(
        near_duplicate_val=sum(v == "near_duplicate_val" for v in dropped.values()),
        near_duplicate_train=sum(v == "near_duplicate_train" for v in dropped.values()),
        by_domain=dict(sorted(by_domain.items())), examples=examples)
    return train.filter(keep), report
