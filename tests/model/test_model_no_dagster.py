"""tenali_model must run where dagster is not installed (the GPU image): only dagster_pipes, optionally."""

import re
import subprocess
from pathlib import Path

import tenali_model
from tm_helpers import PYTHON, REPO_ROOT, subprocess_env

PACKAGE = Path(tenali_model.__file__).parent


def test_no_dagster_imports_in_source():
    pattern = re.compile(r"^\s*(import\s+dagster(?!_pipes)\b|from\s+dagster(?!_pipes)\b)", re.M)
    offenders = [f"{p.relative_to(PACKAGE)}: {m.group(0).strip()}"
                 for p in PACKAGE.rglob("*.py") for m in pattern.finditer(p.read_text())]
    assert not offenders, offenders


def test_imports_with_dagster_and_pipes_blocked():
    code = (
        "import sys; sys.modules['dagster'] = None; sys.modules['dagster_pipes'] = None\n"
        "import tenali_model, tenali_model.config, tenali_model.model, tenali_model.data\n"
        "import tenali_model.checkpoint, tenali_model.evaluate, tenali_model.generate\n"
        "import tenali_model.parallel, tenali_model.plan, tenali_model.hf, tenali_model.cli\n"
        "import tenali_model.train as t\n"
        "assert t.dagster_pipes is None\n"
        "with t.open_pipes(0) as p: assert p is None\n"
        "loaded = [m for m, mod in sys.modules.items() if mod and m.split('.')[0] == 'dagster']\n"
        "assert not loaded, loaded\n"
        "print('ok')\n")
    proc = subprocess.run([PYTHON, "-c", code], cwd=REPO_ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_package_import_does_not_pull_torch():
    code = "import sys, tenali_model; print('torch' in sys.modules)"
    proc = subprocess.run([PYTHON, "-c", code], cwd=REPO_ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr
