"""Post-training stages as launched steps, each a checkpoint asset with an evaluation beside it.

    pretrain_checkpoint ──> distilled_checkpoint ──> sft_checkpoint ──> dpo_checkpoint
                              distill_evaluation       sft_evaluation      dpo_evaluation

Each stage writes a config for `tenali_model.posttrain.<stage>` and starts it through the same
launcher as pretraining (torchrun locally, a pod or ECS task in production); rank 0 reports the
checkpoint through Pipes. A run trains into ``checkpoints/<stage>/<run_id>`` so a retried step
resumes there; the finished checkpoint is recorded in ``checkpoints/<stage>/LATEST.json``.

- Distillation: the student keeps the teacher's width and takes half its blocks (every other one,
  `tenali_model.posttrain.student`), then learns from the teacher's softened distribution on the
  token shards in the seed's two phases (T 2.5 then 3.0, alpha 0.7 then 0.4, one-cycle).
- SFT: the grounded instructions with LoRA (r 16, alpha 32, dropout 0.05, head trained), merged
  into a standalone checkpoint. On a base model's lineage the chat tokenizer has the chat tokens
  the base lacked (tokenizer asset); SFT grows its parent's embeddings (and untied head) to it, new
  rows at the mean of the old ones, and trains those rows even under LoRA
  (`tenali_model.posttrain.vocab`); a parent whose vocabulary cannot be fitted fails before launch.
- DPO: the grounded preference pairs (right figure chosen, wrong figure rejected) against the frozen
  SFT model.

Each evaluation reports the same figures as the pretraining evaluation (bits per byte per domain,
held-out instruction loss, grounded exact-match and multiple-choice accuracy) plus a table of every
stage side by side; an asset check fails a stage that is worse than its parent, beyond a tolerance,
on what that stage is meant to improve.
"""


import math
from pathlib import Path

import dagster as dg
from pydantic import Field
from tenali_model.posttrain.config import DistillConfig, DPOConfig, LoraSettings, SFTConfig, seed_phases

from ...resources import LakeResource, TrainingResource
from ...tracking import log_stage_safely
from ..evaluation.assets import evaluate_latest, pretrain_evaluation
from ..shards.assets import MANIFEST, SHARDS_KEY, token_shards
from ..tokenizer.assets import chat_tokenizer_file, tokenizer
from ..training.assets import (LATEST_KEY, LINEAGE, TRAINING_POOL, TRAINING_RETRY, data_lineage, loss_curve_markdown,
                               manifest_sha256, pretrain_checkpoint, require_shard_tokenizer, run_folder, store_reported_checkpoint)
from .assets import GROUNDED_KEY, PREFERENCE_TRAIN_KEY, SFT_TRAIN_KEY, SFT_VAL_KEY, grounded_instructions


def stage_latest(stage: str) -> str:
    return f"checkpoints/{stage}/LATEST.json"


class DistillSettings(dg.Config):
    # checked here, naming the field, before the teacher is downloaded (0 steps failed later as "phases is empty")
    steps: int = Field(default=60, ge=1, description="Optimizer steps, over two phases.")
    student_layers: int = Field(default=0, ge=0,
                                description="Blocks of the student; 0: half the teacher's (at least 1).")
    lr: float = 3e-3


class SFTSettings(dg.Config):
    steps: int = 60
    lr: float = 2e-3
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    packing: bool = True


class DPOSettings(dg.Config):
    steps: int = 30
    lr: float = 5e-5  # at 5e-4 the demo model's held-out instruction perplexity rose 6x while its choices got no better
    beta: float = 0.1
    # LoRA instead of a full fine-tune: the reference is then the policy with its adapters off (no second
    # model), and a 7B's DPO fits one GPU instead of needing FSDP over several
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05


def pretraining_settings(training: TrainingResource, checkpoint) -> dict:
    """The fields a post-training stage takes from pretraining (the resource's settings, else the
    recipe of the parent's size, resolved for the parent checkpoint's shape): sequences per
    micro-step, context, activation checkpointing and torch.compile (the large recipes compile)."""
    from tenali_model.checkpoint import load_config, resolve_checkpoint

    run = training.resolve(load_config(resolve_checkpoint(checkpoint)))
    return {k: run[k] for k in ("batch_size", "seq_len", "activation_checkpointing", "compile")}


def _local(store, lake: LakeResource, key: str) -> Path:
    return store.download_dir(key, lake.cache() / key)


