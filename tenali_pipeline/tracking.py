"""Experiment tracking: a finished training stage logged to MLflow and/or Weights & Biases, linked
from the asset's metadata.

Set ``TENALI_MLFLOW_TRACKING_URI`` (an MLflow server ``http://...``, or ``sqlite:///path/mlflow.db`` for
a local store) and every training stage (pretraining, distillation, SFT, DPO) becomes an MLflow run
in the experiment ``TENALI_MLFLOW_EXPERIMENT`` (default ``tenali``): its config as parameters, every
record of its ``metrics.jsonl`` as step-indexed metrics, the final summary, and tags that lead back
to Dagster (run id, asset key, checkpoint URI). The asset's metadata gets ``mlflow_run`` (the run's
id, and its URL when the tracking server has a UI). The URI may carry credentials
(``https://user:token@host``, ``?token=...``); they are stripped from that URL and from logged warnings.

Set ``TENALI_WANDB_PROJECT`` and every training stage is also a W&B run in that project (entity
``TENALI_WANDB_ENTITY``, or the API key's default): the config (with the Dagster tags under
``tenali``), every metrics.jsonl record at its step, the final summary; job type and tag = the stage.
``TENALI_WANDB_MODE`` is ``online`` (default) or ``offline`` (the run is written under
``TENALI_WANDB_DIR``, default the working directory, for a later ``wandb sync``). The asset's metadata
gets ``wandb_run``: the run's URL online, its local folder offline. The API key is read by wandb
itself from ``WANDB_API_KEY`` (never passed, stored or logged here); online without it is refused
before wandb is started, so a missing key is one warning rather than a login prompt. System
statistics and machine metadata are off: this process is the orchestrator, not the trainer.

Logging happens in the pipeline after the launched step returns, from the trainer's own
``metrics.jsonl``, so the GPU image needs no tracking client and a tracking server that is down
costs a warning, never a training run. ``mlflow`` and ``wandb`` are imported only when configured.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

EXPERIMENT_DEFAULT = "tenali"
_MAX_PARAM = 500  # MLflow's limit on a parameter value's length


WANDB_MODES = ("online", "offline")
WANDB_INIT_TIMEOUT = 30.0
_SECRET_PARAM = re.compile(r"token|key|secret|passw|pwd|auth|signature|credential|^sig$|^code$", re.IGNORECASE)


def public_uri(uri: str) -> str:
    """`uri` without its credentials (``user:token@`` and token-like query parameters), for asset
    metadata and logs: whoever can read Dagster's event log must not get the tracking server's token."""
    parts = urlsplit(uri)
    if not parts.netloc and not parts.query:
        return uri  # sqlite:///path, a local folder: nothing to hide
    host = parts.netloc.rpartition("@")[2]
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not _SECRET_PARAM.search(k)])
    return urlunsplit((parts.scheme, host, parts.path, query, parts.fragment))


def _redact(text: str, uri: str) -> str:
    """`text` (an exception message) with `uri`'s credentials removed wherever they appear."""
    parts = urlsplit(uri)
    secrets = [uri, parts.netloc.rpartition("@")[0]]
    secrets += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if _SECRET_PARAM.search(k)]
    if parts.password:
        secrets += [parts.password, unquote(parts.password)]
    for secret in sorted({x for x in secrets if len(x) >= 4}, key=len, reverse=True):
        text = text.replace(secret, public_uri(uri) if secret == uri else "***")
    return text


def enabled() -> bool:
    """MLflow is configured."""
    return bool(os.environ.get("TENALI_MLFLOW_TRACKING_URI"))


def wandb_enabled() -> bool:
    return bool(os.environ.get("TENALI_WANDB_PROJECT"))


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


def _numbers(records: list[dict]):
    """(step, name, value) of every finite number in metrics.jsonl records; a validation record's
    names get a ``val_`` prefix unless they have one (so "loss" of a val record is not the train loss)."""
    skip = {"kind", "step", "elapsed", "time"}
    for r in records:
        step = int(r.get("step", 0))
        prefix = "val_" if r.get("kind") == "val" and not any(k.startswith("val_") for k in r) else ""
        for k, v in r.items():
            if k in skip or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            yield step, f"{prefix}{k}", float(v)


def _metrics(records: list[dict]):
    from mlflow.entities import Metric

    for step, key, value in _numbers(records):
        yield Metric(key=key, value=value, timestamp=0, step=step)


def _records(metrics_jsonl: bytes) -> list[dict]:
    return [json.loads(line) for line in metrics_jsonl.decode().splitlines() if line.strip()]


