"""The global view: one extra view of the whole canvas, downscaled to fit the window (docs/fusion.md).

MultiDiffusion's F_i need not be crops (paper Eq. 3–4): any linear map of the canvas works, and the fused step is
still the least-squares solution. Here F_g = P, average pooling by k × k blocks, so the model sees the whole canvas at
once, downscaled to at most the window: structure larger than a window (a horizon, a slow gradient) gets one
prediction instead of many that agree only where they overlap.

What is fused. P x_t is not a sample at the step's noise level: pooling k² independent noises divides their standard
deviation by k. So the global view is denoised at its own, lower level σ_t / k (:meth:`GlobalStep.model_input`), using
all the information pooling keeps. Its prediction is compared with the crops' in x̂₀ space, where both
describe the same clean canvas (the crops' x̂₀ is affine in their fused output, so fusing x̂₀ is fusing ε;
docs/fusion.md):

    J = argmin_J  Σ_i ‖√W_i ⊗ (F_i J − x̂₀_i)‖²  +  λ Σ_b (P_b J − ĝ_b)²                                      (Eq. 4)

with ĝ the global view's x̂₀. The crops' term is diagonal (D = Σ_i F_i⁻¹ W_i, the usual denominator) and P_b averages
the cells of block b, so each block's normal equations are a diagonal plus a rank-one matrix, solved exactly
(Sherman–Morrison). With J₀ the usual fused x̂₀ (Eq. 5), m_b the block mean of the solution, A_b the block mean of J₀,
B_b that of 1/D, and λ = ω D̄ k² (ω the global view's weight, D̄ the mean of D over the canvas):

    m_b = (A_b + c_b ĝ_b) / (1 + c_b),   c_b = ω D̄ B_b,   J = J₀ − ω D̄ (m_b − ĝ_b) / D         (closed form)

So the block means move from the crops' toward the global view's by c / (1 + c) (a half at ω = 1 with even
coverage) and the detail inside each block stays the crops'. The scheduler then steps once, from the model output
that foresees J.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from multidiffusion.core.engine.foresee import foresee_x0, output_from_x0, step_level, x0_from_output
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError

DEFAULT_WEIGHT = 4.0
"""ω when none is given: on the exact oracles (docs/fusion.md) ω = 4 over all steps keeps 0.89–0.94 of σ² and 0.59–0.66
of the field's correlation at two windows (ω = 16 keeps more; a trained model's view of the whole canvas is coarser
and less sure than the oracle's, so the default leaves the crops a fifth of the say)."""


@dataclass(frozen=True)
class GlobalView:
    """Settings of the global view.

    Attributes:
        weight: ω > 0, the global view's say on each block mean against the crops' together: the block means move a
            fraction ω / (1 + ω) of the way to the global view's (with even coverage).
        until: Fraction of the steps, from the first, that use the global view, in (0, 1]. Early steps set the
            layout, but on the exact oracles the global view in every step keeps the most variance and long-range
            correlation (docs/fusion.md), hence the default 1.
        factor: The pooling factor k; None: the smallest that divides both canvas sides and fits the canvas into the
            window.
        condition: Index of the condition (prompt) the global view is denoised with.
    """

    weight: float = DEFAULT_WEIGHT
    until: float = 1.0
    factor: int | None = None
    condition: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight) and self.weight > 0):
            raise InvalidInputError(f"the global view's weight must be a number > 0, got {self.weight!r}")
        if not (isinstance(self.until, (int, float)) and 0 < self.until <= 1):
            raise InvalidInputError(
                f"the global view's 'until' must be a fraction of the steps in (0, 1], got {self.until!r}"
            )
        if self.factor is not None and (not isinstance(self.factor, int) or self.factor < 1):
            raise InvalidInputError(f"the global view's pooling factor must be an integer ≥ 1, got {self.factor!r}")

    def active(self, step_index: int, num_steps: int) -> bool:
        """Whether step ``step_index`` (0-based) of ``num_steps`` uses the global view."""
        return step_index < math.ceil(self.until * num_steps - 1e-9)


def pooling_factor(height: int, width: int, window: tuple[int, int], factor: int | None = None) -> int:
    """The pooling factor k of a ``height`` × ``width`` canvas (cells) for views of ``window`` (rows, cols).

    Raises:
        InvalidInputError: ``factor`` does not divide both sides or leaves the canvas larger than the window, or
            (``factor`` None) no factor up to the canvas size does both.
    """

    def fits(k: int) -> bool:
        return height % k == 0 and width % k == 0 and height // k <= window[0] and width // k <= window[1]

    if factor is not None:
        if not fits(factor):
            raise InvalidInputError(
                f"a global view pooled by {factor} must divide the {height}×{width}-cell canvas and fit the "
                f"{window[0]}×{window[1]}-cell window; leave the factor unset to choose one"
            )
        return factor
    for k in range(1, max(height, width) + 1):
        if fits(k):
            return k
    raise InvalidInputError(
        f"no pooling factor divides both sides of the {height}×{width}-cell canvas and fits it into the "
        f"{window[0]}×{window[1]}-cell window; for a global view pick a size whose sides share a factor"
    )


