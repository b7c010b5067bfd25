"""Review 4 of the launchers: a launched training step ends with the trainer's report or with a
failure that says why and leaves nothing running, when the trainer, its host or the network does not
behave (ECS stop reasons and placement failures, S3 outages, a killed or cancelled local torchrun)."""

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

pytest.importorskip("dagster_aws")
from launcher_fakes import ROOT, s3, tiny_run  # noqa: E402, F401
from test_launcher_aws import ecs, launcher, materialise, step_failures  # noqa: E402, F401

from tenali_pipeline.launchers import local  # noqa: E402

# A trainer that opens Pipes, logs a step and is then lost with its host (never reports).
LOST_HOST = [sys.executable, "-c", "import time; print('step 1 loss 9.9', flush=True); time.sleep(600)"]


def retries(res) -> int:
    return sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in res.all_events)


def test_a_spot_interrupted_task_fails_naming_the_interruption_and_is_retried(tmp_path, s3, ecs, monkeypatch):
    """ECS stops a task whose Spot host is reclaimed with stopCode SpotInterruption and no exit code
    on the container: the step must fail naming that, and be retried (it is transient)."""
    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    run_task, describe = ecs.run_task, ecs.describe_tasks

    def run_task_then_interrupt(**params):
        params["overrides"]["containerOverrides"][0]["command"] = LOST_HOST
        started = run_task(**params)
        info, proc = ecs.tasks[started["tasks"][0]["taskArn"]]
        info["spot"] = True
        threading.Timer(2, proc.kill).start()  # the host is reclaimed while it trains
        return started

    def describe_spot(**params):
        out = describe(**params)
        for task in out["tasks"]:
            if ecs.tasks[task["taskArn"]][0].get("spot") and task["lastStatus"] == "STOPPED":
                task["containers"][0].pop("exitCode", None)  # the host went away with the container
                task.update(stopCode="SpotInterruption", stoppedReason="Your Spot Task was interrupted.")
        return out

    monkeypatch.setattr(ecs, "run_task", run_task_then_interrupt)
    monkeypatch.setattr(ecs, "describe_tasks", describe_spot)
    res = materialise(launcher(tmp_path, endpoint), config_path, run_dir, retry_policy=dg.RetryPolicy(max_retries=1))
    assert not res.success
    texts = step_failures(res)
    assert texts and "Your Spot Task was interrupted" in texts[-1] and "SpotInterruption" in texts[-1]
    assert retries(res) == 1


def test_a_task_ecs_cannot_place_fails_naming_the_missing_resource_and_is_retried(tmp_path, s3, ecs, monkeypatch):
    """run_task answers with no task and a failure (RESOURCE:GPU) when no instance has the GPUs free;
    PipesECSClient then indexes an empty list, and the step failed with "IndexError"."""
    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)

    def no_capacity(**params):
        ecs._record("RunTask", params)
        return {"tasks": [], "failures": [{"arn": "arn:aws:ecs:us-east-1:123456789012:container-instance/gpu/1",
                                           "reason": "RESOURCE:GPU"}]}

    monkeypatch.setattr(ecs, "run_task", no_capacity)
    res = materialise(launcher(tmp_path, endpoint), config_path, run_dir, retry_policy=dg.RetryPolicy(max_retries=1))
    assert not res.success
    texts = step_failures(res)
    assert "RESOURCE:GPU" in texts[-1] and "IndexError" not in texts[-1]
    assert retries(res) == 1


def test_an_oom_killed_task_names_the_containers_reason(tmp_path, s3, ecs, monkeypatch):
    """The trainer killed by the container's memory limit: exit code 137 and ECS's container reason."""
    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    describe = ecs.describe_tasks

    def with_oom_reason(**params):
        out = describe(**params)
        for task in out["tasks"]:
            if task["containers"][0].get("exitCode") == 137:
                task["containers"][0]["reason"] = "OutOfMemoryError: Container killed due to memory usage"
        return out

    monkeypatch.setattr(ecs, "describe_tasks", with_oom_reason)
    res = materialise(launcher(tmp_path, endpoint, image="oom/tenali-trainer:1"), config_path, run_dir)
    (text,) = step_failures(res)
    assert "exit code 137" in text and "OutOfMemoryError: Container killed due to memory usage" in text
    assert "EssentialContainerExited" in text


