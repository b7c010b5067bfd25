"""Re-executing a run whose training step failed resumes in that run's folder: Dagster's "Re-execute"
(from failure or all steps) and run retries are new runs with new ids, and a folder named by the new
id would start training from step 0. Real re-executions through `execute_job`, with a step that
records the folder it was given and fails the first time."""

import json
import os
from pathlib import Path

import dagster as dg
import pytest

from tenali_pipeline.defs.training.assets import run_folder
from tenali_pipeline.resources import LakeResource

STATE = "TENALI_TEST_REEXEC_STATE"  # a JSON file: the lake root, the inputs, how many attempts fail


@dg.asset
def training_step(context: dg.AssetExecutionContext, lake: LakeResource) -> None:
    state = json.loads(Path(os.environ[STATE]).read_text())
    key, folder = run_folder(context, lake.lake(), lake, "checkpoints/test", state["inputs"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "attempts.txt").open("a").write(context.run_id + "\n")
    state["seen"].append(key)
    state["fail"] -= 1
    Path(os.environ[STATE]).write_text(json.dumps(state))
    if state["fail"] >= 0:
        raise RuntimeError("the trainer was killed")


def make_job():
    lake = LakeResource(root=json.loads(Path(os.environ[STATE]).read_text())["root"])
    return dg.Definitions(assets=[training_step], resources={"lake": lake},
                          jobs=[dg.define_asset_job("train", executor_def=dg.in_process_executor)]).resolve_job_def("train")


@pytest.fixture
def state(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    monkeypatch.setenv(STATE, str(path))

    def write(fail: int, inputs: dict):
        path.write_text(json.dumps({"root": str(tmp_path / "lake"), "inputs": inputs, "fail": fail, "seen": []}))

    def seen() -> list[str]:
        return json.loads(path.read_text())["seen"]

    return write, seen


def _run(instance, parent=None, all_steps=False):
    job = dg.reconstructable(make_job)
    options = None
    if parent is not None:
        options = (dg.ReexecutionOptions(parent_run_id=parent.run_id, step_selection=["training_step"]) if all_steps
                   else dg.ReexecutionOptions.from_failure(parent.run_id, instance))
    return dg.execute_job(job, instance, reexecution_options=options, raise_on_error=False)


def test_a_re_execution_of_a_failed_run_resumes_in_its_folder(state):
    write, seen = state
    write(fail=2, inputs={"shard_manifest_sha256": "a"})
    with dg.instance_for_test() as instance:
        first = _run(instance)
        second = _run(instance, first)  # from failure: fails again
        third = _run(instance, second, all_steps=True)  # every step: succeeds
        assert (first.success, second.success, third.success) == (False, False, True)
        fresh = _run(instance, third, all_steps=True)  # its parent succeeded: a new training
    root = f"checkpoints/test/{first.run_id}"
    assert seen() == [root, root, root, f"checkpoints/test/{fresh.run_id}"]


def test_new_inputs_since_the_failed_run_start_a_folder_of_their_own(state):
    write, seen = state
    write(fail=1, inputs={"shard_manifest_sha256": "a"})
    with dg.instance_for_test() as instance:
        first = _run(instance)
        write(fail=0, inputs={"shard_manifest_sha256": "b"})  # new shards landed meanwhile
        second = _run(instance, first)
        assert second.success
    assert seen() == [f"checkpoints/test/{second.run_id}"]
