"""A perceptual distance that needs no pretrained weights: colour and texture statistics of a fixed filter bank.

SyncDiffusion (Lee et al. 2023, Eq. 13) measures how far a view's foreseen image is from the anchor's
with LPIPS, which needs VGG weights. This is the weight-free stand-in used when LPIPS is unavailable.
It compares the *statistics* of two images, not their pixels, so two views of the same scene at
different places are close, and two views of different colour or texture are far (what synchronising
views needs: the style, not the layout, should match).

Features. At scales s = 1, 2, 4 (2×2 average pooling between them) the image (B, 3, H, W) in [−1, 1]
goes through a fixed bank of 3×3 filters: the three colour channels themselves, and on the luminance Y
the horizontal and vertical central differences and the Laplacian (edges and fine texture), giving
K = 6 feature maps f_k. Per scale the statistics are

    m_k = mean over pixels of f_k                       (colour and mean edge content)
    G_kl = mean over pixels of (f_k − m_k)(f_l − m_l)   (Gram matrix of centred features: contrast,
                                                          colour covariance, texture energy; Gatys et al.)

and the distance is the mean over the scales of ‖m_a − m_b‖² + ‖G_a − G_b‖²_F, per image: a tensor (B,).
Its scale matters, since SyncDiffusion multiplies its gradient by w: the mean (not the sum) over scales
keeps the paper's w = 20 stable on the exact mixture oracle, where the sum (three times larger)
overshoots the anchor's colour (docs/sync.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError

SCALES: tuple[int, ...] = (1, 2, 4)
_LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights for Y


def _features(images: Tensor) -> Tensor:
    """(B, 3, H, W) → (B, K = 6, H·W): R, G, B, and on the luminance Y (replicate-padded) d/dx, d/dy, ∇².

    The 3×3 filter bank of the module docstring written as shifted differences (central differences
    ½ (Y[x + 1] − Y[x − 1]) and the 5-point Laplacian): cheaper than a convolution with a 6 × 3 × 3 × 3 bank,
    the same values up to rounding.
    """
    luma = images.new_tensor(_LUMA)[None, :, None, None]
    y = F.pad((images * luma).sum(1, keepdim=True), (1, 1, 1, 1), mode="replicate")
    centre = y[..., 1:-1, 1:-1]
    left, right = y[..., 1:-1, :-2], y[..., 1:-1, 2:]
    up, down = y[..., :-2, 1:-1], y[..., 2:, 1:-1]
    dx, dy = 0.5 * (right - left), 0.5 * (down - up)
    laplacian = left + right + up + down - 4 * centre
    return torch.cat([images, dx, dy, laplacian], 1).flatten(2)


def image_statistics(images: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Per scale, (means (B, K), Gram matrices (B, K, K)) of the filter-bank features; see the module doc."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise InvalidInputError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
    stats = []
    x = images
    for scale in SCALES:
        if scale > 1:
            x = F.avg_pool2d(x, 2) if min(x.shape[-2:]) >= 2 else x
        f = _features(x)  # (B, K, h·w)
        m = f.mean(-1)
        c = f - m[..., None]
        stats.append((m, c @ c.transpose(1, 2) / c.shape[-1]))
    return stats


def statistics_distance(images: Tensor, targets: Tensor) -> Tensor:
    """The weight-free perceptual distance between ``images`` and ``targets``, both (B, 3, H, W) in [−1, 1].

    Returns:
        (B,) float: the mean over scales of the squared distance of feature means and of Gram matrices.
        0 for identical statistics; differentiable in both arguments.
    """
    if images.shape != targets.shape:
        raise InvalidInputError(
            f"images {tuple(images.shape)} and targets {tuple(targets.shape)} differ in shape; both must be "
            "(B, 3, H, W)"
        )
    if targets.shape[0] > 1 and targets.stride(0) == 0:  # one target broadcast (``expand``): its statistics once
        targets = targets[:1]
    total = images.new_zeros(images.shape[0])
    for (m_a, g_a), (m_b, g_b) in zip(image_statistics(images), image_statistics(targets), strict=True):
        total = total + (m_a - m_b).pow(2).sum(-1) + (g_a - g_b).pow(2).sum((-2, -1))
    return total / len(SCALES)