# ---- the local launcher: real torchrun, a stand-in trainer module -----------------------------------

STUCK = textwrap.dedent("""
    import os, signal, sys, time
    from tenali_model.train import die_with_torchrun
    die_with_torchrun()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # deep in a long C call: SIGINT does not stop it
    folder = os.path.dirname(sys.argv[sys.argv.index("--config") + 1])
    with open(os.path.join(folder, f"worker{os.environ['RANK']}.pid"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)
""")
KILLED = textwrap.dedent("""
    import os, signal
    print("loading", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does
""")
SILENT = "print('done, but reported nothing')\n"


def run_local(tmp_path, monkeypatch, source: str, nproc: int = 1):
    (tmp_path / "fake_trainer.py").write_text(source)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{ROOT}")
    config_path, run_dir = tiny_run(tmp_path)

    @dg.asset
    def trained(context: dg.AssetExecutionContext, launcher: local.LocalTorchrunLauncher):
        return launcher.launch(context, config_path, run_dir, module="fake_trainer")

    launcher_ = local.LocalTorchrunLauncher(nproc_per_node=nproc, threads_per_process=1)
    return dg.materialize([trained], resources={"launcher": launcher_}, raise_on_error=False), run_dir


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks /proc and PR_SET_PDEATHSIG")
def test_a_cancelled_local_step_leaves_no_torchrun_worker_running(tmp_path, monkeypatch):
    """Dagster cancels the step while a worker ignores SIGINT: the step must end as interrupted
    with no worker left (it ended on subprocess.TimeoutExpired after 20 s, the workers still running)."""
    from dagster._core.errors import DagsterExecutionInterruptedError

    monkeypatch.setattr(local, "TORCHRUN_GRACE_SECONDS", 2, raising=False)
    wait = subprocess.Popen.wait
    state = {"interrupted": False}

    def interrupted_once_training(self, timeout=None):
        if timeout is None and not state["interrupted"] and "torch.distributed.run" in self.args:
            # both workers up, each importing torch, and their pids written, not only the files created
            # (the pid check below fails if they never came)
            give_up = time.monotonic() + 180
            while time.monotonic() < give_up and sum(
                    bool(f.read_text().strip()) for f in tmp_path.glob("cache/checkpoints/run/worker*.pid")) < 2:
                time.sleep(0.1)
            state["interrupted"] = True
            raise DagsterExecutionInterruptedError()
        return wait(self, timeout)

    monkeypatch.setattr(subprocess.Popen, "wait", interrupted_once_training)
    res, run_dir = run_local(tmp_path, monkeypatch, STUCK, nproc=2)
    pids = [int(p.read_text()) for p in run_dir.glob("worker*.pid")]
    try:
        assert not res.success
        (failure,) = [e for e in res.all_events if e.is_step_failure]
        assert "TimeoutExpired" not in failure.step_failure_data.error.to_string()
        give_up = time.monotonic() + 60
        while any(alive(p) for p in pids) and time.monotonic() < give_up:  # PR_SET_PDEATHSIG: the kernel
            time.sleep(0.1)  # ends them as torchrun goes; a loaded machine may take a while to reap them
        assert len(pids) == 2 and not [p for p in pids if alive(p)]
    finally:
        for p in pids:
            if alive(p):
                os.kill(p, 9)


def test_a_local_worker_killed_by_sigkill_fails_the_step_naming_it(tmp_path, monkeypatch):
    """torchrun exits 1 whatever killed a worker; the failure must say SIGKILL (it said only
    "External execution process failed with code 1")."""
    res, _ = run_local(tmp_path, monkeypatch, KILLED)
    (text,) = step_failures(res)
    assert "killed by SIGKILL" in text and "out-of-memory" in text


def test_a_local_trainer_that_exits_0_without_reporting_fails_the_step(tmp_path, monkeypatch):
    res, _ = run_local(tmp_path, monkeypatch, SILENT)
    assert not res.success
    (text,) = step_failures(res)
    assert "exited without one report" in text and "No materialization results" in text


