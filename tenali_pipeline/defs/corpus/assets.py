"""Corpus: render every source into documents, then filter, deduplicate and split by time."""

import datetime as dt

import dagster as dg
import polars as pl

from ...resources import CorpusResource, LakeResource
from ...text import render
from ...text.dedup import NearDupConfig
from ...text.mixing import MixConfig
from ...text.stream import CorpusKeys, StreamConfig, build_corpus_stream
from ...text.technical import render_technical
from ...text import render_fundamentals
from ...text.render_centralbank import render_central_bank
from ...text.render_india import render_announcements, render_ipo_performance
from ...ipo import bhavcopy_prices, listing_performance
from ...sources.us_ipo_schema import listings as us_listings
from ..common import FOLLOW_INPUTS, read_clean, table_metadata
from ..features.assets import FEATURES_KEY, technical_features

TRAIN_KEY, VAL_KEY = "corpus/train.parquet", "corpus/val.parquet"
# Unique training documents (before mixing repeats any): what the tokenizer learns from.
TRAIN_UNIQUE_KEY = "corpus/train_unique.parquet"
SPLIT_KEY = "corpus/split.json"
# Rows per row group of the document tables: the corpus stage reads them a row group at a time.
DOCUMENT_ROW_GROUP = 5_000


def _documents_asset(name: str, deps: list, description: str, make):
    @dg.asset(name=name, group_name="corpus", deps=deps, kinds={"polars", "parquet"}, description=description,
              automation_condition=FOLLOW_INPUTS)
    def _asset(lake: LakeResource) -> dg.MaterializeResult:
        store = lake.lake()
        docs = make(store)
        uri = store.write_parquet(f"documents/{name}.parquet", docs, row_group_size=DOCUMENT_ROW_GROUP)
        meta = table_metadata(docs, uri, time_column="date")
        if docs.height:
            meta["bytes"] = int(docs["text"].str.len_bytes().sum())
            meta["example"] = dg.MetadataValue.md(docs["text"][docs.height // 2])
        return dg.MaterializeResult(metadata=meta)

    return _asset


def _crypto_documents(store):
    # monthly notes of daily bars, as the features use: other timeframes' bars are not sessions
    clean = read_clean(store, "crypto", "crypto_ohlcv").filter(pl.col("timeframe") == "1d")
    return render.render_market(clean, domain="crypto_forex", by="symbol", time="timestamp", unit="coins")


def _ipo_documents(store):
    """Listing performance of NSE IPOs against their bhavcopy prices (market domain)."""
    perf = listing_performance(read_clean(store, "india_ipos", "india_ipos"),
                               bhavcopy_prices(read_clean(store, "india_bhavcopy", "india_bhavcopy")))
    return render_ipo_performance(perf)


def _us_ipo_documents(store):
    """Listing performance of US IPOs (SPACs' $10 units left out) against the market prices."""
    prices = read_clean(store, "market", "market_prices")
    ipos = read_clean(store, "us_ipos", "us_ipos").filter(~pl.col("is_spac"))
    perf = listing_performance(us_listings(ipos, prices), prices, ticker="ticker")
    return render_ipo_performance(perf, ticker="ticker")


def _technical_documents(store):
    return render_technical(store.read_parquet(FEATURES_KEY), by="instrument")


DOCUMENT_ASSETS = [
    _documents_asset("market_documents", ["clean_market_prices"], "Monthly market summaries per ticker.",
                     lambda s: render.render_market(read_clean(s, "market", "market_prices"))),
    _documents_asset("economic_documents", ["clean_macro_series"], "Macro release notes, dated when published.",
                     lambda s: render.render_macro(read_clean(s, "macro", "macro_series"))),
    _documents_asset("crypto_documents", ["clean_crypto_ohlcv"], "Monthly crypto market summaries.", _crypto_documents),
    _documents_asset("technical_documents", [technical_features], "Month-end technical-analysis notes.",
                     _technical_documents),
    _documents_asset("filing_documents", ["clean_filings"], "Filing text with item headings.",
                     lambda s: render.render_filings(read_clean(s, "filings", "filings"))),
    _documents_asset("news_documents", ["clean_news"], "News articles.",
                     lambda s: render.render_news(read_clean(s, "news", "news"))),
    _documents_asset("educational_documents", ["clean_documents"], "Educational documents.",
                     lambda s: render.render_documents(read_clean(s, "documents", "documents"))),
    # Issue 12 sources (text/render_fundamentals.py): point-in-time earnings narratives; on-chain notes.
    _documents_asset("earnings_documents", ["clean_fundamentals"], "Earnings narratives from SEC XBRL, point in time.",
                     lambda s: render_fundamentals.render_earnings(read_clean(s, "fundamentals", "fundamentals"))),
    _documents_asset("onchain_documents", ["clean_defi_metrics", "clean_coin_markets"], "Monthly DeFi and tokenomics notes.",
                     lambda s: pl.concat([
                         render_fundamentals.render_defi(read_clean(s, "defillama", "defi_metrics")),
                         render_fundamentals.render_coins(read_clean(s, "coingecko", "coin_markets"))])),
    _documents_asset("central_bank_documents", ["clean_central_bank"], "Central-bank statements, minutes and press "
                     "releases with their stated decisions (text/render_centralbank.py).",
                     lambda s: render_central_bank(read_clean(s, "centralbank", "central_bank"))),
    _documents_asset("india_announcement_documents", ["clean_india_announcements"],
                     "NSE corporate announcements, one digest per company and day (news and filings domain).",
                     lambda s: render_announcements(read_clean(s, "india_announcements", "india_announcements"))),
    _documents_asset("ipo_documents", ["clean_india_ipos", "clean_india_bhavcopy"],
                     "IPO listing performance: first-day, first-week and first-month returns on the issue price.",
                     _ipo_documents),
    _documents_asset("us_ipo_documents", ["clean_us_ipos", "clean_market_prices"],
                     "US IPO listing performance from EDGAR prospectuses and the market prices (market domain).",
                     _us_ipo_documents),
]


@dg.asset(group_name="corpus", deps=DOCUMENT_ASSETS, kinds={"polars", "parquet"},
          automation_condition=FOLLOW_INPUTS,
          description="All documents, quality-filtered, deduplicated (exact, then near-duplicates across the split), "
                      "split by time into train and validation, and the training split mixed to the domain weights: "
                      "streamed in batches and hash buckets (text/stream.py), so memory stays flat as it grows.")
def corpus(context: dg.AssetExecutionContext, lake: LakeResource, corpus_settings: CorpusResource) -> dg.MaterializeResult:
    store = lake.lake()
    val_start = dt.date.fromisoformat(corpus_settings.val_start) if corpus_settings.val_start else None
    near_dup = NearDupConfig(threshold=corpus_settings.near_dup_threshold) if corpus_settings.near_dup_threshold else False
    mixing = MixConfig(max_repeats=corpus_settings.mix_max_repeats) if corpus_settings.mix else None
    inputs = [f"documents/{a.key.path[-1]}.parquet" for a in DOCUMENT_ASSETS]
    summary = build_corpus_stream(
        store, inputs, CorpusKeys(train=TRAIN_KEY, train_unique=TRAIN_UNIQUE_KEY, val=VAL_KEY),
        work=lake.cache() / f"corpus-work-{context.run_id}", val_start=val_start, near_dup=near_dup, mixing=mixing,
        stream=StreamConfig(batch_rows=corpus_settings.batch_rows, bucket_docs=corpus_settings.bucket_docs,
                            workers=corpus_settings.workers))
    # The split date itself, for stages that split other data the same way (grounded instructions).
    store.write_json(SPLIT_KEY, {"val_start": summary.val_start.isoformat()})
    rows = [f"| {split} | {d} | {s['documents']:,} | {s['bytes']:,} | {s['bytes'] // 4:,} |"
            for split in ("train", "val") for d, s in summary.stats[split].items()]
    samples = "\n\n".join(f"### {domain}\n\n" + "\n\n---\n\n".join(texts) for domain, texts in summary.samples.items())
    return dg.MaterializeResult(metadata={
        "val_start": str(summary.val_start),
        "input_documents": summary.input_documents,
        "hash_buckets": summary.buckets,
        "train_documents": summary.total("train"),
        "train_unique_documents": summary.total("train_unique"),
        "val_documents": summary.total("val"),
        "train_bytes": summary.total("train", "bytes"),
        "val_bytes": summary.total("val", "bytes"),
        "train_last_date": str(summary.dates["train_unique"][1]),
        "dropped": dg.MetadataValue.json(summary.dropped),
        "counts": dg.MetadataValue.json(summary.counts()),
        "mixing": dg.MetadataValue.md(summary.mixing.to_markdown() if summary.mixing else "mixing off (TENALI_MIX=0)"),
        "by_domain": dg.MetadataValue.md("| split | domain | documents | bytes | tokens (est., 4 bytes each) |\n"
                                         "|---|---|---:|---:|---:|\n" + "\n".join(rows)),
        "samples": dg.MetadataValue.md(samples),
        "uri": dg.MetadataValue.path(store.uri("corpus")),
    })


@dg.asset_check(asset=corpus, blocking=True, description="No training document (mixed or unique) is dated on or after "
                "the validation start the corpus recorded, and no validation document before it.")
def no_temporal_leak(lake: LakeResource) -> dg.AssetCheckResult:
    store = lake.lake()
    val_start = dt.date.fromisoformat(store.read_json(SPLIT_KEY)["val_start"])

    def count(key: str, bad) -> tuple[int, int]:  # (rows, bad rows), the date column a row group at a time
        rows = leaks = 0
        for batch in store.iter_parquet(key, 1_000_000, columns=["date"]):
            rows += batch.height
            leaks += batch.filter(bad).height
        return rows, leaks

    late = pl.col("date").is_null() | (pl.col("date") >= val_start)
    _, train_leaks = count(TRAIN_KEY, late)
    _, unique_leaks = count(TRAIN_UNIQUE_KEY, late)
    val_rows, early = count(VAL_KEY, pl.col("date").is_null() | (pl.col("date") < val_start))
    leaks = train_leaks + unique_leaks
    return dg.AssetCheckResult(passed=leaks == 0 and early == 0 and val_rows > 0,
                               metadata={"leaking_documents": leaks, "val_start": str(val_start),
                                         "val_documents_before_start": early, "val_documents": val_rows})
