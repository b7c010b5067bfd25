"""Continued pretraining of a Hugging Face base through the pipeline (TENALI_BASE_MODEL), on the demo data.

A tiny Llama is made here with transformers (never a download), with a byte-level BPE tokenizer.json
trained on the demo corpus and a few training steps on it, so it knows the text better than a random
start. Then tokenizer -> token_shards -> pretrain_checkpoint -> pretrain_evaluation run through the real
local launcher (torchrun, one process): the tokenizer stage copies the base's tokenizer, the shards
record it, pretraining imports the base and continues from its weights, evaluation reads the same
tokenizer.
"""

import hashlib
import json
import math
from pathlib import Path

import dagster as dg
import pytest
import torch

from tenali_pipeline.definitions import build_definitions
from tenali_pipeline.lake import Lake
from tenali_pipeline.launchers import LocalTorchrunLauncher
from tenali_pipeline.resources import TrainingResource
from tenali_pipeline.settings import load_settings

from launcher_fakes import BUCKET, s3  # noqa: F401  (the moto S3 fixture)

transformers = pytest.importorskip("transformers")

STEPS, BATCH, SEQ = 40, 8, 64
VOCAB = 512


def _keys(*names):
    return [dg.AssetKey(n) for n in names]


@pytest.fixture(scope="module")
def base_defs(tmp_path_factory):
    """Settings, definitions and a Dagster instance for a lineage that starts from a base model."""
    home = tmp_path_factory.mktemp("tenali-base")
    base_dir = home / "models" / "tiny-llama"
    settings = load_settings({"TENALI_HOME": str(home), "TENALI_SHARD_TOKENS": "60000",
                              "TENALI_BASE_MODEL": str(base_dir)})
    defs = build_definitions(
        settings,
        # model="demo" is ignored: the base decides the shape
        training=TrainingResource(model="demo", steps=STEPS, batch_size=BATCH, seq_len=SEQ, lr=3e-3, warmup_steps=10,
                                  eval_every=0, eval_batches=4, ckpt_every=0),
        launcher=LocalTorchrunLauncher(nproc_per_node=1, threads_per_process=1),
    )
    return settings, defs, dg.DagsterInstance.ephemeral(), base_dir


@pytest.fixture(scope="module")
def base_run(base_defs):
    from hf_helpers import byte_level_tokenizer, write_base

    settings, defs, instance, base_dir = base_defs
    job = defs.resolve_implicit_global_asset_job_def()
    graph = defs.resolve_asset_graph()
    # 1. the demo data, up to the corpus and the grounded questions
    data = dg.AssetSelection.assets("corpus", "grounded_instructions").upstream().resolve(graph)
    assert job.execute_in_process(asset_selection=list(data), instance=instance).success
    lake = Lake(settings.lake_root)
    # 2. a base model that has seen this kind of text (its own tokenizer, a few steps of training)
    # a sample across domains and dates (the table is in input order: one document table after another)
    texts = lake.read_parquet("corpus/train.parquet")["text"].sample(800, seed=0).to_list()
    tok = byte_level_tokenizer(texts, vocab_size=VOCAB)
    base = write_base(base_dir, tok, eos="</s>", train_texts=texts, steps=80)
    # 3. the stages under test
    stages = _keys("tokenizer", "token_shards", "pretrain_checkpoint", "pretrain_evaluation")
    assert set(stages) == dg.AssetSelection.assets("pretrain_evaluation").upstream().resolve(graph) - data
    with pytest.MonkeyPatch.context() as mp:
        _wandb_offline(mp, settings.home / "wandb-pretrain")  # pretraining is tracked too
        result = job.execute_in_process(asset_selection=stages, instance=instance, raise_on_error=False)
    yield result, instance, lake, base_dir, tok, base


def _latest(instance, key):
    return instance.get_latest_materialization_event(dg.AssetKey(key)).asset_materialization.metadata


def test_every_stage_and_check_succeeds(base_run):
    result, *_ = base_run
    assert result.success, [e.step_key for e in result.all_events if e.is_step_failure]
    checks = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert checks and all(e.event_specific_data.passed for e in checks), [
        e.event_specific_data.check_name for e in checks if not e.event_specific_data.passed]


