"""Coherence of a wide image: how alike its non-overlapping crops are (SyncDiffusion §5.1 metrics).

SyncDiffusion measures a panorama's coherence as the mean pairwise distance between its non-overlapping
crops: intra-LPIPS (LPIPS distance) and intra-Style (Gram-matrix style distance). Both need VGG weights
(:mod:`multidiffusion.adapters.metrics.lpips`). This module holds the crop grid, the pairwise mean, and two
statistics that need no weights:

    colour spread = sqrt(mean over channels of Var over crops of the crop's mean colour)
    std spread    = sqrt(mean over channels of Var over crops of the crop's pixel standard deviation)

(unbiased variances; image units, [−1, 1]). A coherent panorama has small spreads: its crops share a
palette and a contrast. Identical crops give exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError


def crop_grid(image: Tensor, size: int) -> Tensor:
    """Non-overlapping ``size`` × ``size`` crops of ``image`` (C, H, W), row-major: (M, C, size, size).

    Leftover pixels at the right and bottom edges (H or W not a multiple of ``size``) are not used.

    Raises:
        InvalidInputError: ``size`` < 1, or fewer than two crops fit.
    """
    if image.ndim != 3:
        raise InvalidInputError(f"expected an image (C, H, W), got shape {tuple(image.shape)}")
    _, height, width = image.shape
    if not isinstance(size, int) or size < 1:
        raise InvalidInputError(f"crop size must be a positive number of pixels, got {size!r}")
    rows, cols = height // size, width // size
    if rows * cols < 2:
        raise InvalidInputError(
            f"a {size}-px crop fits {rows * cols} time(s) in a {width}×{height} image; need at least 2 "
            f"(use a crop of at most {max(1, max(width, height) // 2)} px)"
        )
    c = image.shape[0]
    grid = image[:, : rows * size, : cols * size].reshape(c, rows, size, cols, size)
    return grid.permute(1, 3, 0, 2, 4).reshape(rows * cols, c, size, size)


def colour_spread(crops: Tensor) -> float:
    """Spread of the crops' mean colours (module docstring); crops (M, C, s, s), M ≥ 2."""
    return float(crops.double().mean((2, 3)).var(0).mean().sqrt())


def std_spread(crops: Tensor) -> float:
    """Spread of the crops' pixel standard deviations (module docstring); crops (M, C, s, s), M ≥ 2."""
    return float(crops.double().flatten(2).std(2).var(0).mean().sqrt())


def mean_pairwise(crops: Tensor, distance: Callable[[Tensor, Tensor], Tensor]) -> float:
    """Mean of ``distance(a, b)`` over all unordered pairs of distinct crops (M (M − 1) / 2 pairs).

    ``distance`` takes two batches (P, C, s, s) and returns P distances; it is called once, on all pairs.
    """
    m = crops.shape[0]
    i, j = torch.triu_indices(m, m, offset=1)
    return float(distance(crops[i], crops[j]).reshape(-1).double().mean())
