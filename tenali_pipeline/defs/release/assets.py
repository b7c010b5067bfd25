"""Model releases: an evaluated checkpoint exported for Hugging Face with a model card, and what `tenali serve` loads.

``releases/<id>/`` is a transformers model folder (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with the chat template) plus the sentencepiece ``tokenizer.model``, the model
card ``README.md`` and ``release.json`` (evaluation figures, and the lineage of the data the checkpoint
was trained on, as its training run recorded it). On a base model's lineage
(``TENALI_BASE_MODEL``) there is no sentencepiece model: tokenizer.json is the base's own for a base
checkpoint, and for a chat model the base's with the chat tokens added (the one its embeddings were
grown to), so its chat template renders them. ``releases/LATEST.json``
names the current release; it moves only to a release that is no worse (by validation bits per
byte) than the current one, and the blocking check fails a release that is worse, so a regression
is written for inspection but never served by default.
"""


import datetime as dt
import hashlib
import math
import tempfile
from pathlib import Path

import dagster as dg
from tenali_model.checkpoint import load_config, load_meta
from tenali_model.hf import _ARCH, ConversionError, export_hf

from ...resources import LakeResource
from ..evaluation.assets import pretrain_evaluation, score_val_split, val_set_sha256
from ..shards.assets import MANIFEST, SHARDS_KEY
from ..tokenizer.assets import TOKENIZER_KEY, export_tokenizer_file, lake_tokenizer
from ..training.assets import LATEST_KEY, LINEAGE, data_lineage, manifest_sha256
from .card import model_card, release_json, without_front_matter

RELEASES_KEY = "releases"
LATEST_RELEASE_KEY = f"{RELEASES_KEY}/LATEST.json"
# A release may be this much worse (bits per byte) than the current one and still replace it:
# evaluation noise between equally good checkpoints.
TOLERANCE = 0.01


class ReleaseConfig(dg.Config):
    # "auto": the instruction-tuned model when one is evaluated (the newest DPO model if it is newer than the
    # newest SFT one, which it then follows; else that SFT model), else "best";
    # "chat": that chat model (an error when there is none); "best": the base checkpoint with the lowest
    # validation bits per byte; "latest": the latest evaluated checkpoint of any stage.
    pick: str = "auto"
    checkpoint_key: str = ""  # a lake key of one checkpoint (overrides pick; must have been evaluated)
    name: str = "tenali"
    # The current release was scored on another validation set (new data, a moved TENALI_VAL_START) and its
    # checkpoint has no evaluation on this one and cannot be scored on it (gone from the lake, another tokenizer):
    # the figures do not compare, so the release is refused unless this is set (a deliberate move).
    replace_incomparable: bool = False


def _key_of(store, uri: str) -> str:
    root = store.root.rstrip("/") + "/"
    return uri[len(root):] if uri.startswith(root) else uri


def _in_lake(store, uri: str) -> bool:
    """Whether a recorded checkpoint is in this lake: an evaluation made against another lake root (the same
    Dagster instance before TENALI_LAKE_ROOT moved) names a path this lake cannot read."""
    key = _key_of(store, uri)
    return key != uri and store.exists(f"{key}/meta.json")


# Evaluation assets by stage; sft and dpo are chat models (trained on the chat template).
STAGE_EVALUATIONS = {"pretrain": "pretrain_evaluation", "distill": "distill_evaluation", "sft": "sft_evaluation",
                     "dpo": "dpo_evaluation"}
CHAT_STAGES = ("dpo", "sft")  # most refined first


