"""The whole graph on the demo profile at tiny sizes, through the real launcher (torchrun, 2 ranks)."""

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from tenali_model.data import read_shard
from tenali_model.tokenizer import SPECIAL_TOKENS

from tenali_pipeline.cli import _free_port
from tenali_pipeline.definitions import build_definitions
from tenali_pipeline.lake import Lake
from tenali_pipeline.launchers import LocalTorchrunLauncher
from tenali_pipeline.resources import TrainingResource
from tenali_pipeline.settings import Settings, load_settings
from tenali_pipeline.sources.schema import SCHEMAS
from tenali_pipeline.tokenization import EOT, load_tokenizer

STEPS = 80
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    home = tmp_path_factory.mktemp("tenali")
    settings = load_settings({"TENALI_HOME": str(home), "TENALI_VOCAB_SIZE": "1024", "TENALI_SHARD_TOKENS": "60000"})
    defs = build_definitions(
        settings,
        training=TrainingResource(model="tiny", steps=STEPS, batch_size=8, seq_len=128, lr=3e-3, warmup_steps=10,
                                  eval_every=40, eval_batches=5, ckpt_every=40),
        launcher=LocalTorchrunLauncher(nproc_per_node=2, threads_per_process=1),
    )
    # A persistent instance laid out as `tenali demo` lays it out, so the UI test can open it.
    dagster_home = home / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    result = defs.resolve_job_def("everything").execute_in_process(instance=instance, raise_on_error=False)
    yield result, instance, Lake(settings.lake_root), defs
    instance.dispose()


def latest(instance, key):
    return instance.get_latest_materialization_event(dg.AssetKey(key)).asset_materialization.metadata


def test_every_asset_and_check_succeeds(demo_run):
    result, instance, _, defs = demo_run
    assert result.success, [e.step_key for e in result.all_events if e.is_step_failure]
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert instance.get_latest_materialization_event(key) is not None, key
    evaluations = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert len(evaluations) == len(list(graph.asset_check_keys))
    assert all(e.event_specific_data.passed for e in evaluations)


@pytest.mark.parametrize("source", sorted(SCHEMAS))
def test_clean_parquet_schema_and_rows(demo_run, source):
    _, instance, lake, _ = demo_run
    keys = [k for k in lake.list(f"clean/{source}") if k.endswith(".parquet")]
    assert len(keys) == 1
    df = lake.read_parquet(keys[0])
    assert dict(df.schema) == SCHEMAS[source]
    assert df.height > 0
    raw = lake.read_parquet(keys[0].replace("clean/", "raw/", 1))
    parts = keys[0].split("/")  # clean/<source>/<name>.parquet, or clean/<source>/<name>/bucket-00-of-01.parquet
    asset = parts[-2] if parts[-1].startswith("bucket-") else parts[-1].removesuffix(".parquet")
    meta = latest(instance, f"clean_{asset}")
    assert meta["dagster/row_count"].value == df.height
    assert raw.height - df.height == meta["dropped_total"].value
    assert meta["sample_data"].value is True


def test_market_has_the_real_sample_rows(demo_run):
    _, _, lake, _ = demo_run
    df = lake.read_parquet("clean/market/market_prices/bucket-00-of-01.parquet")
    assert set(df["ticker"].unique()) == {"AAPL", "FB", "GOOG", "IBM", "MSFT"}
    aapl = df.filter(pl.col("ticker") == "AAPL", pl.col("date") == pl.date(2005, 2, 28))
    assert aapl["splits"].item() == 2.0  # recovered from the adjustment factor


def test_temporal_split_and_tokenizer_roundtrip(demo_run):
    _, _, lake, _ = demo_run
    train, val = lake.read_parquet("corpus/train.parquet"), lake.read_parquet("corpus/val.parquet")
    assert train["date"].max() < val["date"].min()
    assert set(val["domain"]) >= {"market", "technical", "news_filings"}
    sp = load_tokenizer(lake.read_bytes("tokenizer/tenali.model"))
    for text in val["text"].to_list():
        assert sp.decode(sp.encode(text)) == text
    for special in SPECIAL_TOKENS:
        assert len(sp.encode(special)) in (1, 2)  # the piece, possibly after the dummy-prefix space
        assert sp.piece_to_id(special) != sp.unk_id()


