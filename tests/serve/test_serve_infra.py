"""The serving infrastructure parses and agrees with the server (port, health route, command, image user)."""

import json
import re
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from tenali_model.cli import build_parser

INFRA = Path(__file__).resolve().parents[2] / "infra" / "serve"


def test_kubernetes_manifests():
    dep = yaml.safe_load((INFRA / "k8s" / "deployment.yaml").read_text())
    svc = yaml.safe_load((INFRA / "k8s" / "service.yaml").read_text())
    assert dep["kind"] == "Deployment" and svc["kind"] == "Service"
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    api = dep["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"  # 503 while the step compiles
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"  # 200 meanwhile: no restart loop
    # the server listens only after loading the weights: liveness must not start before it does
    startup = api["startupProbe"]
    assert startup["httpGet"]["path"] == "/health" and startup["periodSeconds"] * startup["failureThreshold"] >= 600
    assert "initialDelaySeconds" not in api["livenessProbe"]
    assert api["ports"][0]["containerPort"] == 8000 and svc["spec"]["ports"][0]["targetPort"] == "http"
    assert api["resources"]["limits"]["nvidia.com/gpu"] == 1
    key = next(e for e in api["env"] if e["name"] == "TENALI_API_KEY")
    assert "secretKeyRef" in key["valueFrom"]  # never a literal secret
    args = build_parser().parse_args(api["args"][3:])  # python -m tenali_model serve ...
    assert args.command == "serve" and args.host == "0.0.0.0" and args.port == 8000


def test_the_deployment_fetches_the_release_as_a_service_account_whose_role_may_read_it():
    dep = yaml.safe_load((INFRA / "k8s" / "deployment.yaml").read_text())
    pod = dep["spec"]["template"]["spec"]
    manifests = [d for p in sorted((INFRA.parent).rglob("*.yaml")) if "k8s" in p.parts
                 for d in yaml.safe_load_all(p.read_text()) if d]
    accounts = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "ServiceAccount"}
    account = accounts[pod["serviceAccountName"]]  # the Deployment's, defined next to it
    assert account["metadata"].get("namespace") == dep["metadata"].get("namespace")
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert role.startswith("arn:aws:iam::") and role.endswith(":role/" + account["metadata"]["name"])
    # its role's policy (infra/aws) lets `aws s3 sync` list and read the release, and nothing more
    (fetch,) = pod["initContainers"]
    env = {e["name"]: e["value"] for e in fetch["env"]}
    assert "aws s3 sync" in fetch["command"][-1] and "$TENALI_RELEASE_URI" in fetch["command"][-1]
    assert env["HOME"].startswith("/tmp")  # uid 10001 has no home: the CLI would fail on /.aws
    bucket, key = env["TENALI_RELEASE_URI"].removeprefix("s3://").split("/", 1)
    lake = yaml.safe_load((INFRA.parents[1] / "infra" / "k8s" / "tenali-env.yaml").read_text())["data"]
    assert env["TENALI_RELEASE_URI"].startswith(lake["TENALI_LAKE_ROOT"] + "/releases/")  # the lake's releases
    policy = json.loads((INFRA.parent / "aws" / "serve-role-policy.json").read_text())
    allowed = [(s["Action"] if isinstance(s["Action"], list) else [s["Action"]], s) for s in policy["Statement"]]
    assert all(s["Effect"] == "Allow" for _, s in allowed)
    assert {a for actions, _ in allowed for a in actions} == {"s3:ListBucket", "s3:GetObject"}  # read-only
    assert any("s3:GetObject" in actions and fnmatch(f"arn:aws:s3:::{bucket}/{key}/model.safetensors", s["Resource"])
               for actions, s in allowed)
    assert any("s3:ListBucket" in actions and s["Resource"] == f"arn:aws:s3:::{bucket}"
               and any(fnmatch(key + "/", p) for p in s["Condition"]["StringLike"]["s3:prefix"])
               for actions, s in allowed)
    k8s = pytest.importorskip("kubernetes.client")
    api = k8s.ApiClient()
    assert api.sanitize_for_serialization(api._ApiClient__deserialize(account, "V1ServiceAccount")) == account
    model = api._ApiClient__deserialize(dep, "V1Deployment")  # the field where the API reads it
    assert model.spec.template.spec.service_account_name == account["metadata"]["name"]


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?message}` (message: the error)."""
    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise ValueError(arg)
        return arg if op == ":-" else ""
    return re.sub(r"\$\{(\w+)(?:(:\?|:-)([^}]*))?\}", one, value)


def mount_of(volume, env: dict[str, str]) -> dict:
    """A service volume as compose reads it: a short-syntax source that does not start with `.`, `/`
    or `~` names a volume (which must be declared), and a relative path is taken from the compose
    file's folder, whatever the shell's working directory."""
    if isinstance(volume, str):  # interpolated first, then split
        source, target, *mode = interpolate(volume, env).split(":")
        volume = {"type": "bind" if source.startswith((".", "/", "~")) else "volume", "source": source,
                  "target": target, "read_only": mode == ["ro"]}
    else:
        volume = {**volume, "source": interpolate(volume["source"], env)}
    if volume["type"] == "bind" and not volume["source"].startswith(("/", "~")):
        volume["source"] = str((INFRA / volume["source"]).resolve())
    return volume


def test_compose_mounts_the_release_folder_named_by_an_absolute_tenali_release():
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    (volume,) = compose["services"]["api"]["volumes"]
    release = "/home/me/tenali/var/lake/releases/20260101-abc"
    mount = mount_of(volume, {"TENALI_RELEASE": release})
    assert mount["type"] == "bind" and mount["source"] == release  # not a (undeclared) named volume
    assert mount["target"] == "/models" and mount["read_only"] is True
    # a missing folder stops compose instead of mounting an empty folder created in its place
    assert isinstance(volume, dict) and volume["bind"]["create_host_path"] is False
    with pytest.raises(ValueError, match="absolute release folder"):  # unset: compose stops, saying what to set
        mount_of(volume, {})
    # every documented command passes an absolute folder (from the repository root: $PWD/...)
    root = INFRA.parents[1]
    texts = {p: p.read_text() for p in (INFRA / "compose.yaml", root / "docs" / "serving.md",
                                         root / "docs" / "runbook.md", root / "README.md")}
    commands = [(p.name, line) for p, text in texts.items() for line in text.splitlines()
                if "docker compose" in line and "TENALI_RELEASE=" in line]
    assert commands
    for name, line in commands:
        value = line.split("TENALI_RELEASE=", 1)[1].split()[0].strip("`\"'")
        assert value.startswith(("/", "$PWD/", "${PWD}/", "~/")), f"{name}: {line.strip()}"


