"""An exact reference model: a stationary Gaussian field and its exact denoiser (docs/design.md §9).

Data model. An image x₀ of h × w pixels and C channels is a Gaussian field: every channel c independently

    x₀[c] ~ N(μ_c · 1, Σ),   Σ = σ² (K_h ⊗ K_w),   K_n[i, j] = k(i − j) = exp(−(i − j)² / 2ℓ²)

so the pixel variance is σ² and the correlation of two pixels at distance d (along either axis) is
exp(−d² / 2ℓ²): exp(−1 / 2ℓ²) for neighbours. ``ℓ`` (the length scale) is in pixels; ``σ`` and ``μ`` in
image units ([−1, 1]). The mean colour μ comes from the prompt
(:func:`~multidiffusion.core.oracle.prompts.prompt_colour`).

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

An anisotropic field (docs/sphere.md): the column axis may have its own length scale ℓx (``length_scale_x``), so
Σ = σ² (K_h(ℓ) ⊗ K_w(ℓx)). The field stays separable and every formula above holds with one kernel per axis; a view
turned by 90° then sees a different field, which is what makes a view's "up" matter. None (the default) is the
isotropic field, bit-identical to the field without the option.

This module is plain PyTorch (no diffusers): the adapter :mod:`multidiffusion.adapters.families.toy` supplies ᾱ_t
from a scheduler config and wraps it as a Denoiser. The mixture posterior's constants and gradient are in
:mod:`~multidiffusion.core.oracle.posterior`; the field given some of its pixels in
:mod:`~multidiffusion.core.oracle.conditional`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.oracle.posterior import ExactPosterior, PosteriorOperator
from multidiffusion.core.oracle.prompts import NEUTRAL

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "sample", "v_prediction")


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


class _Scratch:
    """One reusable buffer for the exact denoiser's intermediates, lent to one caller at a time.

    On a CPU a fresh batch-sized buffer comes from the kernel page by page on every call; the sampling loop calls
    with batches of one size every step, so the field keeps one. A second thread meanwhile gets a fresh one, and
    other devices (whose allocators cache already) never hold one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer: Tensor | None = None

    def __deepcopy__(self, memo: dict[int, object]) -> _Scratch:
        return _Scratch()

    def __reduce__(self) -> tuple[type[_Scratch], tuple[()]]:
        return _Scratch, ()

    @contextmanager
    def like(self, x: Tensor) -> Iterator[Tensor]:
        """A contiguous tensor of ``x``'s shape, dtype and device, its contents undefined."""
        if x.device.type != "cpu" or not self._lock.acquire(blocking=False):
            yield torch.empty_like(x, memory_format=torch.contiguous_format)
            return
        try:
            buffer = self._buffer
            if buffer is None or buffer.dtype != x.dtype or buffer.numel() < x.numel():
                buffer = self._buffer = torch.empty(x.numel(), dtype=x.dtype)
            yield buffer[: x.numel()].view(x.shape)
        finally:
            self._lock.release()


