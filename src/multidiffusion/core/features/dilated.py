"""DemoFusion's dilated sampling (Du et al., CVPR 2024, §3.3) as views of the one engine (docs/highres.md).

A canvas k times the native size is split into k² strided sub-latents, x[a::k, b::k] for a, b in 0…k−1: each is a
native-size picture of the whole canvas, so the model sees the global layout at the scale it was trained on (where the
pooled global view, :mod:`~multidiffusion.core.features.global_view`, sees a squashed one). A strided sub-latent is a
linear map F of the canvas with one canvas cell per view cell, so Eq. 5 fuses it exactly as it fuses crops: each is a
:class:`~multidiffusion.core.types.ViewTask` with an index map, and nothing in the loop changes (docs/design.md §9).

Weights. DemoFusion blends the two paths after each step, x ← (1 − c₂) x_local + c₂ x_dilated (its Eq. 8), with
c₂ = ((1 + cos π(T − t)/T) / 2)^γ₂ falling from 1 to 0 over the process. Eq. 5 gives the same blend of the model outputs
(and, for the schedulers whose step is linear in them, of the steps) when each dilated pixel weighs
D(c) · c₂ / (1 − c₂) over its sub-layout's coverage, D(c) the crops' total weight at its cell c: the share of the
dilated views at every cell is then exactly c₂. The weights change with t, so the tasks are a
:class:`~multidiffusion.core.engine.tasks.TaskSchedule` whose key is c₂ rounded to 1/32 (a few fusion plans per run).

Aliasing. A strided sub-latent keeps every k-th cell, so detail finer than k cells folds into the coarse picture.
DemoFusion low-passes the canvas with a Gaussian before it samples, σ decaying with the same cosine, and restores the
canvas's mean and standard deviation (the blur would otherwise lower the noise level the model is told). Here
:class:`GaussianPrefilter` is a view hook that replaces only the dilated views' crops by crops of that filtered canvas;
the crops' own inputs are untouched.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from multidiffusion.core.engine.foresee import step_level
from multidiffusion.core.engine.fusion import FusionPlan
from multidiffusion.core.engine.tasks import TaskSchedule
from multidiffusion.core.engine.views import View, layout_views
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.types import HookContext, ViewTask

SHARE_STEPS = 32  # c₂ is rounded to 1/32: at most 33 distinct layouts (fusion plans) in a run
MAX_SHARE = 0.99  # the crops keep at least 1 % of every cell: c₂ / (1 − c₂) stays finite


def cosine_factor(t: Tensor | float, num_train_timesteps: int) -> float:
    """DemoFusion's (1 + cos(π (T − t) / T)) / 2: 1 at the noisiest training step t = T, 0 at t = 0."""
    t = float(t)
    return 0.5 * (1.0 + math.cos(math.pi * (num_train_timesteps - t) / num_train_timesteps))


def dilation_factor(height: int, width: int, window: tuple[int, int], scale: int) -> int:
    """The stride k of the dilated views on a ``height`` × ``width``-cell canvas: the largest k ≤ ``scale`` that divides
    both sides and leaves each sub-latent at least one ``window`` (rows, cols) in both; 1 means none fits."""
    for k in range(max(1, scale), 0, -1):
        if height % k == 0 and width % k == 0 and height // k >= window[0] and width // k >= window[1]:
            return k
    return 1