def _evaluations(instance) -> list[dict]:
    """Every evaluation still on record, newest first: its stage, numeric figures and the checkpoint it evaluated."""
    out = []
    for stage, asset in STAGE_EVALUATIONS.items():
        for r in instance.fetch_materializations(dg.AssetKey(asset), limit=100).records:
            meta = r.asset_materialization.metadata
            figures = {k: float(v.value) for k, v in meta.items()
                       if isinstance(v.value, (int, float)) and not isinstance(v.value, bool)}
            if "checkpoint" in meta and math.isfinite(figures.get("bits_per_byte", math.nan)):
                tok = meta.get("tokenizer_sha256")  # absent in evaluations recorded before 2026-12-03
                val_set = meta.get("val_set_sha256")  # the validation text scored; absent in older evaluations
                out.append({"checkpoint": str(meta["checkpoint"].value), "figures": figures,
                            "timestamp": r.timestamp, "stage": stage, "tokenizer_sha256": tok.value if tok else None,
                            "val_set": val_set.value if val_set else None})
    return sorted(out, key=lambda e: -e["timestamp"])


def _newest_chat(evaluations: list[dict]) -> list[dict]:
    """[the chat model to release] or []: the newest DPO evaluation when it is newer than the newest SFT
    one (DPO runs on the SFT model it follows), else the newest SFT one: a DPO of an older SFT model
    is not preferred over the SFT model that replaced it. `evaluations` is newest first."""
    newest = {stage: next((e for e in evaluations if e["stage"] == stage), None) for stage in CHAT_STAGES}
    dpo, sft = newest["dpo"], newest["sft"]
    if dpo is not None and (sft is None or dpo["timestamp"] >= sft["timestamp"]):
        return [dpo]
    return [sft] if sft is not None else []


def _json_vocab(tokenizer_json: bytes) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer_json.decode()).get_vocab_size(with_added_tokens=True)


def _kind(stage: str | None) -> str:
    return "chat" if stage in CHAT_STAGES else "base"


# Post-training stages by checkpoint folder: their asset records the checkpoint each was trained from.
STAGE_CHECKPOINTS = {"checkpoints/distill/": "distilled_checkpoint", "checkpoints/sft/": "sft_checkpoint",
                     "checkpoints/dpo/": "dpo_checkpoint"}


def _parent_key(instance, store, key: str) -> str | None:
    """The lake key of the checkpoint a post-trained checkpoint was trained from, as its stage recorded it."""
    asset = next((a for prefix, a in STAGE_CHECKPOINTS.items() if key.startswith(prefix)), None)
    if asset is None:
        return None
    uri = store.uri(key)
    for r in instance.fetch_materializations(dg.AssetKey(asset), limit=100).records:
        meta = r.asset_materialization.metadata
        if "checkpoint" in meta and str(meta["checkpoint"].value) == uri and "parent_checkpoint" in meta:
            parent = str(meta["parent_checkpoint"].value)
            return _key_of(store, parent) if _key_of(store, parent) != parent else None  # None: another lake's
    return None


def _trained_manifest(instance, store, key: str) -> str | None:
    """The shard manifest sha256 (or its first 16 characters) a pretrained checkpoint was trained on, as its
    run recorded it (run.json, LATEST.json, its materialisation), or None where nothing says."""
    run_key = key.rsplit("/", 1)[0]
    if store.exists(f"{run_key}/run.json"):
        inputs = store.read_json(f"{run_key}/run.json").get("inputs", {})
        if inputs.get("shard_manifest_sha256"):
            return inputs["shard_manifest_sha256"]
    latest = store.read_json(LATEST_KEY) if store.exists(LATEST_KEY) else {}
    if latest.get("checkpoint_key") == key and latest.get("shard_manifest_sha256"):
        return latest["shard_manifest_sha256"]
    uri = store.uri(key)
    for r in instance.fetch_materializations(dg.AssetKey("pretrain_checkpoint"), limit=100).records:
        meta = r.asset_materialization.metadata
        if "checkpoint" in meta and str(meta["checkpoint"].value) == uri and "shard_manifest_sha256" in meta:
            return str(meta["shard_manifest_sha256"].value)
    return None


