"""The one crop/paste pair: views of a canvas gathered into a batch, and a batch scattered back.

Both are a single gather / scatter-add over precomputed flat indices (no Python loop over views), and
both honour wrap-around on either axis, because a view's rows are stored modulo the canvas height and its
columns modulo the canvas width (a view reaches past the bottom or right edge only on a wrapped axis).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError


def view_indices(views: Sequence[View], height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """Flat canvas indices of every cell of every view.

    Args:
        views: Views of one size (h, w) on a ``height`` × ``width`` canvas (latent cells), each starting
            inside it (``0 <= top < height``, ``0 <= left < width``).
        height: Canvas rows; view rows are taken modulo this (wrap-around).
        width: Canvas columns; view columns are taken modulo this (wrap-around).

    Returns:
        Long tensor of shape (V, h·w): ``row · width + col`` for each cell, in row-major order.
    """
    if not views:
        raise InvalidInputError("no views given; give at least one view")
    h, w = views[0].height, views[0].width
    if any((v.height, v.width) != (h, w) for v in views):
        sizes = sorted({(v.height, v.width) for v in views})
        raise InvalidInputError(f"all views of a batch must have one size, got (height, width) {sizes}")
    tops = torch.tensor([v.top for v in views], dtype=torch.long)
    lefts = torch.tensor([v.left for v in views], dtype=torch.long)
    if int(tops.min()) < 0 or int(tops.max()) >= height or int(lefts.min()) < 0 or int(lefts.max()) >= width:
        raise InvalidInputError(
            f"a view starts outside the {height}×{width} canvas; tops must be in 0…{height - 1}, lefts in 0…{width - 1}"
        )
    if h > height or w > width:
        raise InvalidInputError(f"a {h}×{w} view is larger than the {height}×{width} canvas; a view must fit in it")
    rows = (tops[:, None] + torch.arange(h)[None, :]) % height  # (V, h)
    cols = (lefts[:, None] + torch.arange(w)[None, :]) % width  # (V, w)
    flat = rows[:, :, None] * width + cols[:, None, :]  # (V, h, w)
    return flat.reshape(len(views), h * w).to(device)


def crop(canvas: Tensor, index: Tensor, size: tuple[int, int], scratch: Tensor | None = None) -> Tensor:
    """Gather views out of a canvas: F_i(J) of the paper.

    Args:
        canvas: (N, C, H, W).
        index: (V, h·w) flat indices from :func:`view_indices`.
        size: (h, w) of the views.
        scratch: Optional reusable buffer of N·C·V·h·w elements of the canvas's dtype and device for the
            canvas-major gather (a run's loop passes the same one every step, so only the returned crops are
            new memory). Not for a canvas that requires grad.

    Returns:
        (V·N, C, h, w), view-major: rows ``v·N … v·N + N − 1`` hold view v of the N canvases; always a new
        tensor (hooks and denoisers may keep it).
    """
    n, c = canvas.shape[:2]
    v = index.shape[0]
    if scratch is None:
        flat = canvas.reshape(n, c, -1)[:, :, index.reshape(-1)]  # (N, C, V·h·w)
        return flat.reshape(n, c, v, *size).permute(2, 0, 1, 3, 4).reshape(v * n, c, *size)
    planes = canvas.reshape(n * c, -1)
    cells = index.reshape(-1)
    gathered = scratch.view(n * c, -1)  # (N·C, V·h·w)
    for k in range(n * c):  # one 1-D gather per plane: index_select writes into a buffer, [] cannot
        torch.index_select(planes[k], 0, cells, out=gathered[k])
    out = torch.empty(v, n * c, size[0] * size[1], dtype=canvas.dtype, device=canvas.device)
    out.copy_(gathered.view(n * c, v, -1).permute(1, 0, 2))
    return out.view(v * n, c, *size)


def paste_add(target: Tensor, views: Tensor, index: Tensor) -> Tensor:
    """Scatter-add view tensors into a canvas accumulator in place: Σ_i F_i⁻¹(views_i).

    Args:
        target: (N, C, H, W) accumulator, modified in place and returned.
        views: (V·N, C, h, w), view-major as :func:`crop` returns.
        index: (V, h·w) flat indices of those views.
    """
    n, c = target.shape[:2]
    v = index.shape[0]
    src = views.reshape(v, n, c, -1).permute(1, 2, 0, 3).reshape(n, c, -1)  # (N, C, V·h·w)
    flat = target.view(n, c, -1)
    flat.index_add_(2, index.reshape(-1), src.to(flat.dtype))
    return target


def paste_add_weighted(target: Tensor, views: Tensor, weights: Tensor, index: Tensor, scratch: Tensor) -> Tensor:
    """:func:`paste_add` of ``weights ⊗ views`` in place, the product written straight into canvas-major order.

    Bit-identical to ``paste_add(target, (views · weights).reshape(views.shape), index)``: the same float32
    products, added in the same order; only the temporaries are gone.

    Args:
        target: (N, C, H, W) float32 accumulator, modified in place and returned.
        views: (V·N, C, h, w), view-major as :func:`crop` returns (cast to float32 before the product).
        weights: (V, h, w) float32 per-view weights.
        index: (V, h·w) flat indices of those views.
        scratch: Reusable float32 buffer of N·C·V·h·w elements on the target's device.
    """
    n, c = target.shape[:2]
    v = index.shape[0]
    src = scratch.view(n, c, v, -1)  # (N, C, V, h·w)
    viewed = views.reshape(v, n, c, -1).permute(1, 2, 0, 3).to(torch.float32)
    torch.mul(viewed, weights.reshape(1, 1, v, -1), out=src)
    target.view(n, c, -1).index_add_(2, index.reshape(-1), src.view(n, c, -1))
    return target
