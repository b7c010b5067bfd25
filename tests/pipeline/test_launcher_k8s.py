"""The Kubernetes launcher: the exact pod / Job / Service it submits, checked against the Kubernetes
API models, and its Pipes flow through S3 (moto on 127.0.0.1) with a fake cluster that runs the
submitted containers here (launcher_fakes.py)."""

import json
import logging
import time

import dagster as dg
import pytest

pytest.importorskip("dagster_k8s")
pytest.importorskip("dagster_aws")
from dagster_k8s.client import DagsterKubernetesClient  # noqa: E402
from kubernetes import client as k8s  # noqa: E402
from launcher_fakes import BUCKET, FakeKubernetes, master_port, s3, tiny_run  # noqa: E402, F401

from tenali_pipeline.launchers import build_launcher  # noqa: E402
from tenali_pipeline.launchers.k8s import K8sTrainingLauncher  # noqa: E402
from tenali_pipeline.settings import SettingsError, load_settings  # noqa: E402

TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
SELECTOR = {"node.kubernetes.io/instance-type": "p5.48xlarge"}


def roundtrip(obj: dict, model: str) -> dict:
    """Deserialise into the Kubernetes client model and back: a key the API does not know, or a
    misspelt one, does not survive, so the result differs from the input."""
    api = k8s.ApiClient()
    return api.sanitize_for_serialization(api._ApiClient__deserialize(obj, model))


def launcher(**kw) -> K8sTrainingLauncher:
    base = dict(image="registry.example/tenali-trainer:1", namespace="ml", gpus_per_node=8, cpu="90",
                memory="900Gi", node_selector=json.dumps(SELECTOR), tolerations=json.dumps(TOLERATIONS),
                shared_pvc="tenali-work", shared_mount="/mnt/tenali", service_account="tenali-trainer",
                lake_root="s3://lake/tenali", pipes_bucket="lake")
    base.update(kw)
    return K8sTrainingLauncher(**base)


