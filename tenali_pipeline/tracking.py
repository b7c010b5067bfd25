"""Experiment tracking: a finished training stage logged to MLflow, linked from the asset's metadata.

Set ``TENALI_MLFLOW_TRACKING_URI`` (an MLflow server ``http://...``, or ``sqlite:///path/mlflow.db`` for
a local store) and every training stage (pretraining, distillation, SFT, DPO) becomes an MLflow run
in the experiment ``TENALI_MLFLOW_EXPERIMENT`` (default ``tenali``): its config as parameters, every
record of its ``metrics.jsonl`` as step-indexed metrics, the final summary, and tags that lead back
to Dagster (run id, asset key, checkpoint URI). The asset's metadata gets ``mlflow_run`` (the run's
id, and its URL when the tracking server has a UI).

Logging happens in the pipeline after the launched step returns, from the trainer's own
``metrics.jsonl``, so the GPU image needs no tracking client and a tracking server that is down
costs a warning, never a training run.
"""

from __future__ import annotations

import json
import math
import os

EXPERIMENT_DEFAULT = "tenali"
_MAX_PARAM = 500  # MLflow's limit on a parameter value's length


def enabled() -> bool:
    return bool(os.environ.get("TENALI_MLFLOW_TRACKING_URI"))


def _flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            text = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
            out[key] = text[:_MAX_PARAM]
    return out


def _metrics(records: list[dict]):
    from mlflow.entities import Metric

    skip = {"kind", "step", "elapsed", "time"}
    for r in records:
        step = int(r.get("step", 0))
        prefix = "val_" if r.get("kind") == "val" and not any(k.startswith("val_") for k in r) else ""
        for k, v in r.items():
            if k in skip or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            yield Metric(key=f"{prefix}{k}", value=float(v), timestamp=0, step=step)


def log_stage(stage: str, *, config: dict, metrics_jsonl: bytes, summary: dict, tags: dict[str, str]) -> dict | None:
    """Log one finished stage; returns {"run_id", "experiment_id", "url"} or None when tracking is off."""
    uri = os.environ.get("TENALI_MLFLOW_TRACKING_URI")
    if not uri:
        return None
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = os.environ.get("TENALI_MLFLOW_EXPERIMENT") or EXPERIMENT_DEFAULT
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    run = client.create_run(exp_id, run_name=f"{stage}-{tags.get('dagster_run_id', '')[:8]}",
                            tags={"tenali.stage": stage, **{f"tenali.{k}": str(v) for k, v in tags.items()}})
    rid = run.info.run_id
    records = [json.loads(line) for line in metrics_jsonl.decode().splitlines() if line.strip()]
    metrics = list(_metrics(records))
    final = {f"final_{k}": float(v) for k, v in summary.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    params = [Param(k, v) for k, v in _flatten(config).items()]
    for i in range(0, max(len(params), 1), 100):  # MLflow's batch limits: 100 params, 1000 metrics
        client.log_batch(rid, params=params[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(rid, metrics=metrics[i:i + 1000])
    from mlflow.entities import Metric

    client.log_batch(rid, metrics=[Metric(k, v, 0, 0) for k, v in final.items()],
                     tags=[RunTag("tenali.complete", str(summary.get("complete", True)))])
    client.set_terminated(rid)
    url = f"{uri.rstrip('/')}/#/experiments/{exp_id}/runs/{rid}" if uri.startswith("http") else ""
    return {"run_id": rid, "experiment_id": exp_id, "url": url}


def log_stage_safely(context, stage: str, **kwargs) -> dict:
    """`log_stage` for asset code: metadata entries to add; a tracking failure is a warning, not a failed step."""
    if not enabled():
        return {}
    try:
        info = log_stage(stage, **kwargs)
    except Exception as e:  # noqa: BLE001 - the trained checkpoint matters more than its tracking
        context.log.warning(f"MLflow logging failed ({type(e).__name__}: {e}); the checkpoint is unaffected.")
        return {"mlflow_run": f"not logged: {type(e).__name__}"}
    context.log.info(f"logged to MLflow run {info['run_id']}")
    return {"mlflow_run": info["url"] or info["run_id"]}
