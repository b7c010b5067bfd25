"""The trainer's report survives a Pipes channel that loses it: rank 0 also writes it to
`<run folder>/report.json` with the launch id, and a launcher that got no report reads that file
(tenali_model/report.py). A file of another launch, or none, still fails the step."""

import json

import dagster as dg
import pytest

from tenali_model import report
from tenali_pipeline.launchers import local
from tenali_pipeline.launchers.file_messages import WholeLineMessageReader

pytest.importorskip("dagster_aws")
from launcher_fakes import s3, tiny_run  # noqa: E402, F401
from test_launcher_aws import ecs, launcher, materialise, step_failures  # noqa: E402, F401


def test_the_report_file_counts_only_for_the_launch_that_wrote_it(tmp_path):
    class Pipes:
        extras = {report.LAUNCH_ID: "abc"}

        def report_asset_materialization(self, metadata, asset_key=None):
            self.sent = metadata

    pipes = Pipes()
    report.publish(pipes, tmp_path, {"step": 6, "val_loss": 1.5, "mfu": None, "checkpoint": "x"},
                   tmp_path / "step_00000006", "| step | loss |")
    kept = report.read(tmp_path, "abc")
    assert kept == pipes.sent  # the same metadata both ways
    assert kept["step"] == {"raw_value": 6, "type": "__infer__"} and "mfu" not in kept
    assert kept["checkpoint"] == {"raw_value": str(tmp_path / "step_00000006"), "type": "path"}
    assert report.read(tmp_path, "another launch") is None
    assert report.read(tmp_path, "") is None
    (tmp_path / report.REPORT_FILE).write_text('{"launch_id": "abc", "metad')  # corrupt
    assert report.read(tmp_path, "abc") is None
    report.publish(None, tmp_path, {"step": 1}, tmp_path / "step_00001", "")  # standalone: no launch id
    assert json.loads((tmp_path / report.REPORT_FILE).read_text())["launch_id"] is None


class _ReportLost(WholeLineMessageReader):
    """The local message channel with the trainer's materialisation lost on the way."""

    @staticmethod
    def _read(path, handler, closed):
        class Dropping:
            def __getattr__(self, name):
                return getattr(handler, name)

            def handle_message(self, message):
                if message["method"] != "report_asset_materialization":
                    handler.handle_message(message)

        WholeLineMessageReader._read(path, Dropping(), closed)


def _materialise_locally(config_path, run_dir, instance=None, module="tenali_model.train"):
    @dg.asset
    def pretrain_checkpoint(context: dg.AssetExecutionContext):
        return local.LocalTorchrunLauncher(threads_per_process=1).launch(context, config_path, workdir=run_dir,
                                                                         module=module)

    return dg.materialize([pretrain_checkpoint], raise_on_error=False, instance=instance)


def test_a_report_lost_by_the_local_channel_is_read_from_the_run_folder(tmp_path, monkeypatch):
    config_path, run_dir = tiny_run(tmp_path, steps=4)
    monkeypatch.setattr(local, "WholeLineMessageReader", _ReportLost)
    instance = dg.DagsterInstance.ephemeral()
    res = _materialise_locally(config_path, run_dir, instance)
    assert res.success, step_failures(res)
    meta = res.asset_materializations_for_node("pretrain_checkpoint")[0].metadata
    assert meta["step"].value == 4 and meta["checkpoint"] == dg.MetadataValue.path(str(run_dir / "step_00000004"))
    assert (run_dir / "step_00000004" / "model.safetensors").is_file()
    assert "| step |" in meta["loss_curve"].value
    said = [e.user_message for e in instance.all_logs(res.run_id) if "did not come through Dagster Pipes" in e.user_message]
    assert said and str(run_dir / report.REPORT_FILE) in said[0]  # the step's log says where the report came from

    # a later launch into the same folder whose trainer exits 0 and reports nothing: the first launch's
    # report.json is still there, but it is not this launch's report
    (run_dir / "quiet_trainer.py").write_text("import sys; sys.exit(0)\n")
    res = _materialise_locally(config_path, run_dir, module="quiet_trainer")
    assert not res.success
    (text,) = step_failures(res)
    assert "exited without one report" in text


def test_an_s3_outage_past_the_trainers_exit_loses_no_report(tmp_path, s3, ecs, monkeypatch):
    """The Dagster side cannot read the bucket at all (past the reader's patience): the task ends, Pipes
    delivered nothing, and the step still materialises from the report file on the shared volume."""
    from botocore.exceptions import EndpointConnectionError

    from tenali_pipeline.launchers import aws, common, s3pipes

    endpoint, _ = s3
    config_path, run_dir = tiny_run(tmp_path)
    monkeypatch.setattr(s3pipes.PrefixedS3MessageReader, "OUTAGE_SECONDS", 0.2)

    def unreadable(endpoint_url=""):
        client = common.s3_client(endpoint_url)

        def get_object(**kwargs):
            raise EndpointConnectionError(endpoint_url=endpoint_url)
        client.get_object = get_object
        return client

    monkeypatch.setattr(aws, "s3_client", unreadable)
    res = materialise(launcher(tmp_path, endpoint), config_path, run_dir)
    assert res.success, step_failures(res)
    meta = res.asset_materializations_for_node("pretrain_checkpoint")[0].metadata
    assert meta["step"].value == 6
    assert meta["checkpoint"] == dg.MetadataValue.path(str(run_dir / "step_00000006"))