def test_compose_and_dockerfiles():
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    api = compose["services"]["api"]
    assert api["ports"] == ["127.0.0.1:8000:8000"]
    assert (INFRA.parents[1] / api["build"]["dockerfile"]).is_file()
    for name, device in (("serve-cpu.Dockerfile", "cpu"), ("serve-cuda.Dockerfile", "cuda")):
        text = (INFRA / name).read_text()
        assert "USER 10001" in text and "EXPOSE 8000" in text and "/health" in text
        assert f'"--device", "{device}"' in text and "dagster" not in text.split("FROM", 1)[1].lower()
        for pin in ("fastapi==0.165.0", "uvicorn==0.54.0", "prometheus-client==0.26.0"):
            assert pin in text


def test_the_gpu_deployment_tolerates_the_gpu_nodes_taint():
    """The GPU node group is tainted nvidia.com/gpu (docs/runbook.md; the trainers tolerate it through
    TENALI_K8S_TOLERATIONS): a serving pod asking for a GPU without the toleration stays Pending."""
    dep = yaml.safe_load((INFRA / "k8s" / "deployment.yaml").read_text())
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] >= 1
    lake = yaml.safe_load((INFRA.parents[1] / "infra" / "k8s" / "tenali-env.yaml").read_text())["data"]
    taints = [{"key": t["key"], "effect": t["effect"]} for t in json.loads(lake["TENALI_K8S_TOLERATIONS"])]
    assert any(t["key"] == "nvidia.com/gpu" for t in taints)

    def tolerates(toleration: dict, taint: dict) -> bool:  # the scheduler's rule
        if toleration.get("effect") not in (None, "", taint["effect"]):
            return False
        if not toleration.get("key") and toleration.get("operator") == "Exists":
            return True
        return toleration.get("key") == taint["key"] and toleration.get("operator", "Equal") in ("Exists", "Equal")

    for taint in taints:
        assert any(tolerates(t, taint) for t in pod.get("tolerations", [])), taint
    k8s = pytest.importorskip("kubernetes.client")
    api = k8s.ApiClient()
    assert api.sanitize_for_serialization(api._ApiClient__deserialize(pod["tolerations"], "list[V1Toleration]")) \
        == pod["tolerations"]
