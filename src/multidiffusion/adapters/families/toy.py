"""The Gaussian-field reference model (``--model toy``): an exact denoiser behind the ordinary adapter contract.

Pixels are the latent (identity codec, scale factor 1), prompts map to a mean colour, and the denoiser is
the exact posterior mean of :class:`~multidiffusion.core.oracle.field.GaussianField` under the noise
level of its training schedule (DDPM's linear betas, see ``SCHEDULER_CONFIG``). The pipeline, CLI and
schedulers run on it unchanged, so the conformance tests measure the method (seams, colour, guidance) and
not only code agreement, and users get an offline demo.

Model spec strings: ``toy`` or ``toy:key=value,…`` with keys

- ``ell``: length scale ℓ of the field in pixels (default 3), > 0;
- ``sigma``: pixel standard deviation σ in [−1, 1] image units (default 0.3), > 0;
- ``max_window``: largest view side in pixels the denoiser accepts (default 512, at most 2048);
- ``prediction``: the parameterisation of the model output, ``epsilon`` (default), ``sample`` or
  ``v_prediction``; it is written into the scheduler config, so every scheduler agrees with it;
- ``long`` and ``rho``: a second, longer length scale L in pixels mixed into each axis kernel with weight ρ in
  [0, 1) (default none; the harder oracle of docs/quality.md), e.g. ``toy:ell=8,long=64,rho=0.3``;
- ``ellx``: the column axis's own length scale in pixels (default ``ell``): an anisotropic field, whose views'
  orientation matters (docs/sphere.md), e.g. ``toy:ell=3,ellx=4.5``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from multidiffusion.adapters.families.family import Family
from multidiffusion.adapters.model.loaded import Differentiable, LoadedModel
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.oracle.field import PREDICTION_TYPES, GaussianField, pooled_field
from multidiffusion.core.oracle.prompts import prompt_mixtures

PREFIX = "toy"
NATIVE_WINDOW = 64  # px = latent cells: the default view size
DEFAULT_MAX_WINDOW = 512  # px
MAX_WINDOW_LIMIT = 2048  # px; the per-axis eigen-decomposition is O(n³)

# DDPM's linear schedule (Ho et al. 2020) with SD's DDIM fields; the denoiser reads ᾱ_t from the same
# numbers, so the noise level it assumes is the one the schedulers use. Not SD's scaled_linear schedule:
# its last step keeps sqrt(ᾱ_T) = 0.068 of the signal, so sampling from pure noise (as every pipeline does)
# would pull every colour 13 % toward grey (the non-zero terminal SNR flaw, Lin et al. 2024). Here
# sqrt(ᾱ_T) = 0.0064 and every diffusers scheduler still supports the schedule.
SCHEDULER_CONFIG: Mapping[str, Any] = {
    "_class_name": "DDIMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
}


@dataclass(frozen=True)
class ToySpec:
    """Parsed ``toy:…`` options (see the module docstring)."""

    ell: float = 3.0
    sigma: float = 0.3
    max_window: int = DEFAULT_MAX_WINDOW
    prediction: str = "epsilon"
    long: float | None = None
    rho: float = 0.0
    ellx: float | None = None


_KEYS: tuple[str, ...] = ("ell", "sigma", "max_window", "prediction", "long", "rho", "ellx")


def is_toy_source(source: str) -> bool:
    """Whether a model source names the Gaussian-field model: ``toy`` or ``toy:…``."""
    return source == PREFIX or source.startswith(PREFIX + ":")


FAMILY = Family(
    name="gaussian-field",
    title="the exact Gaussian-field model (toy, toy:ell=3,sigma=0.3; no weights)",
    module=__name__,
    claims=is_toy_source,  # a spec string, never a file: no pipelines, checkpoint types or control
)


def parse_spec(source: str) -> ToySpec:
    """``toy`` / ``toy:ell=3,sigma=0.3`` → :class:`ToySpec`.

    Raises:
        InvalidInputError: not a toy source, an empty or malformed option, an unknown or repeated key, a
            value that is not a number, ℓ or σ not finite and > 0, ``max_window`` not an integer in
            [1, 2048], an unknown prediction type.
    """
    if not is_toy_source(source):
        raise InvalidInputError(f"{source!r} is not a toy model spec; use 'toy' or 'toy:ell=3,sigma=0.3'")
    if source == PREFIX:
        return ToySpec()
    values: dict[str, Any] = {}
    for item in source[len(PREFIX) + 1 :].split(","):
        key, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not key or not raw:
            raise InvalidInputError(f"toy model option {item.strip()!r} is not key=value (e.g. toy:ell=3,sigma=0.3)")
        if key not in _KEYS:
            raise InvalidInputError(f"unknown toy model option {key!r}; choose from: {', '.join(_KEYS)}")
        if key in values:
            raise InvalidInputError(f"toy model option {key!r} is given twice")
        values[key] = _parse_value(key, raw)
    return ToySpec(**values)


def check_spec(source: str) -> None:
    """Cheap checks of a ``toy[:…]`` spec before loading (:func:`parse_spec`'s errors)."""
    parse_spec(source)


def spec_scheduler_config(source: str) -> dict[str, Any]:
    """The scheduler config of the model ``source`` names, without building its field."""
    return {**SCHEDULER_CONFIG, "prediction_type": parse_spec(source).prediction}


def _parse_value(key: str, raw: str) -> Any:
    if key == "prediction":
        if raw not in PREDICTION_TYPES:
            raise InvalidInputError(f"unknown toy prediction {raw!r}; choose one of: {', '.join(PREDICTION_TYPES)}")
        return raw
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInputError(f"toy model option {key} must be a number, got {raw!r}") from None
    if key == "max_window":
        if not value.is_integer() or not 1 <= value <= MAX_WINDOW_LIMIT:
            raise InvalidInputError(
                f"toy max_window must be a whole number of pixels in 1…{MAX_WINDOW_LIMIT}, got {raw}"
            )
        return int(value)
    if key == "rho":
        if not (math.isfinite(value) and 0 <= value < 1):
            raise InvalidInputError(f"toy model option rho must be in [0, 1), got {raw}")
        return value
    if not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"toy model option {key} must be a finite number > 0, got {raw}")
    return value