@dataclass
class GaussianField:
    """The stationary Gaussian field of the module docstring, with its exact posterior.

    Attributes:
        length_scale: ℓ in pixels, > 0.
        sigma: Pixel standard deviation σ in image units, > 0.
        long_scale: L in pixels, a second, longer length scale per axis (None: none).
        long_weight: ρ in [0, 1), its weight in each axis kernel.
        length_scale_x: ℓx in pixels, the column (horizontal) axis's own length scale (None: ℓ, isotropic);
            ``length_scale`` is then the row (vertical) axis's.

    Eigen-decompositions are cached per axis length (and device), so a window size costs one ``eigh`` per
    axis for the whole run.
    """

    length_scale: float = 3.0
    sigma: float = 0.3
    long_scale: float | None = None
    long_weight: float = 0.0
    length_scale_x: float | None = None
    _cache: dict[tuple, AxisBasis] = field(default_factory=dict, repr=False, compare=False)
    _scratch: _Scratch = field(default_factory=_Scratch, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in (("ell", self.length_scale), ("sigma", self.sigma)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InvalidInputError(f"the Gaussian field's {name} must be a finite number > 0, got {value!r}")
        if self.long_scale is not None and not (math.isfinite(self.long_scale) and self.long_scale > 0):
            raise InvalidInputError(f"the Gaussian field's long length scale must be > 0, got {self.long_scale!r}")
        if not (math.isfinite(self.long_weight) and 0 <= self.long_weight < 1):
            raise InvalidInputError(f"the Gaussian field's long weight must be in [0, 1), got {self.long_weight!r}")
        lx = self.length_scale_x
        if lx is not None and not (isinstance(lx, (int, float)) and math.isfinite(lx) and lx > 0):
            raise InvalidInputError(f"the Gaussian field's ell_x must be a finite number > 0 or None, got {lx!r}")

    @property
    def anisotropic(self) -> bool:
        """Whether the column axis has a length scale of its own (ℓx ≠ ℓ)."""
        return self.length_scale_x is not None and self.length_scale_x != self.length_scale

    def axis_scale(self, axis: str = "rows") -> float:
        """ℓ of one axis in pixels: ``rows`` (vertical, ℓ) or ``cols`` (horizontal, ℓx where the field has one)."""
        return self.length_scale_x if axis == "cols" and self.anisotropic else self.length_scale

    @property
    def variance(self) -> float:
        """σ², the pixel variance of x₀."""
        return self.sigma**2

    def correlation(self, distance: float, axis: str = "rows") -> float:
        """Correlation of two pixels ``distance`` px apart along one axis (``rows`` or ``cols``): exp(−d² / 2ℓ²),
        mixed with the long component where there is one."""
        short = math.exp(-(distance**2) / (2.0 * self.axis_scale(axis) ** 2))
        if self.long_scale is None or self.long_weight <= 0:
            return short
        return (1 - self.long_weight) * short + self.long_weight * math.exp(-(distance**2) / (2.0 * self.long_scale**2))

    def _kernel(self, n: int, axis: str = "rows") -> Tensor:
        return se_kernel(n, self.axis_scale(axis), self.long_scale, self.long_weight)

    def axis_basis(self, n: int, device: torch.device | str = "cpu", axis: str = "rows") -> AxisBasis:
        """Cached eigen-decomposition of K_n (float64) on ``device`` for one axis (``rows`` or ``cols``)."""
        own = "cols" if axis == "cols" and self.anisotropic else "rows"  # an isotropic field's axes share one basis
        key: tuple = (n, str(torch.device(device))) if own == "rows" else (n, str(torch.device(device)), own)
        basis = self._cache.get(key)
        if basis is None:
            values, vectors = torch.linalg.eigh(self._kernel(n, own))
            basis = AxisBasis(vectors.to(device), values.clamp(min=0.0).to(device))
            self._cache[key] = basis
        return basis

    def eigenbasis(self, h: int, w: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """(U_h (h, h), U_w (w, w), λ (h, w)) with Σ = (U_h ⊗ U_w) diag(vec λ) (U_h ⊗ U_w)ᵀ, float64."""
        bh, bw = self.axis_basis(h, device), self.axis_basis(w, device, "cols")
        return bh.vectors, bw.vectors, self.variance * bh.eigenvalues[:, None] * bw.eigenvalues[None, :]

    def covariance(self, h: int, w: int) -> Tensor:
        """Dense Σ = σ² (K_h ⊗ K_w) over row-major pixels: float64 (h·w, h·w). For tests; O((hw)²) memory."""
        return self.variance * torch.kron(self._kernel(h), self._kernel(w, "cols"))

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

        Raises:
            InvalidInputError: an unknown ``prediction_type``, or ``x_t`` not 4-D.
        """
        if prediction_type not in PREDICTION_TYPES:
            raise InvalidInputError(
                f"unknown prediction type {prediction_type!r}; choose one of: {', '.join(PREDICTION_TYPES)}"
            )
        if x_t.ndim != 4:
            raise InvalidInputError(f"x_t must be (B, C, h, w), got shape {tuple(x_t.shape)}")
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
        # Two full-size buffers, reused (matmul(out=)): y is returned, tmp is the field's scratch.
        y = (x_t.to(dtype) - a * mu).contiguous()  # x_t − α μ; contiguous: matmul(out=y) needs it
        denom = (a * a * lam + sd * sd).clamp_min(torch.finfo(dtype).tiny)  # eigenvalues of Var(x_t)
        with self._scratch.like(y) as tmp:
            torch.matmul(u_h.T, y, out=tmp)
            torch.matmul(tmp, u_w, out=y)  # z: eigen-coordinates of x_t − α μ, per channel
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
        product (see :class:`~multidiffusion.core.oracle.posterior.ExactPosterior`): the responsibilities are
        included, which is what lets a gradient move a view from one colour to another, and no autograd graph is
        recorded.

        Args:
            x_t: (B, C, h, w).
            means: (B, K, C) component means (equal rows give the single field, up to rounding).
            alpha, s: As :meth:`posterior`.
            prediction_type: As :meth:`predict`.

        Returns:
            (B, C, h, w) in ``x_t``'s dtype (float32 for half types).

        Raises:
            InvalidInputError: an unknown ``prediction_type``, ``x_t`` not 4-D, or ``means`` not (B, K, C).
        """
        if prediction_type not in PREDICTION_TYPES:
            raise InvalidInputError(
                f"unknown prediction type {prediction_type!r}; choose one of: {', '.join(PREDICTION_TYPES)}"
            )
        if x_t.ndim != 4:
            raise InvalidInputError(f"x_t must be (B, C, h, w), got shape {tuple(x_t.shape)}")
        b, c = x_t.shape[:2]
        dtype = x_t.dtype if x_t.dtype in (torch.float32, torch.float64) else torch.float32
        mus = torch.as_tensor(means, dtype=dtype, device=x_t.device)
        if mus.ndim != 3 or mus.shape[0] != b or mus.shape[2] != c:
            raise InvalidInputError(f"means must be (B, K, C) = ({b}, K, {c}), got {tuple(mus.shape)}")
        basis = self.eigenbasis(x_t.shape[-2], x_t.shape[-1], x_t.device)
        operator = PosteriorOperator(basis, alpha, s, prediction_type, dtype, x_t.device)
        if torch.is_grad_enabled() and x_t.requires_grad:
            return ExactPosterior.apply(x_t.to(dtype), mus, operator)
        x = x_t.to(dtype)
        with self._scratch.like(x) as tmp:
            return operator.forward(x, mus, tmp)[0]

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

    def _kernel(self, n: int, axis: str = "rows") -> Tensor:
        k = self.factor
        fine = se_kernel(n * k, self.axis_scale(axis), self.long_scale, self.long_weight)
        pool = torch.kron(torch.eye(n, dtype=torch.float64), torch.full((1, k), 1.0 / k, dtype=torch.float64))
        return pool @ fine @ pool.T  # (n, n): Cov of block means, over σ²


def pooled_field(field: GaussianField, factor: int) -> GaussianField:
    """``field`` seen through ``factor`` × ``factor`` average pooling (:class:`PooledField`; ``field`` for 1)."""
    if factor == 1:
        return field
    return PooledField(
        field.length_scale, field.sigma, field.long_scale, field.long_weight, field.length_scale_x, factor=factor
    )
