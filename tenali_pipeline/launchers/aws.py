"""Run training on AWS: one ECS task on a GPU EC2 instance, through dagster-aws's `PipesECSClient`.

Why ECS on EC2 GPU instances rather than SageMaker Training or AWS Batch: ECS takes the same trainer
image as Kubernetes with GPUs as a plain ``resourceRequirements`` entry, ``linuxParameters`` for
shared memory and EFS volumes for the shared work folder; dagster-aws ships a maintained Pipes
client for it (exit codes checked, the task stopped when Dagster cancels the step; the launcher stops
it too when waiting for it times out or fails, before the step's retry starts another). dagster-aws has
no Pipes client for SageMaker or Batch, and SageMaker would also want its own container contract
(``/opt/ml``) and S3 channels instead of the shared folder every other launcher uses. One ECS task
is one node (up to 8 GPUs on a p4d/p5); train on several nodes with the Kubernetes launcher on EKS.

The launcher registers the task definition (family ``tenali-trainer``) only when what it wants
differs from the family's latest revision, then runs it with per-run overrides: the torchrun
command and the Pipes environment. Pipes context and messages go through S3 (`common`), the trainer's
stdout/stderr through CloudWatch Logs (awslogs) and through Pipes. A task that fails before reporting
fails the step with its exit code and the last lines of its CloudWatch stream.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from ..settings import SettingsError
from .common import (STOP_GRACE_SECONDS, check_shared_paths, failure, launch_extras, reported_result, s3_client,
                     trainer_command, trainer_env)

CONTAINER = "trainer"
WORK_VOLUME = "work"
SPEC_TAG = "tenali:spec-sha256"


class _Recorder:
    """The ECS client, keeping run_task's answer so a failure can name the task and read its logs."""

    def __init__(self, client):
        self._client, self.started = client, None

    def run_task(self, **kwargs):
        self.started = self._client.run_task(**kwargs)
        if not self.started.get("tasks"):  # ECS placed nothing (no instance with free GPUs): say so, not IndexError
            why = "; ".join(f.get("reason", "?") + (f" ({f['detail']})" if f.get("detail") else "")
                            for f in self.started.get("failures", [])) or "no reason given"
            raise dg.Failure(
                f"ECS could not place the trainer task on cluster {kwargs.get('cluster')}: {why}. RESOURCE:GPU or "
                "RESOURCE:MEMORY means no container instance has that much free now (the step is retried; let the "
                "capacity provider scale out, or lower TENALI_GPUS_PER_NODE).", metadata={"ecs_failures": why})
        return self.started

    def __getattr__(self, name):
        return getattr(self._client, name)


