"""Per-condition extras for wrapped denoisers: the one way a region carries its own control and LoRA set.

A region's prompt is one condition; what else applies only to that region's views (its ControlNets, its LoRA
set) rides on the condition as a :class:`Tagged` wrapper, so it reaches the denoiser through the same
``conds`` argument every batch already carries (docs/design.md §8: one mechanism for position- and
region-dependent conditioning, no side channel per feature). Wrappers read the tags they handle; the
innermost one hands the family's denoiser the bare conditions (:func:`untag`).

:class:`BySet` is the LoRA-per-region wrapper: it splits a batch's rows by their adapter set and calls a
switch once per set, so a batch whose rows all share one set (the usual case: the plan orders tasks by
condition) switches at most once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.engine.views import View
from multidiffusion.core.types import Denoiser


@dataclass(frozen=True)
class Tagged:
    """A family condition with extras for this condition's rows only.

    Attributes:
        condition: What the family's denoiser takes (text embeddings, an SDXL condition, …).
        control: Control units applied to these rows on top of the run's own (see
            :class:`~multidiffusion.adapters.customise.control.ControlledDenoiser`).
        adapters: The adapter (LoRA) set these rows are denoised with: a hashable key, ``()`` for none.
    """

    condition: Any
    control: tuple[Any, ...] = ()
    adapters: Hashable = ()

    def __len__(self) -> int:
        return len(self.condition)


def untag(conds: Sequence[Any]) -> list[Any]:
    """The bare conditions of ``conds`` (a condition that is not :class:`Tagged` is its own)."""
    return [c.condition if isinstance(c, Tagged) else c for c in conds]


def control_of(cond: Any) -> tuple[Any, ...]:
    """The control units a condition's rows carry (none unless :class:`Tagged`)."""
    return cond.control if isinstance(cond, Tagged) else ()


def adapters_of(cond: Any) -> Hashable:
    """The adapter set a condition's rows are denoised with (``()`` unless :class:`Tagged`)."""
    return cond.adapters if isinstance(cond, Tagged) else ()


class BySet:
    """Wraps a denoiser: the batch's rows are denoised one adapter set at a time, ``switch(key)`` before each.

    Args:
        denoiser: The inner denoiser (it still receives the tagged conditions).
        switch: Makes adapter set ``key`` the active one; a no-op when it already is (e.g.
            :meth:`~multidiffusion.adapters.customise.lora.LoraSwitch.activate`).

    Rows of the same set go through the inner denoiser together, in their batch order; the outputs go back to
    their rows. With one set in the batch this is exactly one inner call on the whole batch. The set active
    from the previous batch is served first, so tasks ordered by set switch once per set per step.
    """

    def __init__(self, denoiser: Denoiser, switch: Callable[[Hashable], None]) -> None:
        self.denoiser = denoiser
        self.switch = switch
        self.active: Hashable | None = None  # the set switched to last

    def _activate(self, key: Hashable) -> None:
        self.switch(key)
        self.active = key

    def __call__(self, x: Tensor, t: Tensor, conds: Sequence[Any], views: Sequence[View] | None = None) -> Tensor:
        """x: (len(conds)·N, C, h, w) → the inner output, each condition's rows under its own adapter set."""
        keys = [adapters_of(c) for c in conds]
        order = list(dict.fromkeys(keys))
        if self.active in order:  # the set already active goes first: one switch fewer
            order.remove(self.active)
            order.insert(0, self.active)
        if len(order) == 1:
            self._activate(order[0])
            return self.denoiser(x, t, conds, views=views)
        n = x.shape[0] // len(conds)
        out: Tensor | None = None
        for key in order:
            members = [i for i, k in enumerate(keys) if k == key]
            rows = torch.cat([torch.arange(i * n, (i + 1) * n) for i in members]).to(x.device)
            self._activate(key)
            part = self.denoiser(
                x.index_select(0, rows),
                t,
                [conds[i] for i in members],
                views=[views[i] for i in members] if views is not None else None,
            )
            out = (
                torch.empty((x.shape[0], *part.shape[1:]), dtype=part.dtype, device=part.device) if out is None else out
            )
            out.index_copy_(0, rows, part)
        assert out is not None  # internal: order holds ≥ 2 adapter sets here, so the loop ran
        return out


class Untagged:
    """Wraps a family denoiser that knows no tags: hands it the bare conditions."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser

    def __call__(self, x: Tensor, t: Tensor, conds: Sequence[Any], views: Sequence[View] | None = None) -> Tensor:
        return self.denoiser(x, t, untag(conds), views=views)
