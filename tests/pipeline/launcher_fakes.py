"""Fakes of the cluster APIs for the launcher tests: "running" a pod, Job or ECS task starts the
trainer here, as a subprocess with exactly the command and environment the launcher submitted
(plus what the cluster itself provides: AWS credentials, PYTHONPATH), so Dagster Pipes runs for real
through S3 on a moto server on 127.0.0.1."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from kubernetes import client as k8s

from tenali_model.config import TrainConfig
from tenali_model.data import write_shard

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "tenali-launcher-test"


@pytest.fixture
def master_port():
    """A port for torchrun's rendezvous, held until the test ends. Picked free and let go, it could be taken
    before node 0's TCPStore binds it, seconds later; held by a socket bound with SO_REUSEADDR that never
    listens, other processes' binds, bind(0) and outgoing connections keep off it, and the TCPStore, which
    sets SO_REUSEADDR too, can still bind it (Linux refuses that only when the holder listens)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", 0))
        yield s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    pytest.importorskip("flask", reason="moto's server mode needs flask: pip install 'moto[server]'")
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    # A trainer that dies never sends Pipes' "closed" message, and Dagster then waits 10 s for one;
    # 1 s is plenty against a local server and keeps the failure tests short.
    monkeypatch.setattr("dagster._core.pipes.utils.WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 1)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    # port 0: the server binds a free port itself (a port picked here could be taken before it binds it,
    # and start() would then wait for ever on a server thread that died)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    # moto keeps its state per process, not per server: start every test from an empty account
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    server.stop()


def tiny_run(shared: Path, steps: int = 6) -> tuple[Path, Path]:
    """Shards and a train config on the 'shared volume'; returns (config path, run folder)."""
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, 64, size=37)
    shards = shared / "cache" / "shards"
    write_shard(shards / "train_00000.bin", np.tile(pattern, 200)[:6000], vocab_size=64)
    write_shard(shards / "val_00000.bin", np.tile(pattern, 40)[:1200], vocab_size=64)
    run_dir = shared / "cache" / "checkpoints" / "run"
    run_dir.mkdir(parents=True)
    cfg = TrainConfig(train_shards=[str(shards / "train_00000.bin")], val_shards=[str(shards / "val_00000.bin")],
                      out_dir=str(run_dir), model={"preset": "tiny", "vocab_size": 64, "max_seq_len": 32},
                      steps=steps, batch_size=4, seq_len=32, lr=3e-3, min_lr=3e-4, warmup_steps=1, log_every=2,
                      eval_batches=1, device="cpu", num_threads=1, seed=3)
    cfg.to_json(run_dir / "train_config.json")
    return run_dir / "train_config.json", run_dir


