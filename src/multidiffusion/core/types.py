"""Contracts between the core and the adapters (docs/design.md §5). The core only calls these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor

from multidiffusion.core.engine.views import View


class Denoiser(Protocol):
    """A model evaluated on a batch of view latents.

    ``x`` has ``len(conds) · N`` rows: rows ``i·N … i·N + N − 1`` are the N canvases' crops for
    condition ``conds[i]`` (each condition itself holds N entries, one per canvas). ``views[i]`` is the
    canvas window those rows were cropped from (latent cells), for position-dependent conditioning (SDXL's
    crop coordinates, position ids, control-image crops); None when the caller has no canvas. Returns a
    tensor of the shape of ``x`` in the scheduler's parameterisation (ε, x₀, v or flow velocity).
    """

    def __call__(self, x: Tensor, t: Tensor, conds: Sequence[Any], views: Sequence[View] | None = None) -> Tensor: ...


class Codec(Protocol):
    """Maps images to latents and back (VAE, tiled VAE, identity for pixel-space models)."""

    scale_factor: int  # pixels per latent cell
    latent_channels: int

    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [−1, 1] → (B, latent_channels, H / scale_factor, W / scale_factor)."""
        ...

    def decode(self, latents: Tensor) -> Tensor:
        """(B, latent_channels, h, w) → (B, 3, h · scale_factor, w · scale_factor) in [−1, 1]."""
        ...


@dataclass(frozen=True)
class HookContext:
    """What a view hook knows about the batch it may change.

    Attributes:
        step_index: 0-based index into ``scheduler.timesteps``.
        timestep: The scheduler's timestep for this step.
        tasks: The (view, condition, weight) tasks of this batch, in batch order.
        task_indices: Their indices in the full task list (this step's list when the layout changes per step).
        num_canvases: N, the canvases sampled together (rows per task in the batch tensor).
        scheduler: The scheduler object (read it; do not step it).
        canvas: The whole canvas x_t, (N, C, H, W) float32, as the step began; read it (SyncDiffusion
            crops its anchor view from it), do not modify it.
    """

    step_index: int
    timestep: Tensor
    tasks: Sequence[ViewTask]
    task_indices: Sequence[int]
    num_canvases: int
    scheduler: Any
    canvas: Tensor


class ViewHook(Protocol):
    """Changes view latents x_t^{(i)} before they are denoised (bootstrapping, SyncDiffusion).

    Receives the batch (T·N, C, h, w) cropped from the canvas and returns a tensor of the same shape.
    The changed crops are fused with the task weights into the x_t that the scheduler steps from. A hook
    with nothing to do returns its input object itself: if no hook changed anything in a step, the
    scheduler steps from x_t exactly (no refusion rounding).
    """

    def __call__(self, x: Tensor, context: HookContext) -> Tensor: ...


class PostStepHook(Protocol):
    """Changes the whole canvas after a scheduler step (known regions put back).

    Called as ``hook(x, step_index, scheduler)`` with x_{t−1} (N, C, H, W) float32 just stepped to from
    ``scheduler.timesteps[step_index]``; returns the canvas to continue from, same shape.
    """

    def __call__(self, x: Tensor, step_index: int, scheduler: Any) -> Tensor: ...


@dataclass(frozen=True)
class ViewTask:
    """One (view, condition) pair of the fusion sum (paper Eq. 5).

    A view need not be a crop (Eq. 4 holds for any linear F_i): with ``index`` the task reads one canvas cell per
    pixel from anywhere on the canvas (a perspective view of the sphere, docs/sphere.md), and Eq. 5 for it is the same
    scatter-add the crops use.

    Attributes:
        view: The window F_i, latent cells. With ``index`` it only gives the view's size (h, w) and what the denoiser
            is told of its place (``View(0, 0, h, w)``: a whole image of its own).
        condition: Index into the ``conditions`` passed to :func:`~multidiffusion.core.engine.sampling.sample`.
        weight: W_i restricted to the view, float tensor (h, w) with values ≥ 0.
        index: None for a crop of ``view``; else F_i as a gather, long (h·w,): the flat canvas cell
            (row · W + col) each pixel reads, row-major. Cells may repeat.
        spread: None, or long (2, K): extra (canvas cell, pixel) pairs of F_i⁻¹ that paste the pixel's weighted output
            into cells the view does not read (cells no view reads take a read cell's value this way: Eq. 5 then
            gives them exactly that cell's value). Used only when ``index`` is given.
    """

    view: View
    condition: int
    weight: Tensor
    index: Tensor | None = None
    spread: Tensor | None = None


@dataclass(frozen=True)
class StepState:
    """Passed to the per-step callback after each scheduler step.

    Attributes:
        step_index: 0-based index of the step just taken.
        num_steps: ``len(scheduler.timesteps)``.
        timestep: The timestep just stepped from.
        latents: The canvas x_{t−1}, (N, C, H, W); do not modify.
        view_batch_size: Tasks per denoiser call now: the one asked for (None: all), or less after an
            out-of-memory back-off.
        denoised: The fused x̂₀ the step predicted (the scheduler's ``pred_original_sample``), (N, C, H, W), for
            previews; None for schedulers that do not report it (the multistep ones).
    """

    step_index: int
    num_steps: int
    timestep: Tensor
    latents: Tensor
    view_batch_size: int | None = None
    denoised: Tensor | None = None


@dataclass(frozen=True)
class SamplerState:
    """Where :func:`~multidiffusion.core.engine.sampling.sample` starts when it continues a run (a checkpoint).

    Attributes:
        step_index: Steps already taken: the loop starts at ``scheduler.timesteps[step_index]``.
        x: The canvas after those steps, (N, C, H, W). The scheduler and generator must be in the state they
            were in at that point (the caller restores them).
    """

    step_index: int
    x: Tensor
