"""Evaluation of the pretrained checkpoint on the temporal validation split, per domain.

Validation loss (nats per token), perplexity and bits per byte, overall and for each domain, are
numeric metadata, so the Dagster UI plots them across materialisations; sample generations show what
the model has learned. Bits per byte uses the validation shards' exact UTF-8 byte counts from the
manifest, which makes it comparable across tokenizers. The overall figures weight each domain by its
evaluated tokens. Text is encoded with the tokenizer the shards record (Tenali's own or, on the
continued-pretraining path, a base model's); a base tokenizer without the chat pieces skips the
chat-formatted figures (held-out instructions, grounded questions) with a note.
"""

import hashlib
import json
import math

import dagster as dg
import polars as pl
import torch
from tenali_model.checkpoint import load_meta, load_model
from tenali_model.evaluate import evaluate_model
from tenali_model.generate import generate

from ...resources import LakeResource
from ..shards.assets import MANIFEST, SHARDS_KEY
from ..tokenizer.assets import lake_tokenizer
from ..training.assets import LATEST_KEY, pretrain_checkpoint, require_shard_tokenizer

PROMPTS = ["AAPL rose", "US economic data for", "Technical picture for MSFT", "Dividend yield is"]
# A new checkpoint may be this much worse than the previous one before the check warns.
REGRESSION_TOLERANCE = 0.05


# Held-out grounded questions scored per evaluation (greedy answers are the slow part on CPU).
GROUNDED_EVAL_QUESTIONS = 48


@dg.asset(group_name="evaluation", deps=[pretrain_checkpoint, "grounded_instructions"], kinds={"pytorch"},
          description="Validation loss, perplexity and bits per byte (overall and per domain) of the latest "
                      "pretraining checkpoint, its held-out instruction perplexity and grounded-question accuracy "
                      "(the baseline post-training stages are compared with), and sample generations.")
def pretrain_evaluation(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata=evaluate_latest(context, lake, LATEST_KEY, chat=False))


def evaluate_latest(context, lake: LakeResource, latest_key: str, chat: bool) -> dict:
    """Every evaluation figure of the checkpoint a LATEST.json names, as asset metadata.

    - bits per byte, loss and perplexity on the temporal validation shards, overall and per domain;
    - when the grounded instructions exist: nats per assistant token on the held-out chats and
      exact-match / multiple-choice accuracy on held-out grounded questions;
    - samples: plain continuations, and for chat models (``chat``) answers through the chat template.
    """
    from tenali_model.evaluate_chat import assistant_loss
    from tenali_model.tokenizer import SPECIAL_TOKENS, PAD

    from ...grounded_eval import model_callables, score_grounded
    from ..posttraining.assets import QUESTIONS_KEY, SFT_VAL_KEY

    store = lake.lake()
    latest = store.read_json(latest_key)
    manifest = store.read_json(f"{SHARDS_KEY}/{MANIFEST}")
    require_shard_tokenizer(latest, manifest, "scoring it")
    shards = store.download_dir(SHARDS_KEY, lake.cache() / SHARDS_KEY)
    checkpoint = str(store.download_dir(latest["checkpoint_key"], lake.cache() / latest["checkpoint_key"]))
    model = load_model(checkpoint)

    by_domain, val_loss, bpb, total = score_val_split(context, manifest, shards, model)

    tok = shard_tokenizer(store, manifest)
    samples = []
    for i, prompt in enumerate(PROMPTS):
        idx = torch.tensor([tok.encode(prompt)], dtype=torch.long)
        out = generate(model, idx, max_new_tokens=48, temperature=0.8, top_k=40, seed=i,
                       eos_id=manifest["tokenizer"]["eot_id"])
        samples.append(f"**{prompt}** → {tok.decode(out[0, idx.shape[1]:].tolist())}")
    context.log.info(f"val_loss={val_loss:.4f} bits_per_byte={bpb:.4f} over {total:,} tokens")
    table = "\n".join(f"| {d} | {m['tokens']:,} | {m['val_loss']:.4f} | {m['perplexity']:.2f} | {m['bits_per_byte']:.4f} |"
                      for d, m in by_domain.items())
    metadata = {
        "val_loss": val_loss,
        "perplexity": math.exp(val_loss),
        "bits_per_byte": bpb,
        "val_tokens_evaluated": total,
        "checkpoint_step": load_meta(checkpoint)["step"],
        "checkpoint": dg.MetadataValue.path(latest["checkpoint"]),
        # the tokenizer it was scored with: the release exports only checkpoints of the lake's tokenizer
        "tokenizer_sha256": manifest["tokenizer"]["sha256"],
        # the validation text it was scored on: bits per byte compares only on the same text (see val_set_sha256)
        "val_set_sha256": val_set_sha256(manifest),
        "by_domain": dg.MetadataValue.md("| domain | tokens | loss | perplexity | bits/byte |\n|---|---:|---:|---:|---:|\n" + table),
        "samples": dg.MetadataValue.md("\n\n".join(samples)),
    }
    for d, m in by_domain.items():  # one plotted series per domain
        metadata[f"val_loss/{d}"] = m["val_loss"]
        metadata[f"bits_per_byte/{d}"] = m["bits_per_byte"]

    chat_tok = tok
    if manifest["tokenizer"].get("kind") == "hf-base" and store.exists(QUESTIONS_KEY):
        # A base lineage: chat is scored with the base tokenizer plus the added chat tokens, the model's
        # embeddings grown the way SFT grows them (new rows at the mean), so every stage is comparable.
        from tokenizers import Tokenizer

        from tenali_model.posttrain.vocab import fit_for_chat
        from tenali_model.tokenizer import TextTokenizer

        from ..tokenizer.assets import TOKENIZER_KEY, chat_tokenizer_file

        chat_tok = TextTokenizer(hf=Tokenizer.from_str(
            store.read_bytes(f"{TOKENIZER_KEY}/{chat_tokenizer_file(store)}").decode()))
        # rows beyond the table, or a padded table's padding rows, at the mean (padding was never trained)
        fit_for_chat(model, chat_tok, load_meta(checkpoint))
    tok = chat_tok
    missing = [t for t in SPECIAL_TOKENS if t != PAD and tok.token_id(t) is None]
    if missing and store.exists(QUESTIONS_KEY):
        note = (f"skipped: the tokenizer ({manifest['tokenizer'].get('kind')}) has no chat pieces {', '.join(missing)}; "
                "a base model's tokenizer needs them added (and the embeddings resized) before chat evaluation")
        context.log.warning(f"instruction and grounded-question figures {note}")
        metadata["chat_evaluation"] = note
    elif store.exists(QUESTIONS_KEY) and store.exists(SFT_VAL_KEY):
        chats = [json.loads(line)["messages"] for line in store.read_bytes(SFT_VAL_KEY).decode().splitlines() if line.strip()]
        instr = assistant_loss(model, tok, chats)
        questions = store.read_parquet(QUESTIONS_KEY)
        held_out = questions.filter(pl.col("split") == "val")
        held_out = held_out.sample(min(GROUNDED_EVAL_QUESTIONS, held_out.height), seed=0) if held_out.height else held_out
        grounded = score_grounded(held_out, *model_callables(model, tok)) if held_out.height else None
        metadata["instruction_loss"] = instr["loss"]
        metadata["instruction_perplexity"] = instr["perplexity"]
        if grounded:
            metadata["grounded_exact_match"] = grounded["exact_match"]
            metadata["grounded_choice_accuracy"] = grounded["choice_accuracy"]
            metadata["grounded_questions"] = grounded["questions"]
            metadata["grounded_by_kind"] = dg.MetadataValue.md(
                "| kind | questions | exact match | choice accuracy |\n|---|---:|---:|---:|\n" + "\n".join(
                    f"| {k} | {v['questions']} | {v['exact_match']:.2f} | {v['choice_accuracy']:.2f} |"
                    for k, v in grounded["by_kind"].items()))
            if chat:
                metadata["answers"] = dg.MetadataValue.md(grounded["samples_md"])
        context.log.info(f"instruction_loss={instr['loss']:.4f}"
                         + (f" grounded exact={grounded['exact_match']:.3f} choice={grounded['choice_accuracy']:.3f}"
                            if grounded else ""))
    return metadata


