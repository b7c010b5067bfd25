"""What the cluster launchers share: the trainer command, the shared work folder, S3 Pipes, failures.

Where data lives for a launched step (one decision for Kubernetes and ECS): the training config,
the shard cache and the run's checkpoint folder sit on a **shared filesystem** (a ReadWriteMany
volume: EFS, FSx for Lustre, Filestore, NFS) mounted at the same path in the Dagster run worker and
in every trainer container. The trainer needs one anyway: every node must read the checkpoint that
rank 0 wrote when a preempted run resumes, and a checkpoint on a volume outside the pod survives the
pod. So the asset code is the same as for the local launcher (shards downloaded from the S3 lake
into the cache, config written next to the checkpoints), the trainer keeps reading plain paths, and
the asset uploads the final checkpoint to the lake. `check_shared_paths` fails a launch whose paths
are not on that volume, naming the fix (point TENALI_HOME at the mount).

Pipes context and messages go through S3 (`PipesS3ContextInjector`, `PipesS3MessageReader` with
stdout/stderr forwarded): that works for several nodes, survives log rotation and needs no access
to pod logs. The trainer picks the S3 loader and writer from the params Dagster passes
(`tenali_model.train.open_pipes`).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import dagster as dg

# The trainer's exit statuses (tenali_model.train): say what they mean in the failure message.
EXIT_MEANINGS = {2: "bad training config, missing/corrupt shards or checkpoints, or no space for a checkpoint",
                 137: "killed (out of memory or preempted)",
                 139: "segmentation fault", 143: "terminated"}
LOG_TAIL_LINES = 40
# Seconds a pod or task gets between SIGTERM and SIGKILL: more than torchrun's 30 s for its workers to save the
# step they are at (tenali_model/preemption.py), and within ECS's stopTimeout maximum (120 s).
STOP_GRACE_SECONDS = 90


def trainer_command(config_path: str, *, gpus_per_node: int, nodes: int = 1, node_rank: str = "0",
                    master_addr: str = "", master_port: int = 29500, module: str = "tenali_model.train") -> list[str]:
    """torchrun with one process per GPU: standalone on one node, static rendezvous on several
    (node_rank comes from the pod, master_addr is node 0's stable DNS name). `module` is the
    pretraining trainer or a post-training stage, all taking ``--config``."""
    cmd = ["torchrun", f"--nproc_per_node={gpus_per_node}"]
    if nodes > 1:
        cmd += [f"--nnodes={nodes}", f"--node_rank={node_rank}", f"--master_addr={master_addr}",
                f"--master_port={master_port}"]
    else:
        cmd += ["--standalone"]
    return [*cmd, "-m", module, "--config", str(config_path)]


def check_shared_paths(mount_path: str, *paths: Path | str) -> None:
    """Every path the trainer reads or writes must be on the shared volume, or the pod cannot see it."""
    if not mount_path:
        raise dg.Failure(
            "The cluster launcher needs a shared volume for the config, shards and checkpoints: set "
            "TENALI_SHARED_MOUNT (and TENALI_K8S_SHARED_PVC or TENALI_ECS_EFS_ID) and point TENALI_HOME at a "
            "folder under that mount in the Dagster run worker.")
    mount = Path(mount_path)
    for p in paths:
        if not Path(p).absolute().is_relative_to(mount):
            raise dg.Failure(
                f"{p} is not under the shared volume {mount}, so the trainer pods cannot read it: set "
                f"TENALI_HOME to a folder under {mount} in the Dagster run worker (the shard cache and run "
                "folders live under it).")


def s3_client(endpoint_url: str = ""):
    """The Pipes client (context upload, message polling). Calls are bounded (5 s to connect, 20 s to
    read, 2 attempts: under a minute) where boto3's defaults (60 s, 60 s, 5 attempts) could spend 10
    minutes on one poll of an endpoint that drops packets, past Dagster's 120 s wait for the reader
    thread; the reader retries outages itself (s3pipes.PrefixedS3MessageReader.OUTAGE_SECONDS)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url or None,
                        config=Config(connect_timeout=5, read_timeout=20, retries={"total_max_attempts": 2, "mode": "standard"}))


def parse_s3_root(uri: str) -> tuple[str, str]:
    """(bucket, prefix) of s3://bucket/prefix."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def trainer_env(lake_root: str, s3_endpoint_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of every trainer container: the lake, the S3 endpoint (boto3 reads
    AWS_ENDPOINT_URL_S3 itself) and unbuffered output for live logs. No secrets: credentials come
    from the pod's service account / task role, or a secret the cluster injects."""
    env = {"PYTHONUNBUFFERED": "1"}
    if lake_root:
        env["TENALI_LAKE_ROOT"] = lake_root
    if s3_endpoint_url:
        env["TENALI_S3_ENDPOINT_URL"] = s3_endpoint_url
        env["AWS_ENDPOINT_URL_S3"] = s3_endpoint_url
    env.update(extra or {})
    return env


