"""What the release decides and records: overall bits per byte, comparing releases on one validation set, clear errors, no second copy."""

import hashlib
import logging
import math
import shutil

import dagster as dg
import pytest

from tenali_pipeline.lake import Lake
from tenali_pipeline.resources import LakeResource
from ts_helpers import make_checkpoint, materialise_release, record_evaluation


class _Ctx:
    log = logging.getLogger("test")


def _eval_lake(tmp_path, tok_path, served):
    root = tmp_path / "lake"
    lake = Lake(str(root))
    tok = tok_path.read_bytes()
    sha = hashlib.sha256(tok).hexdigest()
    lake.write_bytes("tokenizer/tenali.model", tok)
    # two validation domains: prose at 4 bytes per token, digit-split numbers at 1 byte per token
    val = [{"file": "val_news_0000.bin", "tokens": 1000, "bytes": 4000, "documents": 10, "domain": "news"},
           {"file": "val_market_0000.bin", "tokens": 1000, "bytes": 1000, "documents": 10, "domain": "market"}]
    lake.write_json("shards/manifest.json", {
        "tokenizer": {"sha256": sha, "vocab_size": served.tokenizer.vocab_size, "eot_id": 0},
        "splits": {"train": [], "val": val}, "totals": {"train": 0, "val": 2000},
        "corpus": {"val_start": "2012-01-01"}})
    ckpt = make_checkpoint(tmp_path / "run", vocab_size=served.tokenizer.vocab_size)
    key = f"checkpoints/pretrain/run/{ckpt.name}"
    shutil.copytree(ckpt, root / key)
    lake.write_json("checkpoints/pretrain/LATEST.json", {"checkpoint_key": key, "checkpoint": lake.uri(key),
                                                         "tokenizer_sha256": sha})
    return lake, LakeResource(root=str(root), cache_dir=str(tmp_path / "cache"))


def test_overall_bits_per_byte_is_all_bits_over_all_bytes(tmp_path, tok_path, served, monkeypatch):
    """Two domains with the same number of evaluated tokens but 4 and 1 bytes per token: the overall bits
    per byte is total bits / total bytes, not the token-weighted mean of the per-domain ratios."""
    from tenali_pipeline.defs.evaluation import assets as ev

    losses = {"val_news_0000.bin": 2.0, "val_market_0000.bin": 1.0}

    def fake_evaluate(model, files, batch_size=8, bytes_per_token=None, **kw):
        loss = losses[files[0].rsplit("/", 1)[-1]]
        return {"val_loss": loss, "perplexity": math.exp(loss), "tokens": 1000, "seq_len": 128,
                "bits_per_byte": loss / math.log(2) / bytes_per_token}

    monkeypatch.setattr(ev, "evaluate_model", fake_evaluate)
    lake, resource = _eval_lake(tmp_path, tok_path, served)
    meta = ev.evaluate_latest(_Ctx(), resource, "checkpoints/pretrain/LATEST.json", chat=False)
    bits = (2.0 * 1000 + 1.0 * 1000) / math.log(2)
    assert meta["bits_per_byte"] == pytest.approx(bits / (4000 + 1000))
    assert meta["val_loss"] == pytest.approx(1.5)
    # the validation text it was scored on, for the release to compare like with like
    assert meta["val_set_sha256"] == ev.val_set_sha256(lake.read_json("shards/manifest.json"))


# ---- model_release ---------------------------------------------------------------------------------

from tenali_pipeline.defs.release.assets import LATEST_RELEASE_KEY, model_release  # noqa: E402


def test_a_release_scored_on_another_validation_set_is_compared_on_that_set(lake_setup):
    """Bits per byte on new data (another validation set) is another test: the new release is compared with
    the current release's checkpoint scored on the same set, and refused when there is no such figure."""
    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.50, val_set_sha256="A")
    result, check = materialise_release(instance, resources, checkpoint_key=keys[0])
    assert check.passed
    first = lake.read_json(LATEST_RELEASE_KEY)
    assert first["checkpoint_key"] == keys[0]

    # an easier set: 1.40 looks better than 1.50, but the current checkpoint was never scored on it
    record_evaluation(instance, lake, keys[1], 1.40, val_set_sha256="B")
    result, check = materialise_release(instance, resources, checkpoint_key=keys[1])
    assert not check.passed and lake.read_json(LATEST_RELEASE_KEY) == first
    # scored on B the current checkpoint is better (1.30): the new one is worse and refused
    record_evaluation(instance, lake, keys[0], 1.30, val_set_sha256="B")
    result, check = materialise_release(instance, resources, checkpoint_key=keys[1])
    assert not check.passed and lake.read_json(LATEST_RELEASE_KEY) == first


