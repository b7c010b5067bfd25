"""bench/bench_mfu.py (the GPU MFU benchmark) runs on a CPU too: keep it working between GPU loans."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_mfu", ROOT / "bench" / "bench_mfu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


COMMON = ["--device", "cpu", "--dtype", "float32", "--batch", "2", "--seq-len", "32", "--steps", "2",
          "--warmup", "1", "--threads", "1"]


def test_runs_the_trainer_step_and_writes_results(bench, tmp_path, capsys):
    assert bench.main(["--configs", "tiny,demo", "--first-fit", *COMMON, "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["config"] for r in results] == ["tiny"]  # --first-fit stopped after the first that ran
    r = results[0]
    assert r["status"] == "ok" and r["tokens_per_step"] == 64 and r["seq_len"] == 32
    assert r["tokens_per_sec"] == pytest.approx(64 / r["seconds_per_step"])
    assert r["mfu"] is None and r["peak_bf16_flops"] is None  # no peak for a CPU
    assert math.isfinite(r["loss"]) and r["loss"] > 0 and r["grad_norm"] > 0
    assert r["memory_kind"] == "peak RSS" and r["memory_bytes"] > 0
    assert 0 < r["planned_memory_bytes"] < r["memory_bytes"]  # the plan's peak (float32); RSS has the interpreter
    assert "| tiny | 0.1M | 2 x 32 (x 1) |" in (tmp_path / "table.md").read_text()
    assert "tiny:" in capsys.readouterr().out


def test_a_config_that_fails_is_reported_with_its_reason(bench, tmp_path):
    # tiny's context is 128: its child exits with the reason, which the parent reports
    rc = bench.main(["--configs", "tiny", "--device", "cpu", "--dtype", "float32", "--seq-len", "4096",
                     "--out", str(tmp_path)])
    assert rc == 1
    (r,) = json.loads((tmp_path / "results.json").read_text())
    assert r["status"].startswith("failed") and "exceeds tiny's context of 128" in r["error"]
    assert "| tiny |" in (tmp_path / "table.md").read_text()


def test_unknown_config_is_refused_before_any_run(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--configs", "tiny,13b", "--device", "cpu"])
    assert "unknown configs ['13b']" in capsys.readouterr().err


def test_the_device_script_parses_and_refuses_an_unknown_part(tmp_path):
    import subprocess
    script = ROOT / "bench" / "device_checks.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    r = subprocess.run(["bash", str(script), "tests", "gpu"], capture_output=True, text=True,
                       env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "usage" in r.stderr and not any(tmp_path.iterdir())


def test_the_carried_wheels_cover_what_the_device_benchmarks_import():
    """The GPU image's packages are its own (fastapi and uvicorn are not among them): bench_decode and
    bench_serve import prometheus_client (the engine's metrics), the server fastapi and uvicorn,
    bench_serve's client httpx. `make device-wheels` downloads each at the project's pin, and
    device_checks.sh installs each where the image lacks it (pip leaves a version it has alone), so
    the serving stages do not hang on what an image happens to hold."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = list(project["optional-dependencies"]["serve"])
    pins += [d for deps in project["optional-dependencies"].values() for d in deps if d.startswith("httpx==")][:1]
    assert len(pins) == 4, pins
    make = (ROOT / "Makefile").read_text()
    target = make[make.index("device-wheels:"):].split("\n\n")[0]
    script = (ROOT / "bench" / "device_checks.sh").read_text()
    install = next(line for line in script.splitlines() if "pip install" in line and "device-wheels" in line)
    for pin in pins:
        name = re.split(r"[=<>\[]", pin)[0]
        assert f'"{pin}"' in target, (pin, target)
        assert f" {name}" in install, (name, install)