def test_an_ecs_task_that_exits_0_without_reporting_fails_the_step(tmp_path, s3, ecs, monkeypatch):
    """dagster #17868 on ECS: the launcher took Dagster's implicit (empty) materialisation as success."""
    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    run_task = ecs.run_task

    def silent(**params):
        params["overrides"]["containerOverrides"][0]["command"] = [sys.executable, "-c", "print('nothing to say')"]
        return run_task(**params)

    monkeypatch.setattr(ecs, "run_task", silent)
    res = materialise(launcher(tmp_path, endpoint), config_path, run_dir)
    (text,) = step_failures(res)
    assert "exit code 0" in text and "exited without reporting" in text and "nothing to say" in text


def test_a_network_outage_while_reading_s3_messages_loses_no_report(tmp_path, s3, ecs, monkeypatch):
    """S3 unreachable from the Dagster side for a while (boto3's own retries spent): the message
    reader must keep polling, not die and lose the trainer's report."""
    from botocore.exceptions import EndpointConnectionError

    from tenali_pipeline.launchers import aws, common

    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    outages = {"head_object": 2, "get_object": 3}

    def flaky_client(endpoint_url=""):
        client = common.s3_client(endpoint_url)

        def down_for_a_while(name, real):
            def call(**kwargs):
                if outages[name] > 0:
                    outages[name] -= 1
                    raise EndpointConnectionError(endpoint_url=endpoint_url)
                return real(**kwargs)
            return call
        for name in outages:
            setattr(client, name, down_for_a_while(name, getattr(client, name)))
        return client

    monkeypatch.setattr(aws, "s3_client", flaky_client)
    res = materialise(launcher(tmp_path, endpoint), config_path, run_dir)
    assert res.success, step_failures(res)
    assert outages == {"head_object": 0, "get_object": 0}
    meta = res.asset_materializations_for_node("pretrain_checkpoint")[0].metadata
    assert meta["step"].value == 6


class _OutageClient:
    """An S3 client whose endpoint is unreachable for the first `down` calls of each method."""

    def __init__(self, down: int):
        self.down = {"head_object": down, "get_object": down}

    def _maybe_down(self, name):
        from botocore.exceptions import EndpointConnectionError

        if self.down[name] > 0:
            self.down[name] -= 1
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    def head_object(self, **kwargs):
        self._maybe_down("head_object")
        return {}

    def get_object(self, **kwargs):
        import io

        self._maybe_down("get_object")
        return {"Body": io.BytesIO(b'{"__dagster_pipes_version": "0.1", "method": "closed", "params": {}}')}


def test_the_s3_reader_rides_out_an_outage_in_place(monkeypatch):
    """After the task ends Dagster's reader polls for only 10 s (1 s in these tests) and takes "not
    there yet" as final: an outage then lost the trainer's last chunk, and with it the report (this
    test's end-to-end twin above failed one run in three on that). The reader now retries the
    connection in place, so the chunk read during the outage comes back."""
    from tenali_pipeline.launchers.s3pipes import PrefixedS3MessageReader

    monkeypatch.setattr(PrefixedS3MessageReader, "FIRST_DELAY", 0.01)
    client = _OutageClient(down=4)
    reader = PrefixedS3MessageReader(bucket="b", prefix="pipes", client=client)
    params = {"bucket": "b", "key_prefix": "pipes/messages/x"}
    assert reader.messages_are_readable(params) is True
    assert "closed" in reader.download_messages_chunk(1, params)
    assert client.down == {"head_object": 0, "get_object": 0}


def test_the_s3_reader_gives_up_a_long_outage_with_a_warning(monkeypatch, caplog):
    """An outage past OUTAGE_SECONDS: "not there yet" (the next poll tries again) and a warning
    naming the bucket, so the thread neither dies nor outlives Dagster's 120 s join."""
    from tenali_pipeline.launchers.s3pipes import PrefixedS3MessageReader

    monkeypatch.setattr(PrefixedS3MessageReader, "FIRST_DELAY", 0.01)
    monkeypatch.setattr(PrefixedS3MessageReader, "OUTAGE_SECONDS", 0.1)
    reader = PrefixedS3MessageReader(bucket="tenali-pipes", prefix="", client=_OutageClient(down=10**6))
    params = {"bucket": "tenali-pipes", "key_prefix": "x"}
    with caplog.at_level("WARNING", logger="tenali_pipeline.launchers.s3pipes"):
        assert reader.download_messages_chunk(1, params) is None
        assert reader.messages_are_readable(params) is False
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2 and all("tenali-pipes still unreachable" in w for w in warned)


