"""The ECS launcher: the exact task definition and run_task request it sends (validated against
botocore's ECS model by the fake client), and its Pipes flow through S3 on moto with the fake
running the container here; failures name the exit code and the CloudWatch log tail (moto)."""

import boto3
import dagster as dg
import pytest
from dagster_pipes import decode_env_var

pytest.importorskip("dagster_aws")
from launcher_fakes import BUCKET, FakeEcs, s3, tiny_run  # noqa: E402, F401

from tenali_pipeline.launchers import build_launcher  # noqa: E402
from tenali_pipeline.launchers.aws import SPEC_TAG, EcsTrainingLauncher  # noqa: E402
from tenali_pipeline.settings import SettingsError, load_settings  # noqa: E402


class Launcher(EcsTrainingLauncher):
    """The real launcher with the fake ECS client put where boto3's would be."""

    def _ecs(self):
        return FAKE[0]


FAKE: list = []


@pytest.fixture
def ecs(tmp_path, s3, monkeypatch):
    endpoint, _ = s3
    monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", endpoint)  # boto3 sends Logs calls to moto
    fake = FakeEcs(tmp_path, boto3.client("logs", endpoint_url=endpoint, region_name="us-east-1"))
    FAKE[:] = [fake]
    yield fake
    for _, proc in fake.tasks.values():
        if proc is not None:
            proc.kill()


def launcher(tmp_path, endpoint="", **kw) -> Launcher:
    base = dict(cluster="gpu", image="123456789012.dkr.ecr.us-east-1.amazonaws.com/tenali-trainer:1", gpus=1,
                region="us-east-1", efs_file_system_id="fs-0123456789abcdef0", shared_mount=str(tmp_path),
                subnets="subnet-a,subnet-b", security_groups="sg-1", execution_role_arn="arn:aws:iam::1:role/exec",
                task_role_arn="arn:aws:iam::1:role/trainer", capacity_provider="gpu-p5",
                lake_root="s3://lake/tenali", s3_endpoint_url=endpoint, pipes_bucket=BUCKET, poll_seconds=1)
    base.update(kw)
    return Launcher(**base)


def materialise(resource, config_path, run_dir, retry_policy=None):
    @dg.asset(retry_policy=retry_policy)
    def pretrain_checkpoint(context: dg.AssetExecutionContext, launcher: dg.ResourceParam):
        return launcher.launch(context, config_path, workdir=run_dir)

    return dg.materialize([pretrain_checkpoint], resources={"launcher": resource}, raise_on_error=False)


