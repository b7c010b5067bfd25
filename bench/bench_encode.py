"""Shard building versus the bare encoder, on the same text, with the same number of processes.

    .venv/bin/python bench/bench_encode.py [--sizes 10 40] [--workers N] [--partition-mb 2]

Renders the demo corpus from the sample sources, repeats it to each size (copies, re-dated so the
file stays sorted by date), trains the demo tokenizer once, and for each size runs in fresh
processes (so peak memory is per path):

(a) bare: N worker processes each read their corpus partition and run sentencepiece on it, nothing else;
(b) shard path: `sharding.build_shards` on the same partitions with N workers (read, encode, append
    <|endoftext|>, cut shards at document boundaries, write them atomically) — what token_shards runs.

Prints MB/s for both, the ratio shard/bare (target >= 0.9) and each path's peak RSS (parent and
workers) at both sizes (target: independent of corpus size). Best of --rounds per cell.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl


def corpus(repeat: int) -> pl.DataFrame:
    from tenali_pipeline.sources import sample
    from tenali_pipeline.technicals.indicators import add_indicators
    from tenali_pipeline.text import render

    market = sample.SampleMarketClient().fetch()
    docs = pl.concat([
        render.render_market(market),
        render.render_technical(add_indicators(market, by="ticker")),
        render.render_macro(sample.SampleMacroClient().fetch()),
        render.render_filings(sample.SampleFilingsClient().fetch()),
        render.render_news(sample.SampleNewsClient().fetch()),
        render.render_documents(sample.SampleDocumentsClient().fetch()),
    ]).select("date", "domain", "text")
    # Each copy is shifted by whole decades so the concatenation is a longer, still date-sorted corpus.
    copies = [docs.with_columns(pl.col("date").dt.offset_by(f"{30 * i}y")) for i in range(repeat)]
    return pl.concat(copies).sort("date", maintain_order=True)


def _bare_worker(part, model_bytes: bytes) -> int:
    import sentencepiece as spm

    from tenali_pipeline.sharding import _scan

    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    rows = _scan(part.path, part.domain).slice(part.offset, part.rows).select("text").collect()
    n = 0
    for batch in rows.iter_slices(2048):
        n += sum(len(x) for x in sp.encode(batch["text"].to_list(), num_threads=1))
    return n


def child(args) -> None:
    """One measurement in this fresh process; prints JSON."""
    from tenali_pipeline.sharding import build_shards, plan_partitions

    model_bytes = Path(args.model).read_bytes()
    parts = plan_partitions(args.parquet, "train", int(args.partition_mb * (1 << 20)))
    t = time.perf_counter()
    if args.child == "bare":
        with cf.ProcessPoolExecutor(args.workers, mp_context=mp.get_context("spawn")) as pool:
            list(pool.map(_bare_worker, parts, [model_bytes] * len(parts)))
    else:
        with tempfile.TemporaryDirectory() as out:
            build_shards(parts, model_bytes, hashlib.sha256(model_bytes).hexdigest(), Path(out), 1 << 20,
                         workers=args.workers)
    seconds = time.perf_counter() - t
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"seconds": seconds, "peak_rss_mib": rss / 1024, "partitions": len(parts)}))


def measure(path: str, model: str, mode: str, workers: int, partition_mb: float) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--parquet", path, "--model", model,
                          "--workers", str(workers), "--partition-mb", str(partition_mb)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 40], help="copies of the demo corpus")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--partition-mb", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", choices=["bare", "shard"])
    ap.add_argument("--parquet")
    ap.add_argument("--model")
    args = ap.parse_args()
    if args.child:
        return child(args)

    from tenali_pipeline.tokenization import TokenizerConfig, train_tokenizer

    print(f"{args.workers} worker processes; partitions of {args.partition_mb} MB; best of {args.rounds}")
    print("| corpus | MB | bare MB/s | shard MB/s | ratio shard/bare | bare peak RSS | shard peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "tok.model"
        for size in args.sizes:
            docs = corpus(size)
            if not model_path.exists():
                model_path.write_bytes(train_tokenizer(docs["text"].head(3000).to_list(), TokenizerConfig(vocab_size=4096)))
            path = Path(tmp) / f"corpus_{size}.parquet"
            docs.write_parquet(path, row_group_size=4096)
            mb = docs["text"].str.len_bytes().sum() / 1e6
            del docs
            runs = {m: [measure(str(path), str(model_path), m, args.workers, args.partition_mb) for _ in range(args.rounds)]
                    for m in ("bare", "shard")}
            best = {m: min(r["seconds"] for r in rs) for m, rs in runs.items()}
            rss = {m: max(r["peak_rss_mib"] for r in rs) for m, rs in runs.items()}
            print(f"| {size}x demo ({runs['shard'][0]['partitions']} partitions) | {mb:.1f} | {mb / best['bare']:.1f} | "
                  f"{mb / best['shard']:.1f} | {best['bare'] / best['shard']:.2f} | {rss['bare']:.0f} MiB | "
                  f"{rss['shard']:.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
