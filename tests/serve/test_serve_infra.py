"""The serving infrastructure parses and agrees with the server (port, health route, command, image user)."""

from pathlib import Path

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
    assert api["ports"][0]["containerPort"] == 8000 and svc["spec"]["ports"][0]["targetPort"] == "http"
    assert api["resources"]["limits"]["nvidia.com/gpu"] == 1
    key = next(e for e in api["env"] if e["name"] == "TENALI_API_KEY")
    assert "secretKeyRef" in key["valueFrom"]  # never a literal secret
    args = build_parser().parse_args(api["args"][3:])  # python -m tenali_model serve ...
    assert args.command == "serve" and args.host == "0.0.0.0" and args.port == 8000


def test_compose_and_dockerfiles():
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    api = compose["services"]["api"]
    assert api["ports"] == ["127.0.0.1:8000:8000"]
    assert api["volumes"][0].endswith(":/models:ro")
    assert (INFRA.parents[1] / api["build"]["dockerfile"]).is_file()
    for name, device in (("serve-cpu.Dockerfile", "cpu"), ("serve-cuda.Dockerfile", "cuda")):
        text = (INFRA / name).read_text()
        assert "USER 10001" in text and "EXPOSE 8000" in text and "/health" in text
        assert f'"--device", "{device}"' in text and "dagster" not in text.split("FROM", 1)[1].lower()
        for pin in ("fastapi==0.165.0", "uvicorn==0.54.0", "prometheus-client==0.26.0"):
            assert pin in text