def score_val_split(context, manifest: dict, shards, model) -> tuple[dict, float, float, int]:
    """(figures per domain, val loss, bits per byte, tokens) of a model on a manifest's validation shards
    (in the local folder `shards`): the numbers an evaluation records and a release compares."""
    by_domain: dict[str, dict] = {}
    bytes_per_token: dict[str, float] = {}
    for domain in sorted({e.get("domain", "all") for e in manifest["splits"]["val"]}):
        entries = [e for e in manifest["splits"]["val"] if e.get("domain", "all") == domain]
        tokens, n_bytes = sum(e["tokens"] for e in entries), sum(e["bytes"] for e in entries)
        try:
            bytes_per_token[domain] = n_bytes / tokens
            by_domain[domain] = evaluate_model(model, [str(shards / e["file"]) for e in entries],
                                               batch_size=8, bytes_per_token=bytes_per_token[domain])
        except (ValueError, ZeroDivisionError) as e:  # fewer tokens than one window
            context.log.warning(f"validation domain {domain!r} skipped: {e}")
    if not by_domain:
        raise dg.Failure("No validation domain has enough tokens for one window: lower seq_len or move TENALI_VAL_START earlier.")
    total = sum(m["tokens"] for m in by_domain.values())
    val_loss = sum(m["val_loss"] * m["tokens"] for m in by_domain.values()) / total
    # Bits per byte overall is all bits over all bytes evaluated, not a token-weighted mean of the domains'
    # ratios (that over-weights domains with few bytes per token, e.g. digit-split numbers, and so moves
    # with the tokenizer: the figure would no longer compare across tokenizers).
    bpb = (sum(m["val_loss"] * m["tokens"] for m in by_domain.values()) / math.log(2)
           / sum(m["tokens"] * bytes_per_token[d] for d, m in by_domain.items()))
    return by_domain, val_loss, bpb, total


def val_set_sha256(manifest: dict) -> str:
    """The identity of the validation text a manifest's val shards hold, independent of the tokenizer:
    its start date and each domain's documents and UTF-8 bytes. Two bits-per-byte figures compare only
    when this is the same (new data or a moved TENALI_VAL_START is another, harder or easier, test)."""
    domains: dict[str, list[int]] = {}
    for e in manifest.get("splits", {}).get("val", []):
        d = domains.setdefault(e.get("domain", "all"), [0, 0])
        d[0] += int(e.get("documents", 0))
        d[1] += int(e["bytes"])
    ident = {"val_start": manifest.get("corpus", {}).get("val_start"), "domains": domains}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def shard_tokenizer(store, manifest: dict):
    """The tokenizer that made the shards, as tenali_model's TextTokenizer: the lake's tokenizer, checked
    against the manifest's sha256 (a tokenizer re-made since the shards would mis-read their ids)."""
    from tenali_model.tokenizer import TextTokenizer

    source, _ = lake_tokenizer(store)
    if source.sha256 != manifest["tokenizer"]["sha256"]:
        raise dg.Failure(f"The lake's tokenizer (sha256 {source.sha256[:16]}) is not the one the shards were made with "
                         f"({manifest['tokenizer']['sha256'][:16]}): re-materialise token_shards and retrain.")
    enc = source.load()
    return TextTokenizer(sp=enc.sp) if enc.sp is not None else TextTokenizer(hf=enc.hf, name=source.kind)


def _latest_values(context: dg.AssetCheckExecutionContext, limit: int) -> list[dict]:
    records = context.instance.fetch_materializations(pretrain_evaluation.key, limit=limit).records
    return [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in records]


@dg.asset_check(asset=pretrain_evaluation, description="Evaluation metrics exist and are finite.")
def metrics_finite(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    meta = (_latest_values(context, 1) or [{}])[0]
    values = {k: meta[k] for k in ("val_loss", "perplexity", "bits_per_byte") if k in meta}
    ok = len(values) == 3 and all(math.isfinite(v) for v in values.values())
    return dg.AssetCheckResult(passed=ok, metadata={k: float(v) for k, v in values.items()})


@dg.asset_check(asset=pretrain_evaluation,
                description=f"Bits per byte no worse than the previous evaluation's by more than {REGRESSION_TOLERANCE:.0%}.")
def no_regression(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    history = _latest_values(context, 2)
    if len(history) < 2:
        return dg.AssetCheckResult(passed=True, metadata={"previous": "none: first evaluation"})
    current, previous = history[0]["bits_per_byte"], history[1]["bits_per_byte"]
    sets = [h.get("val_set_sha256") for h in history]
    if None not in sets and sets[0] != sets[1]:  # new data or another val_start: another test, not a regression
        return dg.AssetCheckResult(passed=True, metadata={
            "bits_per_byte": current, "previous_bits_per_byte": previous,
            "previous": "scored on another validation set: not compared"})
    return dg.AssetCheckResult(
        passed=current <= previous * (1 + REGRESSION_TOLERANCE),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"bits_per_byte": current, "previous_bits_per_byte": previous,
                  "change": current / previous - 1},
    )
