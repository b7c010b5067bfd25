"""Run training on Kubernetes GPU nodes: one pod per node, torchrun inside, Pipes through S3.

- **Reporting through S3** (``TENALI_PIPES_BUCKET``, any number of nodes): an **indexed Job**
  (``completionMode: Indexed``, one pod per node), created inside Dagster's ``open_pipes_session``
  and followed by this module (`_wait_for_job`): a pod no node can take is named at once and fails the
  step after ``TENALI_K8S_SCHEDULE_TIMEOUT``, a passing API outage is ridden out, a bad image fails
  fast. Each pod asks for ``gpus_per_node`` ``nvidia.com/gpu`` with the node selector and
  tolerations of the GPU pool, a memory-backed ``/dev/shm`` (NCCL and DataLoader workers need more
  than Docker's 64 MiB) and the shared work volume. One node runs ``torchrun --standalone``; several
  add a headless Service. Chosen over JobSet and Kubeflow's PyTorchJob because it needs nothing
  installed in the cluster (batch/v1 only, Kubernetes >= 1.24): each pod gets its index (torchrun's
  ``--node_rank``) and a stable DNS name ``<job>-0.<service>``, which is node 0's rendezvous address
  for torchrun's static rendezvous. What the operators would add (gang restarts, elastic sizes)
  Dagster already covers: a failed pod fails the Job (``backoffLimit: 0``), the step fails, and
  Dagster's retry relaunches the whole Job, which resumes from the last checkpoint on the shared
  volume.
- **No bucket, one node**: dagster-k8s's `PipesK8sClient` runs the same pod spec as a bare pod and
  reads the reports from its logs. Its wait is dagster-k8s's own: an unschedulable pod waits up to a
  day, and one failed API call fails the step; set a bucket for production.

Clean-up: the pod (or Job with its pods, and the Service) is deleted when the step ends, whether it
succeeded, failed or was cancelled (the finally block runs on Dagster's interrupt); if the run worker
itself is killed, the owner reference to its pod (TENALI_OWNER_POD_NAME/UID, see infra/helm) lets
Kubernetes garbage-collect them, and ``activeDeadlineSeconds`` bounds every pod.

A trainer that fails before reporting (out of memory at start, a bad image, a bad config) fails the
step with its exit code and last log lines (`common.failure`), never a silent success.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import dagster as dg

from ..settings import SettingsError
from .common import (STOP_GRACE_SECONDS, check_shared_paths, failure, launch_extras, owner_reference, reported_result,
                     s3_client, trainer_command, trainer_env)

SHM_VOLUME, WORK_VOLUME = "dshm", "work"
CONTAINER = "trainer"
# Waiting reasons that never recover by themselves: fail at once instead of waiting for the timeout.
FATAL_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff", "RunContainerError",
                 "CreateContainerError"}


def _name(run_id: str, op_name: str, prefix: str = "tenali-train", launch_id: str = "") -> str:
    """A DNS-1123 name per run, step and launch (<= 52 chars, so pod names with an index stay under
    63). `launch_id` makes each attempt's name its own: a retry of the step must not reuse the name
    of the Job and Service it just deleted, whose pods (same job-name label, same hostnames behind the
    Service) are still terminating and would be read as the retry's own failed pods."""
    op = "".join(c if c.isalnum() else "-" for c in op_name.lower()).strip("-")[:20].strip("-")
    suffix = f"-{launch_id[:6]}" if launch_id else ""
    return f"{prefix}-{run_id[:8]}-{op}".strip("-")[:52 - len(suffix)].rstrip("-") + suffix