def _lineage(instance, store, ckpt_key: str, manifest: dict) -> dict:
    """The data the checkpoint was trained on: what its training run recorded (lineage.json in its run folder,
    or in that of the checkpoint it was post-trained from). A checkpoint trained before runs recorded it gets
    the lake's current data when its shard manifest is the current one (or nothing says), and otherwise a
    lineage that says its data is not known rather than another run's."""
    key, seen = ckpt_key, set()
    while key and key not in seen:
        seen.add(key)
        run_key = key.rsplit("/", 1)[0]
        if store.exists(f"{run_key}/{LINEAGE}"):
            return {**store.read_json(f"{run_key}/{LINEAGE}"), "recorded": "by its training run"}
        if not any(key.startswith(prefix) for prefix in STAGE_CHECKPOINTS):
            break
        key = _parent_key(instance, store, key)
    current = manifest_sha256(manifest)
    trained = _trained_manifest(instance, store, key) if key else None
    if trained and not current.startswith(trained):
        unknown = dict.fromkeys(("val_start", "train_documents", "val_documents", "train_tokens", "val_tokens",
                                 "tokenizer_sha256"))
        return {**unknown, "sources": [], "date_range": None, "sample_data": False, "shard_manifest_sha256": trained,
                "recorded": "unknown",
                "note": f"trained on shard manifest {trained[:16]}, not the lake's current {current[:16]}, before "
                        "training runs recorded their data: its documents, dates and token counts are not known"}
    return {**data_lineage(instance, manifest, current),
            "recorded": "the lake's current data at release" + ("" if trained else " (not recorded by its training run)")}


@dg.asset(group_name="release", deps=[pretrain_evaluation, "sft_evaluation", "dpo_evaluation"], kinds={"huggingface"},
          description="The instruction-tuned model (or the best evaluated base checkpoint) exported in Hugging Face "
                      "format with a model card: what `tenali serve` serves.")
