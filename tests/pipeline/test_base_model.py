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
def base_run(tmp_path_factory):
    from hf_helpers import byte_level_tokenizer, write_base

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
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()
    graph = defs.resolve_asset_graph()
    # 1. the demo data, up to the corpus and the grounded questions
    data = dg.AssetSelection.assets("corpus", "grounded_instructions").upstream().resolve(graph)
    assert job.execute_in_process(asset_selection=list(data), instance=instance).success
    lake = Lake(settings.lake_root)
    # 2. a base model that has seen this kind of text (its own tokenizer, a few steps of training)
    texts = lake.read_parquet("corpus/train.parquet")["text"].head(800).to_list()
    tok = byte_level_tokenizer(texts, vocab_size=VOCAB)
    base = write_base(base_dir, tok, eos="</s>", train_texts=texts, steps=80)
    # 3. the stages under test
    stages = _keys("tokenizer", "token_shards", "pretrain_checkpoint", "pretrain_evaluation")
    assert set(stages) == dg.AssetSelection.assets("pretrain_evaluation").upstream().resolve(graph) - data
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
    assert abs(first["loss"] - base_loss) < 0.4, (first["loss"], base_loss)


def test_evaluation_reads_the_base_tokenizer(base_run):
    _, instance, lake, *_ = base_run
    meta = _latest(instance, "pretrain_evaluation")
    figures = {k: meta[k].value for k in ("val_loss", "perplexity", "bits_per_byte")}
    assert all(math.isfinite(v) and v > 0 for v in figures.values()), figures
    assert figures["val_loss"] < math.log(VOCAB) - 1  # a continued base, not a random model
    assert "**AAPL rose**" in meta["samples"].value
    note = meta["chat_evaluation"].value
    assert note.startswith("skipped") and "<|user|>" in note and "<|assistant|>" in note
    assert "instruction_loss" not in meta


def test_chat_stages_stop_naming_the_missing_tokens(base_run):
    _, _, lake, *_ = base_run
    from tenali_pipeline.defs.tokenizer.assets import chat_tokenizer_file

    with pytest.raises(dg.Failure, match=r"no <\|endoftext\|>, <\|user\|>, <\|assistant\|>, <\|system\|> tokens.*"
                                         r"embeddings resized.*unset TENALI_BASE_MODEL"):
        chat_tokenizer_file(lake)


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