def test_a_better_release_on_a_harder_validation_set_replaces_the_current(lake_setup):
    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.50, val_set_sha256="A")
    materialise_release(instance, resources, checkpoint_key=keys[0])
    # new, harder data: both checkpoints score worse on it, the new one less so
    record_evaluation(instance, lake, keys[0], 1.80, val_set_sha256="B")
    record_evaluation(instance, lake, keys[1], 1.60, val_set_sha256="B")
    result, check = materialise_release(instance, resources, checkpoint_key=keys[1])
    assert check.passed and lake.read_json(LATEST_RELEASE_KEY)["checkpoint_key"] == keys[1]


def test_best_ranks_checkpoints_on_one_validation_set(lake_setup):
    """'best' picks the lowest bits per byte among evaluations on the newest validation set, not a lower
    figure that an older checkpoint had on an easier, older set."""
    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.20, val_set_sha256="A")  # old, easier set
    record_evaluation(instance, lake, keys[1], 1.60, val_set_sha256="B")
    record_evaluation(instance, lake, keys[0], 1.90, val_set_sha256="B")
    result, _ = materialise_release(instance, resources, pick="best")
    assert result.success
    assert lake.read_json(LATEST_RELEASE_KEY)["checkpoint_key"] == keys[1]


def test_an_evaluated_checkpoint_gone_from_the_lake_is_a_clear_failure(lake_setup):
    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.50)
    shutil.rmtree(lake.local_dir(keys[0]))
    for config in ({"checkpoint_key": keys[0]}, {"pick": "latest"}):
        result, _ = materialise_release(instance, resources, **config)
        assert not result.success
        error = result.get_step_failure_events()[0].step_failure_data.error
        assert error.cls_name == "Failure", (error.cls_name, error.message)
        assert "no longer in the lake" in error.message


def test_the_cards_serve_command_names_a_path_serve_can_load(lake_setup, capsys):
    """`tenali serve <release id>` (what the card said) is not a path: serve answers that it does not exist."""
    from tenali_model.serve.loading import load_served

    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.50)
    materialise_release(instance, resources)
    release_id = lake.read_json(LATEST_RELEASE_KEY)["release_id"]
    card = (lake.local_dir(f"releases/{release_id}") / "README.md").read_text()
    commands = [line.split("#")[0].split()[2:] for line in card.splitlines() if line.startswith("tenali serve ")]
    assert commands
    for args in commands:
        args = [a.replace("LAKE_ROOT", str(lake.root)) for a in args]
        path = args[1] if args[0] == "--lake" else args[0]
        assert load_served(path).name == release_id


def test_releasing_the_current_release_again_writes_no_second_copy(lake_setup):
    """Materialising model_release twice with nothing new leaves one release folder (a full copy of the
    model each time would fill the lake), LATEST.json as it was, and the check passing."""
    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.50)
    result, check = materialise_release(instance, resources)
    assert result.success and check.passed
    pointer = lake.read_json(LATEST_RELEASE_KEY)
    import time
    time.sleep(1.1)  # release ids carry the second they were made
    result, check = materialise_release(instance, resources)
    assert result.success and check.passed
    folders = [p.name for p in lake.local_dir("releases").iterdir() if p.is_dir()]
    assert folders == [pointer["release_id"]]
    assert lake.read_json(LATEST_RELEASE_KEY) == pointer
    # a new figure for it (re-evaluated) is a new release
    record_evaluation(instance, lake, keys[0], 1.49)
    time.sleep(1.1)
    result, check = materialise_release(instance, resources)
    assert check.passed and lake.read_json(LATEST_RELEASE_KEY)["release_id"] != pointer["release_id"]