class Process:
    """A 'container': the submitted command run here, its output kept as the container log."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: str | None, log: Path):
        if command[0] == "torchrun":  # the image's console script; here the same module
            command = [sys.executable, "-m", "torch.distributed.run", *command[1:]]
        self.log = log
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PIPES")}
        full_env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **env)
        self.proc = subprocess.Popen(command, env=full_env, cwd=cwd, stdout=open(log, "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def exit_code(self) -> int | None:
        return self.proc.poll()

    def tail(self, lines: int | None) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) + "\n" if lines else text

    def wait_for_output(self, text: str, timeout: float = 120) -> None:
        """Until the container has logged `text` (a loaded machine may take seconds to start it)."""
        deadline = time.monotonic() + timeout
        while text not in self.tail(None):
            if self.exit_code is not None and text not in self.tail(None):
                raise AssertionError(f"the container exited {self.exit_code} before logging {text!r}:\n{self.tail(20)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the container did not log {text!r} within {timeout:.0f} s:\n{self.tail(20)}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


# What an "oom/..." image does: a trainer that runs out of GPU memory while loading and is killed.
OOM_AT_START = [sys.executable, "-c", "print('loading 1.2B parameters'); "
                "print('torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB'); "
                "import sys; sys.exit(137)"]
HANG = [sys.executable, "-c", "print('step 1 loss 9.9', flush=True); import time; time.sleep(600)"]  # a stalled trainer


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


class FakeKubernetes:
    """CoreV1Api and BatchV1Api, as far as PipesK8sClient, DagsterKubernetesClient and the launcher use them."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.pods: dict[str, tuple[k8s.V1Pod, Process]] = {}
        self.submitted: list = []  # every object created, in order
        self.deleted: list[str] = []
        self.jobs: dict[str, k8s.V1Job] = {}
        self.core, self.batch = _Api(self), _Api(self)
        # As a real cluster: a deleted Job's pods stay listed (terminating, then failed) until the
        # garbage collector removes them, i.e. after the next attempt has started.
        self.linger_deleted_job_pods = False
        self.fail_jobs = 0  # the first N Jobs' last index dies at start (out of memory)
        self._lock = threading.Lock()

    def run_pod(self, pod: k8s.V1Pod, index: int | None = None, fail: bool = False) -> None:
        c = pod.spec.containers[0]
        env = {}
        for e in c.env or []:
            if e.value_from is not None:  # the Job controller's completion index, via the downward API
                assert "job-completion-index" in e.value_from.field_ref.field_path
                env[e.name] = str(index)
            else:
                env[e.name] = e.value
        # cluster DNS: the headless Service name of node 0 resolves to this machine
        command = [re.sub(r"--master_addr=\S+", "--master_addr=127.0.0.1", _expand(a, env)) for a in c.command]
        if c.image.startswith("oom/") or fail:
            command = OOM_AT_START
        elif c.image.startswith("silent/"):  # exits 0 without a word through Pipes
            command = [sys.executable, "-c", "print('nothing to say')"]
        with self._lock:
            self.pods[pod.metadata.name] = (pod, Process(command, env, c.working_dir,
                                                         self.logs / f"{pod.metadata.name}.log"))

    def pod_status(self, pod: k8s.V1Pod, proc: Process) -> k8s.V1Pod:
        code = proc.exit_code
        state = (k8s.V1ContainerState(running=k8s.V1ContainerStateRunning()) if code is None else
                 k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(
                     exit_code=code, reason="Completed" if code == 0 else "Error")))
        status = k8s.V1ContainerStatus(name=pod.spec.containers[0].name, image=pod.spec.containers[0].image,
                                       image_id="", ready=code is None, restart_count=0, state=state)
        return k8s.V1Pod(metadata=pod.metadata, spec=pod.spec,
                         status=k8s.V1PodStatus(phase="Running" if code is None else
                                                ("Succeeded" if code == 0 else "Failed"),
                                                container_statuses=[status]))


class _Api:
    def __init__(self, cluster: FakeKubernetes):
        self.c = cluster

    # pods
    def create_namespaced_pod(self, namespace, body):
        self.c.submitted.append(body)
        self.c.run_pod(body)

    def list_namespaced_pod(self, namespace, field_selector=None, label_selector=None, **_):
        items = []
        for name, (pod, proc) in list(self.c.pods.items()):
            if field_selector and field_selector != f"metadata.name={name}":
                continue
            if label_selector:
                key, _, value = label_selector.partition("=")
                if (pod.metadata.labels or {}).get(key) != value:
                    continue
            items.append(self.c.pod_status(pod, proc))
        return k8s.V1PodList(items=items)

    def read_namespaced_pod_log(self, name, namespace, container=None, tail_lines=None, _preload_content=True, **_):
        text = self.c.pods[name][1].tail(tail_lines)
        return text if _preload_content else SimpleNamespace(data=text.encode())

    def delete_namespaced_pod(self, name, namespace, **_):
        self.c.deleted.append(f"pod/{name}")
        self.c.pods.pop(name)[1].kill()

    # services
    def create_namespaced_service(self, namespace, body):
        self.c.submitted.append(body)

    def delete_namespaced_service(self, name, namespace, **_):
        self.c.deleted.append(f"service/{name}")

    # jobs: one pod per completion index, named (<job>-<index>-<random>) and labelled as the Job controller does
    def create_namespaced_job(self, namespace, body: k8s.V1Job):
        import uuid

        if body.metadata.name in self.c.jobs:
            raise k8s.ApiException(status=409, reason=f"jobs.batch {body.metadata.name!r} already exists")
        self.c.submitted.append(body)
        self.c.jobs[body.metadata.name] = body
        fail = self.c.fail_jobs > 0
        self.c.fail_jobs -= 1
        for i in range(body.spec.completions):
            name = f"{body.metadata.name}-{i}-{uuid.uuid4().hex[:5]}"
            meta = k8s.V1ObjectMeta(name=name, labels={**(body.spec.template.metadata.labels or {}),
                                                       "batch.kubernetes.io/job-name": body.metadata.name})
            self.c.run_pod(k8s.V1Pod(metadata=meta, spec=body.spec.template.spec), index=i,
                           fail=fail and i == body.spec.completions - 1)

    def _job_pod_names(self, name):
        return [n for n, (pod, _) in self.c.pods.items()
                if (pod.metadata.labels or {}).get("batch.kubernetes.io/job-name") == name]

    def _job_pods(self, name):
        return [self.c.pods[n] for n in self._job_pod_names(name)]

    def read_namespaced_job_status(self, name, namespace):
        codes = [proc.exit_code for _, proc in self._job_pods(name)]
        return k8s.V1Job(metadata=self.c.jobs[name].metadata, status=k8s.V1JobStatus(
            succeeded=sum(c == 0 for c in codes), failed=sum(c not in (0, None) for c in codes),
            active=sum(c is None for c in codes)))

    def delete_namespaced_job(self, name, namespace, propagation_policy=None, **_):
        self.c.deleted.append(f"job/{name}:{propagation_policy}")
        self.c.jobs.pop(name, None)
        for pod_name in self._job_pod_names(name):
            if self.c.linger_deleted_job_pods:  # killed, still listed until garbage-collected
                self.c.pods[pod_name][1].kill()
            else:
                self.c.pods.pop(pod_name)[1].kill()


