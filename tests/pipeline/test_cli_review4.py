"""The tenali command as a newcomer meets it: a mistyped setting, an unusable home, `tenali ui` from another
folder, `tenali serve` under a bad profile, and output piped into `head`."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tenali_pipeline import cli
from tenali_pipeline.settings import VARIABLES


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean TENALI_HOME in tmp_path; everything the command sets in os.environ is undone afterwards."""
    for name in VARIABLES:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("TENALI_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name, value, says", [
    ("TENALI_PROFILE", "Demo", "TENALI_PROFILE='Demo' is not one of demo, local, prod"),
    ("TENALI_TRAIN_STEPS", "abc", "TENALI_TRAIN_STEPS='abc' must be an integer"),
    ("TENALI_MODEL", "7B", "TENALI_MODEL='7B' is not a model preset"),
])
def test_a_bad_setting_is_one_error_line_and_exit_code_2(env, monkeypatch, capsys, name, value, says):
    # It was a traceback ending in SettingsError (or tenali_model's ConfigError) and exit code 1.
    monkeypatch.setenv(name, value)
    assert cli.main(["info"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tenali info: error: ") and says in err and "Traceback" not in err


def test_an_unusable_tenali_home_names_the_variable_to_change(env, monkeypatch, capsys):
    (env / "a-file").write_text("")
    monkeypatch.setenv("TENALI_HOME", str(env / "a-file"))
    assert cli.main(["info"]) == 2  # it was NotADirectoryError's traceback
    err = capsys.readouterr().err
    assert "cannot set up the Dagster instance in" in err and "Set TENALI_HOME to a folder you can write" in err


def test_an_unusable_dagster_home_names_dagster_home(env, monkeypatch, capsys):
    (env / "a-file").write_text("")
    monkeypatch.setenv("DAGSTER_HOME", str(env / "a-file" / "instance"))
    assert cli.main(["info"]) == 2
    assert "Set DAGSTER_HOME to a folder you can write" in capsys.readouterr().err


def test_serve_under_a_bad_profile_says_why_no_lake_is_known(env, monkeypatch, capsys):
    # It said only "give PATH ... or --lake / TENALI_LAKE_ROOT", hiding the mistyped profile.
    monkeypatch.setenv("TENALI_PROFILE", "Demo")
    cli._serve_lake_default()
    assert "TENALI_LAKE_ROOT" not in os.environ
    assert "TENALI_PROFILE='Demo' is not one of" in capsys.readouterr().err


def test_ui_loads_tenali_as_location_tenali_from_any_folder(env, monkeypatch):
    # A workspace.yaml in the current folder was taken as Tenali's, even another project's; from a folder
    # without one, `-m` named the location differently, so schedules started before showed as stopped.
    (env / "workspace.yaml").write_text("load_from:\n  - python_module: {module_name: another_project}\n")
    seen = []
    real_popen = subprocess.Popen

    def popen(cmd, **kwargs):
        seen.append(cmd)
        return real_popen([sys.executable, "-c", "pass"], **kwargs)

    monkeypatch.setattr(cli.subprocess, "Popen", popen)
    assert cli.cmd_ui(SimpleNamespace(host="127.0.0.1", port=3999)) == 0
    cmd = seen[0]
    workspace = Path(cmd[cmd.index("-w") + 1])
    assert workspace.parent == env / "home" / "dagster"
    (location,) = [entry["python_module"] for entry in yaml.safe_load(workspace.read_text())["load_from"]]
    assert location["module_name"] == "tenali_pipeline.definitions" and location["attribute"] == "defs"
    assert location["location_name"] == "tenali"  # as the repository's workspace.yaml and the Helm values name it
    repo_workspace = yaml.safe_load((Path(cli.__file__).parents[1] / "workspace.yaml").read_text())
    assert repo_workspace["load_from"][0]["python_module"]["location_name"] == "tenali"


@pytest.mark.timeout(60)
def test_output_piped_into_a_reader_that_stops_early_is_not_a_traceback(tmp_path):
    # `tenali filing-sections F | head` ended in BrokenPipeError's traceback.
    filing = tmp_path / "f.htm"
    filing.write_text("<p>FORM 8-K</p><p>Item 2.02 Results of Operations and Financial Condition</p>"
                      + "<p>The company reported results.</p>" * 20000)
    proc = subprocess.Popen([sys.executable, "-m", "tenali_pipeline.cli", "filing-sections", str(filing)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()  # the reader leaves, as head does
    err = proc.stderr.read().decode()
    proc.wait(timeout=30)
    assert "Traceback" not in err and "BrokenPipeError" not in err


@pytest.mark.parametrize("steps", ["0", "-5", "ten"])
def test_demo_refuses_a_bad_step_count_under_its_own_name(env, capsys, steps):
    # `--steps -5` became TENALI_TRAIN_STEPS=-5 and failed naming that variable (and `--steps 0` ran 300 steps).
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--steps", steps])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --steps" in err and "at least 1" in err and "TENALI_TRAIN_STEPS" not in err


def test_relative_lake_and_folders_are_pinned_for_the_runs_the_ui_launches(env, monkeypatch, capsys):
    # `tenali ui` starts Dagster in the instance folder, so TENALI_LAKE_ROOT=mylake named <instance>/mylake
    # (or the repository's) for runs launched there, while `tenali info` and `tenali demo` used ./mylake.
    monkeypatch.setenv("TENALI_LAKE_ROOT", "mylake")
    monkeypatch.setenv("TENALI_DOCUMENTS_ROOT", "~/my-docs")
    monkeypatch.setenv("TENALI_BASE_MODEL", "s3://bucket/base")
    seen = []
    real_popen = subprocess.Popen

    def popen(cmd, **kwargs):
        seen.append((kwargs["cwd"], dict(os.environ)))
        return real_popen([sys.executable, "-c", "pass"], **kwargs)

    monkeypatch.setattr(cli.subprocess, "Popen", popen)
    assert cli.cmd_ui(SimpleNamespace(host="127.0.0.1", port=3999)) == 0
    cwd, child_env = seen[0]
    assert Path(cwd) != env
    assert child_env["TENALI_LAKE_ROOT"] == str(env / "mylake")
    assert child_env["TENALI_DOCUMENTS_ROOT"] == str(Path("~/my-docs").expanduser())
    assert child_env["TENALI_BASE_MODEL"] == "s3://bucket/base"  # a URI stays as given
    assert cli.main(["info"]) == 0
    assert f"lake          {env / 'mylake'}" in capsys.readouterr().out