def dilated_tasks(
    height: int,
    width: int,
    window: tuple[int, int],
    stride: tuple[int, int],
    factor: int,
    crop_cover: Tensor,
    share: float,
    condition: int = 0,
) -> list[ViewTask]:
    """The k² strided sub-latents laid with windows, as index-map tasks whose share of every cell is ``share`` (c₂).

    Args:
        height: Canvas rows, cells, a multiple of ``factor``.
        width: Canvas columns, cells, likewise.
        window: View size (rows, cols), cells: each sub-latent (height / k × width / k) is covered by windows of it
            (one when the sub-latent is the window, DemoFusion's case).
        stride: Stride of those windows (rows, cols), cells.
        factor: k ≥ 2.
        crop_cover: D, the crops' total weight per cell, (H, W) float32.
        share: c₂ in (0, 1).
        condition: The condition every dilated view is denoised with.

    Returns:
        k² · (windows per sub-latent) tasks; views are ``View(0, 0, *window)`` (a picture of its own).
    """
    k = factor
    if k < 2 or height % k or width % k:
        raise InvalidInputError(f"dilated views need a factor ≥ 2 dividing the {height}×{width}-cell canvas, got {k}")
    if not 0 < share < 1:
        raise InvalidInputError(f"the dilated views' share must be in (0, 1), got {share!r}")
    sub_h, sub_w = height // k, width // k
    views = layout_views(sub_h, sub_w, window, stride)
    if any((v.height, v.width) != tuple(window) for v in views):
        raise InvalidInputError(
            f"a {sub_h}×{sub_w}-cell sub-latent is smaller than the {window[0]}×{window[1]}-cell window; use a smaller "
            "dilation factor"
        )
    sub_cover = torch.zeros(sub_h, sub_w)
    for v in views:
        sub_cover[v.top : v.top + v.height, v.left : v.left + v.width] += 1.0
    ratio = share / (1.0 - share)
    rows, cols = torch.arange(window[0]), torch.arange(window[1])
    tasks = []
    for a in range(k):
        for b in range(k):
            for v in views:
                r = a + k * (v.top + rows)  # canvas rows of the view's pixels (sub-latent row × k + a)
                c = b + k * (v.left + cols)
                cover = crop_cover[r[:, None], c[None, :]].float()
                weight = cover * ratio / sub_cover[v.top + rows][:, v.left + cols]
                index = (r[:, None] * width + c[None, :]).reshape(-1)
                view = DilatedView(0, 0, window[0], window[1], row=a, col=b, factor=k, sub_top=v.top, sub_left=v.left)
                tasks.append(ViewTask(view, condition, weight, index=index))
    return tasks


def dilated_schedule(
    crops: Sequence[ViewTask],
    height: int,
    width: int,
    window: tuple[int, int],
    stride: tuple[int, int],
    factor: int,
    timesteps: Sequence[Any],
    num_train_timesteps: int,
    share: float,
    decay: float,
) -> TaskSchedule:
    """The crops plus the dilated views of each step, their share c₂(t) = ``share`` · cosine_factor(t)^``decay``
    (rounded to 1/:data:`SHARE_STEPS`; a step whose share rounds to 0 runs the crops alone).

    Args:
        crops: The crop tasks (a fixed layout).
        timesteps: The scheduler's timesteps (step i denoises at ``timesteps[i]``).
        Others: as :func:`dilated_tasks`.
    """
    cover = FusionPlan(crops, height, width, "cpu").denominator[0, 0]
    condition = crops[0].condition

    def key(step_index: int) -> Hashable:
        if step_index >= len(timesteps):
            return 0
        c2 = min(MAX_SHARE, share * cosine_factor(timesteps[step_index], num_train_timesteps) ** decay)
        return round(c2 * SHARE_STEPS)

    def build(k: Hashable) -> Sequence[ViewTask]:
        if not k:
            return crops
        c2 = min(MAX_SHARE, int(k) / SHARE_STEPS)  # type: ignore[call-overload]
        return [*crops, *dilated_tasks(height, width, window, stride, factor, cover, c2, condition)]

    return TaskSchedule(key=key, build=build)