class FakeEcs:
    """The ECS API as PipesECSClient and the launcher call it. Every request is first validated
    against botocore's ECS service model (the exact shape AWS would accept); run_task starts the
    container's command here and, when it exits, its output goes to CloudWatch Logs (moto) as the
    awslogs driver would write it."""

    def __init__(self, logs_dir: Path, logs_client, region: str = "us-east-1"):
        import botocore.session

        self.model = botocore.session.get_session().get_service_model("ecs")
        self.logs_dir, self.logs_client = logs_dir, logs_client
        self.meta = SimpleNamespace(region_name=region)
        self.calls: list[tuple[str, dict]] = []
        self.definitions: list[dict] = []
        self.tasks: dict[str, tuple[dict, Process | None]] = {}
        self.stop_error: Exception | None = None  # what stop_task raises, when set

    def _record(self, operation: str, params: dict) -> None:
        from botocore.validate import validate_parameters

        validate_parameters(params, self.model.operation_model(operation).input_shape)
        self.calls.append((operation, params))

    def describe_task_definition(self, **params):
        from botocore.exceptions import ClientError

        self._record("DescribeTaskDefinition", params)
        name = params["taskDefinition"]  # a family (its latest revision) or a revision's ARN
        found = [d for d in self.definitions if name in (d["family"], d["taskDefinitionArn"])]
        if not found:
            raise ClientError({"Error": {"Code": "ClientException", "Message": "Unable to describe task definition."}},
                              "DescribeTaskDefinition")
        td = found[-1]
        return {"taskDefinition": {k: v for k, v in td.items() if k != "tags"}, "tags": td.get("tags", [])}

    def register_task_definition(self, **params):
        self._record("RegisterTaskDefinition", params)
        revision = sum(d["family"] == params["family"] for d in self.definitions) + 1
        arn = f"arn:aws:ecs:us-east-1:123456789012:task-definition/{params['family']}:{revision}"
        self.definitions.append({**params, "taskDefinitionArn": arn, "revision": revision})
        return {"taskDefinition": self.definitions[-1]}

    def run_task(self, **params):
        self._record("RunTask", params)
        td = next(d for d in self.definitions if d["taskDefinitionArn"] == params["taskDefinition"])
        container = td["containerDefinitions"][0]
        override = next(o for o in params["overrides"]["containerOverrides"] if o["name"] == container["name"])
        env = {e["name"]: e["value"] for e in container.get("environment", []) + override.get("environment", [])}
        task_id = f"{len(self.tasks) + 1:032x}"
        arn = f"arn:aws:ecs:us-east-1:123456789012:task/{params['cluster']}/{task_id}"
        proc = None
        command = override.get("command") or container["command"]
        if container["image"].startswith("oom/"):
            command = OOM_AT_START
        if container["image"].startswith("hang/"):
            command = HANG
        if not container["image"].startswith("missing/"):  # an image that cannot be pulled never starts
            proc = Process(command, env, None, self.logs_dir / f"{task_id}.log")
        if container["image"].startswith("hang/"):
            # it stalls after its first step: the launcher's clock (timeout_seconds) starts once it has logged
            # that step, or a slow start would leave its log tail empty when the launcher gives up on it
            proc.wait_for_output("step 1 loss 9.9")
        self.tasks[arn] = ({"td": td, "container": container["name"], "task_id": task_id}, proc)
        return {"tasks": [{"taskArn": arn, "lastStatus": "PROVISIONING",
                           "containers": [{"name": container["name"], "lastStatus": "PENDING"}]}], "failures": []}

    def get_waiter(self, name):
        assert name == "tasks_stopped"
        return SimpleNamespace(wait=self._wait)

    def _wait(self, tasks, cluster=None, WaiterConfig=None):  # noqa: N803 - boto3's argument name
        """botocore's tasks_stopped waiter: polls until every task has stopped, or raises WaiterError
        ("Max attempts exceeded") after Delay x MaxAttempts seconds, as botocore does."""
        from botocore.exceptions import WaiterError

        self._record("DescribeTasks", {"tasks": tasks, **({"cluster": cluster} if cluster else {})})
        config = WaiterConfig or {}
        deadline = time.monotonic() + config.get("Delay", 6) * config.get("MaxAttempts", 100)
        for arn in tasks:
            info, proc = self.tasks[arn]
            while proc is not None and proc.exit_code is None:
                if time.monotonic() > deadline:
                    raise WaiterError(name="TasksStopped", reason="Max attempts exceeded",
                                      last_response=self.describe_tasks(tasks=tasks, cluster=cluster))
                time.sleep(0.2)
            if proc is not None and not info.get("logged"):
                group = info["td"]["containerDefinitions"][0]["logConfiguration"]["options"]["awslogs-group"]
                stream = f"tenali/{info['container']}/{info['task_id']}"
                try:
                    self.logs_client.create_log_group(logGroupName=group)
                except self.logs_client.exceptions.ResourceAlreadyExistsException:
                    pass
                self.logs_client.create_log_stream(logGroupName=group, logStreamName=stream)
                lines = proc.tail(None).splitlines() or ["(no output)"]
                now = int(time.time() * 1000)
                self.logs_client.put_log_events(logGroupName=group, logStreamName=stream,
                                                logEvents=[{"timestamp": now, "message": m} for m in lines])
                info["logged"] = True

    def describe_tasks(self, **params):
        self._record("DescribeTasks", params)
        out = []
        for arn in params["tasks"]:
            info, proc = self.tasks[arn]
            container = {"name": info["container"], "runtimeId": f"{info['task_id']}-rt", "lastStatus": "STOPPED"}
            task = {"taskArn": arn, "clusterArn": f"arn:aws:ecs:us-east-1:123456789012:cluster/{params.get('cluster')}",
                    "lastStatus": "STOPPED", "containers": [container]}
            if proc is None:
                task.update(stopCode="TaskFailedToStart",
                            stoppedReason="CannotPullContainerError: pull image manifest has been retried 5 time(s)")
            elif proc.exit_code is None:
                task["lastStatus"] = container["lastStatus"] = "RUNNING"
            else:  # a container killed by signal N exits 128 + N in ECS
                container["exitCode"] = proc.exit_code if proc.exit_code >= 0 else 128 - proc.exit_code
                task.update(stopCode="EssentialContainerExited", stoppedReason="Essential container in task exited")
                if "stopped_reason" in info:
                    task.update(stopCode="UserInitiated", stoppedReason=info["stopped_reason"])
            out.append(task)
        return {"tasks": out, "failures": []}

    def stop_task(self, **params):
        self._record("StopTask", params)
        if self.stop_error is not None:
            raise self.stop_error
        info, proc = self.tasks[params["task"]]
        info["stopped_reason"] = params.get("reason", "Task stopped by user")
        if proc is not None:
            proc.kill()
        return {"task": {"taskArn": params["task"], "desiredStatus": "STOPPED"}}