def _fit_parent(parent_dir: Path, tokenizer: Path) -> dict:
    """Metadata on the parent's vocabulary against the chat tokenizer: empty when it fits, a note when
    the stage will grow it by the chat tokens; a mismatch that growing cannot fix fails before launch."""
    from tenali_model.checkpoint import load_config, load_meta, resolve_checkpoint
    from tenali_model.posttrain.data import DataError
    from tenali_model.posttrain.vocab import fitted_vocab, new_token_ids
    from tenali_model.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    ckpt = resolve_checkpoint(parent_dir)
    vocab = load_config(ckpt).vocab_size
    try:  # new ids: grown rows, or a padded table's padding rows the chat tokens land on
        ids = new_token_ids(tok, vocab, fitted_vocab(load_meta(ckpt), vocab), f"the parent checkpoint {parent_dir}")
    except DataError as e:
        raise dg.Failure(str(e)) from e
    if not ids:
        return {}
    rows = f"{vocab} -> {tok.vocab_size}" if tok.vocab_size > vocab else f"{vocab} rows (padding used)"
    return {"vocab_extended": f"{rows}: {', '.join(tok.id_to_token(i) for i in ids)} "
                              "added, rows initialised to the mean embedding"}


def _run_stage(context: dg.AssetExecutionContext, lake: LakeResource, launcher, stage: str, make_config,
               parent: dict, extra_metadata: dict | None = None, lineage: dict | None = None) -> dg.MaterializeResult:
    """Write the stage's config, launch it, check what rank 0 reported, upload, record LATEST. `lineage`:
    the data a stage trains on when it is not its parent's (distillation reads the current shards), kept
    in the run folder as pretraining keeps its own, for a release's card."""
    store = lake.lake()
    run_key, run_dir = run_folder(context, store, lake, f"checkpoints/{stage}",
                                  {"parent_checkpoint": parent["checkpoint"]})
    if lineage is not None and not store.exists(f"{run_key}/{LINEAGE}"):  # a retry keeps what it first trained on
        store.write_json(f"{run_key}/{LINEAGE}", lineage)
    cfg = make_config(run_dir)
    cfg.validate()
    config_path = run_dir / f"{stage}_config.json"
    cfg.to_json(config_path)
    result = launcher.launch(context, config_path, workdir=run_dir, module=f"tenali_model.posttrain.{stage}")
    reported = dict(result.metadata or {})
    ckpt_key, uri, metrics = store_reported_checkpoint(store, reported, run_key, run_dir, f"{stage} step")
    store.write_json(stage_latest(stage), {"run_id": context.run_id, "checkpoint_key": ckpt_key, "checkpoint": uri,
                                           "metrics_key": f"{run_key}/metrics.jsonl", "stage": stage,
                                           "parent_checkpoint": parent["checkpoint"],
                                           "tokenizer_sha256": parent.get("tokenizer_sha256")})
    reported.pop("loss_curve", None)
    tracked = log_stage_safely(context, stage, config=cfg.to_dict(), metrics_jsonl=metrics,
                               summary={k: getattr(v, "value", v) for k, v in reported.items()},
                               tags={"dagster_run_id": context.run_id, "asset": context.asset_key.to_user_string(),
                                     "checkpoint": uri, "parent_checkpoint": parent["checkpoint"]})
    return dg.MaterializeResult(metadata={
        **reported,
        **tracked,
        **(extra_metadata or {}),
        "checkpoint": dg.MetadataValue.path(uri),
        "parent_checkpoint": dg.MetadataValue.path(parent["checkpoint"]),
        "loss_plot": dg.MetadataValue.md(loss_curve_markdown(metrics)),
        "config": dg.MetadataValue.json(cfg.to_dict()),
    })


@dg.asset(group_name="posttraining", deps=[pretrain_checkpoint, token_shards], kinds={"pytorch"}, pool=TRAINING_POOL,
          retry_policy=TRAINING_RETRY,
          description="A student with half the teacher's blocks, distilled from the pretrained model on the token "
                      "shards (two phases: T 2.5 / alpha 0.7, then T 3.0 / alpha 0.4, one-cycle).")
