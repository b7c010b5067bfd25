"""Near-duplicate detection: MinHash signatures over word shingles, banded LSH, verified pairs.

A document is lower-cased, split into words (letters and digits) and turned into the set of its
``shingle_size``-word shingles (5 by default; a document shorter than that is one shingle). Two
documents are near-duplicates when the Jaccard similarity of their shingle sets, estimated from
``num_perm`` MinHash permutations, is at least ``threshold`` (0.8). Signatures are datasketch's
(``MinHash``, affine32 scheme, its permutations for the seed), computed for a whole batch at once in
numpy over shingle hashes from polars (:func:`shingle_hashes`): 2x to 3x the documents per second of
``MinHash.update_batch`` per document (bench/bench_corpus.py prints both), and tested equal to it.
LSH bands propose candidate pairs: two documents are candidates when all ``rows`` values of one of their ``bands`` bands agree
(:func:`lsh_params`: a pair at the threshold is proposed with probability >= 0.95). Every candidate is
then checked against the estimate, so the bands only decide what is compared, never what is dropped.

Policy (:func:`decide`), after exact dedup and the temporal split:
- validation is the reference and stays intact: it never loses a document;
- a training document near-identical to a validation document is dropped from training
  (``near_duplicate_val``), whatever its source: a 10-K/A that repeats a validation 10-K, a wire story
  syndicated by two feeds, the same article under two URLs;
- training documents are taken in (date, doc_id) order and one that near-duplicates an earlier *kept*
  training document is dropped (``near_duplicate_train``), as exact dedup keeps the earliest copy;
- counts are reported per domain of the dropped document.

Staged, so memory does not grow with the corpus (text/stream.py runs the stages over files): documents
are signed in batches and their band keys written to hash buckets; each bucket yields its candidate
pairs on its own (:func:`candidates`); candidates are verified against the stored signatures; and
:func:`decide` runs over the verified pairs only, so what it holds grows with the number of
duplicates, not documents. A band key shared by more than ``LISTED_GROUP`` documents (a template:
thousands of filings or wire stories alike) is not listed as pairs, n^2/2 of them; :func:`decide`
gets its members and their signatures instead and compares each with the key's kept documents.
:func:`drop_near_duplicates` composes the same functions in memory.

Why not datatrove's MinHash stages, the usual tool at this scale: its buckets match on one identical
band without a similarity check (a false candidate is a dropped document), and its clustering keeps
the root of the biggest union-find set, not the earliest document, so neither "verified" nor "earliest
kept" would hold. The stage boundaries here are the same (signatures, buckets, clusters, filter), with
polars doing the per-bucket group-by and joins in native code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_MIX = np.uint64(0x9E3779B97F4A7C15)  # 64-bit golden-ratio multiplier: folds words into a shingle, values into a band key
_CHUNK = 8_192  # shingles permuted at once: (8,192 x num_perm) uint32, 4 MB at 128 permutations


@dataclass(frozen=True)
class NearDupConfig:
    threshold: float = 0.8  # Jaccard similarity of shingle sets at or above which two documents are near-duplicates
    num_perm: int = 128  # MinHash permutations: more = a tighter estimate, slower and bigger
    shingle_size: int = 5  # words per shingle
    seed: int = 1  # MinHash permutation seed: signatures are comparable only under the same seed
    batch_size: int = 2_000  # documents signed per batch in drop_near_duplicates


_WORD_HASH_SEED = 7  # polars' string hash is stable for a given polars version and seed: enough within one build


def shingle_hashes(texts: Sequence[str], size: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Each text's word ``size``-grams (words: runs of letters and digits, lower-cased), hashed to 32
    bits: (hashes, per-text counts). A text of ``size`` words or fewer is one shingle; one without
    words has none. A repeated shingle is hashed each time it occurs (MinHash takes minima, so the
    set and the sequence give the same signature). Words are hashed by polars, shingles by folding
    their words' 64-bit hashes in numpy: no Python loop over words."""
    words = pl.Series(list(texts), dtype=pl.String).str.to_lowercase().str.extract_all(_WORD.pattern)
    n = words.list.len().fill_null(0).to_numpy().astype(np.int64)
    w = words.explode().drop_nulls().hash(seed=_WORD_HASH_SEED).to_numpy()
    starts = np.cumsum(n) - n
    m = np.where(n >= size, n - size + 1, (n > 0).astype(np.int64))
    out = np.empty(int(m.sum()), dtype=np.uint64)
    long = n >= size
    if long.any() and len(w) >= size:
        windows = w[: len(w) - size + 1].copy()
        with np.errstate(over="ignore"):
            for j in range(1, size):
                windows = (windows ^ w[j: len(w) - size + 1 + j]) * _MIX
        # window positions of the long texts: start .. start + n - size
        pos = np.repeat(starts[long] - np.cumsum(m[long]) + m[long], m[long]) + np.arange(int(m[long].sum()))
        out_pos = np.repeat(long, m)
        out[out_pos] = windows[pos]
    ends = np.cumsum(m)
    for k in np.flatnonzero((n > 0) & ~long):  # short texts: their words are the one shingle
        h = w[starts[k]]
        with np.errstate(over="ignore"):
            for j in range(1, int(n[k])):
                h = (h ^ w[starts[k] + j]) * _MIX
        out[int(ends[k]) - 1] = h
    return ((out >> np.uint64(32)) ^ (out & np.uint64(0xFFFFFFFF))).astype(np.uint32), m