def model_release(context: dg.AssetExecutionContext, lake: LakeResource, config: ReleaseConfig) -> dg.MaterializeResult:
    store = lake.lake()
    source, _ = lake_tokenizer(store)  # the tokenizer the shards (and so the checkpoints) were made with
    recorded = _evaluations(context.instance)
    # only checkpoints of the lake's tokenizer: an older lineage's would be exported with the wrong one
    evaluations = [e for e in recorded if e["tokenizer_sha256"] in (None, source.sha256)]
    if not evaluations:
        raise dg.Failure("No evaluation of a checkpoint is on record" + (
            f" for the lake's tokenizer ({source.sha256[:16]}; {len(recorded)} of checkpoints made with another one): "
            "retrain on the current shards" if recorded else ": materialise pretrain_evaluation first."))
    if config.checkpoint_key:
        chosen = [e for e in evaluations if _key_of(store, e["checkpoint"]) == config.checkpoint_key]
        if not chosen and any(_key_of(store, e["checkpoint"]) == config.checkpoint_key for e in recorded):
            raise dg.Failure(f"checkpoint_key {config.checkpoint_key!r} was trained with another tokenizer than the "
                             f"lake's ({source.sha256[:16]}): its ids would be exported with the wrong vocabulary.")
        if not chosen:
            raise dg.Failure(f"checkpoint_key {config.checkpoint_key!r} has no evaluation on record; evaluated: "
                             f"{sorted({_key_of(store, e['checkpoint']) for e in evaluations})}")
        chosen = chosen[0]
    elif config.pick == "latest":
        chosen = evaluations[0]
    elif config.pick in ("auto", "chat", "best"):
        existing = [e for e in evaluations if _in_lake(store, e["checkpoint"])]
        if not existing:
            raise dg.Failure("None of the evaluated checkpoints is still in the lake.")
        chat = _newest_chat(existing)
        if config.pick == "chat" and not chat:
            raise dg.Failure("pick='chat' but no instruction-tuned model (sft or dpo) is evaluated: materialise "
                             "sft_evaluation first, or pick 'best'.")
        base = [e for e in existing if e["stage"] == "pretrain"] or existing
        # bits per byte ranks checkpoints only on one validation text: the newest evaluation's
        newest_set = base[0]["val_set"]
        base = [e for e in base if e["val_set"] in (None, newest_set)] if newest_set else base
        chosen = chat[0] if chat and config.pick != "best" else min(base, key=lambda e: e["figures"]["bits_per_byte"])
    else:
        raise dg.Failure(f"pick must be 'auto', 'chat', 'best' or 'latest', not {config.pick!r}")
    ckpt_key = _key_of(store, chosen["checkpoint"])
    if not _in_lake(store, chosen["checkpoint"]):  # pruned since it was evaluated (or never finished uploading)
        where = (f"{store.uri(ckpt_key)} has no meta.json" if ckpt_key != chosen["checkpoint"] else
                 f"evaluated in another lake than this one, {store.root}")
        raise dg.Failure(f"The evaluated checkpoint {ckpt_key} is no longer in the lake ({where}): name another "
                         "with checkpoint_key, or pick 'best' / 'auto' (evaluated checkpoints still in the lake).")
    ckpt = store.download_dir(ckpt_key, lake.cache() / ckpt_key)
    meta, cfg = load_meta(ckpt), load_config(ckpt)
    latest_ckpt = store.read_json(LATEST_KEY)
    if latest_ckpt.get("checkpoint_key") == ckpt_key and latest_ckpt.get("tokenizer_sha256") not in (None, source.sha256):
        raise dg.Failure(f"The tokenizer in the lake (sha256 {source.sha256[:12]}) is not the one {ckpt_key} was "
                         "trained with: retrain, or release from a lake that still holds its tokenizer.")
    tok_file = export_tokenizer_file(store, chat=_kind(chosen["stage"]) == "chat")
    tokenizer = store.read_bytes(f"{TOKENIZER_KEY}/{tok_file}")
    tok_sha = hashlib.sha256(tokenizer).hexdigest()
    sentencepiece = tok_file.endswith(".model")
    manifest = store.read_json(f"{SHARDS_KEY}/{MANIFEST}")
    lineage = _lineage(context.instance, store, ckpt_key, manifest)
    created = dt.datetime.now(dt.timezone.utc)
    release_id = f"{config.name}-{created:%Y%m%d-%H%M%S}-step{meta['step']}-{meta['model_sha256'][:8]}"
    current = store.read_json(LATEST_RELEASE_KEY) if store.exists(LATEST_RELEASE_KEY) else None
    bpb = chosen["figures"]["bits_per_byte"]
    # Bits per byte compares like with like: a chat model replacing a base model (or back) is a deliberate
    # switch of kind, recorded in release.json, not a regression.
    same_kind = current is not None and _kind(current.get("stage", "pretrain")) == _kind(chosen["stage"])
    # ... and on the same validation text: a figure on another set (new data, a moved validation start) is
    # another test. Then the current release's checkpoint scored on this set is the baseline, if it was.
    baseline, comparable = (current or {}).get("bits_per_byte"), True
    if same_kind and current.get("val_set_sha256") and chosen["val_set"] \
            and current["val_set_sha256"] != chosen["val_set"]:
        again = [e for e in recorded if _key_of(store, e["checkpoint"]) == current.get("checkpoint_key")
                 and e["val_set"] == chosen["val_set"] and _kind(e["stage"]) == _kind(chosen["stage"])]
        baseline = again[0]["figures"]["bits_per_byte"] if again else _rescore(context, store, lake, current,
                                                                               recorded, manifest, chosen)
        comparable = baseline is not None
    if same_kind and not isinstance(baseline, (int, float)):
        comparable = False  # a pointer without a usable figure is not beaten by default
    if current is None or not same_kind:
        promoted = True
    elif not comparable:
        promoted = config.replace_incomparable
    else:
        promoted = bpb <= baseline * (1 + TOLERANCE)
    release = {
        "release_id": release_id, "model_name": release_id, "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": {**cfg.__dict__, "num_params": meta["num_params"], "architecture": _ARCH[cfg.activation][0]},
        "tokenizer": {"sha256": tok_sha, "kind": source.kind, "shards_sha256": source.sha256,
                      "file": "tokenizer.model" if sentencepiece else "tokenizer.json",
                      "vocab_size": manifest["tokenizer"]["vocab_size"] if sentencepiece else _json_vocab(tokenizer)},
        # the base its lineage started from, as its run recorded it (LATEST.json names the newest run's)
        "base_model": lineage["base_model"] if "base_model" in lineage else latest_ckpt.get("base_model"),
        "checkpoint": {"key": ckpt_key, "step": meta["step"], "tokens_seen": meta.get("tokens_seen"),
                       "model_sha256": meta["model_sha256"], "created": meta.get("created")},
        "evaluation": chosen["figures"],
        "lineage": lineage,
        "previous": current, "promoted": promoted, "pick": config.checkpoint_key or config.pick,
        "comparable_with_previous": comparable, "baseline_bits_per_byte": baseline,
        "val_set_sha256": chosen["val_set"],
        "stage": chosen["stage"], "chat_template": _kind(chosen["stage"]) == "chat",
    }
    same = _already_released(store, current, ckpt_key, meta, tok_sha, chosen, config.name) if promoted else None
    if same is not None:
        # A re-materialisation with nothing new: the current release is this one (same weights, tokenizer,
        # stage and figures). Another full copy of the model under a new id would only fill the lake.
        release_id, release["created"] = current["release_id"], same.get("created", release["created"])
        key = f"{RELEASES_KEY}/{release_id}"
        card = store.read_bytes(f"{key}/README.md").decode("utf-8")
        context.log.info(f"{ckpt_key} is already the current release {release_id}: nothing new written.")
    else:
        key = f"{RELEASES_KEY}/{release_id}"
        with store.staged_dir(key) as out, tempfile.TemporaryDirectory() as tmp:
            tok_path = Path(tmp) / release["tokenizer"]["file"]
            tok_path.write_bytes(tokenizer)
            try:
                export_hf(ckpt, out, tokenizer_model=tok_path)
            except ConversionError as e:
                raise dg.Failure(f"{ckpt_key} cannot be exported with tokenizer/{tok_file}: {e}") from e
            (out / "README.md").write_text(model_card(release), encoding="utf-8")
            (out / "release.json").write_text(release_json(release), encoding="utf-8")
            card = (out / "README.md").read_text(encoding="utf-8")
    pointer = {"release_id": release_id, "key": key, "uri": store.uri(key), "bits_per_byte": bpb,
               "checkpoint_key": ckpt_key, "created": release["created"], "stage": chosen["stage"],
               "val_set_sha256": chosen["val_set"]}
    if promoted:
        # checked before LATEST.json moves: the blocking check cannot take back a pointer already written
        if missing := _missing_files(store, release_id, release):
            raise dg.Failure(f"Release {release_id} lacks {', '.join(missing)} after export; LATEST.json unchanged.")
        if same is None:
            store.write_json(LATEST_RELEASE_KEY, pointer)
    elif not comparable:
        context.log.warning(f"Release {release_id} (bits/byte {bpb:.4f}) was scored on another validation set than the "
                            f"current {current.get('release_id')} ({current.get('bits_per_byte')}), whose checkpoint has "
                            "no evaluation on this one and cannot be scored on it now (gone from the lake, another "
                            "tokenizer, or the new release's own set is not the lake's): the figures do not compare; "
                            "LATEST.json unchanged. Re-run "
                            "with config replace_incomparable=True to move to this release deliberately.")
    else:
        context.log.warning(f"Release {release_id} (bits/byte {bpb:.4f}) is worse than the current "
                            f"{current['release_id']} ({baseline:.4f}); LATEST.json unchanged.")
    return dg.MaterializeResult(metadata={
        "release_id": release_id,
        "uri": dg.MetadataValue.path(store.uri(key)),
        "checkpoint": dg.MetadataValue.path(chosen["checkpoint"]),
        "bits_per_byte": bpb,
        # no figure to compare with (a first release, or none usable): left out, not NaN (a blank cell in the UI)
        **({"previous_bits_per_byte": float(baseline)}
           if isinstance(baseline, (int, float)) and math.isfinite(baseline) else {}),
        "previous_release": current["release_id"] if current else "none: first release",
        "comparable_with_previous": comparable,
        "promoted": promoted,
        "num_params": meta["num_params"],
        "stage": chosen["stage"],
        "model_card": dg.MetadataValue.md(without_front_matter(card)),  # README.md keeps its front matter
        "serve": dg.MetadataValue.text(f"tenali serve {store.uri(key)}" if promoted else "not promoted"),
    })


