"""The process group a run shares under ``torchrun`` (docs/distributed.md).

Under ``torchrun --nproc-per-node N`` every process runs the same call; the library joins the group ``torchrun``
describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR`` …: NCCL on GPUs, gloo on CPUs), or uses one the caller made
with ``torch.distributed.init_process_group``. A single process, with or without ``torchrun``, runs alone.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch

from multidiffusion.core.engine.shards import Shard
from multidiffusion.core.errors import ProcessGroupError

# The group's own timeout: what a run's first step may take (model loads, warm-up, compilation, a rank still on
# its previous canvas), and what ``multidiffusion batch``'s own collectives wait for a rank's solo jobs.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
# Once a run has taken a step, a collective waits at most STEP_TIMEOUT_FACTOR × the slowest interval between its
# collectives so far, and never less than STEP_TIMEOUT_FLOOR seconds: a stalled rank ends the run in about a minute
# (docs/distributed.md, "Failures").
STEP_TIMEOUT_FLOOR = 30.0
STEP_TIMEOUT_FACTOR = 10.0


class StepPace:
    """How long a run's next collective may wait for the other ranks, from the pace of its collectives so far.

    Until two collectives have finished (the first step, with its warm-up, not yet timed) the allowance is
    :data:`COLLECTIVE_TIMEOUT`; afterwards it is ``max(floor, factor × slowest interval)``, where an interval is the
    time from one finished collective to the next (at most one step: every step ends in an all-reduce).

    Args:
        floor: The least allowance, seconds (default :data:`STEP_TIMEOUT_FLOOR`, read when the pace is made).
        factor: The allowance in slowest intervals (default :data:`STEP_TIMEOUT_FACTOR`).
        clock: Seconds, monotonic (a test's fake clock).
    """

    def __init__(
        self, floor: float | None = None, factor: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.floor = STEP_TIMEOUT_FLOOR if floor is None else floor
        self.factor = STEP_TIMEOUT_FACTOR if factor is None else factor
        self.clock = clock
        self.last: float | None = None  # when the last collective finished
        self.slowest: float | None = None  # the longest interval between finished collectives, seconds

    def timeout(self) -> timedelta:
        """The allowance of the next collective."""
        if self.slowest is None:
            return COLLECTIVE_TIMEOUT
        return timedelta(seconds=max(self.floor, self.factor * self.slowest))

    def finished(self) -> None:
        """Record that a collective finished now."""
        now = self.clock()
        if self.last is not None:
            gap = now - self.last
            self.slowest = gap if self.slowest is None else max(self.slowest, gap)
        self.last = now

    def failure(self, exc: BaseException, waited: timedelta) -> ProcessGroupError:
        """The one-line error for a collective that failed with ``exc`` after an allowance of ``waited``."""
        if "timed out" in str(exc).lower() or "timeout" in str(exc).lower():
            if self.slowest is None:
                why = "the group's timeout, before the run's pace is known"
            else:
                why = f"{self.factor:g}× its slowest step so far, at least {self.floor:g} s"
            return ProcessGroupError(
                f"another process of this run did not answer within {waited.total_seconds():.0f} s ({why}): it "
                "stalled or died; every process stops and no file is written"
            )
        return ProcessGroupError(
            "another process of this run ended or lost its connection in the middle of the run; every process stops "
            "and no file is written (that process's own output says why)"
        )


def world_size() -> int:
    """Processes in the run: the initialised group's size, else ``WORLD_SIZE`` (1 without torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def local_device() -> str | None:
    """The CUDA device of this process under torchrun (``cuda:LOCAL_RANK``), else None (the default device)."""
    if world_size() > 1 and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return None


_alone = False  # set by alone(): this process runs its run by itself, even inside a group


@contextmanager
def alone() -> Iterator[None]:
    """Runs inside run on this process only, even when it belongs to a group (``multidiffusion batch`` gives small
    canvases to one rank each)."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def process_shard(device: torch.device) -> Shard:
    """This process's :class:`~multidiffusion.core.engine.shards.Shard`: the group's rank and collectives, joining the
    group ``torchrun`` describes on first use (NCCL for CUDA devices, gloo otherwise), its collectives timed by the
    run's pace (:class:`StepPace`); a lone shard for one process."""
    import torch.distributed as dist

    if _alone or world_size() <= 1 or not dist.is_available():
        return Shard()
    return group_shard(device, StepPace())  # one pace per run: its steps set its collectives' timeouts


def group_shard(device: torch.device, pace: StepPace | None = None) -> Shard:
    """The group's shard (joining the group ``torchrun`` describes on first use), whatever :func:`alone` says.

    Each collective waits at most ``pace``'s allowance (:class:`StepPace`; None: :data:`COLLECTIVE_TIMEOUT`, for
    collectives that wait on whole jobs), and a collective that times out or loses a peer raises
    :class:`~multidiffusion.core.errors.ProcessGroupError`: one line, no backend traceback."""
    import torch.distributed as dist

    if world_size() <= 1 or not dist.is_available():
        return Shard()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
        # A group left to interpreter shutdown aborts the process under gloo ("terminate called without an active
        # exception": its worker threads outlive Python; pytorch/pytorch#190489): the group we made, we end.
        atexit.register(_end_group)
    if dist.get_world_size() <= 1:
        return Shard()
    group = dist.group.WORLD

    def timed(collective: Callable[[], object]) -> None:
        # The group's timeout is read when a collective starts (gloo: its recv deadline), so setting it before
        # each one bounds that one; no other thread issues collectives on this group meanwhile.
        allowance = pace.timeout() if pace is not None else COLLECTIVE_TIMEOUT
        setter = getattr(group, "set_timeout", None)
        if setter is not None:
            setter(allowance)
        try:
            collective()
        except RuntimeError as exc:  # gloo's and NCCL's DistBackendError derive from it
            fail = pace if pace is not None else StepPace()
            raise fail.failure(exc, allowance) from None
        if pace is not None:
            pace.finished()

    def all_sum(tensor: torch.Tensor) -> None:
        timed(lambda: dist.all_reduce(tensor, op=dist.ReduceOp.SUM))

    def broadcast(tensor: torch.Tensor, src: int) -> None:
        timed(lambda: dist.broadcast(tensor, src))

    return Shard(dist.get_rank(), dist.get_world_size(), all_sum, broadcast)


def _end_group() -> None:
    """Destroy the process group this module joined, while the interpreter is still whole (an atexit handler)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """Whether this process writes files and prints (rank 0, or the only process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0") or 0) == 0
