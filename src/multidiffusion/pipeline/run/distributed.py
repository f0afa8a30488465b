"""The process group a run shares under ``torchrun`` (docs/distributed.md).

Under ``torchrun --nproc-per-node N`` every process runs the same call; the library joins the group ``torchrun``
describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR`` …: NCCL on GPUs, gloo on CPUs), or uses one the caller made
with ``torch.distributed.init_process_group``. A single process, with or without ``torchrun``, runs alone.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch

from multidiffusion.core.engine.shards import Shard

COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # a rank that died leaves the others waiting at most this long


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
    group ``torchrun`` describes on first use (NCCL for CUDA devices, gloo otherwise); a lone shard for one
    process."""
    import torch.distributed as dist

    if _alone or world_size() <= 1 or not dist.is_available():
        return Shard()
    return group_shard(device)


def group_shard(device: torch.device) -> Shard:
    """The group's shard (joining the group ``torchrun`` describes on first use), whatever :func:`alone` says."""
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

    def all_sum(tensor: torch.Tensor) -> None:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)

    def broadcast(tensor: torch.Tensor, src: int) -> None:
        dist.broadcast(tensor, src)

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