def test_the_s3_reader_catches_up_a_backlog_in_one_poll():
    """The trainer writes a chunk every 5 s and dagster-aws read one a poll, so a reader that fell
    behind never caught up, and after the task ended Dagster drains for 10 s only: the final report,
    30 chunks back here, was lost. Each poll now reads every chunk that is there."""
    import io

    from tenali_pipeline.launchers.s3pipes import PrefixedS3MessageReader

    class Bucket:
        def __init__(self, n):
            self.objects = {f"x/{i}.json": f'{{"chunk": {i}}}' for i in range(1, n + 1)}

        def get_object(self, Bucket, Key):
            from botocore.exceptions import ClientError

            if Key not in self.objects:
                raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
            return {"Body": io.BytesIO(self.objects[Key].encode())}

    bucket = Bucket(30)
    reader = PrefixedS3MessageReader(bucket="b", prefix="", client=bucket)
    params = {"bucket": "b", "key_prefix": "x"}
    cursor, text = reader.download_messages(None, params)
    assert cursor == 31 and text.split("\n") == [f'{{"chunk": {i}}}' for i in range(1, 31)]
    assert reader.download_messages(cursor, params) is None
    bucket.objects["x/31.json"] = '{"chunk": 31}'
    assert reader.download_messages(cursor, params) == (32, '{"chunk": 31}')


@pytest.mark.parametrize("code,retried", [(2, False), (1, True)])
def test_a_config_error_is_not_retried_a_crash_is(tmp_path, monkeypatch, code, retried):
    """Exit 2 is the trainer's own refusal (a bad config, missing shards): the step's RetryPolicy ran the
    same refusal again. A crash (exit 1) may be transient and is still retried."""
    (tmp_path / "fake_trainer.py").write_text(f"import sys\nprint('refused', file=sys.stderr)\nsys.exit({code})\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{ROOT}")
    config_path, run_dir = tiny_run(tmp_path)

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=1))
    def trained(context: dg.AssetExecutionContext, launcher: local.LocalTorchrunLauncher):
        return launcher.launch(context, config_path, run_dir, module="fake_trainer")

    res = dg.materialize([trained], resources={"launcher": local.LocalTorchrunLauncher(threads_per_process=1)},
                         raise_on_error=False)
    assert not res.success
    ups = [e for e in res.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(ups) == (1 if retried else 0)


def test_the_trainers_own_exit_status_decides_the_retry_on_every_launcher():
    """torchrun exits 1 whatever ended a worker: the worker's status in its "Root Cause" block, which
    pod and ECS log tails carry too, decides whether a retry can help."""
    from tenali_pipeline.launchers.common import failure

    block = "Root Cause (first observed failure):\n[0]:\n  time      : 2026-12-03\n  rank      : 0\n  exitcode  : {}\n"
    assert not failure("pod p", 1, "config error\n" + block.format(2)).allow_retries
    assert failure("pod p", 1, block.format(-9)).allow_retries
    assert not failure("task t", 2, "no torchrun block").allow_retries
    assert failure("task t", 137, "").allow_retries


def test_the_pipes_s3_client_bounds_each_call_within_dagsters_wait_for_the_reader():
    """boto3's defaults (60 s to connect, 60 s to read, 5 attempts) could hold one poll of an endpoint
    that drops packets for 10 minutes, past Dagster's 120 s join of the reader thread (which then fails
    the step and loses the report). One call is now at most 2 x (5 + 20) s, inside OUTAGE_SECONDS' margin."""
    from tenali_pipeline.launchers.common import s3_client
    from tenali_pipeline.launchers.s3pipes import PrefixedS3MessageReader

    config = s3_client("http://127.0.0.1:9").meta.config
    worst = config.retries["total_max_attempts"] * (config.connect_timeout + config.read_timeout)
    assert worst <= 50 and PrefixedS3MessageReader.OUTAGE_SECONDS + worst < 120
