"""The foreseen clean latent x̂₀ of a view: the scheduler's own x₀ formula (SyncDiffusion Eq. 10).

Every diffusers scheduler describes the current noise level by one number. Variance-preserving ones
(DDIM, PNDM, DPM-Solver, UniPC, LCM, DDPM) keep x_t = sqrt(ᾱ) x₀ + sqrt(1 − ᾱ) ε; variance-exploding ones
(Euler, Euler ancestral, Heun: ``init_noise_sigma`` > 1) keep x = x₀ + σ ε and feed the model
x / sqrt(σ² + 1), which is the variance-preserving sample for ᾱ = 1 / (σ² + 1). So, with ᾱ read from the
scheduler and the model output o in its parameterisation,

    epsilon:       x̂₀ = (x_vp − sqrt(1 − ᾱ) o) / sqrt(ᾱ)     (DDPM Eq. 15; SyncDiffusion Eq. 10)
    v_prediction:  x̂₀ = sqrt(ᾱ) x_vp − sqrt(1 − ᾱ) o         (Salimans & Ho 2022, §4)
    sample:        x̂₀ = o

with x_vp the variance-preserving sample. Flow-matching schedulers (SD3, Flux: ``FlowMatchEulerDiscreteScheduler``
and DPM-Solver/UniPC with flow sigmas) keep x_t = (1 − σ) x₀ + σ ε and the model predicts the velocity
v = ε − x₀ (Lipman et al. 2023; Esser et al. 2024, Eq. 1–2), so

    flow:          x̂₀ = x_t − σ o

Differentiable in both x and o (the sync gradient flows
through it). :func:`output_from_x0` inverts each formula (the model output that foresees a given x̂₀); both read the
step's level with :func:`step_level` and apply the formulas with :func:`x0_from_output` and :func:`output_from_x0_at`,
which the global view uses at its own level. Plain PyTorch; the scheduler object is only read.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError


def _sigma_index(scheduler: Any, timestep: Tensor) -> int | None:
    """The index of the current step into ``scheduler.sigmas``, or None if the scheduler has none."""
    if getattr(scheduler, "sigmas", None) is None:
        return None
    index = getattr(scheduler, "step_index", None)
    if index is None and hasattr(scheduler, "index_for_timestep"):
        index = scheduler.index_for_timestep(timestep)
    return None if index is None else int(index)


def alpha_bar(scheduler: Any, timestep: Tensor) -> tuple[float, bool]:
    """(ᾱ of the current step, whether the scheduler's samples are variance-exploding).

    Uses the scheduler's own σ where it keeps one (Euler, Heun, DPM-Solver, UniPC: ᾱ = 1 / (1 + σ²), which
    also covers Karras sigmas), else ``alphas_cumprod[t]`` (DDIM, PNDM, LCM, DDPM).
    """
    exploding = float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0
    index = _sigma_index(scheduler, timestep)
    if index is not None:
        sigma = float(scheduler.sigmas[index])
        return 1.0 / (1.0 + sigma * sigma), exploding
    t = int(torch.as_tensor(timestep).reshape(-1)[0].round())
    return float(scheduler.alphas_cumprod[t]), exploding


def step_level(scheduler: Any, timestep: Tensor) -> tuple[str, float, float, float]:
    """The current step's noise level in the model's terms: (prediction kind, a, s, unit).

    The model's input is ``unit`` × the sample the scheduler steps from, and it holds a x₀ + s ε:
    flow matching ``flow_prediction`` with a = 1 − σ, s = σ; otherwise the variance-preserving a = sqrt(ᾱ),
    s = sqrt(1 − ᾱ), with unit = sqrt(ᾱ) for variance-exploding samples (x = x₀ + σ ε) and 1 for the others.
    """
    kind = getattr(scheduler.config, "prediction_type", None) or "flow_prediction"  # FlowMatch* names none
    if kind == "flow_prediction":
        index = _sigma_index(scheduler, timestep)
        if index is None:
            raise InvalidInputError(
                f"cannot read the noise level: {type(scheduler).__name__} keeps no sigmas; a flow-matching model "
                "needs a scheduler with sigmas (FlowMatchEulerDiscreteScheduler and the others of its family)"
            )
        sigma = float(scheduler.sigmas[index])
        return kind, 1.0 - sigma, sigma, 1.0
    abar, exploding = alpha_bar(scheduler, timestep)
    a = abar**0.5
    return kind, a, (1.0 - abar) ** 0.5, a if exploding else 1.0


def x0_from_output(kind: str, a: float, s: float, output: Tensor, model_input: Tensor) -> Tensor:
    """x̂₀ from a model output ``o`` and its input x = a x₀ + s ε (the formulas of the module docstring)."""
    if kind == "flow_prediction":
        return model_input - s * output  # x_t − σ v
    if kind == "epsilon":
        return (model_input - s * output) / a
    if kind == "v_prediction":
        return a * model_input - s * output
    if kind == "sample":
        return output
    raise InvalidInputError(
        f"cannot foresee x0 for prediction type {kind!r}; supported: epsilon, v_prediction, sample, flow_prediction"
    )


def output_from_x0_at(kind: str, a: float, s: float, x0: Tensor, model_input: Tensor) -> Tensor:
    """The model output whose :func:`x0_from_output` is ``x0``: each formula solved for o."""
    if kind in ("flow_prediction", "epsilon"):
        return (model_input - (1.0 if kind == "flow_prediction" else a) * x0) / s
    if kind == "v_prediction":
        return (a * model_input - x0) / s
    if kind == "sample":
        return x0
    raise InvalidInputError(
        f"cannot invert x0 for prediction type {kind!r}; supported: epsilon, v_prediction, sample, flow_prediction"
    )


def foresee_x0(scheduler: Any, model_output: Tensor, sample: Tensor, timestep: Tensor) -> Tensor:
    """x̂₀ from the model output at the current step (see the module docstring).

    Args:
        scheduler: The run's scheduler, before its ``step`` for ``timestep`` (read only).
        model_output: (B, C, h, w), guided, in the scheduler's ``prediction_type``.
        sample: (B, C, h, w), the latents the scheduler steps from (x_t; unscaled for Euler-type).
        timestep: The current timestep.

    Returns:
        (B, C, h, w) x̂₀ in latent units, differentiable in both inputs.
    """
    kind, a, s, unit = step_level(scheduler, timestep)
    return x0_from_output(kind, a, s, model_output, sample * unit)


def output_from_x0(scheduler: Any, x0: Tensor, sample: Tensor, timestep: Tensor) -> Tensor:
    """The model output o whose :func:`foresee_x0` is ``x0``: each formula of the module docstring solved for o.

    x̂₀ is affine in o with a per-step scalar slope, so fusing x̂₀ over views and converting back with this function is
    the same as fusing o (docs/fusion.md). Arguments as :func:`foresee_x0`; ``x0`` (B, C, h, w) in latent units.
    """
    kind, a, s, unit = step_level(scheduler, timestep)
    return output_from_x0_at(kind, a, s, x0, sample * unit)