def test_the_tokenizer_is_the_base_s_own(base_run):
    _, instance, lake, base_dir, tok, _ = base_run
    sha = hashlib.sha256((base_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert lake.read_bytes("tokenizer/base/tokenizer.json") == (base_dir / "tokenizer.json").read_bytes()
    assert lake.exists("tokenizer/base/tokenizer_config.json")
    assert not lake.exists("tokenizer/tenali.model")  # no sentencepiece model next to a base lineage
    report = lake.read_json("tokenizer/report.json")
    assert (report["kind"], report["sha256"], report["eot_token"]) == ("hf-base", sha, "</s>")
    assert report["vocab_size"] == tok.get_vocab_size() and report["roundtrip_failures"] == 0
    assert set(report["bytes_per_token_by_domain"]) >= {"market", "technical"}
    meta = _latest(instance, "tokenizer")
    assert meta["kind"].value == "hf-base" and meta["base_model"].value == str(base_dir)


def test_the_manifest_records_the_tokenizer_and_shards_use_it(base_run):
    _, _, lake, base_dir, tok, _ = base_run
    manifest = lake.read_json("shards/manifest.json")
    block = manifest["tokenizer"]
    eos = tok.token_to_id("</s>")
    assert block["kind"] == "hf-base" and block["eot_token"] == "</s>" and block["eot_id"] == eos
    assert block["sha256"] == hashlib.sha256((base_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert block["base"]["uri"] == str(base_dir) and block["base"]["name"] == "tiny-llama"
    from tenali_model.data import read_shard

    first = lake.read_parquet("corpus/train.parquet")["text"][0]
    want = [*tok.encode(first, add_special_tokens=False).ids, eos]
    got = read_shard(lake.local_dir("shards") / manifest["splits"]["train"][0]["file"])
    assert got[:len(want)].tolist() == want


def test_pretraining_continues_from_the_imported_base(base_run):
    _, instance, lake, base_dir, tok, base = base_run
    from tenali_model.checkpoint import load_config, load_meta
    from tenali_model.data import TokenLoader

    latest = lake.read_json("checkpoints/pretrain/LATEST.json")
    record = latest["base_model"]
    assert record["uri"] == str(base_dir) and record["name"] == "tiny-llama"
    imported_key = f"checkpoints/base/{record['sha256'][:16]}"
    assert record["checkpoint"] == lake.uri(imported_key)
    assert load_meta(lake.local_dir(imported_key))["imported_from"]["path"] == str(base_dir.resolve())
    ckpt = lake.local_dir(latest["checkpoint_key"])
    meta = load_meta(ckpt)
    assert meta["train_config"]["init_from"] == str(lake.local_dir(imported_key))
    assert meta["step"] == STEPS
    shape = load_config(ckpt)
    assert (shape.dim, shape.n_layers, shape.vocab_size) == (64, 2, tok.get_vocab_size())  # the base's, not "demo"
    started = _latest(instance, "pretrain_checkpoint")["started_from"].value
    assert started.startswith("base model tiny-llama")

    # The first logged loss (step 10: log_every) is the base's own loss on that batch, moved a little
    # by 9 warm-up steps, and far below a random start's ~ln(vocab).
    records = [json.loads(line) for line in lake.read_bytes(latest["metrics_key"]).decode().splitlines()]
    first = next(r for r in records if r["kind"] == "train")
    loader = TokenLoader(meta["train_config"]["train_shards"], SEQ, BATCH, 0, 1, meta["train_config"]["seed"])
    for _ in range(first["step"]):
        x, y = loader.next_batch()
    with torch.no_grad():
        logits = base(x).logits
    base_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item()
    random_start = math.log(tok.get_vocab_size())
    assert base_loss < random_start - 1.5, (base_loss, random_start)  # the base did learn the text
    # Continued, not restarted: far below a random start, and no worse than the base itself (9 warm-up steps
    # may already lower it: by 0.5 on today's demo corpus, so only the upper side is bounded).
    assert first["loss"] < random_start - 1.5 and first["loss"] < base_loss + 0.4, (first["loss"], base_loss)


def test_evaluation_reads_the_base_tokenizer(base_run):
    _, instance, lake, *_ = base_run
    meta = _latest(instance, "pretrain_evaluation")
    figures = {k: meta[k].value for k in ("val_loss", "perplexity", "bits_per_byte")}
    assert all(math.isfinite(v) and v > 0 for v in figures.values()), figures
    assert figures["val_loss"] < math.log(VOCAB) - 1  # a continued base, not a random model
    assert "**AAPL rose**" in meta["samples"].value
    # chat is scored with the base tokenizer plus the added chat tokens (embeddings grown as SFT grows them)
    assert "chat_evaluation" not in meta
    assert math.isfinite(meta["instruction_loss"].value) and meta["instruction_perplexity"].value > 1


@pytest.fixture(scope="module")
def chat_run(base_defs, base_run, tmp_path_factory):
    """Distillation, SFT (LoRA), its evaluation and the release on the base lineage, tracked by W&B
    offline (real wandb library, no network)."""
    from tenali_pipeline.defs.posttraining.stages import DistillSettings, SFTSettings

    _, defs, instance, _ = base_defs
    assert base_run[0].success
    wandb_dir = tmp_path_factory.mktemp("wandb")
    stages = _keys("distilled_checkpoint", "sft_checkpoint", "sft_evaluation", "model_release")
    config = dg.RunConfig(ops={"distilled_checkpoint": DistillSettings(steps=4),
                               "sft_checkpoint": SFTSettings(steps=CHAT_STEPS, lr=5e-3)})
    with pytest.MonkeyPatch.context() as mp:
        tracked = _wandb_offline(mp, wandb_dir)
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            asset_selection=stages, instance=instance, run_config=config, raise_on_error=False)
    return result, wandb_dir if tracked else None


def _wandb_offline(mp: pytest.MonkeyPatch, folder: Path) -> bool:
    """W&B tracking, offline and silent, into folder (when wandb is installed; the `track` extra)."""
    try:
        import wandb  # noqa: F401
    except ImportError:
        return False
    for k, v in {"TENALI_WANDB_PROJECT": "tenali-base-test", "TENALI_WANDB_MODE": "offline",
                 "TENALI_WANDB_DIR": str(folder), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                 "WANDB_ERROR_REPORTING": "false", "WANDB_CONFIG_DIR": str(folder / "config"),
                 "WANDB_CACHE_DIR": str(folder / "cache"), "WANDB_DATA_DIR": str(folder / "data")}.items():
        mp.setenv(k, v)
    mp.delenv("TENALI_MLFLOW_TRACKING_URI", raising=False)
    return True


CHAT_STEPS = 12


def test_the_tokenizer_stage_writes_a_chat_version_of_the_base_tokenizer(base_run):
    _, instance, lake, base_dir, tok, _ = base_run
    from tenali_model.tokenizer import SPECIAL_TOKENS, load_tokenizer

    from tenali_pipeline.defs.tokenizer.assets import chat_tokenizer_file

    assert chat_tokenizer_file(lake) == "base/chat/tokenizer.json"
    chat = load_tokenizer(lake.local_dir("tokenizer") / "base" / "chat" / "tokenizer.json")
    n = tok.get_vocab_size()
    assert [chat.token_id(t) for t in SPECIAL_TOKENS] == list(range(n, n + len(SPECIAL_TOKENS)))
    first = lake.read_parquet("corpus/train.parquet")["text"][0]
    assert chat.encode(first) == tok.encode(first, add_special_tokens=False).ids  # the shards' ids are unchanged
    report = lake.read_json("tokenizer/report.json")["chat"]
    assert report["added_tokens"] == list(SPECIAL_TOKENS) and report["vocab_size"] == n + len(SPECIAL_TOKENS)
    assert json.loads(lake.read_bytes("tokenizer/base/chat/tokenizer_config.json"))["eos_token"] == "<|endoftext|>"
    assert _latest(instance, "tokenizer")["chat_vocab_size"].value == n + len(SPECIAL_TOKENS)


def test_chat_stages_run_on_the_base_lineage(base_run, chat_run):
    _, instance, lake, _, tok, _ = base_run
    result, wandb_dir = chat_run
    assert result.success, [e.step_key for e in result.all_events if e.is_step_failure]
    from tenali_model.checkpoint import load_meta, load_model
    from tenali_model.tokenizer import ASSISTANT, SPECIAL_TOKENS, USER, load_tokenizer

    n = tok.get_vocab_size()
    latest = lake.read_json("checkpoints/sft/LATEST.json")
    ckpt = lake.local_dir(latest["checkpoint_key"])
    meta = load_meta(ckpt)
    assert meta["vocab_extended"] == {"from": n, "to": n + 5, "tokens": list(SPECIAL_TOKENS), "init": "mean"}
    assert meta["step"] == CHAT_STEPS and meta["lora"]["r"] == 16
    sft_meta = _latest(instance, "sft_checkpoint")
    assert sft_meta["vocab_extended"].value.startswith(f"{n} -> {n + 5}")
    assert sft_meta["final_loss"].value < sft_meta["initial_loss"].value
    # the new rows trained (under LoRA, where the rest of the table stays frozen) and tell the markers apart
    parent = load_model(lake.local_dir(lake.read_json("checkpoints/distill/LATEST.json")["checkpoint_key"]))
    model = load_model(ckpt)
    old, new = parent.tok_embeddings.weight.detach(), model.tok_embeddings.weight.detach()
    assert torch.equal(new[:n], old)
    chat = load_tokenizer(lake.local_dir("tokenizer") / "base" / "chat" / "tokenizer.json")
    assert (new[chat.special(USER)] - new[chat.special(ASSISTANT)]).abs().max() > 1e-3
    # every training stage is a W&B run (offline), linked from its asset's metadata
    if wandb_dir is None:
        pytest.skip("wandb is not installed (the `track` extra): W&B links not checked")
    from test_tracking import read_wandb_log

    for asset, stage in (("pretrain_checkpoint", "pretrain"), ("distilled_checkpoint", "distill"),
                         ("sft_checkpoint", "sft")):
        run_dir = Path(_latest(instance, asset)["wandb_run"].value)
        (log,) = run_dir.glob("run-*.wandb")
        run = next(r.run for r in read_wandb_log(log) if r.WhichOneof("record_type") == "run")
        assert (run.project, run.job_type) == ("tenali-base-test", stage), asset


def test_the_release_on_the_base_lineage_loads_in_transformers_and_renders_the_chat_tokens(base_run, chat_run):
    _, instance, lake, base_dir, tok, _ = base_run
    assert chat_run[0].success
    from tenali_model.chat import encode_chat, render_text
    from tenali_model.checkpoint import load_model
    from tenali_model.serve.loading import load_served
    from tenali_model.tokenizer import ASSISTANT, SYSTEM, USER

    meta = _latest(instance, "model_release")
    assert meta["stage"].value == "sft" and meta["promoted"].value
    checks = [e.event_specific_data for e in chat_run[0].all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert {c.check_name: c.passed for c in checks}["not_worse_than_current"]
    folder = lake.local_dir(f"releases/{meta['release_id'].value}")
    assert not (folder / "tokenizer.model").exists()
    release = json.loads((folder / "release.json").read_text())
    assert release["tokenizer"]["file"] == "tokenizer.json" and release["tokenizer"]["vocab_size"] == tok.get_vocab_size() + 5
    assert release["base_model"]["name"] == "tiny-llama" and "tiny-llama" in (folder / "README.md").read_text()
    # its data is what the distilled student was trained on, recorded by the distillation run
    assert release["lineage"]["distilled_from"] and release["lineage"]["recorded"] == "by its training run"
    assert "Distilled from" in (folder / "README.md").read_text()
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    messages = [{"role": "system", "content": "Answer with the figure."},
                {"role": "user", "content": "What was the close of AAPL?"}]
    text = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == render_text(messages, add_generation_prompt=True)
    ids = hf_tok(text, add_special_tokens=False)["input_ids"]
    served = load_served(folder)  # what `tenali serve` loads: the same tokenizer, from tokenizer.json
    assert ids == encode_chat(served.tokenizer, messages, add_generation_prompt=True).ids
    n = tok.get_vocab_size()
    markers = [served.tokenizer.special(t) for t in (SYSTEM, USER, ASSISTANT)]
    assert all(m >= n for m in markers) and [i for i in ids if i >= n] == markers
    ckpt = lake.local_dir(lake.read_json("checkpoints/sft/LATEST.json")["checkpoint_key"])
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(hf_model(x).logits, load_model(ckpt)(x)[0], rtol=0, atol=1e-4)
    out = hf_model.generate(x, max_new_tokens=8, do_sample=False, eos_token_id=hf_tok.eos_token_id)
    assert out.shape[1] > x.shape[1]


def test_a_lora_dpo_on_the_base_lineage_keeps_no_second_model(base_defs, base_run, chat_run):
    """DPOSettings(lora=True): the preference stage tunes adapters on the SFT model, whose own weights
    (adapters off, head as it started) are the reference."""
    from tenali_model.checkpoint import load_meta

    from tenali_pipeline.defs.posttraining.stages import DPOSettings
    _, defs, instance, _ = base_defs
    _, _, lake, _, _, _ = base_run
    assert chat_run[0].success
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=_keys("dpo_checkpoint"), instance=instance, raise_on_error=False,
        run_config=dg.RunConfig(ops={"dpo_checkpoint": DPOSettings(steps=4, lora=True, lora_r=8)}))
    assert result.success, [e.step_key for e in result.all_events if e.is_step_failure]
    latest = lake.read_json("checkpoints/dpo/LATEST.json")
    meta = load_meta(lake.local_dir(latest["checkpoint_key"]))
    assert meta["lora"]["r"] == 8 and meta["reference_held"] == "the policy without its adapters"
    assert latest["parent_checkpoint"] == lake.read_json("checkpoints/sft/LATEST.json")["checkpoint"]


def test_unsetting_the_base_trains_tenali_s_tokenizer_and_leaves_nothing_stale(base_run, tmp_path):
    import shutil

    _, _, lake, *_ = base_run
    shutil.copytree(lake.root, tmp_path / "lake")
    settings = load_settings({"TENALI_HOME": str(tmp_path), "TENALI_VOCAB_SIZE": "512"})
    job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(asset_selection=_keys("tokenizer"), instance=dg.DagsterInstance.ephemeral()).success
    other = Lake(str(tmp_path / "lake"))
    assert other.list("tokenizer") == ["tokenizer/hf/tokenizer.json", "tokenizer/hf/tokenizer_config.json",
                                       "tokenizer/report.json", "tokenizer/tenali.model"]
    from tenali_pipeline.defs.tokenizer.assets import chat_tokenizer_file, lake_tokenizer

    source, report = lake_tokenizer(other)
    assert source.kind == report["kind"] == "sentencepiece" and report["hf_id_agreement"] == 1.0
    assert chat_tokenizer_file(other) == "tenali.model"


def test_a_base_on_s3_is_imported_once_into_an_s3_lake(s3, tmp_path):
    """Production layout: the base under an s3:// prefix, the lake on S3; the import is cached by content."""
    from hf_helpers import byte_level_tokenizer, write_base

    from tenali_pipeline.defs.training.assets import import_base
    from tenali_pipeline.resources import LakeResource

    endpoint, client = s3
    folder = tmp_path / "base"
    write_base(folder, byte_level_tokenizer(["shares rose 3% on the quarter."] * 20, vocab_size=300), max_seq_len=32)
    for f in folder.iterdir():
        client.upload_file(str(f), BUCKET, f"models/tiny/{f.name}")
    uri = f"s3://{BUCKET}/models/tiny"
    lake = LakeResource(root=f"s3://{BUCKET}/lake", s3_endpoint_url=endpoint, cache_dir=str(tmp_path / "cache"))
    sha = hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
    manifest = {"tokenizer": {"kind": "hf-base", "sha256": sha, "base": {"uri": uri, "name": "tiny"}}}
    logged = []
    context = type("Context", (), {"log": type("Log", (), {"info": staticmethod(logged.append)})()})()

    first = import_base(context, lake, manifest)
    assert first["checkpoint"] == f"s3://{BUCKET}/lake/checkpoints/base/{first['sha256'][:16]}"
    from tenali_model.checkpoint import load_meta

    assert load_meta(first["path"])["step"] == 0 and len(logged) == 1
    assert import_base(context, lake, manifest) == first and len(logged) == 1  # imported once
    with pytest.raises(dg.Failure, match="not the one the shards were encoded with.*re-materialise tokenizer"):
        import_base(context, lake, {"tokenizer": {**manifest["tokenizer"], "sha256": "0" * 64}})