def test_single_node_pod_spec_is_a_valid_pod_with_gpus_shm_and_the_shared_volume():
    spec = launcher().pod_spec(["torchrun", "--nproc_per_node=8", "--standalone", "-m", "tenali_model.train",
                                "--config", "/mnt/tenali/run/train_config.json"], {"A": "1"}, "/mnt/tenali/run")
    assert roundtrip(spec, "V1PodSpec") == spec
    c = spec["containers"][0]
    assert c["resources"] == {"limits": {"nvidia.com/gpu": "8", "memory": "900Gi"},
                              "requests": {"cpu": "90", "memory": "900Gi"}}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Gi"}} in spec["volumes"]
    assert {"name": "work", "persistentVolumeClaim": {"claimName": "tenali-work"}} in spec["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert {"name": "work", "mountPath": "/mnt/tenali"} in c["volumeMounts"]
    assert spec["nodeSelector"] == SELECTOR and spec["tolerations"] == TOLERATIONS
    assert spec["restartPolicy"] == "Never" and spec["serviceAccountName"] == "tenali-trainer"
    assert spec["terminationGracePeriodSeconds"] > 30  # torchrun's 30 s for its workers to save their step


def test_multi_node_job_is_an_indexed_job_with_a_headless_service(monkeypatch):
    monkeypatch.setenv("TENALI_OWNER_POD_NAME", "dagster-run-abc")
    monkeypatch.setenv("TENALI_OWNER_POD_UID", "1234-uid")
    service, job = launcher(nodes=4).job_manifests("tenali-train-abc", "run-1", "/mnt/tenali/r/c.json",
                                                   {"TENALI_LAKE_ROOT": "s3://lake/tenali"}, "/mnt/tenali/r")
    assert roundtrip(job, "V1Job") == job and roundtrip(service, "V1Service") == service
    s = job["spec"]
    assert (s["completionMode"], s["completions"], s["parallelism"], s["backoffLimit"]) == ("Indexed", 4, 4, 0)
    pod = s["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"] == "tenali-train-abc"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": "tenali-train-abc"}
    assert pod["containers"][0]["command"] == [
        "torchrun", "--nproc_per_node=8", "--nnodes=4", "--node_rank=$(NODE_RANK)",
        "--master_addr=tenali-train-abc-0.tenali-train-abc.ml.svc", "--master_port=29500",
        "-m", "tenali_model.train", "--config", "/mnt/tenali/r/c.json"]
    rank = pod["containers"][0]["env"][0]
    assert rank["name"] == "NODE_RANK"
    assert rank["valueFrom"]["fieldRef"]["fieldPath"].endswith("['batch.kubernetes.io/job-completion-index']")
    assert job["metadata"]["ownerReferences"][0]["uid"] == "1234-uid"


def test_build_launcher_reads_the_k8s_variables(tmp_path):
    settings = load_settings({"TENALI_PROFILE": "prod", "TENALI_HOME": str(tmp_path),
                              "TENALI_LAKE_ROOT": "s3://lake/tenali", "TENALI_TRAINER_IMAGE": "img:1",
                              "TENALI_K8S_TOLERATIONS": json.dumps(TOLERATIONS), "TENALI_NODES": "2",
                              "TENALI_GPUS_PER_NODE": "4", "TENALI_K8S_NAMESPACE": "ml"})
    built = build_launcher(settings)
    assert isinstance(built, K8sTrainingLauncher)
    assert (built.image, built.nodes, built.gpus_per_node, built.namespace) == ("img:1", 2, 4, "ml")
    assert built.pipes_bucket == "lake" and json.loads(built.tolerations) == TOLERATIONS
    with pytest.raises(SettingsError, match="TENALI_TRAINER_IMAGE"):
        build_launcher(load_settings({"TENALI_PROFILE": "prod", "TENALI_LAKE_ROOT": "s3://lake/x"}))
    with pytest.raises(SettingsError, match="TENALI_K8S_TOLERATIONS"):
        load_settings({"TENALI_K8S_TOLERATIONS": '{"key": "x"}'})


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    fake = FakeKubernetes(tmp_path)
    monkeypatch.setattr("kubernetes.config.load_kube_config", lambda *a, **k: None)
    monkeypatch.setattr(DagsterKubernetesClient, "production_client", staticmethod(
        lambda *a, **k: DagsterKubernetesClient(batch_api=fake.batch, core_api=fake.core, logger=logging.info,
                                                sleeper=time.sleep, timer=time.time)))
    yield fake
    for _, proc in fake.pods.values():
        proc.kill()


def materialise(launcher_resource, config_path, run_dir):
    @dg.asset
    def pretrain_checkpoint(context: dg.AssetExecutionContext, launcher: dg.ResourceParam):
        return launcher.launch(context, config_path, workdir=run_dir)

    instance = dg.DagsterInstance.ephemeral()
    res = dg.materialize([pretrain_checkpoint], resources={"launcher": launcher_resource}, raise_on_error=False,
                         instance=instance)
    res.logs = [e.user_message for e in instance.all_logs(res.run_id)]
    return res


def _train_one_node(tmp_path, s3):
    """(result, checkpoint metadata, config path, run folder) of a one-node, one-GPU training reporting through S3."""
    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    res = materialise(launcher(gpus_per_node=1, cpu="", memory="", shared_mount=str(tmp_path), pipes_bucket=BUCKET,
                               s3_endpoint_url=endpoint, poll_interval=0.5), config_path, run_dir)
    assert res.success, res.all_events
    return res, res.asset_materializations_for_node("pretrain_checkpoint")[0].metadata, config_path, run_dir


def test_one_node_with_a_bucket_trains_as_a_one_pod_job_then_is_deleted(tmp_path, s3, cluster):
    """The launcher follows its own Job (unschedulable pods, API outages, bad images) on one node too:
    torchrun standalone, no Service."""
    res, meta, config_path, run_dir = _train_one_node(tmp_path, s3)
    assert meta["step"].value == 6 and meta["world_size"].value == 1 and (run_dir / "latest").exists()
    (job,) = cluster.submitted
    assert isinstance(job, k8s.V1Job) and job.spec.completions == job.spec.parallelism == 1
    c = job.spec.template.spec.containers[0]
    assert c.command == ["torchrun", "--nproc_per_node=1", "--standalone", "-m", "tenali_model.train",
                         "--config", str(config_path)]
    assert not c.ports and job.spec.template.spec.subdomain is None
    assert all(e.value_from is None for e in c.env)  # no NODE_RANK from the completion index
    assert cluster.deleted == [f"job/{job.metadata.name}:Background"]
    assert any("step 6/6" in m for m in res.logs)


def test_the_bare_pod_path_trains_and_reports_then_is_deleted(tmp_path, s3, cluster, monkeypatch):
    """Without a bucket one node runs as a bare pod through PipesK8sClient, whose reports come from
    the pod's logs; the fake cannot stream logs, so the bare pod runs here with the S3 reader."""
    monkeypatch.setattr(K8sTrainingLauncher, "_launch_job", K8sTrainingLauncher._launch_pod)
    endpoint, client = s3
    res, meta, config_path, run_dir = _train_one_node(tmp_path, s3)
    assert meta["step"].value == 6 and (run_dir / "latest").exists()
    assert str(meta["checkpoint"].value).startswith(str(run_dir))
    # the pod that was submitted: V1Pod with the command, GPUs, Pipes env on S3, then deleted
    (pod,) = cluster.submitted
    assert isinstance(pod, k8s.V1Pod)
    c = pod.spec.containers[0]
    assert c.command == ["torchrun", "--nproc_per_node=1", "--standalone", "-m", "tenali_model.train",
                         "--config", str(config_path)]
    assert c.resources.limits == {"nvidia.com/gpu": "1"} and c.working_dir == str(run_dir)
    env = {e.name: e.value for e in c.env}
    assert env["TENALI_LAKE_ROOT"] == "s3://lake/tenali" and env["AWS_ENDPOINT_URL_S3"] == endpoint
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"} <= set(env)
    assert cluster.deleted == [f"pod/{pod.metadata.name}"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert keys and all(k.startswith("pipes/messages/") for k in keys)  # context deleted, messages kept
    assert any("step 6/6" in m for m in res.logs)  # the trainer's progress came back through Pipes


def test_a_trainer_that_dies_at_start_fails_with_exit_code_and_last_lines(tmp_path, s3, cluster):
    """Out of memory while loading (the fake's "oom/" image exits 137 after two log lines)."""
    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    res = materialise(launcher(image="oom/tenali-trainer:1", gpus_per_node=1, shared_mount=str(tmp_path),
                               pipes_bucket=BUCKET, s3_endpoint_url=endpoint, poll_interval=0.5), config_path, run_dir)
    assert not res.success
    (failure,) = [e for e in res.all_events if e.is_step_failure]
    text = failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
    assert "exit code 137 (killed (out of memory or preempted))" in text
    assert "loading 1.2B parameters" in text and "CUDA out of memory" in text  # the last log lines
    assert failure.step_failure_data.user_failure_data.metadata["exit_code"].value == 137
    (job,) = cluster.submitted
    assert cluster.deleted == [f"job/{job.metadata.name}:Background"] and not cluster.pods  # cleaned up


def test_paths_off_the_shared_volume_fail_before_anything_is_submitted(tmp_path, cluster):
    config_path, run_dir = tiny_run(tmp_path)
    res = materialise(launcher(shared_mount="/mnt/elsewhere"), config_path, run_dir)
    assert not res.success and not cluster.submitted
    (failure,) = [e for e in res.all_events if e.is_step_failure]
    assert "TENALI_HOME" in failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)


def test_two_nodes_train_as_an_indexed_job_and_report_once(tmp_path, s3, cluster, master_port):
    endpoint, client = s3
    config_path, run_dir = tiny_run(tmp_path)
    res = materialise(launcher(nodes=2, gpus_per_node=1, shared_mount=str(tmp_path), pipes_bucket=BUCKET,
                               s3_endpoint_url=endpoint, poll_interval=0.5, master_port=master_port),
                      config_path, run_dir)
    assert res.success, [e for e in res.all_events if e.is_step_failure]
    meta = res.asset_materializations_for_node("pretrain_checkpoint")[0].metadata
    assert meta["world_size"].value == 2 and meta["step"].value == 6
    service, job = cluster.submitted
    assert isinstance(service, k8s.V1Service) and isinstance(job, k8s.V1Job)
    assert job.spec.completion_mode == "Indexed" and job.spec.completions == 2
    name = job.metadata.name
    assert cluster.deleted == [f"job/{name}:Background", f"service/{name}"]


@pytest.mark.parametrize("bare_pod", [False, True])
def test_a_cancelled_step_deletes_its_pod(tmp_path, s3, cluster, monkeypatch, bare_pod):
    """Dagster cancels a step by raising DagsterExecutionInterruptedError in it; the pod must go."""
    from dagster._core.errors import DagsterExecutionInterruptedError

    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    api = type(cluster.core)
    listed = api.list_namespaced_pod

    def interrupted_once_running(self, *args, **kwargs):
        result = listed(self, *args, **kwargs)
        # the wait lists by name (PipesK8sClient) or by the Job's label (the launcher's own wait)
        if kwargs.get("field_selector" if bare_pod else "label_selector") and result.items:
            raise DagsterExecutionInterruptedError("run cancelled from the UI")
        return result

    monkeypatch.setattr(api, "list_namespaced_pod", interrupted_once_running)
    if bare_pod:
        monkeypatch.setattr(K8sTrainingLauncher, "_launch_job", K8sTrainingLauncher._launch_pod)
    res = materialise(launcher(gpus_per_node=1, shared_mount=str(tmp_path), pipes_bucket=BUCKET,
                               s3_endpoint_url=endpoint, poll_interval=0.5), config_path, run_dir)
    assert not res.success
    (submitted,) = cluster.submitted
    name = submitted.metadata.name
    assert cluster.deleted == ([f"pod/{name}"] if bare_pod else [f"job/{name}:Background"]) and not cluster.pods


def test_post_training_stages_run_their_own_module():
    """Post-training assets call launch(..., module=...); the pod and the Job run that module."""
    _, job = launcher(nodes=2).job_manifests("j", "run-1", "/mnt/tenali/c.json", {}, "/mnt/tenali",
                                             module="tenali_model.posttrain.sft")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-4:] == [
        "-m", "tenali_model.posttrain.sft", "--config", "/mnt/tenali/c.json"]


