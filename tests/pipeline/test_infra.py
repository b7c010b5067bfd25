"""infra/ checked without a cluster: every manifest parses and deserialises into the Kubernetes
client's models with no unknown key; the Helm values use only keys the Dagster chart documents; the
instance YAML files pass Dagster's own instance schema; the settings ConfigMap builds the launcher it
is meant for, with paths consistent with the volumes.

The Dagster chart cannot be downloaded here, so its keys are listed below as its values schema
documents them (helm/dagster/schema/schema/charts/dagster/... in the Dagster repository, 1.13)."""

import ast
import importlib.metadata
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tenali_pipeline.settings import VARIABLES, load_settings

k8s = pytest.importorskip("kubernetes.client")
ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MANIFESTS = sorted((INFRA / "k8s").glob("*.yaml"))

# kind -> model of the kubernetes client
MODELS = {"ConfigMap": "V1ConfigMap", "PersistentVolumeClaim": "V1PersistentVolumeClaim", "Role": "V1Role",
          "RoleBinding": "V1RoleBinding", "ServiceAccount": "V1ServiceAccount", "Job": "V1Job",
          "Service": "V1Service", "Pod": "V1Pod", "Secret": "V1Secret"}

# The chart's documented keys (values schema), for the parts these values set.
CHART_TOP = {"dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
             "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
             "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate",
             "telemetry", "serviceAccount", "global", "retention", "concurrency", "additionalInstanceConfig"}
CHART_USER_DEPLOYMENT = {"name", "image", "port", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
                         "env", "envConfigMaps", "envSecrets", "annotations", "nodeSelector", "affinity", "tolerations",
                         "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
                         "startupProbe", "labels", "volumeMounts", "volumes", "schedulerName"}
CHART_K8S_RUN_LAUNCHER = {"image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
                          "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
                          "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig"}
