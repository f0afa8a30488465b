"""SyncDiffusion (Lee et al., NeurIPS 2023) as a view hook: pull every view's style toward an anchor view.

At a synchronised step t (step index i), before the views are denoised, each view latent x_t^{(i)} takes
one gradient step on a perceptual distance between its foreseen image and the anchor view's:

    x̂₀^{(v)} = x₀-formula(x_t^{(v)}, model(x_t^{(v)}))                   (Eq. 10: the scheduler's own)
    L_v = d(D(x̂₀^{(v)}), stopgrad D(x̂₀^{(anchor)}))                      (Eq. 13; d = LPIPS in the paper)
    x_t^{(v)} ← x_t^{(v)} − w · λ^i · ∇_{x_t^{(v)}} L_v                     (Eq. 14)

with D the decoder, w the weight and λ the decay. The engine then denoises the updated views, fuses
their outputs and the updated crops (docs/design.md §3) and takes its one scheduler step, so synchronisation
composes with panoramas, regions and bootstrapping unchanged.

The gradient goes through the guided denoiser and the decoder: that backward pass is the cost. Views are
processed in chunks of ``chunk_size`` (the loss is a sum of per-view terms, so chunking does not change
the gradient), and the adapter may checkpoint activations (``SyncSettings.checkpointing``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.engine.crop import crop, view_indices
from multidiffusion.core.engine.foresee import foresee_x0
from multidiffusion.core.engine.sampling import scale_model_input
from multidiffusion.core.engine.shards import Shard
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.types import Denoiser, HookContext, ViewTask

DEFAULT_GRADIENT_CELLS = 128 * 64 * 64
"""Latent cells (rows × view height × view width) per gradient batch when no chunk size is set: 128 views of
64 × 64. It bounds the memory of the backward pass on wide canvases (thousands of views in one engine batch)
and keeps a batch's tensors near the CPU caches: on the toy model 128 views per batch took half the time
of one batch of 1,769 views (docs/sync.md)."""

PerceptualLoss = Callable[[Tensor, Tensor], Tensor]
"""d(images, targets): both (B, 3, H, W) in [−1, 1] → per-image distances, (B,) (or (B, 1, 1, 1))."""

Decoder = Callable[[Tensor], Tensor]
"""Differentiable latents (B, C, h, w) → images (B, 3, h·f, w·f) in [−1, 1]."""


MAX_SYNC_WEIGHT = 1e4  # far above the paper's 20: the gradient step then overwhelms the latents


SYNC_LOSSES: tuple[str, ...] = ("lpips", "builtin")
"""Names of the perceptual distance d of Eq. 13: LPIPS (the paper's; needs pretrained weights) or the weight-free
colour and texture statistics of :mod:`multidiffusion.core.metrics.statistics_loss`."""

CENTER = "center"


@dataclass(frozen=True)
class SyncSettings:
    """SyncDiffusion's settings: the one object the API, the command line and the recipe share.

    The command line spells each field ``--sync-<field>`` and the recipe ``sync_<field>`` (``stop_step`` is
    ``--sync-stop-step`` and ``sync_stop_step``); ``chunk_size`` and ``checkpointing`` change memory and time, not
    the result, so the recipe leaves them out. Every field is checked here, once.

    Attributes:
        weight: w of Eq. 14, ≥ 0 (0 turns the update off). The paper's 20.
        decay: λ of Eq. 14 in (0, 1]: the step size at step index i is w · λ^i. The paper's 0.95.
        stop_step: Synchronise only while the step index is below this (the official code's
            ``sync_thres``); None synchronises every step. The default, 5, is measured in docs/sync.md:
            on the exact mixture oracle the views agree after it, and later steps add cost, colour
            overshoot and flatten the prior's own variation.
        every: Synchronise every ``every``-th step (step indices i with (i + 1) % every == 0, as the
            official code's ``sync_freq``).
        anchor: Index of the anchor view in the layout's view order (row-major), or ``"center"`` for the view
            nearest the canvas centre.
        loss: d of Eq. 13, one of :data:`SYNC_LOSSES`; None tries LPIPS and falls back to ``builtin`` with a warning
            (the run records the one it used).
        chunk_size: Views per gradient batch (None: as many as fit in :data:`DEFAULT_GRADIENT_CELLS`, at least
            one). Lower it to save memory; it does not change the update.
        checkpointing: Checkpoint the denoiser's and decoder's activations in the backward pass (less memory, more
            time; the same update).
    """

    weight: float = 20.0
    decay: float = 0.95
    stop_step: int | None = 5
    every: int = 1
    anchor: int | str = CENTER
    loss: str | None = None
    chunk_size: int | None = None
    checkpointing: bool = False

    def __post_init__(self) -> None:
        if not (
            isinstance(self.weight, (int, float))
            and not isinstance(self.weight, bool)
            and math.isfinite(self.weight)
            and 0 <= self.weight <= MAX_SYNC_WEIGHT
        ):
            raise InvalidInputError(
                f"sync weight must be a finite number ≥ 0 and at most {MAX_SYNC_WEIGHT:g} (the paper's 20), "
                f"got {self.weight!r}"
            )
        if not (isinstance(self.decay, (int, float)) and not isinstance(self.decay, bool) and 0 < self.decay <= 1):
            raise InvalidInputError(f"sync decay must be in (0, 1], got {self.decay!r}")
        if self.stop_step is not None and not (_whole(self.stop_step) and self.stop_step >= 0):
            raise InvalidInputError(f"sync stop step must be an integer ≥ 0 (or None for all), got {self.stop_step!r}")
        if not (_whole(self.every) and self.every >= 1):
            raise InvalidInputError(f"sync every must be an integer ≥ 1, got {self.every!r}")
        if self.anchor != CENTER and not (_whole(self.anchor) and self.anchor >= 0):
            raise InvalidInputError(f"sync anchor must be 'center' or a view index ≥ 0, got {self.anchor!r}")
        if self.loss is not None and self.loss not in SYNC_LOSSES:
            raise InvalidInputError(f"unknown sync loss {self.loss!r}; choose one of: {', '.join(SYNC_LOSSES)}")
        if self.chunk_size is not None and not (_whole(self.chunk_size) and self.chunk_size >= 1):
            raise InvalidInputError(f"sync chunk size must be an integer ≥ 1, got {self.chunk_size!r}")
        if not isinstance(self.checkpointing, bool):
            raise InvalidInputError(f"sync checkpointing must be True or False, got {self.checkpointing!r}")

    @property
    def anchor_index(self) -> int | None:
        """The anchor's view index, or None for the centre view."""
        return None if self.anchor == CENTER else int(self.anchor)

    def is_synchronised(self, step_index: int) -> bool:
        """Whether step index i gets the update: w > 0, i < ``stop_step`` (if set) and (i + 1) % ``every`` == 0.

        Cheap and exact: a progress bar can weigh the steps with it (a synchronised step costs a backward pass).
        """
        if self.weight == 0 or (self.stop_step is not None and step_index >= self.stop_step):
            return False
        return (step_index + 1) % self.every == 0

    def step_size(self, step_index: int) -> float:
        """w · λ^i at a synchronised step (:meth:`is_synchronised`), 0 at the others."""
        return self.weight * self.decay**step_index if self.is_synchronised(step_index) else 0.0


def _whole(value: Any) -> bool:
    """An int that is not a bool (True is not a step count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def centre_view(views: Sequence[View], height: int, width: int) -> int:
    """Index of the view whose centre is nearest the canvas centre (the first such in view order)."""
    if not views:
        raise InvalidInputError("no views; give at least one view")
    cy, cx = height / 2, width / 2

    def distance(v: View) -> float:
        return (v.top + v.height / 2 - cy) ** 2 + (v.left + v.width / 2 - cx) ** 2

    return min(range(len(views)), key=lambda i: distance(views[i]))


def anchor_task(tasks: Sequence[ViewTask], view: View) -> int:
    """The task the anchor view is denoised as: the first task on ``view`` (for regions, its background)."""
    for i, task in enumerate(tasks):
        if task.view == view:
            return i
    raise InvalidInputError(f"the sync anchor view {view} has no task (it carries no weight)")


class SyncDiffusion:
    """The view hook of the module docstring.

    Args:
        denoiser: The guided denoiser (e.g. ``ClassifierFreeGuidance`` around the model's denoiser); it
            must build an autograd graph when grad is enabled.
        decode: Differentiable decoder (see :data:`Decoder`).
        loss: Perceptual distance (see :data:`PerceptualLoss`).
        tasks: All tasks of the run, in the engine's order.
        conditions: The conditions the tasks index.
        anchor: Index into ``tasks`` of the anchor (see :func:`anchor_task`).
        settings: Weight, decay, schedule, chunking.
        canvas_size: (H, W) of the canvas, latent cells.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        decode: Decoder,
        loss: PerceptualLoss,
        tasks: Sequence[ViewTask],
        conditions: Sequence[Any],
        anchor: int,
        settings: SyncSettings,
        canvas_size: tuple[int, int],
    ) -> None:
        if not 0 <= anchor < len(tasks):
            raise InvalidInputError(f"sync anchor task {anchor} is out of range for {len(tasks)} tasks")
        self.denoiser = denoiser
        self.decode = decode
        self.loss = loss
        self.tasks = list(tasks)
        self.conditions = conditions
        self.anchor = anchor
        self.settings = settings
        view = self.tasks[anchor].view
        self._anchor_index = view_indices([view], *canvas_size)
        self._anchor_size = (view.height, view.width)
        self._cached: tuple[int, Tensor] | None = None
        self.losses: list[tuple[int, float]] = []  # (step index, mean loss before the update), for reports

    def _foresee_image(self, x: Tensor, context: HookContext, conds: list[Any], views: list[View]) -> Tensor:
        t = context.timestep
        model_in = scale_model_input(context.scheduler, x, t)
        x0 = foresee_x0(context.scheduler, self.denoiser(model_in, t, conds, views=views), x, t)
        return self.decode(x0).float().clamp(-1, 1)  # the official code clamps the decoded image too

    def _compute_anchor(self, canvas: Tensor, t: Tensor, scheduler: Any, step_index: int) -> Tensor:
        x = crop(canvas, self._anchor_index.to(canvas.device), self._anchor_size)
        context = HookContext(step_index, t, [], [], canvas.shape[0], scheduler, canvas)
        with torch.no_grad():
            anchor = self.tasks[self.anchor]
            return self._foresee_image(x, context, [self.conditions[anchor.condition]], [anchor.view])

    def begin_step(self, canvas: Tensor, step_index: int, t: Tensor, scheduler: Any, shard: Shard) -> None:
        """Called by the engine on every rank at the start of each step: on a synchronised step with several
        ranks, rank 0 computes the anchor image and broadcasts it, so it is computed once (alone, it is computed
        when first needed)."""
        if shard.alone or self.settings.step_size(step_index) == 0.0:
            return
        image = self._compute_anchor(canvas, t, scheduler, step_index) if shard.rank == 0 else None
        shape = torch.tensor(list(image.shape) if image is not None else [0, 0, 0, 0], device=canvas.device)
        shard.share(shape)
        if image is None:
            image = torch.empty(*(int(v) for v in shape), device=canvas.device)
        self._cached = (step_index, shard.share(image.contiguous()))

    def anchor_image(self, context: HookContext) -> Tensor:
        """D(x̂₀) of the anchor view at this step, (N, 3, H, W), no gradient; computed once per step."""
        if self._cached is None or self._cached[0] != context.step_index:
            image = self._compute_anchor(context.canvas, context.timestep, context.scheduler, context.step_index)
            self._cached = (context.step_index, image)
        return self._cached[1]

    def __call__(self, x: Tensor, context: HookContext) -> Tensor:
        step = self.settings.step_size(context.step_index)
        if step == 0.0:
            return x
        n = context.num_canvases
        todo = [j for j, i in enumerate(context.task_indices) if i != self.anchor]
        if not todo:
            return x
        if (x.shape[-2], x.shape[-1]) != self._anchor_size:
            raise InvalidInputError("SyncDiffusion needs every view to have the anchor view's size")
        target = self.anchor_image(context)
        out = x.clone()
        size = self.settings.chunk_size or max(1, DEFAULT_GRADIENT_CELLS // (n * x.shape[-2] * x.shape[-1]))
        total, count = 0.0, 0
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            rows = torch.cat([torch.arange(j * n, (j + 1) * n) for j in chunk]).to(x.device)
            conds = [self.conditions[context.tasks[j].condition] for j in chunk]
            views = [context.tasks[j].view for j in chunk]
            latents = x[rows].detach().requires_grad_(True)
            with torch.enable_grad():
                images = self._foresee_image(latents, context, conds, views)
                losses = self.loss(images, _repeat(target, len(chunk))).reshape(len(rows), -1).sum(1)
                (grad,) = torch.autograd.grad(losses.sum(), latents)
            out[rows] = x[rows] - step * grad.to(x.dtype)  # Eq. 14
            total += float(losses.detach().sum())
            count += len(rows)
        self.losses.append((context.step_index, total / count))
        return out


def _repeat(target: Tensor, times: int) -> Tensor:
    """``target.repeat(times, 1, 1, 1)``; a broadcast view (no copy) for one canvas, which a loss may exploit."""
    if target.shape[0] == 1:
        return target.expand(times, *target.shape[1:])
    return target.repeat(times, 1, 1, 1)
