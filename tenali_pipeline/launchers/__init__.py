"""Launchers: one resource interface that starts a training step and reports back through Pipes.

Asset code calls ``launcher.launch(context, config_path, workdir, extras)`` and gets the
materialisation that rank 0 of the trainer reported; ``TENALI_LAUNCHER`` decides where the step runs:
``local`` (torchrun on this machine), ``k8s`` (pods or an indexed Job on GPU nodes) or ``ecs`` (a
task on a GPU EC2 instance). The cluster launchers are configured by the TENALI_K8S_* / TENALI_ECS_*
variables (README) and import their client libraries only when chosen.
"""

from __future__ import annotations

from ..settings import Settings, SettingsError
from .local import LocalTorchrunLauncher


def build_launcher(settings: Settings):
    if settings.launcher == "local":
        return LocalTorchrunLauncher(nproc_per_node=settings.train_nproc)
    try:
        if settings.launcher == "k8s":
            from .k8s import k8s_launcher_from_settings

            return k8s_launcher_from_settings(settings)
        if settings.launcher == "ecs":
            from .aws import ecs_launcher_from_settings

            return ecs_launcher_from_settings(settings)
    except ImportError as e:
        extra = "k8s,aws" if settings.launcher == "k8s" else "aws"
        raise SettingsError(f"TENALI_LAUNCHER={settings.launcher} needs {e.name}: pip install 'tenali[{extra}]'.") from e
    raise SettingsError(f"TENALI_LAUNCHER={settings.launcher!r} must be 'local', 'k8s' or 'ecs'.")


__all__ = ["LocalTorchrunLauncher", "build_launcher"]