def distilled_checkpoint(context: dg.AssetExecutionContext, config: DistillSettings, lake: LakeResource,
                         training: TrainingResource, launcher: dg.ResourceParam) -> dg.MaterializeResult:
    from tenali_model.checkpoint import load_config
    from tenali_model.posttrain.student import init_student

    store = lake.lake()
    teacher = store.read_json(LATEST_KEY)
    manifest = store.read_json(f"{SHARDS_KEY}/{MANIFEST}")
    require_shard_tokenizer(teacher, manifest, "distilling from it")
    teacher_dir = _local(store, lake, teacher["checkpoint_key"])
    shards = _local(store, lake, SHARDS_KEY)
    layers = config.student_layers or max(1, load_config(teacher_dir).n_layers // 2)
    run = pretraining_settings(training, teacher_dir)

    def make(run_dir: Path) -> DistillConfig:
        student = init_student(teacher_dir, run_dir / "student_init", layers)
        return DistillConfig(
            init_from=str(student), teacher=str(teacher_dir), out_dir=str(run_dir),
            train_shards=[str(shards / e["file"]) for e in manifest["splits"]["train"]],
            val_shards=[str(shards / e["file"]) for e in manifest["splits"]["val"]],
            phases=seed_phases(config.steps, lr=config.lr, min_lr=config.lr / 10),
            seed=training.seed, **run, eval_every=max(config.steps // 2, 1), eval_batches=training.eval_batches,
            ckpt_every=max(config.steps // 2, 1), log_every=max(config.steps // 20, 1))
    # the student learns from the shards as they are now, which may be newer than the teacher's data;
    # the base model (if any) is the teacher's lineage's
    teacher_lineage = f"{teacher['checkpoint_key'].rsplit('/', 1)[0]}/{LINEAGE}"
    base = store.read_json(teacher_lineage).get("base_model") if store.exists(teacher_lineage) else None
    lineage = {**data_lineage(context.instance, manifest, manifest_sha256(manifest)),
               "distilled_from": teacher["checkpoint"], "base_model": base}
    return _run_stage(context, lake, launcher, "distill", make, teacher, lineage=lineage)


@dg.asset(group_name="posttraining", deps=[distilled_checkpoint, grounded_instructions, tokenizer], kinds={"pytorch"},
          pool=TRAINING_POOL, retry_policy=TRAINING_RETRY,
          description="Instruction tuning of the distilled model on the grounded finance chats, with LoRA on the "
                      "attention and MLP projections (head trained too), merged into a standalone checkpoint.")
def sft_checkpoint(context: dg.AssetExecutionContext, config: SFTSettings, lake: LakeResource,
                   training: TrainingResource, launcher: dg.ResourceParam) -> dg.MaterializeResult:
    store = lake.lake()
    parent = store.read_json(stage_latest("distill"))
    parent_dir = _local(store, lake, parent["checkpoint_key"])
    data = _local(store, lake, GROUNDED_KEY)
    tok = _local(store, lake, "tokenizer") / chat_tokenizer_file(store)
    lora = LoraSettings(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout) if config.lora else None
    run = pretraining_settings(training, parent_dir)

    def make(run_dir: Path) -> SFTConfig:
        return SFTConfig(init_from=str(parent_dir), out_dir=str(run_dir), tokenizer=str(tok),
                         train_files=[str(data / Path(SFT_TRAIN_KEY).name)], val_files=[str(data / Path(SFT_VAL_KEY).name)],
                         packing=config.packing, steps=config.steps, lr=config.lr, min_lr=config.lr / 10,
                         warmup_steps=max(config.steps // 10, 1), seed=training.seed, lora=lora, **run,
                         eval_every=max(config.steps // 2, 1), ckpt_every=max(config.steps // 2, 1),
                         log_every=max(config.steps // 20, 1))
    return _run_stage(context, lake, launcher, "sft", make, parent, _fit_parent(parent_dir, tok))


@dg.asset(group_name="posttraining", deps=[sft_checkpoint, grounded_instructions], kinds={"pytorch"},
          pool=TRAINING_POOL, retry_policy=TRAINING_RETRY,
          description="Preference tuning (DPO) of the instruction-tuned model: the grounded answer chosen over the "
                      "same sentence with a wrong figure, against the frozen SFT model.")
def dpo_checkpoint(context: dg.AssetExecutionContext, config: DPOSettings, lake: LakeResource,
                   training: TrainingResource, launcher: dg.ResourceParam) -> dg.MaterializeResult:
    store = lake.lake()
    parent = store.read_json(stage_latest("sft"))
    parent_dir = _local(store, lake, parent["checkpoint_key"])
    data = _local(store, lake, GROUNDED_KEY)
    tok = _local(store, lake, "tokenizer") / chat_tokenizer_file(store)
    run = pretraining_settings(training, parent_dir)
    lora = LoraSettings(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout) if config.lora else None

    def make(run_dir: Path) -> DPOConfig:
        return DPOConfig(init_from=str(parent_dir), out_dir=str(run_dir), tokenizer=str(tok), lora=lora,
                         train_files=[str(data / Path(PREFERENCE_TRAIN_KEY).name)], beta=config.beta,
                         steps=config.steps, lr=config.lr, min_lr=config.lr / 10, warmup_steps=max(config.steps // 10, 1),
                         seed=training.seed, **run, ckpt_every=config.steps, log_every=max(config.steps // 10, 1))
    return _run_stage(context, lake, launcher, "dpo", make, parent, _fit_parent(parent_dir, tok))


# ---------------------------------------------------------------------------------------------------
# Evaluations: the same figures for every stage, and every stage side by side.

EVALUATIONS = {"pretrain": "pretrain_evaluation", "distill": "distill_evaluation", "sft": "sft_evaluation",
               "dpo": "dpo_evaluation"}
COMPARED = [("bits_per_byte", "bits/byte", "lower"), ("instruction_perplexity", "instruction ppl", "lower"),
            ("grounded_exact_match", "grounded exact", "higher"), ("grounded_choice_accuracy", "grounded choice", "higher")]


def _latest_figures(instance: dg.DagsterInstance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items() if isinstance(v.value, (int, float))}


def comparison_table(instance: dg.DagsterInstance, current: str, figures: dict) -> str:
    rows = []
    for stage, asset in EVALUATIONS.items():
        values = figures if stage == current else _latest_figures(instance, asset)
        if values:
            cells = [f"{values[k]:.4f}" if isinstance(values.get(k), float) else "–" for k, _, _ in COMPARED]
            rows.append(f"| {'**' + stage + '**' if stage == current else stage} | " + " | ".join(cells) + " |")
    head = "| stage | " + " | ".join(f"{label} ({better} is better)" for _, label, better in COMPARED) + " |"
    return head + "\n|---|" + "---:|" * len(COMPARED) + "\n" + "\n".join(rows)


def _evaluation(stage: str, checkpoint_asset, description: str):
    @dg.asset(name=EVALUATIONS[stage], group_name="posttraining", deps=[checkpoint_asset, pretrain_evaluation],
              kinds={"pytorch"}, description=description)
    def evaluation(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
        figures = evaluate_latest(context, lake, stage_latest(stage), chat=stage in ("sft", "dpo"))
        numeric = {k: v for k, v in figures.items() if isinstance(v, (int, float))}
        figures["stages"] = dg.MetadataValue.md(comparison_table(context.instance, stage, numeric))
        return dg.MaterializeResult(metadata=figures)
    return evaluation


distill_evaluation = _evaluation("distill", distilled_checkpoint,
                                 "The distilled student's figures beside the teacher's (bits per byte per domain, "
                                 "instruction perplexity, grounded accuracy).")
sft_evaluation = _evaluation("sft", sft_checkpoint,
                             "The instruction-tuned model's figures beside pretraining and distillation: held-out "
                             "instruction perplexity and grounded exact-match / multiple-choice accuracy.")
dpo_evaluation = _evaluation("dpo", dpo_checkpoint,
                             "The preference-tuned model's figures beside every earlier stage.")


# What each stage is meant to improve (or must not lose), the parent it is compared with, and how much
# worse it may be: relative for losses and bits, absolute for accuracies.
GOALS = {
    # A student half the teacher's depth is allowed to lose some bits per byte: that is the trade.
    "distill": [("pretrain", "bits_per_byte", "lower", 0.25)],
    "sft": [("distill", "instruction_loss", "lower", 0.02)],
    # DPO is meant to prefer right figures; it must not buy that by forgetting how to answer.
    "dpo": [("sft", "grounded_choice_accuracy", "higher", 0.10), ("sft", "instruction_loss", "lower", 0.25)],
}


def _goal_check(stage: str, evaluation_asset):
    goals = GOALS[stage]
    parent = goals[0][0]

    def describe(measure, better, tolerance) -> str:
        kind = "absolute" if measure.endswith("accuracy") else "relative"
        return f"{measure} no worse than the {parent} stage's by more than {tolerance:.0%} ({kind})"

    @dg.asset_check(asset=evaluation_asset, name=f"{stage}_no_worse_than_{parent}",
                    description="; ".join(describe(m, b, t) for _, m, b, t in goals) + ".")
    def check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        mine_all = _latest_figures(context.instance, EVALUATIONS[stage])
        theirs_all = _latest_figures(context.instance, EVALUATIONS[parent])
        ok, metadata = True, {}
        for _, measure, better, tolerance in goals:
            mine, theirs = mine_all.get(measure), theirs_all.get(measure)
            if mine is None or theirs is None or not math.isfinite(mine):
                ok = False
                metadata[f"missing_{measure}"] = f"{measure} of {stage} or {parent}"
                continue
            if measure.endswith("accuracy"):
                good = mine >= theirs - tolerance if better == "higher" else mine <= theirs + tolerance
            else:
                good = mine <= theirs * (1 + tolerance) if better == "lower" else mine >= theirs * (1 - tolerance)
            ok = ok and good
            metadata.update({measure: mine, f"{parent}_{measure}": theirs, f"{measure}_tolerance": tolerance})
        return dg.AssetCheckResult(passed=ok, metadata=metadata)
    return check


distill_goal = _goal_check("distill", distill_evaluation)
sft_goal = _goal_check("sft", sft_evaluation)
dpo_goal = _goal_check("dpo", dpo_evaluation)
