"""Statistics of images against the Gaussian-field oracle: neighbour correlation, column variance, crop colour spread.

:func:`neighbour_correlation` and :func:`column_variance` measure images (a seam shows as a dip in correlation or
variance at its column); :func:`expected_crop_colour_variance` is what the field itself predicts for one coherent
sample (docs/quality.md, docs/sync.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.oracle.field import GaussianField, se_kernel


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
    the "colour spread"² a panorama has when it is one coherent sample of the field. Uses ℓ and σ; the long-range
    component (L, ρ) of ``field``, if any, is not included.

    Raises:
        InvalidInputError: fewer than two crops fit.
    """
    rows, cols = height // crop, width // crop
    m = rows * cols
    if m < 2:
        raise InvalidInputError(
            f"need at least two {crop}-px crops, got {m} on a {height}×{width} image; use a smaller crop or a larger "
            "image"
        )

    def blocks(n: int) -> Tensor:
        k = se_kernel(n * crop, field.length_scale).reshape(n, crop, n, crop)
        return k.sum((1, 3)) / crop**2  # (n, n): mean kernel between blocks

    cov = field.variance * torch.kron(blocks(rows), blocks(cols))
    return float((cov.trace() - cov.sum() / m) / (m - 1))