class EcsTrainingLauncher(dg.ConfigurableResource):
    """ECS launcher: same ``launch(context, config_path, workdir, extras)`` as the local one."""

    cluster: str
    image: str
    family: str = "tenali-trainer"
    gpus: int = 8
    memory_reservation_mib: int = 4096  # soft limit; GPU instances are used by one task at a time
    shm_size_mib: int = 65536  # /dev/shm for NCCL
    capacity_provider: str = ""  # the GPU Auto Scaling group's capacity provider; empty: launch type EC2
    subnets: str = ""  # comma-separated, for awsvpc networking; empty: bridge networking
    security_groups: str = ""
    execution_role_arn: str = ""  # pulls the image, writes logs
    task_role_arn: str = ""  # what the trainer may do: read/write the Pipes prefix on S3
    log_group: str = "/tenali/trainer"
    region: str = ""
    efs_file_system_id: str = ""  # the shared work folder, mounted at shared_mount
    shared_mount: str = ""
    lake_root: str = ""
    s3_endpoint_url: str = ""
    pipes_bucket: str = ""
    pipes_prefix: str = "pipes"
    poll_seconds: int = 15
    timeout_seconds: int = 14 * 24 * 3600
    stop_wait_seconds: int = 300  # after stop_task: ECS's stopTimeout (30 s default, 120 s at most) and teardown

    # ---- what is submitted ----------------------------------------------------------------------
    def task_definition(self) -> dict:
        """register_task_definition's arguments: the container, its GPUs, shared memory, logs, volume."""
        container: dict[str, Any] = {
            "name": CONTAINER,
            "image": self.image,
            "essential": True,
            "memoryReservation": self.memory_reservation_mib,
            "resourceRequirements": [{"type": "GPU", "value": str(self.gpus)}] if self.gpus else [],
            "linuxParameters": {"sharedMemorySize": self.shm_size_mib, "initProcessEnabled": True},
            # a stopped task (Spot reclaim, stop_task): ECS SIGKILLs stopTimeout after its SIGTERM (30 s by default),
            # as torchrun's own 30 s for its workers to save their step ends (tenali_model/preemption.py)
            "stopTimeout": STOP_GRACE_SECONDS,
            "ulimits": [{"name": "memlock", "softLimit": -1, "hardLimit": -1},
                        {"name": "nofile", "softLimit": 65536, "hardLimit": 65536}],
            "environment": [{"name": k, "value": v} for k, v in sorted(self.env().items())],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": self.log_group, "awslogs-region": self.region or "us-east-1",
                "awslogs-stream-prefix": "tenali", "awslogs-create-group": "true"}},
        }
        td: dict[str, Any] = {
            "family": self.family,
            "requiresCompatibilities": ["EC2"],
            "networkMode": "awsvpc" if self.subnets else "bridge",
            "containerDefinitions": [container],
        }
        if self.efs_file_system_id:
            td["volumes"] = [{"name": WORK_VOLUME, "efsVolumeConfiguration": {
                "fileSystemId": self.efs_file_system_id, "rootDirectory": "/", "transitEncryption": "ENABLED"}}]
            container["mountPoints"] = [{"sourceVolume": WORK_VOLUME, "containerPath": self.shared_mount,
                                         "readOnly": False}]
        if self.execution_role_arn:
            td["executionRoleArn"] = self.execution_role_arn
        if self.task_role_arn:
            td["taskRoleArn"] = self.task_role_arn
        return td

    def run_task_params(self, task_definition_arn: str, command: list[str], run_id: str) -> dict:
        """run_task's arguments before PipesECSClient adds the Pipes environment and tags."""
        params: dict[str, Any] = {
            "cluster": self.cluster,
            "taskDefinition": task_definition_arn,
            "count": 1,
            "startedBy": f"tenali-{run_id}"[:36],
            "overrides": {"containerOverrides": [{"name": CONTAINER, "command": command}]},
        }
        if self.capacity_provider:
            params["capacityProviderStrategy"] = [{"capacityProvider": self.capacity_provider, "weight": 1}]
        else:
            params["launchType"] = "EC2"
        if self.subnets:
            params["networkConfiguration"] = {"awsvpcConfiguration": {
                "subnets": [s.strip() for s in self.subnets.split(",") if s.strip()],
                "securityGroups": [s.strip() for s in self.security_groups.split(",") if s.strip()],
                "assignPublicIp": "DISABLED"}}
        return params

    def env(self) -> dict[str, str]:
        return trainer_env(self.lake_root, self.s3_endpoint_url)

    # ---- AWS access (tests replace these) -------------------------------------------------------------
    def _ecs(self):
        import boto3

        return boto3.client("ecs", region_name=self.region or None)

    def _logs(self):
        import boto3

        return boto3.client("logs", region_name=self.region or None)

    def ensure_task_definition(self, ecs) -> str:
        """The ARN of the family's latest revision when it was registered from the same spec (its
        ``tenali:spec-sha256`` tag says so: ECS adds defaults to what it returns, so the definitions
        themselves do not compare), else of a newly registered revision."""
        from botocore.exceptions import ClientError

        wanted = self.task_definition()
        digest = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()
        try:
            current = ecs.describe_task_definition(taskDefinition=self.family, include=["TAGS"])
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ClientException":  # not "no such family"
                raise
            current = None
        if current and {"key": SPEC_TAG, "value": digest} in current.get("tags", []):
            return current["taskDefinition"]["taskDefinitionArn"]
        registered = ecs.register_task_definition(**wanted, tags=[{"key": SPEC_TAG, "value": digest}])
        return registered["taskDefinition"]["taskDefinitionArn"]

    # ---- launching ------------------------------------------------------------------------------
    def launch(self, context: dg.AssetExecutionContext, config_path: Path, workdir: Path,
               extras: dict | None = None, module: str = "tenali_model.train") -> dg.MaterializeResult:
        """Run `module` (pretraining, or a post-training stage) with ``--config config_path``."""
        from botocore.exceptions import WaiterError
        from dagster_aws.pipes import PipesECSClient

        from .s3pipes import s3_pipes

        check_shared_paths(self.shared_mount, config_path, workdir)
        if not self.pipes_bucket:
            raise dg.Failure("The ECS launcher reports through S3: set TENALI_PIPES_BUCKET (defaults to the lake's "
                             "bucket when TENALI_LAKE_ROOT is on S3).")
        ecs = _Recorder(self._ecs())
        arn = self.ensure_task_definition(ecs)
        command = trainer_command(str(config_path), gpus_per_node=max(self.gpus, 1), module=module)
        injector, reader = s3_pipes(self.pipes_bucket, self.pipes_prefix, s3_client(self.s3_endpoint_url),
                                    interval=min(self.poll_seconds, 5))
        client = PipesECSClient(client=ecs, context_injector=injector, message_reader=reader)
        context.log.info(f"running {arn} on ECS cluster {self.cluster}")
        extras, launch_id = launch_extras(extras)
        try:
            invocation = client.run(
                context=context, extras=extras,
                run_task_params=self.run_task_params(arn, command, context.run_id),
                waiter_config={"Delay": self.poll_seconds,
                               "MaxAttempts": max(1, self.timeout_seconds // max(self.poll_seconds, 1))})
        except (RuntimeError, WaiterError) as e:
            raise self._task_failure(context, ecs, self._cause(e)) from e
        except Exception as e:
            if not (ecs.started and ecs.started.get("tasks")):
                raise  # nothing was started: nothing to stop or describe
            raise self._task_failure(context, ecs, f"the launcher failed while following the task "
                                                   f"({type(e).__name__}: {e})") from e
        try:  # no implicit result: a task that stopped without reporting (exit 0, or its host lost) fails here
            return reported_result(invocation, context, workdir, launch_id)
        except Exception as e:  # noqa: BLE001 - exited 0 without reporting (dagster #17868)
            raise self._task_failure(context, ecs, f"it exited without reporting ({e})") from e

    def _cause(self, e: Exception) -> str:
        """What went wrong and what to do about it, for PipesECSClient's errors (the task stopped with
        a bad exit code or never started: RuntimeError; waiting for it failed: botocore WaiterError)."""
        from botocore.exceptions import WaiterError

        if not isinstance(e, WaiterError):
            return str(e)
        if "Max attempts exceeded" in str(e.kwargs.get("reason", "")):
            return (f"it was still running after the launcher's timeout_seconds={self.timeout_seconds}: raise "
                    "timeout_seconds if the run needs longer, or find in the log tail why it stalled")
        return (f"the launcher could not follow the task ({e}): check that the Dagster role may call "
                f"ecs:DescribeTasks on cluster {self.cluster} and that the ECS endpoint is reachable")

    def _stop_if_running(self, context, ecs: _Recorder, arn: str, why: str) -> tuple[bool, str]:
        """Stop the task unless ECS says it has stopped, and wait (at most stop_wait_seconds) until it
        has: the failed step is retried (RetryPolicy), and the retry must not start a second trainer
        writing into the same run folder while this one still trains. PipesECSClient stops the task
        only when Dagster interrupts the step, not when its waiter times out or fails.

        Returns (whether it was stopped here, "" or why it may still be running)."""
        try:
            status = ecs.describe_tasks(cluster=self.cluster, tasks=[arn])["tasks"][0].get("lastStatus")
        except Exception:  # noqa: BLE001 - unknown state: stop it to be sure
            status = None
        if status == "STOPPED":
            return False, ""
        context.log.warning(f"stopping ECS task {arn} (status {status or 'unknown'}) before failing the step")
        try:
            ecs.stop_task(cluster=self.cluster, task=arn, reason=f"Tenali: the Dagster step failed: {why}"[:255])
            delay = max(1, min(self.poll_seconds, 15))
            ecs.get_waiter("tasks_stopped").wait(
                cluster=self.cluster, tasks=[arn],
                WaiterConfig={"Delay": delay, "MaxAttempts": max(1, self.stop_wait_seconds // delay)})
        except Exception as e:  # noqa: BLE001 - must not hide the original failure
            problem = (f"The launcher could not confirm that ECS task {arn} stopped ({type(e).__name__}: {e}); it may "
                       f"still be writing to the run folder, so this step is not retried: stop it (aws ecs stop-task "
                       f"--cluster {self.cluster} --task {arn}) and check that it stopped before rerunning the step.")
            context.log.error(problem)
            return True, problem
        return True, ""

    def _task_failure(self, context, ecs: _Recorder, reason: str) -> dg.Failure:
        """The step failure: the task stopped first if it may still run, then its exit code and log tail."""
        if not ecs.started or not ecs.started.get("tasks"):
            return failure(f"ECS cluster {self.cluster}", None, "", reason)
        arn = ecs.started["tasks"][0]["taskArn"]
        stopped_here, problem = self._stop_if_running(context, ecs, arn, reason)
        task_id, exit_code, tail = arn.split("/")[-1], None, ""
        try:
            task = ecs.describe_tasks(cluster=self.cluster, tasks=[arn])["tasks"][0]
            container = next((c for c in task["containers"] if c["name"] == CONTAINER), {})
            exit_code = container.get("exitCode")
            if not stopped_here:  # ECS's own reason; when stopped here, it is ours and says less than `reason`
                ecs_reason = _ecs_reason(task, container)  # after exit 0, ours (no report) is the news
                reason = f"{ecs_reason}; {reason}" if ecs_reason and exit_code == 0 else ecs_reason or reason
        except Exception:  # noqa: BLE001 - best effort: the step fails either way
            pass
        try:
            events = self._logs().get_log_events(logGroupName=self.log_group,
                                                 logStreamName=f"tenali/{CONTAINER}/{task_id}",
                                                 limit=40, startFromHead=False)["events"]
            tail = "\n".join(e["message"] for e in events)
        except Exception as e:  # noqa: BLE001
            tail = f"(could not read CloudWatch logs {self.log_group}: {e})"
        if stopped_here and not problem:
            reason = f"{reason} (the launcher stopped the task)"
        result = failure(f"ECS task {task_id}", exit_code, tail, reason)
        if not problem:
            return result
        return dg.Failure(description=f"{result.description}\n{problem}", metadata=result.metadata,
                          allow_retries=False)


def _ecs_reason(task: dict, container: dict) -> str:
    """Why ECS says the task stopped: its stop code (SpotInterruption, TerminationNotice, ...), its
    stoppedReason and the container's own reason (OutOfMemoryError: Container killed due to memory usage)."""
    stopped = ": ".join(x for x in (task.get("stopCode"), task.get("stoppedReason")) if x)
    return "; ".join(x for x in (stopped, container.get("reason") and f"container: {container['reason']}") if x)


def _aws_region() -> str:
    """The region boto3 itself uses (AWS_REGION, AWS_DEFAULT_REGION, else the profile in ~/.aws/config):
    the ECS calls go there, so the trainer's logs must too, or the failure's log tail is read from
    another region than the one awslogs wrote (and created the group) in."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", "")
    if region:
        return region
    try:
        import boto3

        return boto3.session.Session().region_name or ""
    except Exception:  # noqa: BLE001 - no boto3 or an unreadable config: the launch names what is missing
        return ""


def ecs_launcher_from_settings(settings) -> EcsTrainingLauncher:
    """The launcher for TENALI_LAUNCHER=ecs, from TENALI_ECS_* and the shared variables (checked by
    settings.load_settings)."""
    from .common import parse_s3_root

    get = lambda name, default="": settings.cluster.get(name) or default  # noqa: E731
    missing = [n for n in ("TENALI_ECS_CLUSTER", "TENALI_TRAINER_IMAGE") if not get(n)]
    if missing:
        raise SettingsError(f"TENALI_LAUNCHER=ecs needs {' and '.join(missing)} (the ECS cluster with GPU "
                            "instances, and the image built from infra/docker/trainer.Dockerfile).")
    bucket = get("TENALI_PIPES_BUCKET") or (parse_s3_root(settings.lake_root)[0]
                                             if settings.lake_root.startswith("s3://") else "")
    gpus = get("TENALI_GPUS_PER_NODE", "8")
    return EcsTrainingLauncher(
        cluster=get("TENALI_ECS_CLUSTER"), image=get("TENALI_TRAINER_IMAGE"), gpus=int(gpus),
        capacity_provider=get("TENALI_ECS_CAPACITY_PROVIDER"), subnets=get("TENALI_ECS_SUBNETS"),
        security_groups=get("TENALI_ECS_SECURITY_GROUPS"), execution_role_arn=get("TENALI_ECS_EXECUTION_ROLE"),
        task_role_arn=get("TENALI_ECS_TASK_ROLE"), log_group=get("TENALI_ECS_LOG_GROUP", "/tenali/trainer"),
        region=_aws_region(), efs_file_system_id=get("TENALI_ECS_EFS_ID"),
        shared_mount=get("TENALI_SHARED_MOUNT"), lake_root=settings.lake_root,
        s3_endpoint_url=settings.s3_endpoint_url, pipes_bucket=bucket,
        pipes_prefix=get("TENALI_PIPES_PREFIX", "pipes"))