def _fmix32(h: np.ndarray) -> np.ndarray:
    """The MurmurHash3 finalizer on uint32 (what datasketch's affine32 scheme applies before permuting)."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


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


class MinHasher:
    """Signatures and LSH band keys for batches of texts under one NearDupConfig."""

    def __init__(self, config: NearDupConfig | None = None):
        from datasketch import MinHash

        self.config = cfg = config or NearDupConfig()
        if not 0 < cfg.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {cfg.threshold}")
        self.bands, self.rows = lsh_params(cfg.threshold, cfg.num_perm)
        # datasketch's affine32 permutations (odd a, any b; h -> a * fmix32(h) + b mod 2^32) for this seed
        self._a, self._b = (p.astype(np.uint32) for p in MinHash(num_perm=cfg.num_perm, seed=cfg.seed).permutations)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(documents, num_perm) uint32 MinHash values, equal to datasketch's ``MinHash.update_batch``
        over each text's :func:`shingle_hashes`, computed for the whole batch at once. A text without
        words gets the all-max signature."""
        hv, counts = shingle_hashes(texts, self.config.shingle_size)
        sig = np.full((len(counts), self.config.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        doc = np.repeat(np.arange(len(counts)), counts)
        hv = _fmix32(hv)
        for lo in range(0, len(hv), _CHUNK):
            phv = hv[lo:lo + _CHUNK, None] * self._a[None, :] + self._b[None, :]
            docs, first = np.unique(doc[lo:lo + _CHUNK], return_index=True)
            sig[docs] = np.minimum(sig[docs], np.minimum.reduceat(phv, first, axis=0))
        return sig

    def band_keys(self, sigs: np.ndarray) -> np.ndarray:
        """(documents, bands) uint64: one key per band, equal when the band's values are equal (a
        different band whose key collides is caught by the verification)."""
        s = sigs[:, : self.bands * self.rows].reshape(len(sigs), self.bands, self.rows).astype(np.uint64)
        key = np.zeros(s.shape[:2], dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(self.rows):
                key = (key ^ s[:, :, j]) * _MIX + np.uint64(j + 1)
        return key

    def band_rows(self, ids: np.ndarray, sigs: np.ndarray) -> pl.DataFrame:
        """Long form (band, key, id): what :func:`candidate_pairs` groups."""
        keys = self.band_keys(sigs)
        return pl.DataFrame({"band": np.tile(np.arange(self.bands, dtype=np.uint16), len(ids)),
                             "key": keys.reshape(-1), "id": np.repeat(np.asarray(ids, dtype=np.int64), self.bands)})


LISTED_GROUP = 50  # documents sharing one band key up to which its candidate pairs are listed


def _groups(band_rows: pl.DataFrame) -> pl.DataFrame:
    return (band_rows.group_by("band", "key").agg(pl.col("id").unique().sort())
            .filter(pl.col("id").list.len() > 1))


def _pairs(groups: pl.DataFrame) -> pl.DataFrame:
    return (groups.select(a=pl.col("id"), b=pl.col("id")).explode("a").explode("b")
            .filter(pl.col("a") < pl.col("b")).unique().sort("a", "b"))


def candidate_pairs(band_rows: pl.DataFrame) -> pl.DataFrame:
    """Unique (a, b) id pairs, a < b, that share a band key."""
    return _pairs(_groups(band_rows))


def candidates(band_rows: pl.DataFrame, listed: int = LISTED_GROUP) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(pairs, large): the candidate pairs of band keys shared by at most ``listed`` documents, and the
    (band, key, id) members of the keys shared by more. A key shared by n documents has n^2/2 pairs,
    so thousands of filings or wire stories on one template would list millions; :func:`decide`
    instead compares each member of a large key with that key's kept documents only (the same drops)."""
    groups = _groups(band_rows)
    small = pl.col("id").list.len() <= listed
    large = groups.filter(~small).explode("id").select("band", "key", "id")
    return _pairs(groups.filter(small)), large.with_columns(pl.col("band").cast(pl.UInt16), pl.col("id").cast(pl.Int64))


def similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity per row: the share of equal MinHash values."""
    return (np.asarray(sig_a) == np.asarray(sig_b)).mean(axis=1)


def _sign(hasher: MinHasher, texts: Sequence[str]) -> np.ndarray:
    n = hasher.config.batch_size
    sigs = [hasher.signatures(texts[i:i + n]) for i in range(0, len(texts), n)]
    return np.concatenate(sigs) if sigs else np.zeros((0, hasher.config.num_perm), dtype=np.uint32)


def _verified(pairs: pl.DataFrame, ids: np.ndarray, sigs: np.ndarray, threshold: float) -> pl.DataFrame:
    """``pairs`` (a, b) with their similarity, those at or above ``threshold``; ``ids`` ascending."""
    a = np.searchsorted(ids, pairs["a"].to_numpy())
    b = np.searchsorted(ids, pairs["b"].to_numpy())
    sim = similarity(sigs[a], sigs[b]) if len(a) else np.zeros(0)
    return pairs.with_columns(similarity=pl.Series(sim, dtype=pl.Float64)).filter(pl.col("similarity") >= threshold)


def near_duplicate_pairs(ids, texts: Sequence[str], config: NearDupConfig | None = None) -> pl.DataFrame:
    """(a, b, similarity) for every verified near-duplicate pair among ``texts`` (ids are int64), in
    memory, signed in batches of ``config.batch_size``. Lists every pair, so a template shared by n
    documents costs n^2: :func:`drop_near_duplicates` does not need the list."""
    hasher = MinHasher(config)
    ids = np.asarray(ids, dtype=np.int64)
    sigs = _sign(hasher, texts)
    order = np.argsort(ids, kind="stable")
    return _verified(candidate_pairs(hasher.band_rows(ids, sigs)), ids[order], sigs[order], hasher.config.threshold)


@dataclass
class NearDupReport:
    near_duplicate_val: int = 0  # training documents dropped as near-duplicates of validation documents
    near_duplicate_train: int = 0  # training documents dropped as near-duplicates of earlier training documents
    by_domain: dict[str, dict[str, int]] | None = None  # domain -> {"near_duplicate_val": n, "near_duplicate_train": m}
    examples: list[dict] | None = None  # a few (dropped, kept_because_of) doc_id pairs, for inspection

    def to_dict(self) -> dict:
        return {"near_duplicate_val": self.near_duplicate_val, "near_duplicate_train": self.near_duplicate_train,
                "by_domain": self.by_domain or {}, "examples": self.examples or []}


_SCAN = 64  # signatures compared at once when looking for any match among a large key's documents


class _LargeKeys:
    """The documents of large band keys (:func:`candidates`), for :func:`decide`: their signatures, each
    key's validation documents and kept training documents so far (as rows of the signature matrix)."""

    def __init__(self, groups: pl.DataFrame, signatures: pl.DataFrame, threshold: float):
        sig = signatures.unique("id").sort("id")
        self.ids = sig["id"].to_numpy()
        self.sigs = sig["sig"].to_numpy()
        self.threshold = threshold
        g = groups.with_columns(g=pl.struct("band", "key").rank("dense").cast(pl.Int64) - 1)
        self.rows = np.searchsorted(self.ids, g["id"].to_numpy())
        self.gid = g["g"].to_numpy()
        by_doc = np.argsort(self.rows, kind="stable")
        self.doc_rows, self.doc_gids = self.rows[by_doc], self.gid[by_doc]
        self.kept: list[list[int]] = [[] for _ in range(int(self.gid.max()) + 1 if len(self.gid) else 0)]
        self.val: list[np.ndarray] = []

    def set_val(self, is_val: np.ndarray) -> None:
        """``is_val`` per signature row."""
        by_group = np.argsort(self.gid, kind="stable")
        rows, gids = self.rows[by_group], self.gid[by_group]
        rows_val = is_val[rows]
        bounds = np.searchsorted(gids, np.arange(len(self.kept) + 1))
        self.val = [rows[lo:hi][rows_val[lo:hi]] for lo, hi in zip(bounds[:-1], bounds[1:])]

    def keys_of(self, i: int) -> tuple[int, np.ndarray]:
        """(signature row, the large keys) of id ``i``; row -1 when it is in none."""
        r = int(np.searchsorted(self.ids, i))
        if r == len(self.ids) or self.ids[r] != i:
            return -1, np.zeros(0, dtype=np.int64)
        lo, hi = np.searchsorted(self.doc_rows, [r, r + 1])
        return r, self.doc_gids[lo:hi]

    def matching(self, r: int, lists: list[np.ndarray], first: bool) -> list[tuple[float, int]]:
        """(similarity, id) of the rows in ``lists`` that near-duplicate row ``r``, each row compared
        once (a document shares most of its large keys with the same documents); only the first
        found when ``first``."""
        out: list[tuple[float, int]] = []
        seen = np.zeros(0, dtype=np.int64)
        for rows in lists:
            rows = rows[~np.isin(rows, seen)] if len(seen) else rows
            seen = np.concatenate([seen, rows])
            for lo in range(0, len(rows), _SCAN):
                chunk = rows[lo:lo + _SCAN]
                sim = similarity(self.sigs[chunk], self.sigs[r][None, :])
                hit = sim >= self.threshold
                out += [(float(x), int(self.ids[c])) for x, c in zip(sim[hit], chunk[hit])]
                if out and first:
                    return out[:1]
        return out


def decide(pairs: pl.DataFrame, docs: pl.DataFrame, *, groups: pl.DataFrame | None = None,
           signatures: pl.DataFrame | None = None, threshold: float = NearDupConfig.threshold,
           max_examples: int = 5) -> tuple[dict[int, str], NearDupReport]:
    """Which training documents to drop, from the verified ``pairs`` (a, b, similarity), the members
    (band, key, id) of large band keys (``groups``, with their ``signatures`` (id, sig); see
    :func:`candidates`) and ``docs`` (id, doc_id, date, domain, is_val) of every id in them. Returns
    {id: "near_duplicate_val" | "near_duplicate_train"} and the report (see the module docstring for
    the policy). A document of a large key is compared with that key's validation documents and the
    key's training documents kept before it, until one matches: the same decision as listing every
    pair (a dropped document can drop nothing), at a cost that grows with the key's kept documents,
    not its size."""
    info = {r[0]: r[1:] for r in docs.select("id", "doc_id", "date", "domain", "is_val").iter_rows()}
    matches: dict[int, list[tuple[float, int]]] = {}
    for a, b, sim in pairs.select("a", "b", "similarity").iter_rows():
        matches.setdefault(a, []).append((sim, b))
        matches.setdefault(b, []).append((sim, a))
    large = None
    todo = set(matches)
    if groups is not None and groups.height:
        large = _LargeKeys(groups, signatures, threshold)
        large.set_val(np.array([info[int(i)][3] for i in large.ids], dtype=bool))
        todo.update(int(i) for i in large.ids)
    order = sorted((i for i in todo if not info[i][3]), key=lambda i: (info[i][1], info[i][0]))
    dropped: dict[int, str] = {}
    examples: list[dict] = []
    by_domain: dict[str, dict[str, int]] = {}
    for i in order:
        doc_id, date, domain, _ = info[i]
        r, keys = large.keys_of(i) if large is not None else (-1, ())
        explicit = matches.get(i, [])

        def strictly_before(kept: list[int]) -> list[int]:
            """A key's kept rows dated before this document: they are in (date, doc_id) order, so
            only the tail can tie with it."""
            n = len(kept)
            while n and (info[int(large.ids[kept[n - 1]])][1], info[int(large.ids[kept[n - 1]])][0]) == (date, doc_id):
                n -= 1
            return kept[:n]

        def found(full: bool) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
            """(validation, earlier kept training) matches: all of them when ``full``, else enough to decide."""
            val = [m for m in explicit if info[m[1]][3]]
            if len(keys) and (full or not val):
                val += large.matching(r, [large.val[g] for g in keys], first=not full)
            earlier = [m for m in explicit if not info[m[1]][3] and m[1] not in dropped
                       and (info[m[1]][1], info[m[1]][0]) < (date, doc_id)]
            if len(keys) and not val and (full or not earlier):
                earlier += large.matching(r, [np.array(strictly_before(large.kept[g]), dtype=np.int64) for g in keys],
                                          first=not full)
            return val, earlier

        val, earlier = found(full=False)
        if not val and not earlier:
            for g in keys:
                large.kept[g].append(r)
            continue
        reason = "near_duplicate_val" if val else "near_duplicate_train"
        dropped[i] = reason
        counts = by_domain.setdefault(domain, {"near_duplicate_val": 0, "near_duplicate_train": 0})
        counts[reason] += 1
        if len(examples) < max_examples:
            val, earlier = found(full=True)
            ranked = sorted(dict((j, m) for m, j in (val or earlier)).items(), key=lambda jm: (-jm[1], info[jm[0]][0]))
            examples.append({"dropped": doc_id, "domain": domain, "matches": info[ranked[0][0]][0],
                             "matched_split": "val" if val else "train"})
    report = NearDupReport(
        near_duplicate_val=sum(v == "near_duplicate_val" for v in dropped.values()),
        near_duplicate_train=sum(v == "near_duplicate_train" for v in dropped.values()),
        by_domain=dict(sorted(by_domain.items())), examples=examples)
    return dropped, report


def drop_near_duplicates(train: pl.DataFrame, val: pl.DataFrame, config: NearDupConfig | None = None,
                         *, max_examples: int = 5) -> tuple[pl.DataFrame, NearDupReport]:
    """Drop training documents that near-duplicate a validation document or an earlier kept training
    document, in memory (the stages of text/stream.py, without files). Validation is only read; the
    kept training rows keep their order."""
    both = pl.concat([val.with_columns(is_val=pl.lit(True)), train.with_columns(is_val=pl.lit(False))])
    both = both.with_row_index("id").with_columns(pl.col("id").cast(pl.Int64))
    hasher = MinHasher(config)
    ids = both["id"].to_numpy()  # 0, 1, ...: ascending
    sigs = _sign(hasher, both["text"].to_list())
    pairs, large = candidates(hasher.band_rows(ids, sigs))
    members = np.unique(large["id"].to_numpy())
    dropped, report = decide(_verified(pairs, ids, sigs, hasher.config.threshold), both, groups=large,
                             signatures=pl.DataFrame({"id": members, "sig": sigs[members]}),
                             threshold=hasher.config.threshold, max_examples=max_examples)
    keep = ~both.filter(~pl.col("is_val"))["id"].is_in(list(dropped))
    return train.filter(keep), report