CHART_RUN_K8S_CONFIG = {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata"}
CHART_DAEMON = {"enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps", "envSecrets",
                "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations", "podSecurityContext",
                "securityContext", "resources", "livenessProbe", "readinessProbe", "startupProbe", "annotations",
                "runMonitoring", "runRetries", "sensors", "schedules", "schedulerName", "volumeMounts", "volumes"}
CHART_QUEUED = {"maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers",
                "dequeueUseThreads"}
CHART_S3_LOGS = {"bucket", "localDir", "prefix", "useSsl", "verify", "verifyCertPath", "endpointUrl", "skipEmptyFiles",
                 "uploadInterval", "uploadExtraArgs", "showUrlOnly", "region"}
CHART_POSTGRES = {"image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword",
                  "postgresqlDatabase", "postgresqlParams", "postgresqlScheme", "service"}
CHART_CONCURRENCY = {"enabled", "pools", "runs"}
CHART_POOLS = {"defaultLimit", "granularity", "opGranularityRunBuffer"}


def roundtrip(obj, model: str):
    api = k8s.ApiClient()
    return api.sanitize_for_serialization(api._ApiClient__deserialize(obj, model))


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def test_every_yaml_and_json_file_parses():
    files = [p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and "serve" not in p.parts]
    assert len(files) >= 7
    for p in files:
        if p.suffix == ".json":
            json.loads(p.read_text())
        else:
            assert docs(p), p


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_manifests_deserialise_into_the_api_models(path):
    for doc in docs(path):
        model = MODELS[doc["kind"]]
        assert roundtrip(doc, model) == doc, f"{path.name}: a key the {model} model does not know"
        assert doc["metadata"]["namespace"] == "tenali"


def helm_values() -> dict:
    return yaml.safe_load((INFRA / "helm" / "values.yaml").read_text())


def test_helm_values_use_only_documented_chart_keys():
    v = helm_values()
    assert set(v) <= CHART_TOP, set(v) - CHART_TOP
    for d in v["dagster-user-deployments"]["deployments"]:
        assert set(d) <= CHART_USER_DEPLOYMENT, set(d) - CHART_USER_DEPLOYMENT
        for vol in d["volumes"]:
            assert roundtrip(vol, "V1Volume") == vol
        for m in d["volumeMounts"]:
            assert roundtrip(m, "V1VolumeMount") == m
    assert v["runLauncher"]["type"] == "K8sRunLauncher"
    launcher = v["runLauncher"]["config"]["k8sRunLauncher"]
    assert set(launcher) <= CHART_K8S_RUN_LAUNCHER, set(launcher) - CHART_K8S_RUN_LAUNCHER
    assert set(launcher["runK8sConfig"]) <= CHART_RUN_K8S_CONFIG
    container = launcher["runK8sConfig"]["containerConfig"]
    for env in container["env"]:
        assert roundtrip(env, "V1EnvVar") == env
    assert roundtrip(container["resources"], "V1ResourceRequirements") == container["resources"]
    daemon = v["dagsterDaemon"]
    assert set(daemon) <= CHART_DAEMON and daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert set(queued) <= CHART_QUEUED
    assert all(set(t) <= {"key", "value", "limit"} for t in queued["tagConcurrencyLimits"])
    assert any(t["key"] == "tenali/gpu" for t in queued["tagConcurrencyLimits"])
    assert daemon["runMonitoring"]["freeSlotsAfterRunEndSeconds"] > 0
    assert v["computeLogManager"]["type"] == "S3ComputeLogManager"
    assert set(v["computeLogManager"]["config"]["s3ComputeLogManager"]) <= CHART_S3_LOGS
    assert set(v["postgresql"]) <= CHART_POSTGRES and v["postgresql"]["enabled"] is False
    assert set(v["concurrency"]) <= CHART_CONCURRENCY and set(v["concurrency"]["pools"]) <= CHART_POOLS


def test_the_settings_configmap_builds_the_k8s_launcher_with_consistent_volumes(tmp_path):
    from tenali_pipeline.launchers import build_launcher
    from tenali_pipeline.launchers.k8s import K8sTrainingLauncher

    (configmap,) = docs(INFRA / "k8s" / "tenali-env.yaml")
    env = configmap["data"]
    assert set(env) <= set(VARIABLES), set(env) - set(VARIABLES)
    launcher = build_launcher(load_settings(env))
    assert isinstance(launcher, K8sTrainingLauncher)
    mount = env["TENALI_SHARED_MOUNT"]
    assert Path(env["TENALI_HOME"]).is_relative_to(mount)  # the cache and run folders are on the volume
    (pvc,) = docs(INFRA / "k8s" / "shared-volume.yaml")
    assert pvc["metadata"]["name"] == env["TENALI_K8S_SHARED_PVC"] and "ReadWriteMany" in pvc["spec"]["accessModes"]
    launcher_cfg = helm_values()["runLauncher"]["config"]["k8sRunLauncher"]
    assert {"name": "work", "mountPath": mount} in launcher_cfg["volumeMounts"]
    assert launcher_cfg["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    spec = launcher.pod_spec(["torchrun"], launcher.env(), mount)
    assert roundtrip(spec, "V1PodSpec") == spec


def test_the_api_keys_reach_the_code_location_and_every_run_worker_from_tenali_secrets():
    # the secret variables of the settings (the README table marks them "secret"), not in the ConfigMap
    api_keys = {name for name, (meaning, _) in VARIABLES.items() if "secret" in meaning}
    assert {"FRED_API_KEY", "COINGECKO_API_KEY"} <= api_keys
    v = helm_values()
    (deployment,) = v["dagster-user-deployments"]["deployments"]
    launcher = v["runLauncher"]["config"]["k8sRunLauncher"]
    for where in (deployment, launcher):
        assert {"name": "tenali-secrets"} in where["envSecrets"]
        assert {"name": "tenali-env"} in where["envConfigMaps"]
        for ref in where["envSecrets"]:
            assert roundtrip(ref, "V1SecretEnvSource") == ref
    (secret,) = [d for p in MANIFESTS for d in docs(p) if d["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "tenali-secrets" and secret["type"] == "Opaque"
    assert api_keys <= set(secret["stringData"]) <= api_keys | {"WANDB_API_KEY"}
    assert not any(secret["stringData"].values())  # an example: never a real key
    (configmap,) = docs(INFRA / "k8s" / "tenali-env.yaml")
    assert not api_keys & set(configmap["data"])
    assert configmap["data"]["SEC_EDGAR_IDENTITY"]  # not a secret: a name and a contact email
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    assert "create secret generic tenali-secrets" in runbook


@pytest.mark.parametrize("path", ["tenali_pipeline/instance/dagster.yaml", "infra/dagster.prod.yaml"])
def test_instance_yaml_passes_dagsters_instance_schema(path, tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    monkeypatch.setenv("DAGSTER_PG_URL", "postgresql+psycopg2://u:p@localhost:5432/dagster")
    (tmp_path / "dagster.yaml").write_text((ROOT / path).read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert config["concurrency"]["pools"]["default_limit"] == 1


def trainer_third_party_modules() -> set[str]:
    """Top-level third-party modules the trainer's code can import: tenali_model.train and every
    tenali_model.posttrain module (what the launchers run with `-m`), and, transitively, each
    tenali_model module they import, at module level or inside a function or try block."""
    package = ROOT / "tenali_model"

    def module_file(name: str) -> Path | None:
        path = ROOT.joinpath(*name.split("."))
        for candidate in (path.with_suffix(".py"), path / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def module_name(path: Path) -> str:
        parts = path.relative_to(ROOT).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    todo = ["tenali_model.train"] + [module_name(p) for p in sorted((package / "posttrain").glob("*.py"))]
    seen, third_party = set(), set()
    while todo:
        name = todo.pop()
        if name in seen or module_file(name) is None:
            continue
        seen.add(name)
        # importing a module runs its packages' __init__ first
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        path = module_file(name)
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
                targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            for target in targets:
                top = target.split(".")[0]
                if top == "tenali_model":
                    todo.append(target)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    third_party.add(top)
    assert {"tenali_model.train", "tenali_model.posttrain.lora", "tenali_model.checkpoint"} <= seen
    return third_party


def dockerfile_requirements(text: str) -> dict[str, str]:
    """{normalised distribution name: requirement string} of the `pip install` lines."""
    joined = text.replace("\\\n", " ")
    reqs = {}
    for line in joined.splitlines():
        if line.startswith("RUN ") and "pip install" in line:
            for req in re.findall(r'"([^"]+)"', line):
                r = Requirement(req)
                reqs[canonicalize_name(r.name)] = str(r.specifier)
    return reqs


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {canonicalize_name(Requirement(r).name): str(Requirement(r).specifier) for r in reqs}


def test_dockerfiles_copy_what_exists_and_keep_dagster_out_of_the_trainer():
    trainer = (INFRA / "docker" / "trainer.Dockerfile").read_text()
    assert "dagster-pipes==" in trainer and "boto3==" in trainer
    assert "tenali_pipeline" not in trainer and "dagster==" not in trainer and "pip install ." not in trainer
    pipeline = (INFRA / "docker" / "pipeline.Dockerfile").read_text()
    for line in (trainer + pipeline).splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), line


def test_the_trainer_image_installs_every_module_the_trainer_imports_at_the_tested_versions():
    """A module missing from the image fails its stage only on the cluster (peft: every LoRA SFT)."""
    modules = trainer_third_party_modules()
    assert "dagster" not in modules  # tenali_model never imports dagster; dagster_pipes only
    assert {"peft", "pyarrow", "dagster_pipes"} <= modules  # the scan sees lazy and try-block imports
    installed = dockerfile_requirements((INFRA / "docker" / "trainer.Dockerfile").read_text())
    assert "dagster" not in installed and "torch" not in installed  # torch: the base image's build
    distributions = importlib.metadata.packages_distributions()
    missing = {m: distributions.get(m) for m in modules - {"torch"}
               if not {canonicalize_name(d) for d in distributions.get(m, [m])} & set(installed)}
    assert not missing, f"imported by the trainer's code, not installed by trainer.Dockerfile: {missing}"
    # the image gets what the tests run with: pyproject's pins, else the version installed here
    pins = pyproject_pins()
    for name, spec in installed.items():
        if name in pins:
            assert spec == pins[name], f"{name}{spec} in the trainer image, {name}{pins[name]} in pyproject.toml"
        else:
            assert spec == f"=={importlib.metadata.version(name)}", f"{name}{spec}: pin the tested version"


def pipeline_image_distributions() -> set[str]:
    """Distributions pipeline.Dockerfile installs: pyproject's dependencies and the extras of its
    `pip install ".[...]"`, with what they require in turn (as installed here), and its torch."""
    text = (INFRA / "docker" / "pipeline.Dockerfile").read_text()
    (extras,) = re.findall(r'pip install "\.\[([^\]]*)\]"', text)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = list(project["dependencies"]) + [r for e in extras.split(",")
                                            for r in project["optional-dependencies"][e.strip()]]
    todo = [Requirement(r) for r in todo] + [Requirement(f"{name}{spec}") for name, spec in
                                             dockerfile_requirements(text.replace(f'".[{extras}]"', "")).items()]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for r in map(Requirement, requires):
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                todo.append(r)
    return seen


def test_the_pipeline_image_installs_every_module_the_run_worker_imports():
    """The run worker (this image, K8sRunLauncher) imports tenali_pipeline's optional clients lazily:
    mlflow and wandb for TENALI_MLFLOW_TRACKING_URI / TENALI_WANDB_PROJECT (tracking.py). One missing
    from the image makes every stage's tracking a warning in production, never a tracked run."""
    modules = set()
    for path in (ROOT / "tenali_pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            modules |= {n.split(".")[0] for n in names}
    modules -= set(sys.stdlib_module_names) | {"__future__", "tenali_pipeline", "tenali_model"}
    assert {"mlflow", "wandb", "dagster_k8s", "boto3"} <= modules  # the scan sees lazy imports
    installed = pipeline_image_distributions()
    distributions = importlib.metadata.packages_distributions()
    missing = {m: distributions.get(m) for m in modules
               if not {canonicalize_name(d) for d in distributions.get(m, [m])} & installed}
    assert not missing, f"imported by tenali_pipeline, not installed by pipeline.Dockerfile: {missing}"