def worker_code(log: str) -> int | None:
    """The first failed worker's exit status from torchrun's "Root Cause" block (torchrun itself exits 1
    whatever ended a worker), or None when the log has no such block."""
    found = re.search(r"Root Cause.*?exitcode\s*:\s*(-?\d+)", log, re.DOTALL)
    return int(found.group(1)) if found else None


def worker_error(log: str) -> str:
    """The exception that ended the first failed worker ("RuntimeError: CUDA error: ..."), from the
    traceback torchrun's "Root Cause" block quotes when the worker ran under `@record`
    (`tenali_model.train.as_worker`); "" when the block has none."""
    found = re.search(r"Root Cause.*?traceback\s*:\s*Traceback.*?\n(.*?)\n\s*={20,}", log, re.DOTALL)
    if not found:
        return ""
    lines = [line.strip() for line in found.group(1).splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def failure(where: str, exit_code: int | None, log_tail: str, reason: str = "") -> dg.Failure:
    """A step failure that names the exit code, what it usually means and the trainer's last lines.
    Not retried when the trainer itself (its worker's status in torchrun's log, else `exit_code`) exited
    2: that is its own refusal of a config or data, and a retry would be refused the same way."""
    trainer = worker_code(log_tail)
    error = worker_error(log_tail)
    if error and error not in reason:
        reason = f"{reason}; " if reason else ""
        reason += f"the worker's error: {error}"
    meaning = EXIT_MEANINGS.get(exit_code or 0, "")
    code = "no exit code" if exit_code is None else f"exit code {exit_code}" + (f" ({meaning})" if meaning else "")
    lines = log_tail.rstrip().splitlines()[-LOG_TAIL_LINES:]
    text = "\n".join(lines) if lines else "(no log lines)"
    return dg.Failure(
        allow_retries=(exit_code if trainer is None else trainer) != 2,
        description=f"The trainer in {where} failed before reporting a checkpoint: {code}"
                    f"{'; ' + reason if reason else ''}.\nLast {len(lines)} log lines:\n{text}",
        metadata={"exit_code": exit_code if exit_code is not None else -1, "where": where,
                  "last_log_lines": dg.MetadataValue.text(text)},
    )


def launch_extras(extras: dict | None) -> tuple[dict, str]:
    """(`extras` plus a new launch id, that id): the trainer writes it into its report file (`reported_result`)."""
    from tenali_model.report import LAUNCH_ID

    launch_id = uuid.uuid4().hex
    return {**(extras or {}), LAUNCH_ID: launch_id}, launch_id


def reported_result(invocation: dg.PipesClientCompletedInvocation, context, workdir: Path | str,
                    launch_id: str) -> dg.MaterializeResult:
    """The one materialisation the trainer reported through Pipes (never Dagster's implicit empty one: a
    process can exit 0 without reporting, dagster #17868), or, when Pipes delivered none (an S3 outage past
    the trainer's exit, a pod log stream cut short), the same report from the file rank 0 wrote beside its
    checkpoints in this launch (`tenali_model.report`). Raises Dagster's error when there is neither: the
    caller turns it into its failure."""
    from dagster._core.definitions.metadata.external_metadata import metadata_map_from_external
    from tenali_model.report import REPORT_FILE, read

    try:
        return invocation.get_materialize_result(implicit_materialization=False)
    except Exception as e:
        kept = read(workdir, launch_id)
        if kept is None:
            raise
        try:
            metadata = metadata_map_from_external(kept)
        except Exception:  # noqa: BLE001 - not Pipes metadata: fail as without the file
            raise e from None
        context.log.warning(f"The trainer's report did not come through Dagster Pipes ({e}); using the copy it "
                            f"wrote to {Path(workdir) / REPORT_FILE} in this launch. Check the Pipes channel "
                            "(the S3 bucket's reachability, or the pod log stream) in the step's log.")
        return dg.MaterializeResult(metadata=metadata)


def owner_reference() -> list[dict]:
    """The Dagster run worker pod as owner (TENALI_OWNER_POD_NAME/UID from the downward API, set in
    the Helm values): if the run worker is deleted, Kubernetes deletes the trainer pods with it."""
    name, uid = os.environ.get("TENALI_OWNER_POD_NAME", ""), os.environ.get("TENALI_OWNER_POD_UID", "")
    if not (name and uid):
        return []
    return [{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid, "blockOwnerDeletion": False}]