def test_new_data_scores_the_current_release_on_the_new_validation_set(lake_setup, monkeypatch):
    """New data moves the validation set every day: the current release's checkpoint, still in the lake and of
    the shards' tokenizer, is scored on the new set in the release step, and the comparison made there."""
    from tenali_pipeline.defs.evaluation import assets as ev

    lake, keys, instance, resources = lake_setup
    manifest = lake.read_json("shards/manifest.json")
    manifest["splits"] = {"train": [], "val": [{"file": "val_news_0000.bin", "tokens": 1000, "bytes": 4000,
                                               "documents": 10, "domain": "news"}]}
    lake.write_json("shards/manifest.json", manifest)
    lake.write_bytes("shards/val_news_0000.bin", b"")
    sha, new_set = manifest["tokenizer"]["sha256"], ev.val_set_sha256(manifest)
    scored = []

    def fake_evaluate(model, files, batch_size=8, bytes_per_token=None, **kw):
        scored.append(files)
        return {"val_loss": 1.7 * math.log(2) * bytes_per_token, "perplexity": 1.0, "tokens": 1000, "seq_len": 128,
                "bits_per_byte": 1.7}

    monkeypatch.setattr(ev, "evaluate_model", fake_evaluate)

    def evaluated(key, bpb, val_set):
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="pretrain_evaluation", metadata={
            "bits_per_byte": bpb, "checkpoint": dg.MetadataValue.path(lake.uri(key)), "val_set_sha256": val_set,
            "tokenizer_sha256": sha}))

    evaluated(keys[0], 1.50, "old")
    materialise_release(instance, resources, checkpoint_key=keys[0])
    first = lake.read_json(LATEST_RELEASE_KEY)
    evaluated(keys[1], 1.60, new_set)  # worse than 1.70, the current checkpoint's figure on the new set
    result, check = materialise_release(instance, resources, checkpoint_key=keys[1])
    assert len(scored) == 1 and check.passed
    pointer = lake.read_json(LATEST_RELEASE_KEY)
    assert pointer["checkpoint_key"] == keys[1] and pointer["val_set_sha256"] == new_set
    release = lake.read_json(f"releases/{pointer['release_id']}/release.json")
    assert release["baseline_bits_per_byte"] == pytest.approx(1.7) and release["comparable_with_previous"]
    # 1.80 on the new set is worse than the current release (1.60, scored on that set): refused
    evaluated(keys[0], 1.80, new_set)
    result, check = materialise_release(instance, resources, checkpoint_key=keys[0])
    assert not check.passed and lake.read_json(LATEST_RELEASE_KEY) == pointer
    assert first["checkpoint_key"] == keys[0]


def test_a_release_missing_a_file_never_becomes_latest(lake_setup, monkeypatch):
    """The files serve and transformers read are checked before LATEST.json moves (the blocking check
    runs after the asset, too late to take the pointer back)."""
    from tenali_pipeline.defs.release import assets as rel

    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.50)
    real = rel.export_hf

    def export_without_tokenizer_config(ckpt, out, **kw):
        path = real(ckpt, out, **kw)
        (out / "tokenizer_config.json").unlink()
        return path

    monkeypatch.setattr(rel, "export_hf", export_without_tokenizer_config)
    result, _ = materialise_release(instance, resources)
    assert not result.success and not lake.exists(LATEST_RELEASE_KEY)
    assert "lacks tokenizer_config.json" in result.get_step_failure_events()[0].step_failure_data.error.message


def test_the_evaluation_regression_warning_compares_one_validation_set():
    """pretrain_evaluation's no_regression warns on a worse figure on the same validation text only:
    new data (another val_set_sha256) is another test."""
    from tenali_pipeline.defs.evaluation.assets import no_regression

    def check(*evaluations):
        instance = dg.DagsterInstance.ephemeral()
        for bpb, val_set in evaluations:
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key="pretrain_evaluation", metadata={"bits_per_byte": bpb, "val_set_sha256": val_set}))
        return no_regression(dg.build_asset_check_context(instance=instance)).passed

    assert not check((1.0, "A"), (1.5, "A"))
    assert check((1.0, "A"), (1.5, "B"))  # a harder set, not a worse model
    assert check((1.0, "A"), (1.02, "A"))


# ---- what the release shows a reader: the card and the asset's metadata ----------------------------


def _card(lake, release_id=None):
    release_id = release_id or lake.read_json(LATEST_RELEASE_KEY)["release_id"]
    return (lake.local_dir(f"releases/{release_id}") / "README.md").read_text()


