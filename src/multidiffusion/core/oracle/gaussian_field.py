"""An exact reference model: a stationary Gaussian field and its exact denoiser (docs/design.md §9).

Data model. An image x₀ of h × w pixels and C channels is a Gaussian field: every channel c independently

    x₀[c] ~ N(μ_c · 1, Σ),   Σ = σ² (K_h ⊗ K_w),   K_n[i, j] = k(i − j) = exp(−(i − j)² / 2ℓ²)

so the pixel variance is σ² and the correlation of two pixels at distance d (along either axis) is
exp(−d² / 2ℓ²): exp(−1 / 2ℓ²) for neighbours. ``ℓ`` (the length scale) is in pixels; ``σ`` and ``μ`` in
image units ([−1, 1]). The mean colour μ comes from the prompt (:func:`prompt_colour`).

Forward process (the variance-preserving process of DDPM / Stable Diffusion):

    x_t = α x₀ + s ε,   α = sqrt(ᾱ_t),   s = sqrt(1 − ᾱ_t),   ε ~ N(0, I).                     (1)

Why the denoiser is exact. (x₀, x_t) are jointly Gaussian, so E[x₀ | x_t] is the linear regression

    E[x₀ | x_t] = μ + Cov(x₀, x_t) Var(x_t)⁻¹ (x_t − α μ) = μ + α Σ (α² Σ + s² I)⁻¹ (x_t − α μ),  (2)
    E[ε | x_t]  = Cov(ε, x_t) Var(x_t)⁻¹ (x_t − α μ)   = s (α² Σ + s² I)⁻¹ (x_t − α μ),          (3)

with no approximation: it is the minimiser of the training loss that a perfect network would reach.
Σ is separable, so its eigenvectors are the Kronecker products of the per-axis ones: with
K_h = U_h diag(a) U_hᵀ and K_w = U_w diag(b) U_wᵀ, Σ = (U_h ⊗ U_w) diag(σ² a_i b_j) (U_h ⊗ U_w)ᵀ. In that
basis (2) and (3) are diagonal: for z = U_hᵀ (x_t − α μ) U_w (an h × w matrix per channel) and
λ_ij = σ² a_i b_j,

    U_hᵀ (x̂₀ − μ) U_w = α λ / (α² λ + s²) ⊙ z,      U_hᵀ ε̂ U_w = s / (α² λ + s²) ⊙ z,               (4)

so a 64 × 64 window costs four 64 × 64 matrix products per channel, and no (hw × hw) matrix is ever
formed. Both (4) are evaluated directly (not ε̂ from x̂₀), which stays finite as s → 0. The only
approximations left are floating point and the clamp of the per-axis eigenvalues at 0 (the SE kernel
matrix is positive semi-definite; ``eigh`` may return tiny negative values).

A long-range component (the harder oracle of docs/quality.md): each axis kernel may mix a second, longer length
scale L with weight ρ, k(d) = (1 − ρ) exp(−d² / 2ℓ²) + ρ exp(−d² / 2L²). The field stays stationary and
separable (Σ = σ² K_h ⊗ K_w with the mixed K), so every formula above holds unchanged and stays exact; only the
per-axis eigen-decomposition differs. With ℓ near the window and L several windows, views must agree over distances
no single view sees, which a field of short ℓ never asks of them.

This module is plain PyTorch (no diffusers): the adapter :mod:`multidiffusion.adapters.families.toy` supplies ᾱ_t
from a scheduler config and wraps it as a Denoiser.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "sample", "v_prediction")


def _rgb(r: float, g: float, b: float) -> tuple[float, float, float]:
    """8-bit sRGB → [−1, 1] (the codec's image range)."""
    return (r / 127.5 - 1.0, g / 127.5 - 1.0, b / 127.5 - 1.0)


# Prompt vocabulary: word → mean colour in [−1, 1]. Dark and light colours stay a little inside the
# range so that a field of σ = 0.3 around them is not mostly clipped by the image conversion.
VOCABULARY: Mapping[str, tuple[float, float, float]] = {
    # scenes
    "sky": _rgb(135, 190, 235),
    "cloud": _rgb(220, 225, 235),
    "sea": _rgb(20, 90, 150),
    "ocean": _rgb(20, 90, 150),
    "lake": _rgb(40, 110, 160),
    "water": _rgb(40, 110, 170),
    "grass": _rgb(90, 160, 60),
    "meadow": _rgb(110, 170, 70),
    "forest": _rgb(35, 90, 45),
    "sand": _rgb(215, 190, 140),
    "beach": _rgb(215, 190, 140),
    "desert": _rgb(220, 180, 120),
    "snow": _rgb(240, 242, 248),
    "ice": _rgb(200, 225, 240),
    "mountain": _rgb(115, 110, 120),
    "rock": _rgb(110, 105, 100),
    "sunset": _rgb(245, 130, 70),
    "sunrise": _rgb(250, 170, 90),
    "night": _rgb(20, 25, 60),
    "fire": _rgb(230, 90, 25),
    "lava": _rgb(200, 50, 20),
    # colours
    "red": _rgb(200, 35, 35),
    "green": _rgb(45, 160, 65),
    "blue": _rgb(40, 70, 200),
    "yellow": _rgb(235, 210, 50),
    "orange": _rgb(240, 140, 30),
    "purple": _rgb(120, 50, 160),
    "pink": _rgb(240, 150, 180),
    "brown": _rgb(120, 80, 45),
    "white": _rgb(240, 240, 240),
    "black": _rgb(15, 15, 15),
    "grey": _rgb(127.5, 127.5, 127.5),
    "gray": _rgb(127.5, 127.5, 127.5),
}
NEUTRAL: tuple[float, float, float] = (0.0, 0.0, 0.0)  # neutral grey, also the unconditional mean

_WORD = re.compile(r"[a-z]+")


def prompt_words(prompt: str) -> list[str]:
    """The vocabulary words of ``prompt``, in order (lower-cased; a plural ``…s`` counts as its singular)."""
    words = []
    for token in _WORD.findall(prompt.lower()):
        if token in VOCABULARY:
            words.append(token)
        elif token.endswith("s") and token[:-1] in VOCABULARY:
            words.append(token[:-1])
    return words


def prompt_colour(prompt: str) -> tuple[float, float, float]:
    """Mean RGB colour in [−1, 1] that ``prompt`` asks for.

    The average of the colours of its vocabulary words (repeats count again); unknown words are ignored.
    No known word (the empty prompt included) gives neutral grey, 0: the empty prompt is the
    unconditional model, so classifier-free guidance pushes away from grey.
    """
    words = prompt_words(prompt)
    if not words:
        return NEUTRAL
    return tuple(sum(VOCABULARY[w][c] for w in words) / len(words) for c in range(3))  # type: ignore[return-value]


def prompt_colours(prompts: Sequence[str], device: torch.device | str = "cpu") -> Tensor:
    """Mean colours of N prompts: float32 tensor (N, 3) in [−1, 1]."""
    return torch.tensor([prompt_colour(p) for p in prompts], dtype=torch.float32, device=device).reshape(-1, 3)


MAX_ALTERNATIVES = 2
_OR = re.compile(r"\bor\b")


def prompt_alternatives(prompt: str) -> tuple[tuple[float, float, float], ...]:
    """The colours a prompt means *either* of: its parts split at the word "or", each by :func:`prompt_colour`.

    "red or blue" is a mixture of a red and a blue field with equal odds (each image is one or the other;
    docs/design.md §9's coherence oracle); a prompt without "or" has one alternative.

    Raises:
        InvalidInputError: more than :data:`MAX_ALTERNATIVES` alternatives.
    """
    parts = _OR.split(prompt.lower())
    if len(parts) > MAX_ALTERNATIVES:
        raise InvalidInputError(
            f"the toy model takes at most {MAX_ALTERNATIVES} alternatives ('red or blue'), got {len(parts)}: {prompt!r}"
        )
    return tuple(prompt_colour(part) for part in parts)


def prompt_mixtures(prompts: Sequence[str], device: torch.device | str = "cpu") -> Tensor:
    """Component means of N prompts: float32 (N, MAX_ALTERNATIVES, 3); one colour is repeated to fill."""
    rows = []
    for prompt in prompts:
        alternatives = prompt_alternatives(prompt)
        rows.append([alternatives[k % len(alternatives)] for k in range(MAX_ALTERNATIVES)])
    return torch.tensor(rows, dtype=torch.float32, device=device).reshape(-1, MAX_ALTERNATIVES, 3)


def se_kernel(n: int, length_scale: float, long_scale: float | None = None, long_weight: float = 0.0) -> Tensor:
    """Correlation matrix of n pixels on a line: K[i, j] = exp(−(i − j)² / 2ℓ²), mixed with weight ρ = ``long_weight``
    with exp(−(i − j)² / 2L²) for L = ``long_scale`` (the module docstring); float64 (n, n)."""
    i = torch.arange(n, dtype=torch.float64)
    d = i[:, None] - i[None, :]
    kernel = torch.exp(-(d * d) / (2.0 * length_scale * length_scale))
    if long_scale is not None and long_weight > 0:
        kernel = (1.0 - long_weight) * kernel + long_weight * torch.exp(-(d * d) / (2.0 * long_scale * long_scale))
    return kernel


@dataclass(frozen=True)
class AxisBasis:
    """Eigen-decomposition of one axis kernel K_n = U diag(eigenvalues) Uᵀ (float64, eigenvalues ≥ 0)."""

    vectors: Tensor  # (n, n), columns are eigenvectors
    eigenvalues: Tensor  # (n,)


@dataclass
class GaussianField:
    """The stationary Gaussian field of the module docstring, with its exact posterior.

    Attributes:
        length_scale: ℓ in pixels, > 0.
        sigma: Pixel standard deviation σ in image units, > 0.
        long_scale: L in pixels, a second, longer length scale per axis (None: none).
        long_weight: ρ in [0, 1), its weight in each axis kernel.

    Eigen-decompositions are cached per axis length (and device), so a window size costs one ``eigh`` per
    axis for the whole run.
    """

    length_scale: float = 3.0
    sigma: float = 0.3
    long_scale: float | None = None
    long_weight: float = 0.0
    _cache: dict[tuple[int, str], AxisBasis] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in (("ell", self.length_scale), ("sigma", self.sigma)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InvalidInputError(f"the Gaussian field's {name} must be a finite number > 0, got {value!r}")
        if self.long_scale is not None and not (math.isfinite(self.long_scale) and self.long_scale > 0):
            raise InvalidInputError(f"the Gaussian field's long length scale must be > 0, got {self.long_scale!r}")
        if not (math.isfinite(self.long_weight) and 0 <= self.long_weight < 1):
            raise InvalidInputError(f"the Gaussian field's long weight must be in [0, 1), got {self.long_weight!r}")

    @property
    def variance(self) -> float:
        """σ², the pixel variance of x₀."""
        return self.sigma**2

    def correlation(self, distance: float) -> float:
        """Correlation of two pixels ``distance`` px apart along one axis: exp(−d² / 2ℓ²), mixed with the long
        component where there is one."""
        short = math.exp(-(distance**2) / (2.0 * self.length_scale**2))
        if self.long_scale is None or self.long_weight <= 0:
            return short
        return (1 - self.long_weight) * short + self.long_weight * math.exp(-(distance**2) / (2.0 * self.long_scale**2))

    def _kernel(self, n: int) -> Tensor:
        return se_kernel(n, self.length_scale, self.long_scale, self.long_weight)

    def axis_basis(self, n: int, device: torch.device | str = "cpu") -> AxisBasis:
        """Cached eigen-decomposition of K_n (float64) on ``device``."""
        key = (n, str(torch.device(device)))
        basis = self._cache.get(key)
        if basis is None:
            values, vectors = torch.linalg.eigh(self._kernel(n))
            basis = AxisBasis(vectors.to(device), values.clamp(min=0.0).to(device))
            self._cache[key] = basis
        return basis

    def eigenbasis(self, h: int, w: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """(U_h (h, h), U_w (w, w), λ (h, w)) with Σ = (U_h ⊗ U_w) diag(vec λ) (U_h ⊗ U_w)ᵀ, float64."""
        bh, bw = self.axis_basis(h, device), self.axis_basis(w, device)
        return bh.vectors, bw.vectors, self.variance * bh.eigenvalues[:, None] * bw.eigenvalues[None, :]

    def covariance(self, h: int, w: int) -> Tensor:
        """Dense Σ = σ² (K_h ⊗ K_w) over row-major pixels: float64 (h·w, h·w). For tests; O((hw)²) memory."""
        return self.variance * torch.kron(self._kernel(h), self._kernel(w))

    def posterior(self, x_t: Tensor, mean: Tensor, alpha: Tensor | float, s: Tensor | float) -> tuple[Tensor, Tensor]:
        """Exact E[x₀ | x_t] and E[ε | x_t] for x_t = α x₀ + s ε (Eq. 2–4 of the module docstring).

        Args:
            x_t: Noisy images (B, C, h, w).
            mean: Mean colour μ per row and channel, (B, C) (or broadcastable, e.g. (C,)).
            alpha: sqrt(ᾱ_t), a float or a tensor of shape (B,) (one noise level per row).
            s: sqrt(1 − ᾱ_t), likewise; s > 0.

        Returns:
            (x̂₀, ε̂), each of the shape of ``x_t``, in ``x_t``'s dtype (float32 for half types).
        """
        return self.predict(x_t, mean, alpha, s, "sample"), self.predict(x_t, mean, alpha, s, "epsilon")

    def predict(
        self, x_t: Tensor, mean: Tensor, alpha: Tensor | float, s: Tensor | float, prediction_type: str = "epsilon"
    ) -> Tensor:
        """The exact model output in a scheduler's parameterisation; arguments as :meth:`posterior`.

        ``epsilon``: E[ε | x_t]; ``sample``: E[x₀ | x_t]; ``v_prediction``: E[v | x_t] with v = α ε − s x₀
        (Salimans & Ho 2022, §4). Each is the conditional mean of its target, because the targets are
        linear in (x₀, ε). Each costs one transform into the eigenbasis and one back: in eigen-coordinates
        z of x_t − α μ the outputs are c ⊙ z (plus a multiple of μ) with

            sample: μ + α λ / (α² λ + s²) z,   epsilon: s / (α² λ + s²) z,
            v_prediction: α s (1 − λ) / (α² λ + s²) z − s μ   (= α ε̂ − s x̂₀).

        Returns:
            Tensor of the shape of ``x_t``, in its dtype (float32 for half types).
        """
        if prediction_type not in PREDICTION_TYPES:
            raise InvalidInputError(
                f"unknown prediction type {prediction_type!r}; choose one of: {', '.join(PREDICTION_TYPES)}"
            )
        if x_t.ndim != 4:
            raise ValueError(f"x_t must be (B, C, h, w), got shape {tuple(x_t.shape)}")
        if torch.is_grad_enabled() and x_t.requires_grad:  # the fast path below writes in place
            mu = torch.as_tensor(mean, dtype=x_t.dtype, device=x_t.device).expand(x_t.shape[0], x_t.shape[1])
            return self.predict_mixture(x_t, mu[:, None], alpha, s, prediction_type)
        b, c, h, w = x_t.shape
        dtype = x_t.dtype if x_t.dtype in (torch.float32, torch.float64) else torch.float32
        u_h, u_w, lam = (m.to(dtype) for m in self.eigenbasis(h, w, x_t.device))
        a = torch.as_tensor(alpha, dtype=dtype, device=x_t.device).reshape(-1, 1, 1, 1)
        sd = torch.as_tensor(s, dtype=dtype, device=x_t.device).reshape(-1, 1, 1, 1)
        if a.shape[0] > 1 and bool((a == a[:1]).all()) and bool((sd == sd[:1]).all()):
            a, sd = a[:1], sd[:1]  # one noise level for the batch: coefficients of shape (1, 1, h, w)
        mu = torch.as_tensor(mean, dtype=dtype, device=x_t.device).expand(b, c)[:, :, None, None]
        # Two full-size buffers, reused (matmul(out=)) to keep the memory traffic low on large batches.
        y = (x_t.to(dtype) - a * mu).contiguous()  # x_t − α μ; contiguous: matmul(out=y) needs it
        tmp = torch.matmul(u_h.T, y)
        torch.matmul(tmp, u_w, out=y)  # z: eigen-coordinates of x_t − α μ, per channel
        denom = (a * a * lam + sd * sd).clamp_min(torch.finfo(dtype).tiny)  # eigenvalues of Var(x_t)
        if prediction_type == "sample":
            y.mul_(a * lam / denom)  # Eq. 2 in the eigenbasis
        elif prediction_type == "epsilon":
            y.mul_(sd / denom)  # Eq. 3 in the eigenbasis
        else:
            y.mul_(a * sd * (1 - lam) / denom)  # v = α ε̂ − s x̂₀
        torch.matmul(u_h, y, out=tmp)
        torch.matmul(tmp, u_w.T, out=y)  # back to pixels
        if prediction_type == "sample":
            y.add_(mu)
        elif prediction_type == "v_prediction":
            y.sub_(sd * mu)
        return y

    def predict_mixture(
        self, x_t: Tensor, means: Tensor, alpha: Tensor | float, s: Tensor | float, prediction_type: str = "epsilon"
    ) -> Tensor:
        """The exact model output when x₀ is a mixture of K fields with equal odds (docs/design.md §9).

        x₀ ~ (1/K) Σ_k N(μ_k 1, Σ): the prompt means one of K colours, and each image is one of them. Then
        E[target | x_t] = Σ_k r_k(x_t) E_k[target | x_t], where E_k is :meth:`predict` for mean μ_k and the
        responsibility r_k ∝ N(x_t; α μ_k, α² Σ + s² I). Every E_k is linear in μ_k with the same operator,
        so the sum is :meth:`predict` for the responsibility-weighted mean μ̄ = Σ_k r_k μ_k: one transform
        into the eigenbasis and one back for any K. With z the eigen-coordinates of x_t, d = α² λ + s² and
        e = (U_hᵀ 1)(U_wᵀ 1)ᵀ those of a constant image, log r_k = α Σ_c μ_kc ⟨z_c, e / d⟩
        − ½ α² Σ_c μ_kc² ⟨e, e / d⟩ + const (the quadratic form of −½ Σ (z − α μ_k e)² / d, its term
        common to all k dropped).

        Differentiable in ``x_t`` (not in the means or noise levels) with an analytic vector-Jacobian
        product (see :class:`_ExactPosterior`): the responsibilities are included, which is what lets a
        gradient move a view from one colour to another, and no autograd graph is recorded.

        Args:
            x_t: (B, C, h, w).
            means: (B, K, C) component means (equal rows give the single field, up to rounding).
            alpha, s: As :meth:`posterior`.
            prediction_type: As :meth:`predict`.

        Returns:
            (B, C, h, w) in ``x_t``'s dtype (float32 for half types).
        """
        if prediction_type not in PREDICTION_TYPES:
            raise InvalidInputError(
                f"unknown prediction type {prediction_type!r}; choose one of: {', '.join(PREDICTION_TYPES)}"
            )
        if x_t.ndim != 4:
            raise ValueError(f"x_t must be (B, C, h, w), got shape {tuple(x_t.shape)}")
        b, c = x_t.shape[:2]
        dtype = x_t.dtype if x_t.dtype in (torch.float32, torch.float64) else torch.float32
        mus = torch.as_tensor(means, dtype=dtype, device=x_t.device)
        if mus.ndim != 3 or mus.shape[0] != b or mus.shape[2] != c:
            raise ValueError(f"means must be (B, K, C) = ({b}, K, {c}), got {tuple(mus.shape)}")
        operator = _PosteriorOperator(self, x_t.shape[-2], x_t.shape[-1], alpha, s, prediction_type, dtype, x_t.device)
        if torch.is_grad_enabled() and x_t.requires_grad:
            return _ExactPosterior.apply(x_t.to(dtype), mus, operator)
        return operator.forward(x_t.to(dtype), mus)[0]

    def sample(
        self,
        num: int,
        h: int,
        w: int,
        mean: Tensor | Sequence[float] = NEUTRAL,
        *,
        generator: torch.Generator | None = None,
        channels: int = 3,
    ) -> Tensor:
        """Exact draws of x₀: μ + U_h (sqrt(λ) ⊙ ξ) U_wᵀ with ξ ~ N(0, I) from ``generator`` (on the CPU).

        Args:
            num: Number of images N.
            h: Rows, px.
            w: Columns, px.
            mean: Mean colour, (C,) or (N, C).
            generator: Source of the randomness (a CPU generator).
            channels: C.

        Returns:
            float32 tensor (N, C, h, w) on the CPU.
        """
        u_h, u_w, lam = self.eigenbasis(h, w)
        xi = torch.randn(num, channels, h, w, generator=generator, dtype=torch.float64)
        mu = torch.as_tensor(mean, dtype=torch.float64).expand(num, channels)[:, :, None, None]
        return (mu + u_h @ (lam.sqrt() * xi) @ u_w.T).float()


@dataclass
class PooledField(GaussianField):
    """The field seen zoomed out: each pixel the mean of a ``factor`` × ``factor`` block of a :class:`GaussianField`.

    Average pooling P is linear, so P x₀ is Gaussian too, with the separable covariance σ² (P K_{kh} Pᵀ) ⊗
    (P K_{kw} Pᵀ): the exact prior of a view of the whole canvas downscaled by ``factor`` (docs/fusion.md, the global
    view). Its denoiser is :meth:`GaussianField.predict` with that per-axis kernel, exact as before. The model
    this stands for knows how the world looks from further away, as a model trained on images at many scales does.

    Attributes:
        factor: The pooling factor k ≥ 1 (1: the field itself).
    """

    factor: int = 1

    def _kernel(self, n: int) -> Tensor:
        k = self.factor
        fine = se_kernel(n * k, self.length_scale, self.long_scale, self.long_weight)
        pool = torch.kron(torch.eye(n, dtype=torch.float64), torch.full((1, k), 1.0 / k, dtype=torch.float64))
        return pool @ fine @ pool.T  # (n, n): Cov of block means, over σ²


def pooled_field(field: GaussianField, factor: int) -> GaussianField:
    """``field`` seen through ``factor`` × ``factor`` average pooling (:class:`PooledField`; ``field`` for 1)."""
    if factor == 1:
        return field
    return PooledField(field.length_scale, field.sigma, field.long_scale, field.long_weight, factor=factor)


class _PosteriorOperator:
    """The per-call constants of the exact posterior mean in the eigenbasis (:meth:`GaussianField.predict_mixture`).

    For one window size and noise levels α, s (one per row, or one for the batch), the output for a mean μ is

        y = β μ + U_h (c ⊙ (U_hᵀ (x_t − α μ) U_w)) U_wᵀ

    with d = α² λ + s² and, per prediction type (:meth:`GaussianField.predict`), sample: c = α λ / d, β = 1;
    epsilon: c = s / d, β = 0; v_prediction: c = α s (1 − λ) / d, β = −s.
    The linear part A = (U_h ⊗ U_w) diag(c) (U_h ⊗ U_w)ᵀ is symmetric.
    """

    def __init__(
        self,
        field: GaussianField,
        h: int,
        w: int,
        alpha: Tensor | float,
        s: Tensor | float,
        prediction_type: str,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        u_h, u_w, lam = (m.to(dtype) for m in field.eigenbasis(h, w, device))
        a = torch.as_tensor(alpha, dtype=dtype, device=device).reshape(-1, 1, 1, 1)
        sd = torch.as_tensor(s, dtype=dtype, device=device).reshape(-1, 1, 1, 1)
        if a.shape[0] > 1 and bool((a == a[:1]).all()) and bool((sd == sd[:1]).all()):
            a, sd = a[:1], sd[:1]  # one noise level for the batch: coefficients of shape (1, 1, h, w)
        if a.shape != sd.shape:
            a, sd = torch.broadcast_tensors(a, sd)
        denom = (a * a * lam + sd * sd).clamp_min(torch.finfo(dtype).tiny)  # eigenvalues of Var(x_t)
        if prediction_type == "sample":
            self.coef, self.beta = a * lam / denom, torch.ones_like(a)  # Eq. 2 in the eigenbasis
        elif prediction_type == "epsilon":
            self.coef, self.beta = sd / denom, torch.zeros_like(a)  # Eq. 3 in the eigenbasis
        else:
            self.coef, self.beta = a * sd * (1 - lam) / denom, -sd  # v = α ε̂ − s x̂₀
        self.u_h, self.u_w, self.a = u_h, u_w, a
        self.ones = u_h.sum(0)[:, None] * u_w.sum(0)[None, :]  # e: eigen-coordinates of a constant 1, (h, w)
        self.ones_over_var = self.ones / denom  # e / d: Var(x_t)⁻¹ 1 in the eigenbasis

    def linear(self, y: Tensor) -> Tensor:
        """A y = U_h (c ⊙ (U_hᵀ y U_w)) U_wᵀ for y (B, C, h, w); out of place."""
        z = torch.matmul(self.u_h.T, y)
        z = torch.matmul(z, self.u_w)
        z.mul_(self.coef)
        return torch.matmul(torch.matmul(self.u_h, z), self.u_w.T)

    def forward(self, x: Tensor, mus: Tensor) -> tuple[Tensor, Tensor | None]:
        """(y, responsibilities r (B, K) or None when all K means are equal) for x (B, C, h, w), means (B, K, C)."""
        a = self.a.reshape(-1, 1)  # (B or 1, 1)
        z = torch.matmul(torch.matmul(self.u_h.T, x), self.u_w)  # eigen-coordinates of x_t
        if mus.shape[1] > 1 and not bool((mus == mus[:, :1]).all()):
            q = (z * self.ones_over_var).sum((-2, -1))  # ⟨z_c, e / d⟩, (B, C)
            energy = (self.ones * self.ones_over_var).sum((-2, -1)).reshape(-1, 1)  # ⟨e, e / d⟩, (B or 1, 1)
            log_r = a * (mus * q[:, None]).sum(-1) - 0.5 * a * a * energy * (mus * mus).sum(-1)  # (B, K)
            r: Tensor | None = torch.softmax(log_r, dim=1)
            mean = (r[:, :, None] * mus).sum(1)  # μ̄ = Σ_k r_k μ_k, (B, C)
        else:
            r, mean = None, mus[:, 0]
        mu = mean[:, :, None, None]
        z.sub_(self.a * mu * self.ones)  # eigen-coordinates of x_t − α μ̄
        z.mul_(self.coef)
        y = torch.matmul(torch.matmul(self.u_h, z), self.u_w.T)
        return y.add_(self.beta * mu), r


class _ExactPosterior(torch.autograd.Function):
    """y = Σ_k r_k(x) (β μ_k + A (x − α μ_k)) with its exact vector-Jacobian product.

    With g = ∂L/∂y, ∂L/∂x = A g + Σ_k (g · o_k) ∇r_k, and ∇r_k = r_k (∇ℓ_k − Σ_j r_j ∇ℓ_j) with
    ∇ℓ_k = −Var(x_t)⁻¹ (x − α μ_k) (ℓ_k the Gaussian log-likelihood). Σ_k r_k (g · o_k − ḡ) = 0 removes
    the x terms, leaving

        ∂L/∂x = A g + α Var(x_t)⁻¹ Σ_k w_k μ_k,   w_k = r_k (e_k − Σ_j r_j e_j),   e_k = Σ_c μ_kc (β G_c − α S_c)

    with G_c = Σ g_c and S_c = Σ (A g)_c over the pixels (g · o_k up to a term common to all k). Cost: one
    transform into the eigenbasis and one back; the saved state is r (B, K).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, mus: Tensor, operator: _PosteriorOperator) -> Tensor:
        y, r = operator.forward(x, mus)
        ctx.operator, ctx.r = operator, r
        ctx.save_for_backward(mus)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        op: _PosteriorOperator = ctx.operator
        (mus,) = ctx.saved_tensors
        grad = grad.to(op.coef.dtype)
        out = op.linear(grad)  # A g (A is symmetric)
        if ctx.r is not None:
            r, a = ctx.r, op.a.reshape(-1, 1)
            g_sum, ag_sum = grad.sum((-2, -1)), out.sum((-2, -1))  # G, S: (B, C)
            e = (mus * (op.beta.reshape(-1, 1) * g_sum - a * ag_sum)[:, None]).sum(-1)  # (B, K)
            w = r * (e - (r * e).sum(1, keepdim=True))
            pull = (w[:, :, None] * mus).sum(1)[:, :, None, None]  # Σ_k w_k μ_k, (B, C, 1, 1)
            var_inv_ones = torch.matmul(torch.matmul(op.u_h, op.ones_over_var), op.u_w.T)  # Var(x_t)⁻¹ 1
            out.add_(op.a * pull * var_inv_ones)
        return out, None, None


# Relative jitter of :func:`conditional`: δ σ² on the diagonal of Σ_kk. The squared-exponential kernel is
# numerically singular (the eigenvalues of K_32 at ℓ = 3 reach 2e-15, those of a 32 × 32 block their products),
# so the Cholesky factor of Σ_kk needs it. 1e-12 lies just above the float32 rounding of the known values (a
# variance of ~4e-15 σ²) and far below the noise left at any sampler's last step (ᾱ = 0.9999: ~1e-3 σ²).
CONDITIONAL_JITTER = 1e-12


@dataclass(frozen=True)
class Conditional:
    """The field given some of its pixels: the result of :func:`conditional`.

    Attributes:
        mean: (..., C, H, W) float64: the conditional mean on unknown pixels, the known values on known ones.
        variance: (H, W) float64: the conditional variance of each pixel (0 on known pixels); the same for every
            channel and every set of known values, since it depends on the mask alone.
        covariance: (U, U) float64: the conditional covariance of the unknown pixels, in ``unknown``'s order.
        unknown: (U,) int64: the row-major flat indices (row · W + column) of the unknown pixels.
    """

    mean: Tensor
    variance: Tensor
    covariance: Tensor
    unknown: Tensor


def conditional(
    field: GaussianField,
    known_values: Tensor,
    known_mask: Tensor,
    mean: Tensor | Sequence[float] | float = 0.0,
    *,
    jitter: float = CONDITIONAL_JITTER,
) -> Conditional:
    """The exact distribution of an H × W draw of ``field`` given its pixels where ``known_mask`` is set.

    Each channel independently, with k the known and u the unknown pixels (row-major), Σ = σ² (K_h ⊗ K_w):

        E[x_u | x_k]   = μ_u + Σ_uk Σ_kk⁻¹ (x_k − μ_k),
        Cov[x_u | x_k] = Σ_uu − Σ_uk Σ_kk⁻¹ Σ_ku,

    the Gaussian conditioning formulas. Σ_kk is factored once (Cholesky, float64) for every channel and every
    leading index of ``known_values``. The blocks are built from the per-axis kernels without forming the
    (hw × hw) Σ, but cost O(K³ + K²U + KU²) for K known and U unknown pixels: for small canvases (tests).

    Jitter: the squared-exponential kernel is numerically singular, so ``jitter`` · σ² is added to the diagonal
    of Σ_kk (see :data:`CONDITIONAL_JITTER`): the exact conditional given x_k observed with noise of that variance.
    Only the pixels next to the known region are determined by float64 arithmetic. Measured at ℓ = 3 beside a
    full-height 32-px block, between jitter 1e-14 and 1e-10 the mean 1, 2, 3 px out moves by 0.003, 0.02,
    0.08 σ (RMS) and the variance 1 px out from 5e-6 to 2e-5 σ²; farther out the exact answer extrapolates
    through directions of the field whose variance is below 1e-12 σ², far below anything a sampler resolves.

    Args:
        field: The field (ℓ, σ).
        known_values: (..., C, H, W) images; only the known pixels are read.
        known_mask: (H, W) bool (or 0 / 1) tensor, True = known; at least one pixel known.
        mean: μ, a float or per channel (C,) (or broadcastable to (..., C)).
        jitter: δ ≥ 0, relative to σ²; 0 only works where Σ_kk is numerically positive definite.

    Returns:
        A :class:`Conditional`.
    """
    if known_values.ndim < 3:
        raise ValueError(f"known_values must be (..., C, H, W), got shape {tuple(known_values.shape)}")
    h, w = known_values.shape[-2:]
    if tuple(known_mask.shape) != (h, w):
        raise ValueError(f"known_mask must be (H, W) = ({h}, {w}), got shape {tuple(known_mask.shape)}")
    if not (math.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"jitter must be a finite number >= 0, got {jitter!r}")
    flat = known_mask.reshape(-1).cpu()
    if flat.dtype != torch.bool:
        if not bool(((flat == 0) | (flat == 1)).all()):
            raise ValueError("known_mask must be boolean or hold only 0 and 1")
        flat = flat != 0
    known = flat.nonzero().squeeze(1)
    unknown = (~flat).nonzero().squeeze(1)
    if known.numel() == 0:
        raise ValueError("known_mask has no known pixel")
    k_h, k_w = se_kernel(h, field.length_scale), se_kernel(w, field.length_scale)

    def block(a: Tensor, b: Tensor) -> Tensor:  # Σ[a][:, b] = σ² K_h[rows] ⊙ K_w[cols]
        return field.variance * k_h[a[:, None] // w, b[None, :] // w] * k_w[a[:, None] % w, b[None, :] % w]

    s_kk = block(known, known) + jitter * field.variance * torch.eye(known.numel(), dtype=torch.float64)
    chol, info = torch.linalg.cholesky_ex(s_kk)
    if int(info):
        raise ValueError(f"Σ_kk is not numerically positive definite with jitter {jitter:g}; use a larger jitter")
    s_ku = block(known, unknown)
    gain = torch.cholesky_solve(s_ku, chol)  # Σ_kk⁻¹ Σ_ku, (K, U)
    cov = block(unknown, unknown) - s_ku.T @ gain
    cov = 0.5 * (cov + cov.T)
    x = known_values.detach().to("cpu", torch.float64)
    lead = x.shape[:-2]
    mu = torch.as_tensor(mean, dtype=torch.float64).expand(lead)[..., None]  # (..., C, 1)
    x_flat = x.reshape(*lead, h * w)
    out = x_flat.clone()
    out[..., unknown] = mu + (x_flat[..., known] - mu) @ gain
    variance = torch.zeros(h * w, dtype=torch.float64)
    variance[unknown] = cov.diagonal().clamp_min(0.0)
    return Conditional(out.reshape(x.shape), variance.reshape(h, w), cov, unknown)


def neighbour_correlation(images: Tensor, mean: Tensor | float = 0.0, lag: int = 1) -> Tensor:
    """Horizontal correlation at ``lag`` columns per column pair, pooled over images, channels and rows.

    With the known mean μ removed, r_c = Σ x_c x_{c+lag} / sqrt(Σ x_c² · Σ x_{c+lag}²) for columns c, c + lag.

    Args:
        images: (N, C, H, W).
        mean: μ, a float or (N, C).
        lag: Columns between the pair (1: neighbours), 1 ≤ lag < W.

    Returns:
        float64 tensor (W − lag,): r_c for c = 0 … W − 1 − lag.
    """
    x = _centred(images, mean)
    left, right = x[..., :-lag], x[..., lag:]
    return (left * right).sum((0, 1, 2)) / ((left * left).sum((0, 1, 2)) * (right * right).sum((0, 1, 2))).sqrt()


def column_variance(images: Tensor, mean: Tensor | float = 0.0) -> Tensor:
    """Variance about the known mean per column, pooled over images, channels and rows: float64 (W,)."""
    x = _centred(images, mean)
    return (x * x).mean((0, 1, 2))


def _centred(images: Tensor, mean: Tensor | float) -> Tensor:
    x = images.to(torch.float64)
    mu = torch.as_tensor(mean, dtype=torch.float64, device=x.device)
    if mu.ndim == 2:
        mu = mu[:, :, None, None]
    return x - mu


def expected_crop_colour_variance(field: GaussianField, height: int, width: int, crop: int) -> float:
    """E[unbiased variance over crops of the crop mean], per channel, for exact draws of ``field``.

    The crops are the non-overlapping ``crop`` × ``crop`` grid of
    :func:`multidiffusion.core.metrics.coherence.crop_grid`
    on a ``height`` × ``width`` image. The crop means c are linear in x₀, so Cov(c) = σ² (R ⊗ C) with R and
    C the block-averaged row and column kernels, and E[s²] = (tr Cov − 1ᵀ Cov 1 / M) / (M − 1). This is
    the "colour spread"² a panorama has when it is one coherent sample of the field.
    """
    rows, cols = height // crop, width // crop
    m = rows * cols
    if m < 2:
        raise ValueError("need at least two crops")

    def blocks(n: int) -> Tensor:
        k = se_kernel(n * crop, field.length_scale).reshape(n, crop, n, crop)
        return k.sum((1, 3)) / crop**2  # (n, n): mean kernel between blocks

    cov = field.variance * torch.kron(blocks(rows), blocks(cols))
    return float((cov.trace() - cov.sum() / m) / (m - 1))
