"""MLflow tracking of a finished training stage, against a local sqlite store."""

import json

import pytest

mlflow = pytest.importorskip("mlflow")

from tenali_pipeline.tracking import enabled, log_stage, log_stage_safely  # noqa: E402


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


def test_a_stage_becomes_a_run_with_params_metrics_and_tags(tmp_path, monkeypatch):
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
    ctx = _Ctx()
    assert log_stage_safely(ctx, "pretrain", config={}, metrics_jsonl=b"", summary={}, tags={}) == {}
    monkeypatch.setenv("TENALI_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")

    def down(*a, **k):
        raise ConnectionError("tracking server down")
    monkeypatch.setattr("tenali_pipeline.tracking.log_stage", down)
    out = log_stage_safely(ctx, "pretrain", config={}, metrics_jsonl=METRICS, summary={}, tags={})
    assert out["mlflow_run"].startswith("not logged") and ctx.log.warnings