def _release_metadata(instance):
    event = instance.get_latest_materialization_event(model_release.key)
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_the_card_prints_whole_small_and_ordinary_figures_readably(lake_setup):
    """Figures arrive as floats (evaluation metadata, the config): a whole number reads as one (30, 91,648,
    10,000, not 30.0000), a small one keeps its digits (norm_eps 1e-05, not 0.0000), others 4 decimals."""
    from tenali_pipeline.defs.release.card import _fmt

    assert _fmt(1e-05) == "1e-05" and _fmt(0.000123456) == "0.0001235"
    assert _fmt(10000.0) == "10,000" and _fmt(30.0) == "30" and _fmt(91648.0) == "91,648" and _fmt(0.0) == "0"
    assert _fmt(1.5) == "1.5000" and _fmt(0.1234567) == "0.1235" and _fmt(12345.678) == "12,345.6780"
    assert _fmt(float("nan")) == "nan" and _fmt(1234) == "1,234" and _fmt("x") == "x"

    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.50)
    materialise_release(instance, resources)
    card = _card(lake)
    assert "| norm_eps | 1e-05 |" in card and "| rope_theta | 10,000 |" in card
    assert "| bits_per_byte | 1.5000 |" in card and "| perplexity | 9 |" in card
    assert "0.0000" not in card and "10000.0000" not in card


def test_the_ui_model_card_has_no_front_matter_but_the_readme_keeps_it(lake_setup):
    """Hugging Face's YAML front matter renders in the Dagster UI as a rule and a heading: the card shown
    there starts at its title; README.md (what the Hub reads) keeps it."""
    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.50)
    materialise_release(instance, resources)
    readme = _card(lake)
    assert readme.startswith("---\nlibrary_name: transformers\n")
    shown = _release_metadata(instance)["model_card"]
    assert shown.startswith("# ") and "library_name" not in shown and "\n---\n" not in shown
    assert shown == readme.split("---\n", 2)[2].lstrip("\n")  # the rest of the card, whole


def test_a_chat_releases_card_does_not_call_it_a_text_continuer(lake_setup):
    """The limits follow the stage: a base model continues text; an sft/dpo release is a chat model, and its
    card does not say it only continues text next to "Stage: preference-tuned"."""
    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.50)
    materialise_release(instance, resources)
    base = _card(lake)
    assert "Stage: **pretrained base model**" in base
    assert "it continues text rather than following instructions" in base
    assert "Instruction-tuned (a chat model)" not in base

    record_evaluation(instance, lake, keys[1], 1.60, asset="dpo_evaluation")
    result, _ = materialise_release(instance, resources)
    assert result.success and lake.read_json(LATEST_RELEASE_KEY)["stage"] == "dpo"
    chat = _card(lake)
    assert "Stage: **preference-tuned**" in chat
    assert "continues text" not in chat and "Pretrained only" not in chat
    limits = chat.split("## Intended use and limits")[1].split("## How to use")[0]
    assert "Instruction-tuned (a chat model)" in limits and "chat template" in limits


def test_the_cards_how_to_use_says_where_tenali_comes_from(lake_setup):
    """A new shell has no `tenali` on PATH unless the venv is active: the card says so before its commands
    (which stay runnable lines; test_the_cards_serve_command_names_a_path_serve_can_load loads them)."""
    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.50)
    materialise_release(instance, resources)
    how = _card(lake).split("## How to use")[1]
    note, block = how.split("```")[0], how.split("```")[1]
    assert "source .venv/bin/activate" in note and "`.venv/bin/tenali`" in note
    assert [line.split()[:2] for line in block.strip().splitlines()] == [["tenali", "serve"]] * 2


def test_a_first_release_has_no_previous_figure_rather_than_nan(lake_setup):
    """NaN shows as a blank cell in the UI: a first release leaves previous_bits_per_byte out and says
    there was none; the next one records the figure it was compared with."""
    lake, keys, instance, resources = lake_setup
    record_evaluation(instance, lake, keys[0], 1.50)
    materialise_release(instance, resources)
    first = lake.read_json(LATEST_RELEASE_KEY)["release_id"]
    meta = _release_metadata(instance)
    assert "previous_bits_per_byte" not in meta
    assert meta["previous_release"] == "none: first release"
    assert not any(isinstance(v, float) and math.isnan(v) for v in meta.values())

    record_evaluation(instance, lake, keys[1], 1.45)
    result, check = materialise_release(instance, resources, pick="latest")
    assert result.success and check.passed
    meta = _release_metadata(instance)
    assert meta["previous_bits_per_byte"] == pytest.approx(1.50) and meta["previous_release"] == first
