"""Tracking of a finished training stage: MLflow against a local sqlite store, Weights & Biases in
offline mode (the run's transaction log, written by the real wandb library, read back here)."""

import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from tenali_pipeline.tracking import enabled, log_stage, log_stage_safely


@pytest.fixture
def mlflow():
    return pytest.importorskip("mlflow")


class _Log:
    def __init__(self):
        self.warnings, self.infos = [], []

    def warning(self, m):
        self.warnings.append(m)

    def info(self, m):
        self.infos.append(m)


class _Ctx:
    def __init__(self):
        self.log = _Log()


METRICS = b"".join(json.dumps(r).encode() + b"\n" for r in [
    {"kind": "train", "step": 10, "loss": 3.0, "lr": 1e-3, "tokens_per_sec": 1000.0},
    {"kind": "train", "step": 20, "loss": 2.0, "lr": 9e-4, "tokens_per_sec": 1100.0},
    {"kind": "val", "step": 20, "val_loss": 2.5},
    {"kind": "train", "step": 30, "loss": float("nan")},  # not finite: skipped, not an error
])


def test_a_stage_becomes_a_run_with_params_metrics_and_tags(mlflow, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("TENALI_MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("TENALI_MLFLOW_EXPERIMENT", "tenali-test")
    assert enabled()
    info = log_stage("sft", config={"lr": 1e-3, "lora": {"r": 16, "alpha": 32}, "train_files": ["a.jsonl"]},
                     metrics_jsonl=METRICS, summary={"final_loss": 2.0, "step": 30, "complete": True},
                     tags={"dagster_run_id": "abc123", "asset": "sft_checkpoint", "checkpoint": "/lake/ckpt"})
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.get_run(info["run_id"])
    assert run.data.params["lora.r"] == "16" and run.data.params["train_files"] == '["a.jsonl"]'
    assert run.data.tags["tenali.stage"] == "sft" and run.data.tags["tenali.checkpoint"] == "/lake/ckpt"
    assert [(m.step, m.value) for m in client.get_metric_history(info["run_id"], "loss")] == [(10, 3.0), (20, 2.0)]
    assert [m.value for m in client.get_metric_history(info["run_id"], "val_loss")] == [2.5]
    assert run.data.metrics["final_final_loss"] == 2.0
    assert run.info.status == "FINISHED"


def test_tracking_off_or_failing_never_fails_the_step(tmp_path, monkeypatch):
    monkeypatch.delenv("TENALI_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("TENALI_WANDB_PROJECT", raising=False)
    ctx = _Ctx()
    assert log_stage_safely(ctx, "pretrain", config={}, metrics_jsonl=b"", summary={}, tags={}) == {}
    monkeypatch.setenv("TENALI_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")

    def down(*a, **k):
        raise ConnectionError("tracking server down")
    monkeypatch.setattr("tenali_pipeline.tracking.log_stage", down)
    out = log_stage_safely(ctx, "pretrain", config={}, metrics_jsonl=METRICS, summary={}, tags={})
    assert out["mlflow_run"].startswith("not logged") and ctx.log.warnings


def test_a_tracking_server_that_is_down_costs_seconds_not_minutes(mlflow, monkeypatch):
    """MLflow's own defaults (7 retries, backoff factor 2, 120 s timeout) spent 4 min 9 s on a refused
    connection, per stage, holding the training pool's slot. log_stage bounds them for its calls
    (3 retries, factor 1, 30 s: about 10 s here), leaves the environment as it was, and a value the user
    set wins."""
    from mlflow.environment_variables import (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, MLFLOW_HTTP_REQUEST_MAX_RETRIES,
                                              MLFLOW_HTTP_REQUEST_TIMEOUT)

    seen = []

    class Refused:
        def __init__(self, tracking_uri):
            seen.append((MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(), MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(),
                         MLFLOW_HTTP_REQUEST_TIMEOUT.get()))
            raise ConnectionError("refused")

    monkeypatch.setattr("mlflow.tracking.MlflowClient", Refused)
    monkeypatch.setenv("TENALI_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConnectionError):
        log_stage("pretrain", config={}, metrics_jsonl=b"", summary={}, tags={})
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    with pytest.raises(ConnectionError):
        log_stage("pretrain", config={}, metrics_jsonl=b"", summary={}, tags={})
    assert seen == [(3, 1, 30), (3, 1, 300)]
    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 7 and MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 300


# --- Weights & Biases ------------------------------------------------------------------------------

SECRET = "0123456789abcdef-not-a-real-key"


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B configured offline, silent, without error reporting; MLflow off. WANDB_API_KEY is set to a
    fake value to show that it is never written anywhere."""
    pytest.importorskip("wandb")
    monkeypatch.delenv("TENALI_MLFLOW_TRACKING_URI", raising=False)
    for k, v in {"TENALI_WANDB_PROJECT": "tenali-test", "TENALI_WANDB_MODE": "offline",
                 "TENALI_WANDB_DIR": str(tmp_path / "wandb-runs"), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                 "WANDB_ERROR_REPORTING": "false", "WANDB_API_KEY": SECRET, "WANDB_CONFIG_DIR": str(tmp_path / "cfg"),
                 "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(k, v)
    return tmp_path / "wandb-runs"


def read_wandb_log(path: Path) -> list:
    """The protobuf records of a .wandb transaction log: a 7-byte header (":W&B", magic, version), then
    32 KiB blocks of LevelDB-log chunks (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):  # wandb-core is still appending this chunk: what is whole so far
            break
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        assert zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF == crc, f"corrupt chunk at {pos}"
        pending += chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_a_stage_becomes_an_offline_wandb_run_with_config_history_and_summary(wandb_offline):
    ctx = _Ctx()
    out = log_stage_safely(ctx, "sft", config={"lr": 1e-3, "lora": {"r": 16, "alpha": 32}, "train_files": ["a.jsonl"]},
                           metrics_jsonl=METRICS, summary={"final_loss": 2.0, "step": 30, "complete": True},
                           tags={"dagster_run_id": "abc123ef99", "asset": "sft_checkpoint", "checkpoint": "/lake/ckpt"})
    assert not ctx.log.warnings, ctx.log.warnings
    run_dir = Path(out["wandb_run"].value)  # offline: the metadata links the local run folder
    assert run_dir.parent == wandb_offline / "wandb" and run_dir.name.startswith("offline-run-")
    (log,) = run_dir.glob("run-*.wandb")
    records, give_up = read_wandb_log(log), time.monotonic() + 120
    # wandb-core may still be flushing the log when finish() returns (for long on a loaded machine)
    while not any(r.WhichOneof("record_type") == "exit" for r in records) and time.monotonic() < give_up:
        time.sleep(0.2)
        records = read_wandb_log(log)
    kinds = [r.WhichOneof("record_type") for r in records]
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.project, run.display_name, run.job_type, list(run.tags)) == ("tenali-test", "sft-abc123ef", "sft", ["sft"])
    assert run.run_group == "abc123ef99"
    config = {}
    for r in records:
        if r.WhichOneof("record_type") == "config" or r.WhichOneof("record_type") == "run":
            items = r.config.update if r.WhichOneof("record_type") == "config" else r.run.config.update
            config.update({i.key: json.loads(i.value_json) for i in items})
    assert config["lr"] == 1e-3 and config["lora"] == {"r": 16, "alpha": 32} and config["train_files"] == ["a.jsonl"]
    assert config["tenali"] == {"dagster_run_id": "abc123ef99", "asset": "sft_checkpoint", "checkpoint": "/lake/ckpt"}
    history = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            history.append({k: v for k, v in row.items() if not k.startswith("_") or k == "_step"})
    assert history == [{"_step": 10, "loss": 3.0, "lr": 1e-3, "tokens_per_sec": 1000.0},
                       {"_step": 20, "loss": 2.0, "lr": 9e-4, "tokens_per_sec": 1100.0, "val_loss": 2.5}]
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in r.summary.update})
    assert summary["final_final_loss"] == 2.0 and summary["complete"] is True
    assert "exit" in kinds and next(r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit") == 0
    # the API key is never written (run folder, logs) nor logged
    for f in wandb_offline.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f
    assert not any(SECRET in m for m in ctx.log.infos + ctx.log.warnings)


def test_wandb_online_without_a_key_or_a_bad_mode_is_a_warning_not_a_failed_step(wandb_offline, monkeypatch):
    monkeypatch.setenv("TENALI_WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setitem(sys.modules, "wandb", None)  # refused before wandb would start (or try the network)
    ctx = _Ctx()
    out = log_stage_safely(ctx, "pretrain", config={}, metrics_jsonl=METRICS, summary={}, tags={})
    assert out == {"wandb_run": "not logged: ValueError"}
    assert "WANDB_API_KEY is not set" in ctx.log.warnings[0] and "TENALI_WANDB_MODE=offline" in ctx.log.warnings[0]
    monkeypatch.setenv("TENALI_WANDB_MODE", "sometimes")
    ctx = _Ctx()
    log_stage_safely(ctx, "pretrain", config={}, metrics_jsonl=METRICS, summary={}, tags={})
    assert "'online' or 'offline'" in ctx.log.warnings[0]


def test_importing_tracking_needs_neither_wandb_nor_mlflow():
    code = ("import sys; sys.modules['wandb'] = None; sys.modules['mlflow'] = None; "
            "import tenali_pipeline.tracking as t; assert not t.enabled() and not t.wandb_enabled()")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("TENALI_WANDB", "TENALI_MLFLOW"))}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --- credentials in the tracking URI ------------------------------------------------------------------

TOKEN = "tok-0123456789abcdef"
CREDENTIALED = f"https://tenali:{TOKEN}@mlflow.example.com/tracking/?access_token={TOKEN}&workspace=ml"


class _FakeMlflowClient:
    """MlflowClient without a server: records the URI it was given, accepts every call."""

    uris: list = []

    def __init__(self, tracking_uri):
        self.uris.append(tracking_uri)

    def get_experiment_by_name(self, name):
        return None

    def create_experiment(self, name):
        return "7"

    def create_run(self, exp_id, run_name=None, tags=None):
        from types import SimpleNamespace
        return SimpleNamespace(info=SimpleNamespace(run_id="r1"))

    def log_batch(self, *a, **k):
        pass

    def set_terminated(self, rid):
        pass


def test_credentials_in_the_tracking_uri_never_reach_metadata_or_logs(mlflow, monkeypatch):
    """A token in TENALI_MLFLOW_TRACKING_URI goes to MLflow, never into asset metadata or the event log."""
    monkeypatch.setenv("TENALI_MLFLOW_TRACKING_URI", CREDENTIALED)
    monkeypatch.delenv("TENALI_WANDB_PROJECT", raising=False)
    monkeypatch.setattr("mlflow.tracking.MlflowClient", _FakeMlflowClient)
    _FakeMlflowClient.uris = []
    ctx = _Ctx()
    out = log_stage_safely(ctx, "sft", config={"lr": 1e-3}, metrics_jsonl=METRICS, summary={}, tags={})
    assert _FakeMlflowClient.uris == [CREDENTIALED]  # MLflow itself still authenticates
    assert out["mlflow_run"] == "https://mlflow.example.com/tracking/#/experiments/7/runs/r1"
    assert TOKEN not in repr(out) and "tenali:" not in repr(out)
    assert not any(TOKEN in m for m in ctx.log.infos + ctx.log.warnings)

    def down(*a, **k):  # the client's error message quotes the URI it was given
        raise ConnectionError(f"cannot reach {CREDENTIALED} (password {TOKEN})")
    monkeypatch.setattr("tenali_pipeline.tracking.log_stage", down)
    ctx = _Ctx()
    log_stage_safely(ctx, "sft", config={}, metrics_jsonl=METRICS, summary={}, tags={})
    (warning,) = ctx.log.warnings
    assert "cannot reach https://mlflow.example.com/tracking/?workspace=ml" in warning and TOKEN not in warning


def test_an_unreachable_wandb_server_is_given_up_after_30_s_not_90(monkeypatch):
    """wandb.init waits init_timeout (90 s by default; 91 s measured against a refused port) with the
    training pool's slot held. log_stage_wandb asks for 30 s, unless WANDB_INIT_TIMEOUT is set."""
    wandb = pytest.importorskip("wandb")
    from tenali_pipeline.tracking import log_stage_wandb

    seen = []

    def refused(**kwargs):
        seen.append(kwargs["settings"].init_timeout)
        raise ConnectionError("refused")

    monkeypatch.setattr(wandb, "init", refused)
    monkeypatch.setenv("TENALI_WANDB_PROJECT", "p")
    monkeypatch.setenv("TENALI_WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_INIT_TIMEOUT", raising=False)
    for env in (None, "120"):
        if env:
            monkeypatch.setenv("WANDB_INIT_TIMEOUT", env)
        with pytest.raises(ConnectionError):
            log_stage_wandb("pretrain", config={}, metrics_jsonl=b"", summary={}, tags={})
    assert seen == [30.0, wandb.Settings().init_timeout]  # the second: left to wandb, which reads the variable