def _final(summary: dict) -> dict[str, float]:
    return {f"final_{k}": float(v) for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


# MLflow's own HTTP defaults (7 retries, backoff factor 2, 120 s timeout) spent 4 min 9 s on a server
# that was down before giving up, per stage, with the training pool's slot held; these bound it to
# about 10 s while still riding out a blip. A value the user set in the environment wins.
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


@contextlib.contextmanager
def _bounded_mlflow_http():
    added = [k for k in MLFLOW_HTTP_DEFAULTS if k not in os.environ]
    os.environ.update({k: MLFLOW_HTTP_DEFAULTS[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def log_stage(stage: str, *, config: dict, metrics_jsonl: bytes, summary: dict, tags: dict[str, str]) -> dict | None:
    """Log one finished stage; returns {"run_id", "experiment_id", "url"} or None when tracking is off."""
    uri = os.environ.get("TENALI_MLFLOW_TRACKING_URI")
    if not uri:
        return None
    with _bounded_mlflow_http():
        return _log_stage_mlflow(uri, stage, config=config, metrics_jsonl=metrics_jsonl, summary=summary, tags=tags)


def _log_stage_mlflow(uri: str, stage: str, *, config: dict, metrics_jsonl: bytes, summary: dict,
                      tags: dict[str, str]) -> dict:
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = os.environ.get("TENALI_MLFLOW_EXPERIMENT") or EXPERIMENT_DEFAULT
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    run = client.create_run(exp_id, run_name=f"{stage}-{tags.get('dagster_run_id', '')[:8]}",
                            tags={"tenali.stage": stage, **{f"tenali.{k}": str(v) for k, v in tags.items()}})
    rid = run.info.run_id
    metrics = list(_metrics(_records(metrics_jsonl)))
    final = _final(summary)
    params = [Param(k, v) for k, v in _flatten(config).items()]
    for i in range(0, max(len(params), 1), 100):  # MLflow's batch limits: 100 params, 1000 metrics
        client.log_batch(rid, params=params[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(rid, metrics=metrics[i:i + 1000])
    from mlflow.entities import Metric

    client.log_batch(rid, metrics=[Metric(k, v, 0, 0) for k, v in final.items()],
                     tags=[RunTag("tenali.complete", str(summary.get("complete", True)))])
    client.set_terminated(rid)
    base = public_uri(uri).split("?")[0].split("#")[0].rstrip("/")  # the UI's URL: no credentials, no query
    url = f"{base}/#/experiments/{exp_id}/runs/{rid}" if uri.startswith("http") else ""
    return {"run_id": rid, "experiment_id": exp_id, "url": url}


def log_stage_wandb(stage: str, *, config: dict, metrics_jsonl: bytes, summary: dict, tags: dict[str, str]) -> dict | None:
    """Log one finished stage to W&B; returns {"run_id", "url", "dir", "mode"} or None when W&B is off."""
    project = os.environ.get("TENALI_WANDB_PROJECT")
    if not project:
        return None
    mode = os.environ.get("TENALI_WANDB_MODE") or "online"
    if mode not in WANDB_MODES:
        raise ValueError(f"TENALI_WANDB_MODE={mode!r}: use 'online' or 'offline'")
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        raise ValueError("TENALI_WANDB_MODE is online but WANDB_API_KEY is not set: set it in the environment, "
                         "or set TENALI_WANDB_MODE=offline and `wandb sync` the run folder later")
    folder = os.environ.get("TENALI_WANDB_DIR") or None
    if folder:
        os.makedirs(folder, exist_ok=True)
    import wandb

    # wandb waits 90 s for an unreachable server (measured: 91 s) with the training pool's slot held; 30 s
    # is plenty for a slow but working one. WANDB_INIT_TIMEOUT, when set, wins.
    timeout = {} if os.environ.get("WANDB_INIT_TIMEOUT") else {"init_timeout": WANDB_INIT_TIMEOUT}
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True,
                              disable_git=True, save_code=False, **timeout)
    run = wandb.init(project=project, entity=os.environ.get("TENALI_WANDB_ENTITY") or None, mode=mode, dir=folder,
                     name=f"{stage}-{tags.get('dagster_run_id', '')[:8]}", job_type=stage, tags=[stage],
                     group=tags.get("dagster_run_id") or None,
                     config={**config, "tenali": {k: str(v) for k, v in tags.items()}},
                     reinit="create_new", settings=settings)
    try:
        rows: dict[int, dict[str, float]] = {}
        for step, key, value in _numbers(_records(metrics_jsonl)):
            rows.setdefault(step, {})[key] = value
        for step in sorted(rows):  # W&B steps only go forward: one row per step, train and val together
            run.log(rows[step], step=step)
        run.summary.update({**_final(summary), "complete": bool(summary.get("complete", True))})
        info = {"run_id": run.id, "url": run.url or "", "dir": str(run.settings.sync_dir), "mode": mode}
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()
    return info


def log_stage_safely(context, stage: str, **kwargs) -> dict:
    """`log_stage` (MLflow) and `log_stage_wandb` for asset code: the metadata entries to add; a tracking
    failure is a warning, not a failed step."""
    out: dict = {}
    for name, on, log, key in (("MLflow", enabled, log_stage, "mlflow_run"),
                               ("W&B", wandb_enabled, log_stage_wandb, "wandb_run")):
        if not on():
            continue
        try:
            info = log(stage, **kwargs)
        except Exception as e:  # noqa: BLE001 - the trained checkpoint matters more than its tracking
            detail = _redact(str(e), os.environ.get("TENALI_MLFLOW_TRACKING_URI", ""))
            context.log.warning(f"{name} logging failed ({type(e).__name__}: {detail}); the checkpoint is unaffected.")
            out[key] = f"not logged: {type(e).__name__}"
            continue
        if key == "mlflow_run":
            context.log.info(f"logged to MLflow run {info['run_id']}")
            out[key] = info["url"] or info["run_id"]
        else:
            where = info["url"] or info["dir"]
            context.log.info(f"logged to W&B run {info['run_id']} ({info['mode']}): {where}")
            out[key] = _link(where)
    return out


def _link(where: str):
    """A URL or a local folder as asset metadata (a clickable link in the UI either way)."""
    import dagster as dg

    return dg.MetadataValue.url(where) if where.startswith("http") else dg.MetadataValue.path(where)
