"""Run training on this machine: ``torchrun`` in a Dagster Pipes session (``open_pipes_session``).

One process per visible GPU, or ``nproc_per_node`` CPU processes (default 1) when there is none.
Only rank 0 of the trainer opens Pipes, so exactly one materialisation comes back. A trainer that
dies before opening Pipes would otherwise look like success (dagster #17868), so the exit code is
checked here and a run without a report fails here too. Messages come back through a reader that never
parses a half-written line (`file_messages.py`).

torchrun is started here rather than by ``PipesSubprocessClient``, for two things it lacks: a failure
that says why (torchrun exits 1 whatever killed a worker; its stderr tail names the signal or the
trainer's error), and a cancelled step that leaves nothing running (the client gives torchrun 20 s
after SIGINT, less than torchrun's own 30 s before it SIGKILLs its workers, then raises and walks
away with torchrun and the workers still training).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import dagster as dg

from .common import EXIT_MEANINGS, failure, launch_extras, reported_result, worker_code
from .file_messages import WholeLineMessageReader

# torchrun's own shutdown on SIGINT: signal the workers, SIGKILL them after 30 s; then some margin.
TORCHRUN_GRACE_SECONDS = 45
TAIL_BYTES = 64 * 1024  # what is kept of torchrun's stderr for the failure message


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch or no driver: plan for CPU
        return 0


class LocalTorchrunLauncher(dg.ConfigurableResource):
    nproc_per_node: int = 0  # 0: one per GPU, or 1 on CPU
    threads_per_process: int = 0  # 0: cores / processes

    def command(self, config_path: Path, module: str = "tenali_model.train") -> tuple[list[str], dict[str, str]]:
        gpus = _visible_gpus()
        nproc = self.nproc_per_node or max(gpus, 1)
        threads = self.threads_per_process or max(1, (os.cpu_count() or 1) // nproc)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", module, "--config", str(config_path)]
        return cmd, {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}

    def launch(self, context: dg.AssetExecutionContext, config_path: Path, workdir: Path,
               extras: dict | None = None, module: str = "tenali_model.train") -> dg.MaterializeResult:
        """Run `module` (pretraining, or a post-training stage) with `--config config_path`."""
        cmd, env = self.command(config_path, module)
        context.log.info(f"launching: {' '.join(cmd)}")
        extras, launch_id = launch_extras(extras)
        with dg.open_pipes_session(context=context, context_injector=dg.PipesTempFileContextInjector(),
                                   message_reader=WholeLineMessageReader(), extras=extras) as session:
            proc = subprocess.Popen(cmd, cwd=str(workdir), stderr=subprocess.PIPE,
                                    env={**os.environ, **env, **session.get_bootstrap_env_vars()})
            stderr = _StderrTail(proc.stderr)
            try:
                code = proc.wait()
            except BaseException:  # the step was cancelled (DagsterExecutionInterruptedError) or is going down
                _stop(context, proc)
                raise
            finally:
                stderr.join()
            if code != 0:
                raise failure("local torchrun", code, stderr.text(), _root_cause(code, stderr.text()))
        try:  # no implicit result: a trainer that exited 0 without reporting fails here (dagster #17868)
            return reported_result(dg.PipesClientCompletedInvocation(session), context, workdir, launch_id)
        except Exception as e:  # noqa: BLE001 - several reports, or none
            raise failure("local torchrun", code, stderr.text(), f"it exited without one report ({e})") from e


def _root_cause(torchrun_code: int, stderr: str) -> str:
    """Who failed and how: torchrun itself killed by a signal, else what its "Root Cause" block says of
    the first worker that failed (torchrun exits 1 whatever that was): the signal that killed it, or
    its exit status and what that means."""
    if torchrun_code < 0:
        return f"torchrun itself was {_killed_by(-torchrun_code)} (its workers end with it)"
    code = worker_code(stderr)
    if code is None:
        return ""
    if code < 0:
        return f"a trainer worker was {_killed_by(-code)}"
    meaning = EXIT_MEANINGS.get(code, "")
    return f"a trainer worker exited with status {code}" + (f" ({meaning})" if meaning else "")


def _killed_by(signum: int) -> str:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    oom = " (the kernel's out-of-memory killer, or someone, killed it)" if signum == signal.SIGKILL else ""
    return f"killed by {name}{oom}"


class _StderrTail:
    """Copies torchrun's stderr to this process's (Dagster's compute log) as raw bytes, whatever their
    encoding or line length, and keeps the last TAIL_BYTES for the failure message."""

    def __init__(self, pipe):
        self._pipe, self._tail = pipe, b""
        self._thread = threading.Thread(target=self._copy, daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        while chunk := self._pipe.read1(65536):
            try:
                os.write(2, chunk)
            except OSError:  # our stderr is gone: keep draining, or torchrun blocks on a full pipe
                pass
            self._tail = (self._tail + chunk)[-TAIL_BYTES:]

    def join(self) -> None:
        # a worker that outlives torchrun holds the pipe open: do not wait for it
        self._thread.join(timeout=5)

    def text(self) -> str:
        return self._tail.decode("utf-8", errors="replace")


def _stop(context, proc: subprocess.Popen) -> None:
    """Stop torchrun and its workers before the step ends: SIGINT lets torchrun stop its workers (it
    SIGKILLs them after 30 s); a torchrun still there after that is killed, and its workers die with it
    (`tenali_model.train.die_with_torchrun`)."""
    if proc.poll() is not None:
        return
    context.log.info("step interrupted: sending SIGINT to torchrun and waiting for its workers to stop")
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=TORCHRUN_GRACE_SECONDS)
    except BaseException as e:  # still running after the grace, or interrupted again while waiting
        context.log.warning(f"torchrun did not stop after SIGINT ({type(e).__name__}): killing it")
        proc.kill()
        proc.wait()
        if not isinstance(e, subprocess.TimeoutExpired):
            raise