def test_a_retried_multi_node_step_gets_a_job_of_its_own_and_trains(tmp_path, s3, cluster, master_port):
    """The step's retry (RetryPolicy) must not reuse the name of the Job it just deleted: that Job's
    pods are still listed, terminating or failed, under the same job-name label (and the same
    hostnames behind the Service) until the garbage collector removes them, and the retry would read
    them as its own failed nodes and fail at once."""
    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    cluster.linger_deleted_job_pods = True
    cluster.fail_jobs = 1  # the first attempt: node 1 runs out of memory at start
    resource = launcher(nodes=2, gpus_per_node=1, shared_mount=str(tmp_path), pipes_bucket=BUCKET,
                        s3_endpoint_url=endpoint, poll_interval=0.5, master_port=master_port)

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=1))
    def pretrain_checkpoint(context: dg.AssetExecutionContext, launcher: dg.ResourceParam):
        return launcher.launch(context, config_path, workdir=run_dir)

    res = dg.materialize([pretrain_checkpoint], resources={"launcher": resource}, raise_on_error=False)
    assert res.success, [e.step_failure_data.error.message for e in res.all_events if e.is_step_failure]
    jobs = [o for o in cluster.submitted if isinstance(o, k8s.V1Job)]
    assert len(jobs) == 2 and jobs[0].metadata.name != jobs[1].metadata.name
    assert res.asset_materializations_for_node("pretrain_checkpoint")[0].metadata["step"].value == 6
    for job in jobs:  # every name a valid DNS label with room for the pods' "-<index>-<random>"
        assert len(job.metadata.name) <= 52 and job.metadata.name.rstrip("-") == job.metadata.name


