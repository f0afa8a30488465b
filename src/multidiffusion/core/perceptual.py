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

SCALES: tuple[int, ...] = (1, 2, 4)
_LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights for Y


def _filter_bank(dtype: torch.dtype, device: torch.device) -> Tensor:
    """(6, 3, 3, 3) conv weights: R, G, B identity; d/dx, d/dy and the Laplacian of luminance."""
    w = torch.zeros(6, 3, 3, 3, dtype=dtype, device=device)
    for c in range(3):
        w[c, c, 1, 1] = 1.0
    dx = torch.tensor([[0, 0, 0], [-0.5, 0, 0.5], [0, 0, 0]], dtype=dtype, device=device)
    lap = torch.tensor([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=dtype, device=device)
    for c, y in enumerate(_LUMA):
        w[3, c] = y * dx
        w[4, c] = y * dx.T
        w[5, c] = y * lap
    return w


def image_statistics(images: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Per scale, (means (B, K), Gram matrices (B, K, K)) of the filter-bank features; see the module doc."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
    bank = _filter_bank(images.dtype, images.device)
    stats = []
    x = images
    for scale in SCALES:
        if scale > 1:
            x = F.avg_pool2d(x, 2) if min(x.shape[-2:]) >= 2 else x
        f = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), bank)  # (B, K, h, w)
        f = f.flatten(2)
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
        raise ValueError(f"images {tuple(images.shape)} and targets {tuple(targets.shape)} differ in shape")
    total = images.new_zeros(images.shape[0])
    for (m_a, g_a), (m_b, g_b) in zip(image_statistics(images), image_statistics(targets), strict=True):
        total = total + (m_a - m_b).pow(2).sum(-1) + (g_a - g_b).pow(2).sum((-2, -1))
    return total / len(SCALES)