def test_grounded_instructions_follow_the_corpus_split(demo_run):
    _, instance, lake, _ = demo_run
    val_start = lake.read_json("corpus/split.json")["val_start"]
    q = lake.read_parquet("posttraining/grounded/questions.parquet")
    assert str(q.filter(pl.col("split") == "train")["as_of"].max()) < val_start <= str(q.filter(pl.col("split") == "val")["first_date"].min())
    meta = latest(instance, "grounded_instructions")
    assert meta["train_questions"].value > 0 and meta["val_questions"].value > 0
    chats = [json.loads(line) for line in lake.read_bytes("posttraining/grounded/sft_train.jsonl").decode().splitlines()]
    assert len(chats) == meta["train_questions"].value
    assert [m["role"] for m in chats[0]["messages"]] == ["system", "user", "assistant"]


def test_the_tokenizer_loads_in_transformers_with_the_same_ids(demo_run):
    transformers = pytest.importorskip("transformers")
    _, instance, lake, _ = demo_run
    hf = transformers.AutoTokenizer.from_pretrained(str(lake.local_dir("tokenizer/hf")))
    sp = load_tokenizer(lake.read_bytes("tokenizer/tenali.model"))
    texts = lake.read_parquet("corpus/val.parquet")["text"].to_list()
    assert all(hf.encode(t, add_special_tokens=False) == sp.encode(t) for t in texts)
    assert hf.eos_token == "<|endoftext|>" and hf.eos_token_id == sp.piece_to_id("<|endoftext|>")
    assert latest(instance, "tokenizer")["hf_id_agreement"].value == 1.0


def test_shard_tokens_equal_encoded_tokens(demo_run):
    _, _, lake, _ = demo_run
    manifest = lake.read_json("shards/manifest.json")
    sp = load_tokenizer(lake.read_bytes("tokenizer/tenali.model"))
    shards = lake.local_dir("shards")
    assert len(manifest["splits"]["train"]) > 1  # 60,000-token shards force several
    train = lake.read_parquet("corpus/train.parquet")
    val = lake.read_parquet("corpus/val.parquet")
    # train in corpus order; validation grouped by domain (one set of shards per domain)
    groups = {"train": [train], "val": [val.filter(pl.col("domain") == d) for d in sorted(val["domain"].unique())]}
    for split, frames in groups.items():
        expected = [t for docs in frames for ids in sp.encode(docs["text"].to_list())
                    for t in [*ids, sp.piece_to_id(EOT)]]
        got = np.concatenate([np.asarray(read_shard(shards / e["file"])) for e in manifest["splits"][split]])
        assert manifest["totals"][split] == len(expected) == got.size
        assert np.array_equal(got, np.asarray(expected))
    assert {e["domain"] for e in manifest["splits"]["val"]} == set(val["domain"])


def test_training_loss_falls_and_evaluation_is_finite(demo_run):
    _, instance, lake, _ = demo_run
    meta = latest(instance, "pretrain_checkpoint")
    assert meta["step"].value == STEPS
    assert meta["world_size"].value == 2
    config = meta["train_config"].value  # the resource's settings, the tiny recipe for the rest
    assert meta["recipe"].value == "tiny" and (config["batch_size"], config["eval_every"], config["compile"]) == (8, 40, False)
    assert meta["final_loss"].value < 0.75 * meta["initial_loss"].value
    pointer = lake.read_json("checkpoints/pretrain/LATEST.json")
    ckpt = Path(pointer["checkpoint"])
    assert (ckpt / "model.safetensors").exists() and (ckpt / "config.json").exists()
    lines = [json.loads(line) for line in (ckpt.parent / "metrics.jsonl").read_text().splitlines()]
    train_losses = [m["loss"] for m in lines if m["kind"] == "train"]
    assert train_losses[-1] < train_losses[0]
    ev = latest(instance, "pretrain_evaluation")
    for key in ("val_loss", "perplexity", "bits_per_byte"):
        assert math.isfinite(ev[key].value) and ev[key].value > 0
    assert ev["perplexity"].value == pytest.approx(math.exp(ev["val_loss"].value), rel=1e-6)
    assert ev["val_loss"].value < math.log(1024)  # better than uniform over the vocabulary
    per_domain = {k.split("/", 1)[1] for k in ev if k.startswith("bits_per_byte/")}
    assert per_domain and per_domain <= set(lake.read_parquet("corpus/val.parquet")["domain"])
    assert meta["loss_plot"].value.startswith("![loss curve](data:image/svg+xml;base64,")


