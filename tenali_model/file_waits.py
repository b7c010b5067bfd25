"""Where ranks wait for one rank's file work, they wait on a gloo group with a long timeout.

Saving, hashing and reading checkpoints keep one rank busy for minutes at 7B (83 GB consolidated,
10 GB a rank sharded, on a network volume) while the others wait for it. On the default process
group, NCCL's on GPUs, that wait is a collective, and NCCL's watchdog kills every rank once it has
run 10 minutes (torch's default): at the end of a run, in the middle of its last checkpoint's save,
losing the steps since the one before. On a gloo group the wait is on the CPU, with nothing in flight
on the GPU for the watchdog to time, and the timeout is this module's: two hours, which an 83 GB
checkpoint written and then hashed at 23 MB/s takes (gloo's own default, 30 minutes, is what a 31B
consolidated save on NFS outran in NeMo-RL issue 3624; VeOmni PR 492 moved dcp.save to such a group).

The waits: the barrier after a consolidated save (rank 0 writes it), a sharded save's temporary-folder
broadcast, DCP's own coordination and the gather of each rank's digests, a sharded load, the agreement
on which checkpoint to resume from (each rank hashes its share), and before rank 0's weights are
broadcast into an FSDP model (rank 0 reads or initialises them first).
"""

from __future__ import annotations

from datetime import timedelta

import torch.distributed as dist

TIMEOUT = timedelta(hours=2)

# The group, and the default group it was made beside: a new default group (tests initialise and
# destroy several in one process) gets a new one.
_made: dict = {"world": None, "group": None}


def group():
    """This process's gloo group for waits on file work; None when torch.distributed is not in use.

    Made on first use, which every rank reaches at the same point: each use is inside a collective that
    all ranks run in the same order (dist.new_group is one itself)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.group.WORLD
    if _made["world"] is not world:
        try:
            made = dist.new_group(backend="gloo", timeout=TIMEOUT)
        except (RuntimeError, ValueError):  # a torch built without gloo: the default group and its timeout
            made = world
        _made.update(world=world, group=made)
    return _made["group"]


def barrier() -> None:
    """Wait for every rank (a collective), however long another's file work takes, up to TIMEOUT."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier(group=group())