def test_a_passing_kubernetes_api_outage_does_not_kill_a_multi_node_training(tmp_path, s3, cluster, monkeypatch,
                                                                              master_port):
    """An EKS control-plane upgrade or an API server restart answers 503 (or refuses connections) for
    a while; the launcher following a Job for days must ask again, not fail the step (and so delete the
    Job, killing the training)."""
    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    api = type(cluster.batch)
    read = api.read_namespaced_job_status
    calls = {"n": 0}

    def unavailable_for_a_while(self, *args, **kwargs):
        calls["n"] += 1
        if 2 <= calls["n"] <= 4:
            raise k8s.ApiException(status=503, reason="Service Unavailable")
        return read(self, *args, **kwargs)

    monkeypatch.setattr(api, "read_namespaced_job_status", unavailable_for_a_while)
    res = materialise(launcher(nodes=2, gpus_per_node=1, shared_mount=str(tmp_path), pipes_bucket=BUCKET,
                               s3_endpoint_url=endpoint, poll_interval=0.5, master_port=master_port),
                      config_path, run_dir)
    assert res.success, [e.step_failure_data.error.message for e in res.all_events if e.is_step_failure]
    assert calls["n"] > 4
    assert any("the Kubernetes API failed while following job" in m for m in res.logs)


def test_a_kubernetes_api_outage_longer_than_the_grace_fails_the_step(tmp_path, cluster, monkeypatch):
    from tenali_pipeline.launchers.k8s import _transient_api_error

    assert _transient_api_error(k8s.ApiException(status=503)) and _transient_api_error(ConnectionRefusedError())
    assert not _transient_api_error(k8s.ApiException(status=403))  # RBAC: asking again will not help
    api = type(cluster.batch)
    monkeypatch.setattr(api, "read_namespaced_job_status",
                        lambda self, *a, **k: (_ for _ in ()).throw(k8s.ApiException(status=503)))
    kube = type("Kube", (), {"batch_api": cluster.batch, "core_api": cluster.core})()
    context = type("Ctx", (), {"log": logging.getLogger("test")})()
    with pytest.raises(dg.Failure, match="kept failing for more than 1 s"):
        launcher(nodes=2, poll_interval=0.1, api_error_grace_seconds=1)._wait_for_job(kube, "j", context)


