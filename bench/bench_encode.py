"""Shard building versus the bare encoder, on the same text in the same run.

    .venv/bin/python bench/bench_encode.py [--repeat 20]

Renders the demo corpus from the sample sources, trains the demo tokenizer, then times
(a) sentencepiece's batch encode alone and (b) the full shard path (`tokenization.encode_split`:
encode, append <|endoftext|>, cut shards at document boundaries, write them atomically).
Prints both and the ratio b/a: the overhead the shard writer adds on top of the encoder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from tenali_pipeline.sources import sample
from tenali_pipeline.technicals.indicators import add_indicators
from tenali_pipeline.text import render
from tenali_pipeline.tokenization import TokenizerConfig, encode_split, load_tokenizer, train_tokenizer


def corpus(repeat: int) -> pl.DataFrame:
    market = sample.SampleMarketClient().fetch()
    docs = pl.concat([
        render.render_market(market),
        render.render_technical(add_indicators(market, by="ticker")),
        render.render_macro(sample.SampleMacroClient().fetch()),
        render.render_filings(sample.SampleFilingsClient().fetch()),
        render.render_news(sample.SampleNewsClient().fetch()),
        render.render_documents(sample.SampleDocumentsClient().fetch()),
    ])
    return pl.concat([docs] * repeat)


def best_of(fn, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20, help="copies of the demo corpus to encode")
    args = ap.parse_args()
    docs = corpus(args.repeat)
    texts = docs["text"].to_list()
    mb = sum(len(t.encode()) for t in texts) / 1e6
    sp = load_tokenizer(train_tokenizer(docs["text"].head(3000).to_list(), TokenizerConfig(vocab_size=4096)))
    threads = os.cpu_count() or 1
    bare = best_of(lambda: sp.encode(texts, num_threads=threads))
    with tempfile.TemporaryDirectory() as tmp:
        full = best_of(lambda: encode_split(sp, docs, Path(tmp), "train", 1 << 20))
    print(f"corpus: {len(texts):,} documents, {mb:.1f} MB, {threads} threads")
    print(f"bare sentencepiece encode : {bare:.3f} s  ({mb / bare:.1f} MB/s)")
    print(f"shard path (encode_split) : {full:.3f} s  ({mb / full:.1f} MB/s)")
    print(f"ratio shard/bare          : {full / bare:.2f}")


if __name__ == "__main__":
    main()
