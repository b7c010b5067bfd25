"""A trainer worker that dies of an exception: its entry point runs under torchelastic's `@record`
(`tenali_model.train.as_worker`), so torchrun's "Root Cause" report, at the end of the log a failure
quotes, carries the worker's traceback, and the step's failure names the exception."""

import dagster as dg

from tenali_pipeline.launchers import local
from tenali_pipeline.launchers.common import failure, worker_error

BLOCK = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
crash_worker FAILED
------------------------------------------------------------
Failures:
  <NO_OTHER_FAILURES>
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-04_10:12:31
  host      : gpu-node-3
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 28416)
  error_file: /tmp/torchelastic_557gp2l9/attempt_0/0/error.json
  traceback : Traceback (most recent call last):
    File "/app/tenali_model/train.py", line 530, in _train
      loss.backward()
  torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.

============================================================
"""


def test_the_exception_is_read_from_torchruns_root_cause():
    assert worker_error(BLOCK) == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."
    without_record = BLOCK.split("  error_file")[0] + ("  error_file: <N/A>\n  traceback : To enable traceback see: "
                                                        "https://pytorch.org/docs/stable/elastic/errors.html\n" + "=" * 60)
    assert worker_error(without_record) == "" and worker_error("") == ""
    text = failure("pod trainer-0", 1, BLOCK).description
    assert "exit code 1; the worker's error: torch.OutOfMemoryError: CUDA out of memory" in text


def test_a_worker_that_raises_fails_the_local_step_naming_its_exception(tmp_path):
    (tmp_path / "crash_worker.py").write_text(
        "import sys\nfrom tenali_model.train import as_worker\n\n\ndef main():\n"
        "    raise RuntimeError('CUDA error: an illegal memory access was encountered')\n\n\n"
        "sys.exit(as_worker(main))\n")
    (tmp_path / "train_config.json").write_text("{}")

    @dg.asset
    def pretrain_checkpoint(context: dg.AssetExecutionContext):
        return local.LocalTorchrunLauncher(threads_per_process=1).launch(
            context, tmp_path / "train_config.json", workdir=tmp_path, module="crash_worker")

    res = dg.materialize([pretrain_checkpoint], raise_on_error=False)
    assert not res.success
    (text,) = [e.step_failure_data.error.message for e in res.all_events if e.is_step_failure]
    assert "a trainer worker exited with status 1" in text
    assert "the worker's error: RuntimeError: CUDA error: an illegal memory access was encountered" in text