class _PendingCluster:
    """A Job whose pods no node can take: the scheduler's condition, as `kubectl describe pod` shows it."""

    def __init__(self, message: str, pods: int = 2):
        self.message, self.listed, self.pods = message, 0, pods
        self.batch_api, self.core_api = self, self

    def read_namespaced_job_status(self, name, namespace):
        return k8s.V1Job(status=k8s.V1JobStatus(active=2))

    def list_namespaced_pod(self, namespace, label_selector=None, **_):
        self.listed += 1
        cond = k8s.V1PodCondition(type="PodScheduled", status="False", reason="Unschedulable", message=self.message)
        return k8s.V1PodList(items=[k8s.V1Pod(metadata=k8s.V1ObjectMeta(name=f"j-{i}-abcde"),
                                              status=k8s.V1PodStatus(phase="Pending", conditions=[cond]))
                                    for i in range(self.pods)])


class _LauncherClock:
    """k8s.py's `time`: a clock that moves only when the launcher sleeps, so its polls fit the schedule
    timeout as they would on an idle machine (a starved thread polled twice in a second)."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("nodes", [1, 2])
def test_a_job_no_node_can_take_fails_with_the_schedulers_reason_instead_of_waiting_for_days(caplog, monkeypatch,
                                                                                             nodes):
    """Eight GPUs asked of a pool that has four (or a selector no node matches) leave the pods Pending
    for ever: the step said nothing and waited timeout_seconds (14 days). It now names the scheduler's
    reason at once and fails after schedule_timeout_seconds."""
    from tenali_pipeline.launchers import k8s as k8s_launcher

    monkeypatch.setattr(k8s_launcher, "time", _LauncherClock())
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available."
    kube = _PendingCluster(message, pods=nodes)
    context = type("Ctx", (), {"log": logging.getLogger("test-unschedulable")})()
    with caplog.at_level(logging.WARNING, "test-unschedulable"):
        with pytest.raises(dg.Failure, match="no node could take it for 1 s: 0/3 nodes are available: 3 Insufficient "
                                             "nvidia.com/gpu.*TENALI_GPUS_PER_NODE.*TENALI_K8S_SCHEDULE_TIMEOUT"):
            launcher(nodes=nodes, poll_interval=0.05, schedule_timeout_seconds=1)._wait_for_job(kube, "j", context)
    warnings = [r.getMessage() for r in caplog.records if "cannot be scheduled yet" in r.getMessage()]
    assert len(warnings) == 1 and message in warnings[0]  # said once, not at every poll
    assert kube.listed > 5


def test_the_schedule_timeout_is_read_and_checked_from_the_environment(tmp_path):
    env = {"TENALI_PROFILE": "local", "TENALI_HOME": str(tmp_path), "TENALI_LAUNCHER": "k8s",
           "TENALI_TRAINER_IMAGE": "registry.example/tenali-trainer:1", "TENALI_K8S_SCHEDULE_TIMEOUT": "7200"}
    assert build_launcher(load_settings(env)).schedule_timeout_seconds == 7200
    for bad in ("-1", "nan", "soon"):
        with pytest.raises(SettingsError, match="TENALI_K8S_SCHEDULE_TIMEOUT"):
            load_settings({**env, "TENALI_K8S_SCHEDULE_TIMEOUT": bad})


@pytest.mark.parametrize("nodes", [1, 2])
def test_a_trainer_that_exits_0_without_reporting_fails_the_step(tmp_path, s3, cluster, nodes, master_port):
    """dagster #17868 on Kubernetes: Dagster's implicit (empty) materialisation read as success."""
    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    res = materialise(launcher(image="silent/tenali-trainer:1", nodes=nodes, gpus_per_node=1, shared_mount=str(tmp_path),
                               pipes_bucket=BUCKET, s3_endpoint_url=endpoint, poll_interval=0.5,
                               master_port=master_port), config_path, run_dir)
    assert not res.success
    (failure,) = [e for e in res.all_events if e.is_step_failure]
    assert "exited without reporting" in failure.step_failure_data.error.message + str(
        failure.step_failure_data.user_failure_data)


