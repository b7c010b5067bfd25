"""Stop on SIGTERM or SIGINT after the current step, with a checkpoint, instead of losing every step since
the last one.

Whatever ends a training early asks first and kills later: Kubernetes evicting or preempting a pod and
ECS stopping a (Spot) task send SIGTERM and wait 30 s (ECS: its stopTimeout, up to 120 s); torchrun
forwards the SIGTERM or SIGINT it gets (a Dagster cancel, a Ctrl-C) to its workers and SIGKILLs them 30 s
later. With `ckpt_every` at 1,000 steps that is up to 999 steps of GPU time lost each time. Here a training
entry point (`handling()`, around `train` or a post-training stage) turns the first such signal into a
request: each rank asks `requested()` after every optimizer step; under torchrun the ranks agree through
an all-reduce on a gloo group of their own (CPU tensors: no CUDA synchronisation; started at one step and
read at the next, so its round trip hides behind a step's compute), so all of them save the same step.
The loop then saves a checkpoint and raises `Stopped`, whose exit status is 128 + the signal (143 for
SIGTERM: a launcher retries it, and the retry resumes from that step).

Two ways out remain: a second signal more than `REPEAT_S` after the first ends the process at once (a
person pressing Ctrl-C again), and a watchdog ends it `TENALI_STOP_GRACE_SECONDS` (120) after the first
whatever it is doing: a rank stuck in a collective whose peer died never reaches the end of its step.
A save cut short that way leaves only a `.tmp-*` folder, cleared at the next save: the checkpoints
before it are intact.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)
REPEAT_S = 2.0  # a second signal within this is the same request (a process group and torchrun both forwarding)
DEFAULT_GRACE_S = 120.0

# This process's: whether `handling()` is on, the first signal and when it came, its watchdog; the group the
# ranks agree through and the all-reduce started at the last step (work, tensor), read at the next.
_FRESH = {"installed": False, "signum": None, "at": 0.0, "watchdog": None, "group": None, "pending": None}
_state: dict = dict(_FRESH)


class Stopped(Exception):
    """Training stopped on a signal after saving a checkpoint at `step`; exit with `exit_code`."""

    def __init__(self, signum: int, step: int, out_dir: str):
        self.signum, self.step, self.exit_code = signum, step, 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}, with a checkpoint in "
                         f"{out_dir}: run it again (a launcher's retry does) to resume from there")


def _handler(signum: int, frame) -> None:
    now = time.monotonic()
    if _state["signum"] is None:
        _state.update(signum=signum, at=now)
        grace = float(os.environ.get("TENALI_STOP_GRACE_SECONDS", DEFAULT_GRACE_S))
        watchdog = threading.Timer(grace, os._exit, args=(128 + signum,))
        watchdog.daemon = True
        watchdog.start()
        _state["watchdog"] = watchdog
    elif now - _state["at"] > REPEAT_S:  # asked again: stop now
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """SIGTERM and SIGINT become stop requests while the block runs (in the main thread only: where Python
    runs signal handlers); the handlers before it are put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in SIGNALS}
    _state.update(_FRESH, installed=True)
    for s in SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        if _state["watchdog"] is not None:  # training is over: what follows (Pipes' last upload) is not bounded here
            _state["watchdog"].cancel()
        if _state["pending"] is not None:  # the last step's all-reduce: every rank started it, let it finish
            with contextlib.suppress(Exception):  # its group may be gone already (destroy_process_group)
                _state["pending"][0].wait()
        _state.update(_FRESH)


def requested(world_size: int) -> int | None:
    """The signal to stop for after this step, the same on every rank, or None to go on. A collective when
    world_size > 1 (every rank calls it after every step); nothing to do outside `handling()`.

    Under torchrun each call starts the all-reduce of this step's flag without waiting for it and reads the
    one it started at the step before, which has finished meanwhile (a step's compute hides the round trip):
    the ranks agree one step after the signal, every one on the same step."""
    if not _state["installed"]:
        return None
    signum = _state["signum"] or 0
    if world_size > 1:
        import torch
        import torch.distributed as dist

        if _state["group"] is None:
            try:  # a group of its own: its all-reduce runs beside DDP's and FSDP's, never between them
                _state["group"] = dist.new_group(backend="gloo")
            except (RuntimeError, ValueError):  # a torch without gloo: the default group, on the device
                _state["group"] = dist.group.WORLD
        group, agreed = _state["group"], 0
        if _state["pending"] is not None:
            work, flag = _state["pending"]
            work.wait()
            agreed = int(flag.item())
        device = "cpu" if dist.get_backend(group) == "gloo" else f"cuda:{torch.cuda.current_device()}"
        flag = torch.tensor([signum], dtype=torch.int64, device=device)
        _state["pending"] = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group, async_op=True), flag)
        if agreed:  # stopping: this step's all-reduce is not read, but every rank waits for it
            _state["pending"][0].wait()
            _state["pending"] = None
        signum = agreed
    return signum or None
