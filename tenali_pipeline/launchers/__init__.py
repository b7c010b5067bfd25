"""Launchers: one resource interface that starts a training step and reports back through Pipes.

Asset code calls ``launcher.launch(context, config_path, workdir)`` and gets the materialisation
that rank 0 of the trainer reported; the profile decides where the step runs.
"""

from __future__ import annotations

from ..settings import Settings, SettingsError
from .local import LocalTorchrunLauncher


def build_launcher(settings: Settings):
    if settings.launcher == "local":
        return LocalTorchrunLauncher(nproc_per_node=settings.train_nproc)
    raise SettingsError(
        f"TENALI_LAUNCHER={settings.launcher!r}: the Kubernetes launcher is not built yet (issue 'Training as "
        "launched GPU steps'); set TENALI_LAUNCHER=local to train on this machine."
    )


__all__ = ["LocalTorchrunLauncher", "build_launcher"]
