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
def training_step(context: dg.AssetExecutionContext) -> None:
    state = json.loads(Path(os.environ[STATE]).read_text())
    lake = LakeResource(root=state["root"])  # read here: Dagster caches the job make_job builds
    key, folder = run_folder(context, lake.lake(), lake, "checkpoints/test", state["inputs"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "attempts.txt").open("a").write(context.run_id + "\n")
    state["seen"].append(key)
    state["fail"] -= 1
    Path(os.environ[STATE]).write_text(json.dumps(state))
    if state["fail"] >= 0:
        raise RuntimeError("the trainer was killed")


def make_job():
    return dg.Definitions(assets=[training_step],
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


def test_a_retry_after_the_inputs_changed_fails_naming_why(state, tmp_path):
    """The step's own retry (same run, same folder) after the shards were rebuilt: its checkpoints'
    loader positions mean nothing on the new shards, so it stops and says so instead of resuming."""
    write, _ = state
    write(fail=1, inputs={"shard_manifest_sha256": "a"})
    with dg.instance_for_test() as instance:
        first = _run(instance)
    run_json = tmp_path / "lake" / "checkpoints" / "test" / first.run_id / "run.json"
    assert json.loads(run_json.read_text())["inputs"] == {"shard_manifest_sha256": "a"}

    class Context:  # the same run again, as its retry sees it
        dagster_run, instance = first.dagster_run, None

    lake = LakeResource(root=str(tmp_path / "lake"))
    with pytest.raises(dg.Failure, match="trained on other inputs.*Launch a new run"):
        run_folder(Context(), lake.lake(), lake, "checkpoints/test", {"shard_manifest_sha256": "b"})
    assert run_folder(Context(), lake.lake(), lake, "checkpoints/test", {"shard_manifest_sha256": "a"})[1] == run_json.parent