def _rescore(context, store, lake: LakeResource, current: dict, recorded: list[dict], manifest: dict,
             chosen: dict) -> float | None:
    """The current release's checkpoint's bits per byte on the validation shards in the lake, scored now,
    when the new release was scored on those shards and that checkpoint can be: still in the lake and made
    with the shards' tokenizer (its evaluations say which). New data moves the validation set each day, so
    without this every release after new data would have nothing to be compared with. None otherwise."""
    key = current.get("checkpoint_key")
    tokenizers = {e["tokenizer_sha256"] for e in recorded if _key_of(store, e["checkpoint"]) == key}
    if not key or chosen["val_set"] != val_set_sha256(manifest) or not store.exists(f"{key}/meta.json") \
            or tokenizers != {manifest["tokenizer"]["sha256"]}:
        return None
    from tenali_model.checkpoint import load_model

    shards = store.download_dir(SHARDS_KEY, lake.cache() / SHARDS_KEY)
    model = load_model(str(store.download_dir(key, lake.cache() / key)))
    bpb = score_val_split(context, manifest, shards, model)[2]
    context.log.info(f"The current release {current.get('release_id')} was scored on another validation set; its "
                     f"checkpoint {key} scores {bpb:.4f} bits/byte on this one, the baseline of the comparison.")
    return bpb