def gaussian_kernel(sigma: float, device: torch.device | str = "cpu") -> Tensor:
    """The normalised 1-D Gaussian of σ cells, radius ⌈3σ⌉ (at least 1), float32."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma * sigma))
    return kernel / kernel.sum()


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian low-pass of (N, C, H, W) with σ in cells (:func:`gaussian_kernel`, reflected edges);
    σ ≤ 0: x itself."""
    if sigma <= 0:
        return x
    kernel = gaussian_kernel(sigma, x.device).to(x.dtype)
    radius = kernel.numel() // 2
    c = x.shape[1]
    mode = "reflect" if min(x.shape[2:]) > radius else "replicate"
    y = F.pad(x, (radius, radius, 0, 0), mode=mode)
    y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode=mode)
    return F.conv2d(y, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@dataclass(frozen=True)
class DilatedView(View):
    """What the denoiser is told a dilated view is: a picture of its own, ``View(0, 0, h, w)`` to any adapter that reads
    a view's place, plus where it samples the canvas: rows ``row + factor · (sub_top + i)``, columns ``col + factor ·
    (sub_left + j)`` (so :class:`GaussianPrefilter` can hand the model the filtered canvas there)."""

    row: int = 0
    col: int = 0
    factor: int = 1
    sub_top: int = 0
    sub_left: int = 0

    def sample(self, canvas: Tensor) -> Tensor:
        """The view's cells of ``canvas`` (N, C, H, W): (N, C, height, width)."""
        k, r0, c0 = self.factor, self.row + self.factor * self.sub_top, self.col + self.factor * self.sub_left
        return canvas[:, :, r0 : r0 + k * self.height : k, c0 : c0 + k * self.width : k]


class GaussianPrefilter:
    """DemoFusion's pre-filter: the model sees each dilated view sampled from the canvas low-passed; the scheduler
    still steps from the canvas itself.

    It is a view hook of the one loop (its ``begin_step`` filters the canvas once per step; as a hook it changes no
    crop, so the step is taken from x_t exactly) and a wrapper of the denoiser (:meth:`wrap`), which replaces the
    input rows of the :class:`DilatedView` views by the filtered canvas's. DemoFusion instead steps the dilated path
    from the filtered latent, renormalised to the canvas's standard deviation: on the exact oracle that compounded
    step after step (the variance tripled at 4×; docs/highres.md), while filtering only what the model sees keeps the
    detail of the canvas in the step (x̂₀ = (x_t − s ε̂) / a takes x_t's own detail).

    σ at step t is ``sigma`` · cosine_factor(t)^``decay`` cells (DemoFusion's c₃ decay). The filter also lowers the
    noise the model is told is there (white noise keeps (Σκ²)² of its variance under the 2-D kernel κ ⊗ κ); that
    deficit is left as it is: filling it by scaling the filtered canvas adds smooth, signal-like variance the model
    then keeps (measured: the variance rose 5×).

    Args:
        sigma: σ at the noisiest level, canvas cells; 0: no filter (the model sees the plain strided cells).
        decay: The exponent of its cosine decay.
        num_train_timesteps: T of the scheduler's training schedule.
    """

    def __init__(self, sigma: float, decay: float, num_train_timesteps: int) -> None:
        self.sigma, self.decay, self.num_train_timesteps = sigma, decay, num_train_timesteps
        self._filtered: Tensor | None = None
        self._unit = 1.0

    def begin_step(self, x: Tensor, step_index: int, t: Tensor, scheduler: Any, shard: Any = None) -> None:
        """Filter the canvas x_t of this step (called by the loop at the start of every step)."""
        sigma = self.sigma * cosine_factor(t, self.num_train_timesteps) ** self.decay
        self._filtered = gaussian_blur(x, sigma) if sigma > 0 else None
        self._unit = step_level(scheduler, t)[3]  # model input = unit × sample (Euler-type schedulers scale it)

    def __call__(self, x: Tensor, context: HookContext) -> Tensor:
        return x  # the crops and the step's x_t stay as they are

    def wrap(self, denoiser: Any) -> Any:
        """``denoiser`` with the dilated views' input rows taken from the filtered canvas."""

        def filtered_denoiser(
            x: Tensor, t: Tensor, conds: Sequence[Any], views: Sequence[View] | None = None
        ) -> Tensor:
            canvas = self._filtered
            if canvas is None or not views or not any(isinstance(v, DilatedView) for v in views):
                return denoiser(x, t, conds, views=views)
            n = x.shape[0] // len(views)
            x = x.clone()
            for i, view in enumerate(views):
                if isinstance(view, DilatedView) and n == canvas.shape[0]:
                    x[i * n : (i + 1) * n] = (view.sample(canvas) * self._unit).to(x.dtype)
            return denoiser(x, t, conds, views=views)

        return filtered_denoiser