def alphas_cumprod(config: Mapping[str, Any]) -> Tensor:
    """ᾱ_t for t = 0 … T − 1 from a diffusers scheduler config, computed as diffusers does (float32).

    Supports ``linear`` and ``scaled_linear`` beta schedules (the schedules of SD-style configs).

    Returns:
        float64 tensor (T,) holding the float32 values diffusers' schedulers hold.
    """
    n = int(config["num_train_timesteps"])
    start, end = float(config["beta_start"]), float(config["beta_end"])
    schedule = config.get("beta_schedule", "linear")
    if schedule == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float32)
    elif schedule == "scaled_linear":
        betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float32) ** 2
    else:
        raise InvalidInputError(
            f"beta schedule {schedule!r} is not supported by the toy model; use 'linear' or 'scaled_linear'"
        )
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float64)


class NoiseLevels:
    """Maps a (possibly fractional) timestep t to (α, s) = (sqrt(ᾱ_t), sqrt(1 − ᾱ_t)).

    Integer t reads the training table. Fractional t (Karras-sigma and Euler-type schedulers) interpolates
    log σ linearly between the neighbouring integers, σ_t = sqrt((1 − ᾱ_t) / ᾱ_t): the inverse of diffusers'
    ``_sigma_to_t``, so a timestep made from a sigma gives that sigma back. (Euler without Karras sigmas
    interpolates σ itself linearly; between two integer timesteps the difference is below 1e-5 relative.)
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        abar = alphas_cumprod(config)
        self.num_train_timesteps = abar.shape[0]
        self.log_sigmas = 0.5 * torch.log((1.0 - abar) / abar)  # float64 (T,)

    def __call__(self, t: Tensor | float, rows: int) -> tuple[Tensor, Tensor]:
        """(α, s), each float64 of shape (rows,), for a scalar t or one t per row (rows,)."""
        tt = torch.as_tensor(t, dtype=torch.float64).detach().cpu().reshape(-1)
        if tt.numel() == 1:
            tt = tt.expand(rows)
        if tt.numel() != rows:
            raise ValueError(f"{tt.numel()} timesteps for {rows} rows")
        last = self.num_train_timesteps - 1
        if bool(((tt < -1e-3) | (tt > last + 1e-3)).any()):
            raise InvalidInputError(f"timestep out of the trained range 0…{last}: {tt.tolist()}")
        tt = tt.clamp(0, last)
        low = tt.floor().clamp(max=last - 1).long()
        frac = tt - low
        log_sigma = (1 - frac) * self.log_sigmas[low] + frac * self.log_sigmas[low + 1]
        sigma = log_sigma.exp()
        norm = torch.sqrt(1.0 + sigma * sigma)
        return 1.0 / norm, sigma / norm  # α = 1/sqrt(1+σ²), s = σ/sqrt(1+σ²)


class IdentityCodec:
    """Pixels are the latent: scale factor 1, 3 channels, images in [−1, 1] pass through unchanged."""

    scale_factor: int = 1
    latent_channels: int = 3

    def encode(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) in [−1, 1] → the same values, float32."""
        _check_rgb(images)
        return images.float().clone()

    def decode(self, latents: Tensor) -> Tensor:
        """(B, 3, h, w) → the same values as images in [−1, 1] (not clamped), float32."""
        _check_rgb(latents)
        return latents.float().clone()


def _identity(latents: Tensor) -> Tensor:
    """The identity codec's decode, differentiable: (B, 3, h, w) → the same values, float32."""
    return latents.float()


