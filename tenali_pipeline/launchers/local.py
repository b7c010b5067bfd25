"""Run training on this machine: ``torchrun`` under Dagster's ``PipesSubprocessClient``.

One process per visible GPU, or ``nproc_per_node`` CPU processes (default 1) when there is none.
Only rank 0 of the trainer opens Pipes, so exactly one materialisation comes back. A trainer that
dies before opening Pipes would otherwise look like success (dagster #17868), so the exit code is
checked by the client and the reported checkpoint is checked here. Messages come back through a
reader that never parses a half-written line (`file_messages.py`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dagster as dg

from .file_messages import WholeLineMessageReader


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
        result = dg.PipesSubprocessClient(message_reader=WholeLineMessageReader()).run(
            command=cmd, context=context, cwd=str(workdir), env=env, extras=extras or {}
        ).get_materialize_result()
        return result
