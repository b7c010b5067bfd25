"""Post-training data: grounded finance instructions computed from the lake (text/grounded.py).

The question set is split by the corpus's own validation date (``corpus/split.json``): training
pairs only describe days before it, the held-out set only days on or after it.
"""

import datetime as dt

import dagster as dg
import polars as pl
from pydantic import Field

from ...resources import LakeResource
from ...text.grounded import GroundedConfig, build_questions, preference_records, sft_records, write_jsonl
from ..common import FOLLOW_INPUTS, read_clean
from ..corpus.assets import SPLIT_KEY, corpus
from ..features.assets import FEATURES_KEY, technical_features

GROUNDED_KEY = "posttraining/grounded"
QUESTIONS_KEY = f"{GROUNDED_KEY}/questions.parquet"
SFT_TRAIN_KEY, SFT_VAL_KEY = f"{GROUNDED_KEY}/sft_train.jsonl", f"{GROUNDED_KEY}/sft_val.jsonl"
PREFERENCE_TRAIN_KEY = f"{GROUNDED_KEY}/preference_train.jsonl"


class GroundedSettings(dg.Config):
    # checked here: 0 used to fail as "move TENALI_VAL_START", a negative count inside numpy
    per_kind: int = Field(default=200, ge=1, description="At most this many questions of each kind in each split.")
    seed: int = 0


@dg.asset(group_name="posttraining", kinds={"polars", "parquet"}, automation_condition=FOLLOW_INPUTS,
          deps=["clean_market_prices", "clean_macro_series", "clean_filings", technical_features, corpus],
          description="Question-answer pairs whose answers are computed from the cleaned tables (returns, moving "
                      "averages, highs, RSI readings, candlestick patterns, macro changes, filing dates and items), "
                      "split by the corpus's validation date; also as SFT chats and DPO pairs (JSONL).")
def grounded_instructions(context: dg.AssetExecutionContext, lake: LakeResource,
                          config: GroundedSettings) -> dg.MaterializeResult:
    store = lake.lake()
    val_start = dt.date.fromisoformat(store.read_json(SPLIT_KEY)["val_start"])
    questions = build_questions(
        GroundedConfig(val_start=val_start, per_kind=config.per_kind, seed=config.seed),
        prices=read_clean(store, "market", "market_prices"),
        features=store.read_parquet(FEATURES_KEY),
        macro=read_clean(store, "macro", "macro_series"),
        filings=read_clean(store, "filings", "filings").drop("document"),
    )
    train, val = questions.filter(pl.col("split") == "train"), questions.filter(pl.col("split") == "val")
    if train.is_empty() or val.is_empty():
        raise dg.Failure(f"The grounded question set has {train.height} training and {val.height} held-out questions "
                         f"around {val_start}: both are needed; move TENALI_VAL_START so both windows hold data.")
    uri = store.write_parquet(QUESTIONS_KEY, questions)
    store.write_bytes(SFT_TRAIN_KEY, write_jsonl(sft_records(train)))
    store.write_bytes(SFT_VAL_KEY, write_jsonl(sft_records(val)))
    store.write_bytes(PREFERENCE_TRAIN_KEY, write_jsonl(preference_records(train)))
    counts = questions.group_by("kind", "split").len().sort("kind", "split")
    table = "| kind | split | questions |\n|---|---|---:|\n" + "\n".join(
        f"| {k} | {s} | {n:,} |" for k, s, n in counts.iter_rows())
    examples = "\n\n".join(f"**Q:** {q}  \n**A:** {a}" for q, a in
                           train.group_by("kind", maintain_order=True).first().select("question", "answer").iter_rows())
    context.log.info(f"{train.height:,} training and {val.height:,} held-out grounded questions (split at {val_start})")
    return dg.MaterializeResult(metadata={
        "train_questions": train.height, "val_questions": val.height, "val_start": str(val_start),
        "by_kind": dg.MetadataValue.md(table), "examples": dg.MetadataValue.md(examples),
        "uri": dg.MetadataValue.path(uri),
    })


@dg.asset_check(asset=grounded_instructions, blocking=True,
                description="No training question depends on a day on or after the validation start.")
def grounded_no_temporal_leak(lake: LakeResource) -> dg.AssetCheckResult:
    store = lake.lake()
    val_start = dt.date.fromisoformat(store.read_json(SPLIT_KEY)["val_start"])
    q = store.read_parquet(QUESTIONS_KEY)
    leaks = q.filter((pl.col("split") == "train") & (pl.col("as_of") >= val_start)).height
    leaks += q.filter((pl.col("split") == "val") & (pl.col("first_date") < val_start)).height
    return dg.AssetCheckResult(passed=leaks == 0, metadata={"crossing_questions": leaks, "val_start": str(val_start)})