def _missing_files(store, release_id: str, release: dict) -> list[str]:
    """The files a release folder must hold (what serve and transformers read) that it does not."""
    files = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
             "release.json", release["tokenizer"].get("file", "tokenizer.model")}  # + tokenizer.model, or not
    return sorted(f for f in files if not store.exists(f"{RELEASES_KEY}/{release_id}/{f}"))


def _already_released(store, current: dict | None, ckpt_key: str, meta: dict, tok_sha: str, chosen: dict,
                      name: str) -> dict | None:
    """The current release's release.json when it is already this release (same checkpoint weights,
    tokenizer file, stage, figures and name), else None."""
    if not current or current.get("checkpoint_key") != ckpt_key or current.get("stage") != chosen["stage"]:
        return None
    path = f"{RELEASES_KEY}/{current.get('release_id')}/release.json"
    if not store.exists(path):
        return None
    old = store.read_json(path)
    same = (old.get("checkpoint", {}).get("model_sha256") == meta["model_sha256"]
            and old.get("tokenizer", {}).get("sha256") == tok_sha and old.get("evaluation") == chosen["figures"]
            and str(old.get("model_name", "")).startswith(f"{name}-") and old.get("promoted"))
    return old if same else None


@dg.asset_check(asset=model_release, blocking=True,
                description=f"The new release is no worse (bits per byte, {TOLERANCE:.0%} tolerance) than the one it "
                            "would replace; a worse one is refused (LATEST.json keeps the current release).")
def not_worse_than_current(context: dg.AssetCheckExecutionContext, lake: LakeResource) -> dg.AssetCheckResult:
    ev = context.instance.get_latest_materialization_event(model_release.key)
    meta = {k: v.value for k, v in ev.asset_materialization.metadata.items()}
    store = lake.lake()
    release_id = meta["release_id"]
    release = store.read_json(f"{RELEASES_KEY}/{release_id}/release.json")
    missing = _missing_files(store, release_id, release)
    previous = release.get("previous")
    passed = bool(release["promoted"]) and not missing
    return dg.AssetCheckResult(passed=passed, metadata={
        "release_id": release_id, "bits_per_byte": release["evaluation"]["bits_per_byte"],
        "current_release": previous["release_id"] if previous else "none: first release",
        "current_bits_per_byte": float(release.get("baseline_bits_per_byte", previous.get("bits_per_byte")) or math.nan)
        if previous else float("nan"),
        "comparable": bool(release.get("comparable_with_previous", True)),
        "missing_files": ", ".join(missing) or "none"})
