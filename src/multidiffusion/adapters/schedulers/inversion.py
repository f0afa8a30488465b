"""Deterministic noise inversion x₀ → x_t, run through the engine's view fusion (tiled noise inversion).

The canvas is taken from the clean latent up to the noise level where denoising will start, K steps, each
one the engine's fuse-then-step with this module's :class:`InvertingScheduler`. Diffusion models (ε, v or x₀
prediction) step by DDIM's update run upward (Song et al. 2021, Eq. 12 with η = 0; the ODE of its §4.3),
flow-matching models (SD 3, Flux) by Euler on their flow ODE upward (x_{σ'} = x_σ + (σ' − σ) v). The model is
evaluated at the level the latent is at, so every parameterisation converts exactly.

Why not diffusers' ``DDIMInverseScheduler``: its grid is fixed (leading spacing from t = 0 with the training
table's ᾱ) and cannot end at the level another scheduler's truncated schedule starts from (Euler's σ
interpolates between table entries); and diffusers has no flow-matching inverse. The update itself is two
lines, written here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from multidiffusion.adapters.schedulers.names import is_flow_config
from multidiffusion.core.engine.noise import add_noise
from multidiffusion.core.errors import InvalidInputError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")


def _level(scheduler: Any, t: Tensor) -> tuple[float, float]:
    """(a, b) with x_t = a·x₀ + b·ε in ``scheduler``'s own space at ``t``, read from its noising rule."""
    one, zero = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    t = t.reshape(1).to(torch.float32) if t.is_floating_point() else t.reshape(1)
    a = float(add_noise(scheduler, one, zero, t).reshape(-1)[0])
    b = float(add_noise(scheduler, zero, one, t).reshape(-1)[0])
    return a, b


def is_flow(scheduler: Any) -> bool:
    """Whether ``scheduler`` runs flow matching, x_σ = (1 − σ) x₀ + σ ε: FlowMatch schedulers, and DPM-Solver++ or
    UniPC with flow sigmas (which noise with ``add_noise`` in that space, so the method alone does not tell)."""
    return is_flow_config(dict(scheduler.config))


class InvertingScheduler:
    """Scheduler-shaped inversion from the clean latent up to the level of ``target`` (see the module docstring).

    ``timesteps`` are the K model evaluations (ascending); ``step(output, t, x)`` moves x one level up. It has
    no ``scale_model_input``: the model sees x as is (the variance-preserving x_t for diffusion models, x_σ for
    flow models), which is what their networks take.

    Args:
        denoise_scheduler: The scheduler that will denoise, with ``set_timesteps`` (and ``set_begin_index``)
            already called: its noising rule at ``target`` fixes the last level.
        target: The timestep denoising starts at.
        steps: K ≥ 1 inversion steps.
        config: The model's scheduler config: ``num_train_timesteps``, the beta schedule and
            ``prediction_type``.
    """

    def __init__(self, denoise_scheduler: Any, target: Tensor, steps: int, config: Mapping[str, Any]) -> None:
        if steps < 1:
            raise InvalidInputError(f"inversion needs at least one step, got {steps}")
        self.flow = is_flow(denoise_scheduler)
        self.prediction_type = "flow" if self.flow else str(config.get("prediction_type", "epsilon"))
        if self.prediction_type not in PREDICTION_TYPES:
            raise InvalidInputError(
                f"cannot invert a model that predicts {self.prediction_type!r}; supported: "
                f"{', '.join(PREDICTION_TYPES)}"
            )
        a_end, b_end = _level(denoise_scheduler, torch.as_tensor(target))
        train = int(config.get("num_train_timesteps", 1000))
        if self.flow:  # levels σ_k from 0 to the target σ; the transformer's timestep is σ · T
            sigmas = torch.linspace(0.0, b_end, steps + 1, dtype=torch.float64)
            self.a, self.b = 1.0 - sigmas, sigmas
            self.timesteps = (sigmas[:-1] * train).to(torch.float32)
            self.out_scale = 1.0
        else:  # levels ᾱ(t_k) at integer t_k from 0 up, the last one the target's own ᾱ
            from diffusers import DDIMScheduler

            table = DDIMScheduler.from_config(dict(config)).alphas_cumprod.to(torch.float64)
            t_end = float(torch.as_tensor(target, dtype=torch.float64))
            grid = torch.linspace(0.0, t_end, steps + 1, dtype=torch.float64).round().long()
            abar = table[grid.clamp(0, len(table) - 1)]
            abar[-1] = a_end**2 / (a_end**2 + b_end**2)
            self.a, self.b = abar.sqrt(), (1.0 - abar).sqrt()
            self.timesteps = grid[:-1]
            # The denoising scheduler's space differs from the variance-preserving one by a scale (Euler-type:
            # x = x_VP·sqrt(1 + σ²)); the inverted latent is multiplied by it at the end (:meth:`to_scheduler`).
            self.out_scale = (a_end**2 + b_end**2) ** 0.5
        self.order = 1
        self._index = 0

    def step(self, model_output: Tensor, timestep: Any, sample: Tensor, **_: Any) -> SimpleNamespace:
        """x at level k → x at level k + 1 (``prev_sample``, named as diffusers names a step's result)."""
        k = self._index
        a, b = float(self.a[k]), float(self.b[k])
        a_next, b_next = float(self.a[k + 1]), float(self.b[k + 1])
        x, out = sample.double(), model_output.double()
        if self.prediction_type == "flow":  # v = ε − x₀
            x0, eps = x - b * out, x + a * out
        elif self.prediction_type == "epsilon":
            eps = out
            x0 = (x - b * eps) / a
        elif self.prediction_type == "v_prediction":  # v = a ε − b x₀ (Salimans & Ho 2022)
            x0, eps = a * x - b * out, b * x + a * out
        else:  # "sample": x₀ itself
            x0 = out
            eps = (x - a * x0) / b
        self._index += 1
        return SimpleNamespace(prev_sample=(a_next * x0 + b_next * eps).to(sample.dtype))

    def to_scheduler(self, x: Tensor) -> Tensor:
        """The inverted latent in the denoising scheduler's own space."""
        return x * self.out_scale