def test_the_task_definition_asks_for_gpus_shared_memory_logs_and_efs(tmp_path, ecs):
    first = launcher(tmp_path).ensure_task_definition(ecs)
    again = launcher(tmp_path).ensure_task_definition(ecs)
    changed = launcher(tmp_path, gpus=8).ensure_task_definition(ecs)
    assert first == again and changed != first  # registered once per distinct spec
    ops = [op for op, _ in ecs.calls]
    assert ops.count("RegisterTaskDefinition") == 2
    td = ecs.calls[1][1]  # validated against botocore's RegisterTaskDefinition input shape
    (c,) = td["containerDefinitions"]
    assert c["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert c["linuxParameters"]["sharedMemorySize"] == 65536
    assert 30 < c["stopTimeout"] <= 120  # torchrun's 30 s for its workers to save their step, within ECS's maximum
    assert c["logConfiguration"]["logDriver"] == "awslogs"
    assert c["mountPoints"] == [{"sourceVolume": "work", "containerPath": str(tmp_path), "readOnly": False}]
    assert td["volumes"][0]["efsVolumeConfiguration"]["fileSystemId"] == "fs-0123456789abcdef0"
    assert {"name": "TENALI_LAKE_ROOT", "value": "s3://lake/tenali"} in c["environment"]
    assert td["tags"][0]["key"] == SPEC_TAG and td["requiresCompatibilities"] == ["EC2"]


def test_an_ecs_task_trains_and_reports_through_s3(tmp_path, s3, ecs):
    endpoint, client = s3
    config_path, run_dir = tiny_run(tmp_path)
    res = materialise(launcher(tmp_path, endpoint), config_path, run_dir)
    assert res.success, [e for e in res.all_events if e.is_step_failure]
    meta = res.asset_materializations_for_node("pretrain_checkpoint")[0].metadata
    assert meta["step"].value == 6 and str(meta["checkpoint"].value).startswith(str(run_dir))
    (run,) = [p for op, p in ecs.calls if op == "RunTask"]
    assert run["cluster"] == "gpu" and run["capacityProviderStrategy"] == [{"capacityProvider": "gpu-p5", "weight": 1}]
    assert run["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == ["subnet-a", "subnet-b"]
    (override,) = run["overrides"]["containerOverrides"]
    assert override["command"] == ["torchrun", "--nproc_per_node=1", "--standalone", "-m", "tenali_model.train",
                                   "--config", str(config_path)]
    env = {e["name"]: e["value"] for e in override["environment"]}
    assert set(env) == {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"}  # Pipes params; the rest is in the definition
    assert decode_env_var(env["DAGSTER_PIPES_CONTEXT"])["bucket"] == BUCKET  # context on S3, not in the env
    assert decode_env_var(env["DAGSTER_PIPES_MESSAGES"])["key_prefix"].startswith("pipes/messages/")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys and all(k.startswith("pipes/messages/") for k in keys)


def test_a_task_that_cannot_start_fails_the_step_with_the_reason(tmp_path, s3, ecs):
    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    res = materialise(launcher(tmp_path, endpoint, image="missing/tenali-trainer:nope"), config_path, run_dir)
    assert not res.success
    (failure,) = [e for e in res.all_events if e.is_step_failure]
    text = failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
    assert "CannotPullContainerError" in text and "no exit code" in text


def test_build_launcher_reads_the_ecs_variables(tmp_path):
    settings = load_settings({"TENALI_PROFILE": "prod", "TENALI_HOME": str(tmp_path), "TENALI_LAUNCHER": "ecs",
                              "TENALI_LAKE_ROOT": "s3://lake/tenali", "TENALI_TRAINER_IMAGE": "img:1",
                              "TENALI_ECS_CLUSTER": "gpu", "TENALI_ECS_SUBNETS": "subnet-a",
                              "TENALI_GPUS_PER_NODE": "4", "TENALI_ECS_EFS_ID": "fs-1",
                              "TENALI_SHARED_MOUNT": "/mnt/tenali"})
    built = build_launcher(settings)
    assert isinstance(built, EcsTrainingLauncher)
    assert (built.cluster, built.gpus, built.subnets, built.pipes_bucket) == ("gpu", 4, "subnet-a", "lake")
    with pytest.raises(SettingsError, match="TENALI_ECS_CLUSTER"):
        build_launcher(load_settings({"TENALI_LAUNCHER": "ecs", "TENALI_TRAINER_IMAGE": "img:1"}))


def test_a_task_killed_at_start_fails_with_exit_code_and_its_cloudwatch_tail(tmp_path, s3, ecs):
    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    res = materialise(launcher(tmp_path, endpoint, image="oom/tenali-trainer:1"), config_path, run_dir)
    assert not res.success
    (failure,) = [e for e in res.all_events if e.is_step_failure]
    text = failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
    assert "exit code 137 (killed (out of memory or preempted))" in text
    assert "CUDA out of memory" in text  # read back from the task's CloudWatch stream


def step_failures(res) -> list[str]:
    return [e.step_failure_data.error.message + str(e.step_failure_data.user_failure_data)
            for e in res.all_events if e.is_step_failure]


def test_a_task_past_its_timeout_is_stopped_before_the_step_fails(tmp_path, s3, ecs):
    """PipesECSClient leaves the task running when its waiter times out; a retry would then start a
    second trainer writing into the same run folder. The launcher stops it and waits until it has."""
    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    res = materialise(launcher(tmp_path, endpoint, image="hang/tenali-trainer:1", timeout_seconds=2),
                      config_path, run_dir)
    assert not res.success
    (text,) = step_failures(res)
    assert "timeout_seconds=2" in text and "raise timeout_seconds" in text  # the cause and the fix
    assert "the launcher stopped the task" in text and "exit code 137" in text
    assert "step 1 loss 9.9" in text  # the stalled trainer's CloudWatch tail
    ((_, proc),) = ecs.tasks.values()
    assert proc.exit_code is not None  # no longer training
    (stop,) = [p for op, p in ecs.calls if op == "StopTask"]
    (arn,) = ecs.tasks
    assert stop["cluster"] == "gpu" and stop["task"] == arn and "timeout_seconds" in stop["reason"]
    assert len(stop["reason"]) <= 255  # ECS's limit
    ops = [op for op, _ in ecs.calls]
    assert ops.index("StopTask") < len(ops) - 1 and "DescribeTasks" in ops[ops.index("StopTask") + 1:]  # waited


def test_a_task_that_cannot_be_stopped_keeps_the_original_error_and_is_not_retried(tmp_path, s3, ecs):
    """A failed stop_task is reported next to the original cause, never instead of it, and the retry
    is refused: a second task would write into the run folder the first may still be writing."""
    from botocore.exceptions import ClientError

    endpoint, _ = s3
    ecs.stop_error = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed: ecs:StopTask"}},
                                 "StopTask")
    config_path, run_dir = tiny_run(tmp_path)
    res = materialise(launcher(tmp_path, endpoint, image="hang/tenali-trainer:1", timeout_seconds=2),
                      config_path, run_dir, retry_policy=dg.RetryPolicy(max_retries=1))
    assert not res.success
    (text,) = step_failures(res)
    assert "timeout_seconds=2" in text  # the original cause
    assert "the launcher stopped the task" not in text
    assert "could not confirm that ECS task" in text and "AccessDeniedException" in text and "aws ecs stop-task" in text
    assert [op for op, _ in ecs.calls].count("RunTask") == 1  # not retried into a second writer


def test_the_trainer_logs_go_to_the_region_boto3_uses(tmp_path, monkeypatch):
    """A Dagster host whose region is in ~/.aws/config (no AWS_REGION): the ECS calls go to that
    region, so must the awslogs stream, or every failure's log tail is read from the wrong region."""
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-west-1\n")
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    settings = load_settings({"TENALI_PROFILE": "prod", "TENALI_HOME": str(tmp_path), "TENALI_LAUNCHER": "ecs",
                              "TENALI_LAKE_ROOT": "s3://lake/tenali", "TENALI_TRAINER_IMAGE": "img:1",
                              "TENALI_ECS_CLUSTER": "gpu", "TENALI_SHARED_MOUNT": str(tmp_path)})
    built = build_launcher(settings)
    assert built.region == "eu-west-1"
    (container,) = built.task_definition()["containerDefinitions"]
    assert container["logConfiguration"]["options"]["awslogs-region"] == "eu-west-1"