class K8sTrainingLauncher(dg.ConfigurableResource):
    """Kubernetes launcher: same ``launch(context, config_path, workdir, extras)`` as the local one."""

    image: str
    namespace: str = "default"
    gpus_per_node: int = 8
    nodes: int = 1
    cpu: str = ""  # requests.cpu, e.g. "90"
    memory: str = ""  # requests and limits memory, e.g. "900Gi"
    shm_size: str = "64Gi"  # size limit of the memory-backed /dev/shm
    node_selector: str = "{}"  # JSON object
    tolerations: str = "[]"  # JSON list of Kubernetes tolerations
    shared_pvc: str = ""  # ReadWriteMany PersistentVolumeClaim holding the work folders
    shared_mount: str = ""  # where it is mounted, here and in the trainer pods
    service_account: str = ""  # e.g. one with an IAM role for S3 (IRSA)
    env_secret: str = ""  # optional Secret whose keys become env vars (credentials the cluster holds)
    lake_root: str = ""
    s3_endpoint_url: str = ""
    pipes_bucket: str = ""  # S3 bucket for Pipes context and messages; empty: pod logs (one node only)
    pipes_prefix: str = "pipes"
    master_port: int = 29500
    timeout_seconds: int = 14 * 24 * 3600
    poll_interval: float = 10.0
    # How long the Kubernetes API may keep failing (5xx, 429, connection refused: a control-plane
    # upgrade, an API server restart) while a Job trains before the launcher gives up on it.
    api_error_grace_seconds: float = 600.0
    # How long a node's pod may stay unschedulable (no node has the GPUs, memory, selector or
    # tolerations it asks for) before the step fails with the scheduler's reason; 0 waits up to
    # timeout_seconds. Long enough for a cluster autoscaler to bring up GPU nodes.
    schedule_timeout_seconds: float = 1800.0

    # ---- what is submitted ----------------------------------------------------------------------
    def _selector(self) -> dict:
        value = json.loads(self.node_selector or "{}")
        if not isinstance(value, dict):
            raise SettingsError(f"node selector must be a JSON object, got {self.node_selector!r}")
        return value

    def _tolerations(self) -> list:
        value = json.loads(self.tolerations or "[]")
        if not isinstance(value, list):
            raise SettingsError(f"tolerations must be a JSON list, got {self.tolerations!r}")
        return value

    def container(self, command: list[str], env: dict[str, str], workdir: str) -> dict:
        limits: dict[str, str] = {"nvidia.com/gpu": str(self.gpus_per_node)} if self.gpus_per_node else {}
        requests: dict[str, str] = {}
        if self.cpu:
            requests["cpu"] = self.cpu
        if self.memory:
            requests["memory"] = limits["memory"] = self.memory
        c: dict[str, Any] = {
            "name": CONTAINER,
            "image": self.image,
            "imagePullPolicy": "IfNotPresent",
            "command": command,
            "workingDir": workdir,
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "resources": {"limits": limits, **({"requests": requests} if requests else {})},
            "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
        }
        if self.shared_pvc:
            c["volumeMounts"].append({"name": WORK_VOLUME, "mountPath": self.shared_mount})
        if self.env_secret:
            c["envFrom"] = [{"secretRef": {"name": self.env_secret}}]
        return c

    def pod_spec(self, command: list[str], env: dict[str, str], workdir: str) -> dict:
        """The pod spec (camelCase, as `kubectl apply` reads it) of one training node."""
        spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": self.timeout_seconds,
            # an evicted or preempted pod: torchrun gives its workers 30 s after the SIGTERM to save the step
            # they are at (tenali_model/preemption.py); Kubernetes' default 30 s would SIGKILL them as it ends
            "terminationGracePeriodSeconds": STOP_GRACE_SECONDS,
            "containers": [self.container(command, env, workdir)],
            "volumes": [{"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": self.shm_size}}],
        }
        if self.shared_pvc:
            spec["volumes"].append({"name": WORK_VOLUME, "persistentVolumeClaim": {"claimName": self.shared_pvc}})
        if self._selector():
            spec["nodeSelector"] = self._selector()
        if self._tolerations():
            spec["tolerations"] = self._tolerations()
        if self.service_account:
            spec["serviceAccountName"] = self.service_account
        return spec

    def labels(self, run_id: str) -> dict[str, str]:
        return {"app.kubernetes.io/name": "tenali-trainer", "app.kubernetes.io/part-of": "tenali",
                "dagster/run-id": run_id}

    def job_manifests(self, name: str, run_id: str, config_path: str, env: dict[str, str],
                      workdir: str, module: str = "tenali_model.train") -> tuple[dict | None, dict]:
        """(headless Service, indexed Job) for ``nodes`` nodes; node 0 is the rendezvous host. One
        node needs no rendezvous: no Service (None), and torchrun runs standalone."""
        meta = {"name": name, "namespace": self.namespace, "labels": self.labels(run_id)}
        if owner_reference():
            meta["ownerReferences"] = owner_reference()
        if self.nodes == 1:
            command = trainer_command(config_path, gpus_per_node=self.gpus_per_node, module=module)
            spec, service = self.pod_spec(command, env, workdir), None
        else:
            master = f"{name}-0.{name}.{self.namespace}.svc"
            command = trainer_command(config_path, gpus_per_node=self.gpus_per_node, nodes=self.nodes,
                                      node_rank="$(NODE_RANK)", master_addr=master,
                                      master_port=self.master_port, module=module)
            spec = self.pod_spec(command, env, workdir)
            spec["subdomain"] = name  # <pod hostname>.<subdomain> resolves through the headless Service
            spec["containers"][0]["env"].insert(0, {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}})
            spec["containers"][0]["ports"] = [{"containerPort": self.master_port, "name": "rendezvous"}]
            service = {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                       "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                                "selector": {"batch.kubernetes.io/job-name": name},
                                "ports": [{"name": "rendezvous", "port": self.master_port}]}}
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
               "spec": {"completionMode": "Indexed", "completions": self.nodes, "parallelism": self.nodes,
                        "backoffLimit": 0, "activeDeadlineSeconds": self.timeout_seconds,
                        "ttlSecondsAfterFinished": 3600,
                        "template": {"metadata": {"labels": self.labels(run_id)}, "spec": spec}}}
        return service, job

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return trainer_env(self.lake_root, self.s3_endpoint_url, extra)

    # ---- cluster access (tests replace these) -----------------------------------------------------
    def _load_kube_config(self) -> None:
        import os

        import kubernetes

        if os.getenv("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config()
        else:
            kubernetes.config.load_kube_config()

    def _kube(self):
        from dagster_k8s.client import DagsterKubernetesClient

        self._load_kube_config()
        return DagsterKubernetesClient.production_client()

    def _pipes(self, multi: bool):
        """(context injector, message reader): S3 when a bucket is set, else env + pod logs."""
        if self.pipes_bucket:
            from .s3pipes import s3_pipes

            return s3_pipes(self.pipes_bucket, self.pipes_prefix, s3_client(self.s3_endpoint_url),
                            interval=min(self.poll_interval, 5.0))
        if multi:
            raise dg.Failure("Multi-node training reports through S3: set TENALI_PIPES_BUCKET (defaults to the "
                             "lake's bucket when TENALI_LAKE_ROOT is on S3).")
        return None, None

    # ---- launching ------------------------------------------------------------------------------
    def launch(self, context: dg.AssetExecutionContext, config_path: Path, workdir: Path,
               extras: dict | None = None, module: str = "tenali_model.train") -> dg.MaterializeResult:
        """Run `module` (pretraining, or a post-training stage) with ``--config config_path``."""
        check_shared_paths(self.shared_mount, config_path, workdir)
        # The Job path follows the pods itself: it names a pod no node can take (and gives up after
        # schedule_timeout_seconds), rides out a passing API outage and fails fast on a bad image.
        # PipesK8sClient's wait does none of these (an unschedulable pod waits a day; one API error
        # fails the step and deletes a training pod), so it is kept only for the pod-logs reporting
        # that needs it, when no Pipes bucket is set.
        if self.nodes > 1 or self.pipes_bucket:
            return self._launch_job(context, str(config_path), str(workdir), extras, module)
        return self._launch_pod(context, str(config_path), str(workdir), extras, module)

    def _launch_pod(self, context, config_path: str, workdir: str, extras, module: str) -> dg.MaterializeResult:
        from dagster_k8s import PipesK8sClient
        from dagster_k8s.client import DagsterK8sError

        injector, reader = self._pipes(multi=False)
        client = PipesK8sClient(context_injector=injector, message_reader=reader, poll_interval=self.poll_interval)
        kube = self._kube()
        # PipesK8sClient names the pod with a random suffix: find it again by a label of this launch (the id
        # the trainer's report file carries too)
        extras, launch_id = launch_extras(extras)
        meta: dict[str, Any] = {"labels": {**self.labels(context.run_id), "tenali/launch-id": launch_id}}
        if owner_reference():
            meta["ownerReferences"] = owner_reference()
        command = trainer_command(config_path, gpus_per_node=self.gpus_per_node, module=module)
        context.log.info(f"launching a pod in {self.namespace}: {' '.join(command)}")
        pod_name = lambda: self._pod_name(kube, launch_id)  # noqa: E731
        try:
            invocation = client.run(
                context=context, extras=extras, namespace=self.namespace, image=None, command=None,
                base_pod_meta=meta, base_pod_spec=self.pod_spec(command, self.env(), workdir),
                pod_wait_timeout=self.timeout_seconds, delete_pod_on_completion=False)
            try:
                # no implicit result: a pod that exited 0 without reporting fails here
                return reported_result(invocation, context, workdir, launch_id)
            except Exception as e:  # noqa: BLE001 - exited 0 without reporting (dagster #17868)
                raise self._pod_failure(kube, pod_name(), f"it exited without reporting ({e})") from e
        except DagsterK8sError as e:
            raise self._pod_failure(kube, pod_name(), str(e).splitlines()[0][:300]) from e
        finally:
            name = pod_name()
            if name:
                self._delete(lambda: kube.core_api.delete_namespaced_pod(name, self.namespace), context,
                             f"pod {name}")

    def _pod_name(self, kube, launch_id: str) -> str:
        try:
            pods = kube.core_api.list_namespaced_pod(self.namespace, label_selector=f"tenali/launch-id={launch_id}")
            return pods.items[0].metadata.name if pods.items else ""
        except Exception:  # noqa: BLE001 - the API is unreachable: nothing we can delete either
            return ""

    def _pod_failure(self, kube, pod_name: str, reason: str) -> dg.Failure:
        exit_code = None
        try:
            pods = kube.core_api.list_namespaced_pod(self.namespace, field_selector=f"metadata.name={pod_name}").items
            for status in (pods[0].status.container_statuses or []) if pods else []:
                if status.state and status.state.terminated:
                    exit_code = status.state.terminated.exit_code
        except Exception:  # noqa: BLE001 - the failure message is best effort, the step fails anyway
            pass
        return failure(f"pod {pod_name}", exit_code, self._logs(kube, pod_name), reason)

    def _logs(self, kube, pod_name: str) -> str:
        try:
            return kube.retrieve_pod_logs(pod_name, self.namespace, container_name=CONTAINER, tail_lines=40)
        except Exception as e:  # noqa: BLE001
            return f"(could not read the pod's logs: {e})"

    def _delete(self, fn, context, what: str) -> None:
        try:
            fn()
            context.log.info(f"deleted {what}")
        except Exception as e:  # noqa: BLE001 - already gone (404) or the API is down: say so, go on
            if getattr(e, "status", None) != 404:
                context.log.warning(f"could not delete {what}: {e}")

    def _launch_job(self, context, config_path: str, workdir: str, extras, module: str) -> dg.MaterializeResult:
        from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
        from kubernetes.client import V1Job, V1Service

        injector, reader = self._pipes(multi=True)
        kube = self._kube()
        extras, launch_id = launch_extras(extras)  # names the Job, and the trainer's report file
        name = _name(context.run_id, context.op.name, launch_id=launch_id)
        with dg.open_pipes_session(context=context, extras=extras, context_injector=injector,
                                   message_reader=reader) as session:
            service, job = self.job_manifests(name, context.run_id, config_path,
                                              self.env(session.get_bootstrap_env_vars()), workdir, module)
            context.log.info(f"launching indexed Job {name}: {self.nodes} node(s) x {self.gpus_per_node} GPUs")
            if service is not None:
                kube.core_api.create_namespaced_service(
                    self.namespace, k8s_model_from_dict(V1Service, k8s_snake_case_dict(V1Service, service)))
            done = False
            try:
                kube.batch_api.create_namespaced_job(
                    self.namespace, k8s_model_from_dict(V1Job, k8s_snake_case_dict(V1Job, job)))
                self._wait_for_job(kube, name, context)
                done = True
            finally:
                self._delete(lambda: kube.batch_api.delete_namespaced_job(
                    name, self.namespace, propagation_policy="Background"), context, f"job {name} and its pods")
                if not done:
                    self._wait_for_pods_to_stop(kube, name, context)
                if service is not None:
                    self._delete(lambda: kube.core_api.delete_namespaced_service(name, self.namespace), context,
                                 f"service {name}")
        try:
            return reported_result(dg.PipesClientCompletedInvocation(session), context, workdir, launch_id)
        except Exception as e:  # noqa: BLE001 - every pod exited 0 but rank 0 reported nothing
            raise failure(f"job {name}", 0, "", f"it exited without reporting ({e})") from e

    def _wait_for_pods_to_stop(self, kube, name: str, context) -> None:
        """After a failed or cancelled Job is deleted, until none of its pods still runs (bounded by their
        termination grace and a margin): a stopped trainer saves the step it is at (preemption.py), and the
        step's retry, in the same run folder, must not start a second trainer beside one still saving."""
        deadline = time.monotonic() + STOP_GRACE_SECONDS + 30
        running, unreachable = [], ""
        while time.monotonic() < deadline:
            try:
                pods = kube.core_api.list_namespaced_pod(
                    self.namespace, label_selector=f"batch.kubernetes.io/job-name={name}").items
            except Exception as e:  # noqa: BLE001 - the API is down for a moment: ask again until the deadline
                unreachable = f" (the API's last answer: {type(e).__name__}: {str(e).splitlines()[0][:200]})"
                time.sleep(self.poll_interval)
                continue
            unreachable = ""
            running = [p.metadata.name for p in pods
                       if p.status is not None and p.status.phase in ("Running", "Unknown")]
            if not running:
                return
            time.sleep(self.poll_interval)
        context.log.warning(f"pods {', '.join(running) or 'of job ' + name} still run {STOP_GRACE_SECONDS + 30} s "
                            f"after the job was deleted{unreachable}; a retry may start beside them")

    def _wait_for_job(self, kube, name: str, context) -> None:
        """Until every index succeeded; fail fast on a failed pod or one that cannot start."""
        deadline = time.monotonic() + self.timeout_seconds
        failing_since = None  # when the API began failing, while it does
        waiting_since, last_message = None, ""  # when a pod was first seen unschedulable, while one is
        while True:
            try:
                status = kube.batch_api.read_namespaced_job_status(name, self.namespace).status
                pods = kube.core_api.list_namespaced_pod(
                    self.namespace, label_selector=f"batch.kubernetes.io/job-name={name}").items
            except Exception as e:  # noqa: BLE001 - a passing API outage must not kill a days-long training
                if not _transient_api_error(e):
                    raise
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > self.api_error_grace_seconds:
                    raise failure(f"job {name}", None, "", f"the Kubernetes API kept failing for more than "
                                  f"{self.api_error_grace_seconds:.0f} s ({type(e).__name__}: {e})") from e
                context.log.warning(f"the Kubernetes API failed while following job {name} "
                                    f"({type(e).__name__}: {str(e)[:200]}); asking again")
                time.sleep(self.poll_interval)
                continue
            failing_since = None
            if (status.succeeded or 0) >= self.nodes:
                return
            unschedulable = _unschedulable(pods)
            if unschedulable is None:
                waiting_since = None
            else:
                pod_name, message = unschedulable
                if waiting_since is None or message != last_message:
                    context.log.warning(f"pod {pod_name} of job {name} cannot be scheduled yet: {message}")
                waiting_since, last_message = waiting_since or time.monotonic(), message
                if self.schedule_timeout_seconds and time.monotonic() - waiting_since > self.schedule_timeout_seconds:
                    raise failure(
                        f"pod {pod_name} of job {name}", None, "",
                        f"no node could take it for {self.schedule_timeout_seconds:.0f} s: {message}. Ask for what "
                        "the GPU nodes have (TENALI_GPUS_PER_NODE, TENALI_NODES, TENALI_K8S_CPU, TENALI_K8S_MEMORY), "
                        "check TENALI_K8S_NODE_SELECTOR and TENALI_K8S_TOLERATIONS against the nodes' labels and "
                        "taints, or wait longer for an autoscaler (TENALI_K8S_SCHEDULE_TIMEOUT, seconds)")
            for pod in pods:
                for cs in pod.status.container_statuses or []:
                    term, wait = cs.state.terminated if cs.state else None, cs.state.waiting if cs.state else None
                    if term is not None and term.exit_code != 0:
                        raise failure(f"pod {pod.metadata.name} of job {name}", term.exit_code,
                                      self._logs(kube, pod.metadata.name), term.reason or "")
                    if wait is not None and wait.reason in FATAL_WAITING:
                        raise failure(f"pod {pod.metadata.name} of job {name}", None, wait.message or "",
                                      f"{wait.reason}: check the image name and the registry credentials")
            failed = [c for c in status.conditions or [] if c.type == "Failed" and c.status == "True"]
            if failed or (status.failed or 0) > 0:
                reason = failed[0].message if failed else f"{status.failed} pod(s) failed"
                raise failure(f"job {name}", None, "", reason or "the Job failed")
            if time.monotonic() > deadline:
                raise failure(f"job {name}", None, "", f"no result after {self.timeout_seconds} s")
            time.sleep(self.poll_interval)


def _unschedulable(pods) -> tuple[str, str] | None:
    """(pod name, the scheduler's message) of a pending pod that no node can take now, or None."""
    for pod in pods:
        if pod.status is None or pod.status.phase not in (None, "Pending"):
            continue
        for c in pod.status.conditions or []:
            if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
                return pod.metadata.name, (c.message or "the scheduler gave no reason").strip()
    return None


def _transient_api_error(e: Exception) -> bool:
    """An API error worth asking again: the server overloaded or restarting, or unreachable for a while."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    if isinstance(e, ApiException):
        return e.status in (None, 0, 408, 429, 500, 502, 503, 504)
    return isinstance(e, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def k8s_launcher_from_settings(settings) -> K8sTrainingLauncher:
    """The launcher for TENALI_LAUNCHER=k8s, from TENALI_K8S_* and the shared variables (checked by
    settings.load_settings)."""
    from .common import parse_s3_root

    get = lambda name, default="": settings.cluster.get(name) or default  # noqa: E731
    image = get("TENALI_TRAINER_IMAGE")
    if not image:
        raise SettingsError("TENALI_LAUNCHER=k8s needs the trainer image: set TENALI_TRAINER_IMAGE "
                            "(built from infra/docker/trainer.Dockerfile).")
    bucket = get("TENALI_PIPES_BUCKET") or (parse_s3_root(settings.lake_root)[0]
                                             if settings.lake_root.startswith("s3://") else "")
    return K8sTrainingLauncher(
        image=image, namespace=get("TENALI_K8S_NAMESPACE", "default"),
        gpus_per_node=int(get("TENALI_GPUS_PER_NODE", "8")), nodes=int(get("TENALI_NODES", "1")),
        cpu=get("TENALI_K8S_CPU"), memory=get("TENALI_K8S_MEMORY"), shm_size=get("TENALI_K8S_SHM_SIZE", "64Gi"),
        node_selector=get("TENALI_K8S_NODE_SELECTOR", "{}"), tolerations=get("TENALI_K8S_TOLERATIONS", "[]"),
        shared_pvc=get("TENALI_K8S_SHARED_PVC"), shared_mount=get("TENALI_SHARED_MOUNT"),
        service_account=get("TENALI_K8S_SERVICE_ACCOUNT"), env_secret=get("TENALI_K8S_ENV_SECRET"),
        lake_root=settings.lake_root, s3_endpoint_url=settings.s3_endpoint_url,
        pipes_bucket=bucket, pipes_prefix=get("TENALI_PIPES_PREFIX", "pipes"),
        schedule_timeout_seconds=float(get("TENALI_K8S_SCHEDULE_TIMEOUT", "1800")))