def test_post_training_stages_and_what_each_bought(demo_run):
    _, instance, lake, _ = demo_run
    teacher = json.loads((Path(lake.read_json("checkpoints/pretrain/LATEST.json")["checkpoint"]) / "config.json").read_text())
    student_ckpt = Path(lake.read_json("checkpoints/distill/LATEST.json")["checkpoint"])
    student = json.loads((student_ckpt / "config.json").read_text())
    assert student["n_layers"] == max(1, teacher["n_layers"] // 2) and student["dim"] == teacher["dim"]
    meta = {s: json.loads((Path(lake.read_json(f"checkpoints/{s}/LATEST.json")["checkpoint"]) / "meta.json").read_text())
            for s in ("distill", "sft", "dpo")}
    assert meta["sft"]["stage"] == "sft" and meta["sft"]["lora"]["r"] == 16
    assert meta["dpo"]["parent_checkpoint"].startswith(str(Path(lake.read_json("checkpoints/sft/LATEST.json")["checkpoint"]).parent))
    figures = {s: latest(instance, f"{s}_evaluation") for s in ("pretrain", "distill", "sft", "dpo")}
    for f in figures.values():
        assert 0 <= f["grounded_choice_accuracy"].value <= 1 and math.isfinite(f["instruction_loss"].value)
    # Instruction tuning is what lowers the loss on held-out instructions.
    assert figures["sft"]["instruction_loss"].value < figures["distill"]["instruction_loss"].value
    table = figures["dpo"]["stages"].value
    assert all(f"| {s} |" in table or f"**{s}**" in table for s in ("pretrain", "distill", "sft", "dpo"))
    release = latest(instance, "model_release")
    assert release["stage"].value in ("sft", "dpo")


class PreemptedOnce(LocalTorchrunLauncher):
    """Runs the trainer to step 30 and then fails, as a preempted node would; the retry runs normally."""

    def launch(self, context, config_path, workdir, extras=None):
        marker = Path(workdir) / "preempted-once"
        if not marker.exists():
            marker.touch()
            cmd, env = self.command(config_path)
            subprocess.run([*cmd, "--stop-at-step", "30"], check=True, env={**os.environ, **env}, cwd=workdir,
                           stdout=subprocess.DEVNULL)
            raise RuntimeError("node preempted")
        return super().launch(context, config_path, workdir, extras)


def test_a_preempted_training_step_resumes_on_retry(demo_run):
    _, instance, lake, _ = demo_run
    retry_defs = build_definitions(
        Settings(lake_root=lake.root),
        training=TrainingResource(model="tiny", steps=50, batch_size=4, seq_len=64, eval_every=0, eval_batches=2,
                                  ckpt_every=10),
        launcher=PreemptedOnce(nproc_per_node=1))
    job = retry_defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(asset_selection=[dg.AssetKey("pretrain_checkpoint")], instance=instance)
    assert result.success
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.event_specific_data.seconds_to_wait for e in retries] == [1.0]  # TENALI_TRAINING_RETRY_DELAY
    meta = latest(instance, "pretrain_checkpoint")
    assert meta["resumed_from_step"].value == 30 and meta["step"].value == 50


def _asset_nodes(proc: subprocess.Popen, port: int, log: Path) -> list | None:
    """The webserver's asset nodes once it answers; None when it exited because the port was taken."""
    query = b'{"query": "{ assetNodes { assetKey { path } assetMaterializations(limit: 1) { runId } } }"}'
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            text = log.read_text()
            assert "address already in use" in text.lower(), text[-2000:]
            return None
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=query,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read())["data"]["assetNodes"]
        except OSError:
            time.sleep(1)
    raise AssertionError("the webserver did not answer within 180 s")


def test_the_ui_shows_every_asset_materialised(demo_run, tmp_path):
    """What a user sees after `tenali demo`: the webserver on that instance lists every asset as materialised."""
    _, instance, lake, defs = demo_run
    env = {**os.environ, "DAGSTER_HOME": instance.root_directory, "TENALI_LAKE_ROOT": lake.root}
    # dagster-webserver reads -p 0 as "not given" (3000, or a port it picks and binds later), so the port is
    # picked here, and another process may take it before the webserver binds it: then it exits, and starts
    # again on another.
    for attempt in range(5):
        port, log = _free_port("127.0.0.1"), tmp_path / f"webserver-{attempt}.log"
        with log.open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            nodes = _asset_nodes(proc, port, log)
        finally:
            with contextlib.suppress(ProcessLookupError):  # the group is gone when the webserver exited alone
                os.killpg(proc.pid, 15)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
        if nodes is not None:
            break
    assert nodes is not None, "each of 5 free ports was taken before the webserver bound it"
    seen = {"/".join(n["assetKey"]["path"]): n["assetMaterializations"] for n in nodes}
    expected = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(seen) == expected
    assert all(seen[k] for k in expected), [k for k in expected if not seen[k]]
