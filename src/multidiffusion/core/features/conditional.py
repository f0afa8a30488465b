"""Conditional samplers for known regions: how the rest of the canvas is drawn given the kept pixels.

Three samplers ride the one loop (docs/design.md §3) as one post-step hook, :class:`ConditionedKnown`, around the
blend of :class:`~multidiffusion.core.features.known.KnownRegion`:

- ``blend``: the known region put back after every step (blended latent diffusion); the hook is the plain
  :class:`~multidiffusion.core.features.known.KnownRegion`, so the run is bit-identical to one without this module.
- ``repaint``: RePaint's resampling (Lugmayr et al., CVPR 2022, Alg. 1 with jump length 1): after the blended step
  to x_{t−1}, the canvas is noised back to t with fresh noise,

      x_t = (a_t / a_{t−1}) x_{t−1} + sqrt(s_t² − (a_t / a_{t−1})² s_{t−1}²) z,       z ~ N(0, I),

  (the forward kernel q(x_t | x_{t−1}) of a sample a x₀ + s ε: DDPM Eq. 2 for a = sqrt(ᾱ), s = sqrt(1 − ᾱ); the
  variance-exploding a = 1, s = σ; flow matching a = 1 − σ, s = σ) and the step is taken again, ``passes`` times
  in all. The repeats let the unknown part and the known one harmonise: in the limit each level is sampled from
  the conditional given the known part instead of the one-pass blend.
- ``ddnm``: DDNM's range–null-space projection of x̂₀ (Wang et al., ICLR 2023, Eq. 13 with A a pixel selection:
  x̂₀ ← m ⊙ x₀ᵏⁿᵒʷⁿ + (1 − m) ⊙ x̂₀) before every step, through the scheduler's own x̂₀ formula
  (:mod:`~multidiffusion.core.engine.foresee`); with ``passes`` > 1 it is DDNM's time travel (DDNM⁺, §3.3, l = 1).
  For a pixel mask A†A is the mask itself, so the projection touches only the known cells: with a hard mask and a
  deterministic single-step scheduler (DDIM η = 0) the known cells then follow x_T's own noise, which is the blend's
  rule, and the unknown cells are not moved at all (docs/image_inputs.md measures it).

Resampling redoes a step from restored scheduler attributes, so it refuses schedulers that keep more than their
step index between steps (multistep DPM-Solver++, UniPC, PNDM, DEIS: their stored model outputs would mix two
trajectories; second-order Heun and KDPM2: each step is two calls): :func:`check_resampling`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.engine.foresee import foresee_x0, output_from_x0
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.known import KnownRegion

SAMPLERS: tuple[str, ...] = ("blend", "repaint", "ddnm", "tweedie")
"""Names of the conditional samplers (see the module docstring)."""

SPANS: tuple[str, ...] = ("first", "last")

MAX_ITERATIONS = 64  # conjugate-gradient iterations of the Tweedie projection: each is one more model pass
DEFAULT_ITERATIONS = 8
FD_STEP = 0.05  # the finite-difference probe's RMS relative to the noise level s (exact on the affine toy model)
MIN_SNR = 0.01  # a² / s² below which the projection is skipped: C = (s²/a²)(I − s ∂ε̂/∂x) cancels in float32
MAX_PASSES = 100  # RePaint's paper uses 10 (20 for its ablations); beyond 100 a run costs 100× a plain one
DEFAULT_REPAINT_PASSES = 10  # RePaint's r = 10

_MULTISTEP_STATE = ("model_outputs", "ets", "prev_derivative", "timestep_list")


@dataclass(frozen=True)
class ConditionalSampler:
    """How a run with a known region draws the rest: the one settings object the API, the command line and the recipe
    share. Every field is checked here, once.

    Attributes:
        name: One of :data:`SAMPLERS`.
        passes: U, the times each resampled step is taken (RePaint's r): 1 for ``blend``; ≥ 2 for ``repaint``
            (None there: 10, the paper's); ≥ 1 for ``ddnm`` (> 1: its time travel). Each pass costs one step's model
            calls.
        fraction: Resample (and, for ``tweedie``, project) only a ``fraction`` of the run's steps, in (0, 1] (the
            cheaper setting); 1: every step.
        span: Which steps ``fraction`` takes: ``first`` (the composition is set early) or ``last`` (the detail next
            to the border is set late; on the exact model this is where it counts, docs/image_inputs.md).
        iterations: ``tweedie`` only: conjugate-gradient iterations per step, 1…64 (each one more pass of the step's
            model calls).
    """

    name: str = "blend"
    passes: int | None = None
    fraction: float = 1.0
    span: str = "first"
    iterations: int = DEFAULT_ITERATIONS

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise InvalidInputError(f"unknown conditional sampler {self.name!r}; choose one of: {', '.join(SAMPLERS)}")
        passes = self.passes
        if passes is None:
            object.__setattr__(self, "passes", DEFAULT_REPAINT_PASSES if self.name == "repaint" else 1)
            passes = self.passes
        if isinstance(passes, bool) or not isinstance(passes, int) or not 1 <= passes <= MAX_PASSES:
            raise InvalidInputError(f"passes must be a whole number per step in 1…{MAX_PASSES}, got {passes!r}")
        if self.name == "blend" and passes != 1:
            raise InvalidInputError(f"blend takes each step once (passes 1), got {passes}; resampling is 'repaint'")
        if self.name == "tweedie" and passes != 1:
            raise InvalidInputError(f"tweedie projects x̂₀ once per step (passes 1), got {passes}; ddnm resamples")
        if self.name == "repaint" and passes < 2:
            raise InvalidInputError(f"repaint needs passes ≥ 2 per step, got {passes}; 1 pass is 'blend'")
        frac = self.fraction
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not (math.isfinite(frac) and 0 < frac <= 1):
            raise InvalidInputError(f"the resampled fraction of the steps must be in (0, 1], got {frac!r}")
        object.__setattr__(self, "fraction", float(frac))
        if self.span not in SPANS:
            raise InvalidInputError(f"unknown span {self.span!r} of the steps; choose one of: {', '.join(SPANS)}")
        k = self.iterations
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_ITERATIONS:
            raise InvalidInputError(f"iterations must be a whole number in 1…{MAX_ITERATIONS}, got {k!r}")

    @property
    def passes_any(self) -> bool:
        """Whether any step is taken more than once."""
        return int(self.passes or 1) > 1

    def record(self) -> dict[str, Any]:
        """What a recipe records (``conditional``, ``passes``, ``fraction``; ``iterations`` for ``tweedie``)."""
        record: dict[str, Any] = {"conditional": self.name, "passes": int(self.passes or 1)}
        record["fraction"] = self.fraction
        if self.span != "first":
            record["span"] = self.span
        if self.name == "tweedie":
            record["iterations"] = self.iterations
        return record

    def active(self, step: int, num_steps: int) -> bool:
        """Whether the run's step ``step`` (0 = its first) of ``num_steps`` is one ``fraction`` and ``span`` take:
        the first or the last ceil(fraction × num_steps)."""
        count = math.ceil(self.fraction * num_steps - 1e-9)
        return step < count if self.span == "first" else step >= num_steps - count


def check_resampling(scheduler: Any) -> None:
    """Refuse, in one line, a scheduler that resampling cannot redo a step of (see the module docstring)."""
    name = type(scheduler).__name__
    if int(getattr(scheduler, "order", 1)) != 1:
        raise InvalidInputError(
            f"resampling cannot run with {name}: a second-order step is two model calls with state between them; "
            "use a single-step scheduler (ddim, euler, euler_a, ddpm, lcm, or the flow-matching euler)"
        )
    state = [k for k in _MULTISTEP_STATE if k in vars(scheduler)]
    if state:
        raise InvalidInputError(
            f"resampling cannot run with {name}: it keeps past model outputs ({state[0]}), which a step taken again "
            "from re-noised latents would mix with another trajectory; use a single-step scheduler (ddim, euler, "
            "euler_a, ddpm, lcm, or the flow-matching euler)"
        )


def _level(scheduler: Any, index: int) -> tuple[float, float]:
    """(a, s) of the sample the scheduler steps from at timestep index ``index`` (``len(timesteps)``: after the last
    step), x = a x₀ + s ε. From the scheduler's σ table where it keeps one: flow matching a = 1 − σ, s = σ;
    variance-exploding (``init_noise_sigma`` > 1) a = 1, s = σ; variance-preserving (DPM-Solver, UniPC)
    ᾱ = 1 / (1 + σ²).
    Else a = sqrt(ᾱ), s = sqrt(1 − ᾱ) from ``alphas_cumprod``, with the scheduler's own previous timestep after the
    last one (DDIM's ``final_alpha_cumprod``)."""
    flow = getattr(scheduler.config, "prediction_type", None) in (None, "flow_prediction")
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and index < len(sigmas):
        sigma = float(sigmas[index])
        if flow:
            return 1.0 - sigma, sigma
        if float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0:
            return 1.0, sigma
        abar = 1.0 / (1.0 + sigma * sigma)
        return abar**0.5, (1.0 - abar) ** 0.5
    timesteps = scheduler.timesteps
    if index < len(timesteps):
        t = int(timesteps[index])
    else:  # the level a last step lands on: the scheduler's own previous timestep of its last one
        last = timesteps[-1]
        previous = getattr(scheduler, "previous_timestep", None)
        if previous is not None:
            t = int(previous(last))
        else:
            t = int(last) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    if t < 0:
        abar = float(getattr(scheduler, "final_alpha_cumprod", torch.tensor(1.0)))
    else:
        abar = float(scheduler.alphas_cumprod[t])
    return abar**0.5, (1.0 - abar) ** 0.5


@dataclass(frozen=True)
class ConditionedKnown:
    """The post-step hook of a known region under a conditional sampler (the module docstring). Called as the blend;
    the loop also calls :meth:`condition_output` (ddnm), :meth:`passes` and :meth:`jump_back` (resampling).

    Attributes:
        region: The blend: known latents, mask and the canvas's initial noise.
        settings: The sampler.
        first_step: The index of the run's first step (an image start at strength < 1 skips the earlier ones); the
            resampled fraction counts the steps from there.
    """

    region: KnownRegion
    settings: ConditionalSampler
    first_step: int = 0

    def __call__(self, x: Tensor, step_index: int, scheduler: Any) -> Tensor:
        """x_{t−1} → the canvas with the known region put back (the blend)."""
        return self.region(x, step_index, scheduler)

    def passes(self, step_index: int, num_steps: int) -> int:
        """How many times step ``step_index`` of ``num_steps`` is taken."""
        if not self.settings.passes_any:
            return 1
        active = self.settings.active(step_index - self.first_step, num_steps - self.first_step)
        return int(self.settings.passes or 1) if active else 1

    def jump_back(self, x: Tensor, step_index: int, scheduler: Any, generator: torch.Generator | None) -> Tensor:
        """x_{t−1} (after step ``step_index``) → x_t drawn from the forward kernel q(x_t | x_{t−1}) (the module
        docstring). x: (N, C, H, W); the fresh noise comes from ``generator``."""
        a_t, s_t = _level(scheduler, step_index)
        a_prev, s_prev = _level(scheduler, step_index + 1)
        ratio = a_t / a_prev
        extra = max(s_t * s_t - ratio * ratio * s_prev * s_prev, 0.0) ** 0.5
        device = generator.device if generator is not None else x.device
        z = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32).to(x.device)
        return ratio * x + extra * z

    def condition_output(
        self, output: Tensor, x: Tensor, step_index: int, t: Tensor, scheduler: Any, redo: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """The fused model output whose x̂₀ is conditioned on the known latents (ddnm, tweedie; else ``output``).

        Args:
            output: O of Eq. 5, (N, C, H, W), in the scheduler's prediction type.
            x: X, the canvas the scheduler steps from (N, C, H, W).
            step_index: The step's index into the scheduler's timesteps.
            t: The current timestep.
            scheduler: The run's scheduler, before its step (read only).
            redo: This step's O at another canvas (one pass of the step's model calls).
        """
        name = self.settings.name
        if name not in ("ddnm", "tweedie"):
            return output
        x0 = foresee_x0(scheduler, output, x, t)
        m = self.region.mask.to(x0.dtype)
        known = self.region.latents.to(x0.dtype).expand_as(x0)
        if name == "tweedie" and self.settings.active(
            step_index - self.first_step, len(scheduler.timesteps) - self.first_step
        ):
            x0 = x0 + self._tweedie_shift(x0, known, x, step_index, t, scheduler, redo)
        projected = m * known + (1 - m) * x0  # DDNM: A†y + (I − A†A) x̂₀
        return output_from_x0(scheduler, projected, x, t).to(output.dtype)

    def _tweedie_shift(
        self,
        x0: Tensor,
        known: Tensor,
        x: Tensor,
        step_index: int,
        t: Tensor,
        scheduler: Any,
        redo: Callable[[Tensor], Tensor],
    ) -> Tensor:
        """E[x₀ | x_t, y] − E[x₀ | x_t] = C Aᵀ (A C Aᵀ)⁻¹ (y − A x̂₀), C = (s² / a) ∂x̂₀/∂x_t (Tweedie), solved by
        conjugate gradients on the known cells with finite-difference Jacobian–vector products. (N, C, H, W)."""
        a, s = _level(scheduler, step_index)
        if a * a < MIN_SNR * s * s:  # near pure noise x_t says little, and C is a float32 cancellation
            return torch.zeros_like(x0)
        support = (self.region.mask > 0).to(x0.dtype).expand_as(x0)
        dims = tuple(range(1, x0.ndim))

        def dot(u: Tensor, v: Tensor) -> Tensor:
            return (u * v).sum(dims, keepdim=True)

        def cov(v: Tensor) -> Tensor:  # C v, one pass of model calls; per canvas, the probe scaled to FD_STEP
            scale = FD_STEP * s / v.pow(2).mean(dims, keepdim=True).sqrt().clamp_min(1e-300)
            probe = x + (scale * v).to(x.dtype)
            jv = (foresee_x0(scheduler, redo(probe), probe, t) - x0).double() / scale
            return (s * s / a) * jv

        # The recurrences in float64: CG on an ill-conditioned covariance loses orthogonality fast in float32.
        residual = (support * (known - x0)).double()  # y − A x̂₀, on the canvas (0 off the support)
        direction = residual
        shift = torch.zeros_like(residual)
        rr = dot(residual, residual)
        for _ in range(self.settings.iterations):
            if float(rr.max()) == 0.0:
                break
            c_dir = cov(direction)
            q = support * c_dir  # A C Aᵀ p
            curvature = dot(direction, q)
            if not bool(torch.isfinite(c_dir).all()) or float(curvature.min()) <= 0:
                break  # C is a covariance: a direction without positive curvature is float error; stop there
            alpha = rr / curvature
            shift = shift + alpha * c_dir  # Σ α_k C Aᵀ p_k = C Aᵀ v: no extra pass for the result
            residual = residual - alpha * q
            rr_next = dot(residual, residual)
            direction = residual + (rr_next / rr.clamp_min(1e-30)) * direction
            rr = rr_next
        return shift.to(x0.dtype)


def known_hook(region: KnownRegion, settings: ConditionalSampler | None, scheduler: Any, first_step: int = 0) -> Any:
    """The post-step hook of ``region`` under ``settings``: the plain blend (bit-identical to a run without
    conditional samplers) for ``blend`` or None, else :class:`ConditionedKnown`, after checking that ``scheduler`` can
    run it (:func:`check_resampling` when any step is resampled)."""
    if settings is None or settings.name == "blend":
        return region
    if settings.passes_any:
        check_resampling(scheduler)

    return ConditionedKnown(region, settings, first_step)
