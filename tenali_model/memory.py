"""How much memory a device offers, for the refusals that come before an allocation would fail: the
trainer's before it builds its model (`train.py`), the server's before it allocates its KV cache
(`serve/engine.py`). Linux's OOM killer ends a process without a word; these say why and what to change.

A GPU: CUDA's free memory. A CPU: the machine's RAM (`available=False`: all of it, what a process could
ever get) or what the kernel says it can still give (`available=True`: MemAvailable), within the
container's cgroup limit (v2 `memory.max`, or v1 `memory.limit_in_bytes`) when there is one.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

CGROUP = Path("/sys/fs/cgroup")
# (limit, usage) files of cgroup v2, then v1 (whose "no limit" is a huge number rather than "max")
_CGROUP_FILES = (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"))


def device_memory(device: torch.device, *, available: bool) -> tuple[float, str] | None:
    """(bytes, the device named for a message: "GPU 0 (NVIDIA H200)", "this machine"), or None where it cannot
    be told (no /proc, no sysconf)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free), f"GPU {device.index} ({torch.cuda.get_device_name(device)})"
    try:
        if available:
            info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
            room = int(info["MemAvailable"].split()[0]) * 1024
        else:
            room = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, KeyError, ValueError, AttributeError):
        return None
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            limit = int((CGROUP / limit_file).read_text())
            used = int((CGROUP / usage_file).read_text()) if available else 0
        except (OSError, ValueError):  # absent, or "max"
            continue
        room = min(room, limit - used)
        break
    return float(room), "this machine"
