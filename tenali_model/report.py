"""The trainer's final report: sent through Dagster Pipes, and kept in `<out_dir>/report.json` too.

Pipes carries the report from the trainer to the Dagster step: a line on stdout (local), a pod's log
(Kubernetes without a bucket) or a chunk in S3. Each can lose the last message: an S3 outage that
outlasts dagster_pipes' 60 s wait at exit, a log stream cut by an API outage. The checkpoint is on
disk by then, and a step failed for want of the report costs the whole run again. So rank 0 first
writes the same report (Pipes' metadata form) atomically beside its checkpoints, with the launch id the
launcher passed in the Pipes extras; a launcher that got no report reads that file, and only when
its launch id matches (a file from an earlier launch into the same run folder never counts).
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import atomic_write_text

REPORT_FILE = "report.json"
LAUNCH_ID = "tenali_launch_id"  # the Pipes extra naming this launch


def pipes_metadata(summary: dict, checkpoint: Path | str, loss_table: str) -> dict:
    """`summary` as Pipes metadata (`{"raw_value", "type"}` per key, as dagster_pipes normalises it):
    None values left out, the checkpoint a path, the loss curve markdown."""
    report = {k: {"raw_value": v, "type": "__infer__"} for k, v in summary.items()
              if v is not None and k != "checkpoint"}
    report["checkpoint"] = {"raw_value": str(checkpoint), "type": "path"}
    report["loss_curve"] = {"raw_value": loss_table, "type": "md"}
    return report


def publish(pipes, out_dir: Path | str, summary: dict, checkpoint: Path | str, loss_table: str) -> None:
    """Write the report file, then report the materialisation through Pipes (when launched by Dagster)."""
    report = pipes_metadata(summary, checkpoint, loss_table)
    extras = (pipes.extras or {}) if pipes is not None else {}
    atomic_write_text(Path(out_dir) / REPORT_FILE, json.dumps(
        {"launch_id": extras.get(LAUNCH_ID), "metadata": report}, indent=1))
    if pipes is not None:
        pipes.report_asset_materialization(metadata=report, asset_key=extras.get("asset_key"))


def read(out_dir: Path | str, launch_id: str) -> dict | None:
    """The Pipes metadata of the report this launch (`launch_id`) wrote in `out_dir`, or None: no file,
    another launch's, or not readable as one (a report file is written atomically, so that is corruption)."""
    try:
        kept = json.loads((Path(out_dir) / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or not launch_id or kept.get("launch_id") != launch_id:
        return None
    metadata = kept.get("metadata")
    return metadata if isinstance(metadata, dict) else None