class _StoppingPods:
    """core_api.list_namespaced_pod of a deleted Job whose pods are still saving their step for `running` polls
    (the API failing once on the way), then have stopped."""

    def __init__(self, running: int):
        self.running, self.listed = running, 0

    def list_namespaced_pod(self, namespace, label_selector=None, **_):
        self.listed += 1
        if self.listed == 2:
            raise k8s.ApiException(status=503, reason="Service Unavailable")
        phase = "Running" if self.listed <= self.running else "Failed"
        pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="j-0-abcde"), status=k8s.V1PodStatus(phase=phase))
        return k8s.V1PodList(items=[pod])


def test_a_failed_jobs_pods_are_waited_for_until_they_stop_so_a_retry_never_runs_beside_them(caplog, monkeypatch):
    """A deleted Job's pods get SIGTERM and their grace to save the step they are at (tenali_model/preemption.py):
    the step's retry reuses the run folder, so the launcher returns only once none of them still runs."""
    from tenali_pipeline.launchers import k8s as k8s_launcher

    clock = _LauncherClock()
    monkeypatch.setattr(k8s_launcher, "time", clock)
    context = type("Ctx", (), {"log": logging.getLogger("test-stop-wait")})()
    pods = _StoppingPods(running=6)
    kube = type("Kube", (), {"core_api": pods})()
    start = clock.now
    launcher(poll_interval=5)._wait_for_pods_to_stop(kube, "j", context)
    assert pods.listed == 7 and clock.now - start == 30  # six polls saw it running (one failed), the seventh not
    forever = _StoppingPods(running=10**6)
    with caplog.at_level(logging.WARNING, "test-stop-wait"):
        launcher(poll_interval=5)._wait_for_pods_to_stop(type("Kube", (), {"core_api": forever})(), "j", context)
    assert "pods j-0-abcde still run" in caplog.text and "a retry may start beside them" in caplog.text
    assert "the API's last answer" not in caplog.text  # it answered at the end: no outage to report
