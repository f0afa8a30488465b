"""One canvas across several processes: each denoises its share of a step's tasks (docs/distributed.md).

Eq. 5's numerator Σ_i F_i⁻¹(W_i ⊗ Φ(x_i)) is a sum over tasks, so it splits over ranks: rank r accumulates the
tasks of its span, one all-reduce per step adds the partial numerators, and every rank divides by the same
denominator (known up front from the layout) and takes the same scheduler step. Canvases never drift: every rank
starts from the same noise and generator state and receives the same sum.

:class:`Shard` is what the engine needs of the process group: which tasks are local, a sum and a broadcast. The
single-process shard does nothing, so the loop is the same loop with or without ranks.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes denoising one canvas.

    Attributes:
        rank: This process, 0 … world − 1.
        world: The number of processes.
        all_sum: Adds a tensor over every rank, in place (``torch.distributed.all_reduce``); None for one process.
        broadcast: Overwrites a tensor with rank ``src``'s, in place (``torch.distributed.broadcast``).
    """

    rank: int = 0
    world: int = 1
    all_sum: Callable[[Tensor], None] | None = None
    broadcast: Callable[[Tensor, int], None] | None = None

    @property
    def alone(self) -> bool:
        """Whether this is the only process."""
        return self.world <= 1

    def span(self, costs: Sequence[float]) -> tuple[int, int]:
        """The contiguous tasks this rank runs, [start, stop), chosen so every rank's summed cost is as even as
        whole tasks allow (rank r takes the tasks whose cumulative cost ends in (r/world, (r+1)/world] of the
        total). ``costs``: one per task (a guided task costs two denoiser rows, an unguided one)."""
        if self.alone:
            return 0, len(costs)
        return spans(costs, self.world)[self.rank]

    def sum_(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over every rank, in place; returns it."""
        if not self.alone and self.all_sum is not None:
            self.all_sum(tensor)
        return tensor

    def share(self, tensor: Tensor, src: int = 0) -> Tensor:
        """``tensor`` replaced by rank ``src``'s, in place; returns it."""
        if not self.alone and self.broadcast is not None:
            self.broadcast(tensor, src)
        return tensor

    def share_generator(self, generator: torch.Generator, device: torch.device) -> None:
        """Give ``generator`` rank 0's state, so every rank draws the same noise (``device``: where the collective
        runs; NCCL needs CUDA tensors)."""
        if self.alone:
            return
        state = generator.get_state().to(device)
        self.share(state)
        generator.set_state(state.cpu())


def spans(costs: Sequence[float], world: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) spans of the tasks, one per rank, balanced by cumulative cost."""
    totals = list(itertools.accumulate(float(c) for c in costs))
    total = totals[-1] if totals else 0.0
    bounds = [0]
    for r in range(1, world):
        # the first task whose cumulative cost passes r/world of the total starts rank r's span
        bounds.append(max(bounds[-1], bisect.bisect_left(totals, total * r / world - 1e-9) + 1))
    bounds.append(len(costs))
    bounds = [min(b, len(costs)) for b in bounds]
    return [(bounds[r], bounds[r + 1]) for r in range(world)]


def imbalance(costs: Sequence[float], world: int) -> float:
    """The busiest rank's cost over the mean (1 = perfectly even) for this split of ``costs``."""
    loads = [sum(costs[a:b]) for a, b in spans(costs, world)]
    mean = sum(loads) / world
    return max(loads) / mean if mean > 0 else 1.0