def _check_rgb(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise InvalidInputError(f"expected (B, 3, H, W), got shape {tuple(x.shape)}")


class GaussianFieldDenoiser:
    """The exact denoiser as a :class:`~multidiffusion.core.types.Denoiser`.

    Conditions are component means (N, K, 3) from :func:`prompt_mixtures` (or mean colours (N, 3)); a
    prompt with two different components ("red or blue") is the exact two-field mixture. The batch's
    conditions are
    concatenated in order (row i of x gets row i of the concatenation), as the SD UNet adapter does.

    Args:
        field: The Gaussian field (ℓ, σ).
        scheduler_config: Supplies the training schedule ᾱ_t and ``prediction_type``.
        max_window: Largest view side in pixels; a larger view raises :class:`InvalidInputError`.
    """

    def __init__(
        self, field: GaussianField, scheduler_config: Mapping[str, Any], max_window: int = DEFAULT_MAX_WINDOW
    ) -> None:
        self.field = field
        self.levels = NoiseLevels(scheduler_config)
        self.prediction_type = str(scheduler_config.get("prediction_type", "epsilon"))
        self.max_window = max_window
        self._pooled: dict[int, GaussianField] = {}

    def check_window(self, height: int, width: int) -> None:
        """Raise :class:`InvalidInputError` if a view of ``height`` × ``width`` px is larger than supported."""
        if max(height, width) > self.max_window:
            raise InvalidInputError(
                f"the toy model supports views up to {self.max_window} px a side, this one is {height}×{width} px; "
                f"use a smaller --window (or a lower canvas), or toy:max_window=N up to {MAX_WINDOW_LIMIT}"
            )

    def __call__(self, x: Tensor, t: Tensor, conds: Sequence[Tensor], views: Sequence[View] | None = None) -> Tensor:
        """x: (B, 3, h, w) model input x_t = α x₀ + s ε; t: the timestep; → model output (B, 3, h, w).

        Differentiable in x when grad is enabled and x requires grad (SyncDiffusion's gradient).
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise InvalidInputError(f"the toy denoiser takes (B, 3, h, w) latents, got shape {tuple(x.shape)}")
        self.check_window(x.shape[2], x.shape[3])
        means = torch.cat(list(conds)) if len(conds) > 1 else conds[0]
        if means.ndim == 2:
            means = means[:, None]
        if means.ndim != 3 or means.shape[0] != x.shape[0] or means.shape[2] != 3:
            raise InvalidInputError(
                f"{x.shape[0]} latents but mean colours of shape {tuple(means.shape)}; conditions must be (N, 3) or "
                "(N, K, 3), one row per canvas"
            )
        field = self._field_for(x, views)
        alpha, s = self.levels(t, x.shape[0])
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        alpha, s = alpha.to(x.device, dtype), s.to(x.device, dtype)
        means = means.to(x.device, dtype)
        if bool((means == means[:, :1]).all()):  # one colour per prompt: the single field, exactly
            return field.predict(x.to(dtype), means[:, 0], alpha, s, self.prediction_type)
        return field.predict_mixture(x.to(dtype), means, alpha, s, self.prediction_type)

    def _field_for(self, x: Tensor, views: Sequence[View] | None) -> GaussianField:
        """The field itself for crops; for a view larger than its latents by an integer factor k (the global view of
        docs/fusion.md: the canvas pooled k × k), the exact prior of the pooled field."""
        if not views or (views[0].height, views[0].width) == tuple(x.shape[2:]):
            return self.field
        factor = views[0].height // x.shape[2]
        if factor < 1 or (views[0].height, views[0].width) != (factor * x.shape[2], factor * x.shape[3]):
            raise ValueError(f"a view of {views[0].height}×{views[0].width} cells cannot give latents {tuple(x.shape)}")
        if factor not in self._pooled:
            self._pooled[factor] = pooled_field(self.field, factor)
        return self._pooled[factor]


def load(source: str, *, device: torch.device, dtype: torch.dtype | None = None) -> LoadedModel:
    """The Gaussian-field model for a spec string (``toy`` or ``toy:…``) as a :class:`LoadedModel`.

    Args:
        source: The spec; recorded as the model in the output's metadata.
        device: Where latents live.
        dtype: The dtype of the initial noise; default float32 (the model itself has no weights).
    """
    spec = parse_spec(source)
    field = GaussianField(spec.ell, spec.sigma, spec.long, spec.rho, length_scale_x=spec.ellx)
    config = {**SCHEDULER_CONFIG, "prediction_type": spec.prediction}
    denoiser = GaussianFieldDenoiser(field, config, spec.max_window)
    return LoadedModel(
        source=source,
        family=FAMILY.name,
        denoiser=denoiser,
        codec=IdentityCodec(),
        encode_prompts=lambda texts: prompt_mixtures(list(texts), device),
        scheduler_config=config,
        native_window=NATIVE_WINDOW,
        device=device,
        dtype=dtype or torch.float32,
        # float32 input, x₀ and ε outputs, eigen-coordinates and products: ~10 floats per channel.
        bytes_per_view_cell=3 * 4 * 10,
        # The field is the model itself, not a prior to steer: guidance g samples the field with mean g·μ
        # (docs/theory.md), so 1 shows the prompt's colour. Window / 4 keeps seams at ≥ 0.95 of the interior
        # correlation with uniform weights and a 1024-px panorama to seconds.
        default_guidance_scale=1.0,
        default_stride_px=NATIVE_WINDOW // 4,
        # The exact denoiser is differentiable as it is and the codec is the identity: nothing to checkpoint.
        differentiable=Differentiable(denoiser, _identity, lambda on: None),
        components={"field": field},
    )