@dataclass(frozen=True)
class PooledLevel:
    """The noise level of the pooled canvas, in the scheduler's parameterisation.

    Attributes:
        kind: The scheduler's prediction type (``flow_prediction`` for flow matching).
        signal: The scale of x₀ in the model input: sqrt(ᾱ') (flow: 1 − σ').
        noise: The scale of the noise in it: sqrt(1 − ᾱ') (flow: σ').
        timestep: The (fractional) training timestep of that level, shape ().
    """

    kind: str
    signal: float
    noise: float
    timestep: Tensor

    def x0(self, output: Tensor, model_input: Tensor) -> Tensor:
        """x̂₀ from the model's output at this level (the formulas of :mod:`~multidiffusion.core.engine.foresee`)."""
        return x0_from_output(self.kind, self.signal, self.noise, output, model_input)


def timestep_for_sigma(alphas_cumprod: Tensor, sigma: float) -> Tensor:
    """The fractional training timestep whose σ = sqrt((1 − ᾱ) / ᾱ) is ``sigma``: log σ interpolated linearly between
    integer timesteps (diffusers' ``_sigma_to_t``), clamped to the trained range."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64).cpu()
    log_sigmas = 0.5 * torch.log((1.0 - abar) / abar)  # increasing in t
    target = torch.tensor(math.log(max(sigma, 1e-12)), dtype=torch.float64)
    last = log_sigmas.numel() - 1
    high = int(torch.searchsorted(log_sigmas, target).clamp(1, last))
    low = high - 1
    frac = float((target - log_sigmas[low]) / (log_sigmas[high] - log_sigmas[low]))
    return torch.tensor(min(max(low + frac, 0.0), float(last)))


class GlobalStep:
    """The global view's part of one step (the module docstring): its input, and the fused output with it.

    Args:
        settings: The :class:`GlobalView`.
        height: Canvas rows, cells.
        width: Canvas columns, cells.
        window: The crops' size (rows, cols), cells.
        denominator: Σ_i F_i⁻¹(W_i), (1, 1, H, W) float32 (the fusion plan's).
    """

    def __init__(
        self, settings: GlobalView, height: int, width: int, window: tuple[int, int], denominator: Tensor
    ) -> None:
        self.settings = settings
        self.factor = pooling_factor(height, width, window, settings.factor)
        self.view = View(0, 0, height, width)  # what the denoiser is told it sees: the whole canvas, pooled
        k = self.factor
        mean_cover = denominator.mean()
        self.scale = settings.weight * mean_cover / denominator  # ω D̄ / D, (1, 1, H, W)
        self.c = settings.weight * mean_cover * F.avg_pool2d(1.0 / denominator, k)  # c_b = ω D̄ B_b

    def model_input(self, x: Tensor, scheduler: Any, t: Tensor) -> tuple[Tensor, PooledLevel]:
        """The pooled canvas as a model input at its own, lower noise level, and that level.

        Pooling keeps x₀'s block means and divides the noise's standard deviation by k, so P x_t is a sample at
        σ' = σ_t / k (σ the noise-to-signal ratio; flow matching: x_t = (1 − σ) x₀ + σ ε gives σ' = (σ/k) / (1 − σ +
        σ/k)). Rescaled to that level's form it is the input the model expects at σ', with nothing thrown away.

        Returns:
            ((N, C, H/k, W/k) model input, its :class:`PooledLevel`).
        """
        k = self.factor
        pooled = F.avg_pool2d(x, k) if k > 1 else x
        kind, a, s, unit = step_level(scheduler, t)
        if kind == "flow_prediction":  # a = 1 − σ, s = σ
            scale = 1.0 / (1.0 - s + s / k)
            noise = s / k * scale
            steps = int(getattr(scheduler.config, "num_train_timesteps", 1000))
            return pooled * scale, PooledLevel(kind, 1.0 - noise, noise, torch.tensor(noise * steps))
        ratio = s / a / k  # σ' of the pooled canvas (σ = s / a, the noise-to-signal ratio)
        signal = 1.0 / math.sqrt(1.0 + ratio * ratio)
        level = PooledLevel(kind, signal, ratio * signal, timestep_for_sigma(scheduler.alphas_cumprod, ratio))
        return pooled * (unit / a * signal), level  # unit / a: the sample in "x₀ + σ ε" units

    def fuse(
        self,
        output: Tensor,
        x: Tensor,
        global_output: Tensor,
        global_input: Tensor,
        level: PooledLevel,
        scheduler: Any,
        t: Tensor,
    ) -> Tensor:
        """The model output that foresees the least-squares canvas J of the module docstring.

        Args:
            output: The crops' fused output O (N, C, H, W), Eq. 5.
            x: The sample the scheduler steps from (N, C, H, W).
            global_output: The global view's output (N, C, H/k, W/k).
            global_input: Its input, and ``level`` its noise level (what :meth:`model_input` gave).
        """
        x0 = foresee_x0(scheduler, output, x, t)  # J₀
        g = level.x0(global_output.to(x0), global_input.to(x0))  # ĝ
        k = self.factor
        a = F.avg_pool2d(x0, k) if k > 1 else x0
        m = (a + self.c * g) / (1.0 + self.c)
        shift = m - g if k == 1 else F.interpolate(m - g, scale_factor=k, mode="nearest")
        return output_from_x0(scheduler, x0 - self.scale * shift, x, t)
