"""Per-view weights W_i of MultiDiffusion (paper Eq. 3, 5).

Uniform weights are the paper's choice. Feathered weights fall off toward the view's *inner* edges (the
edges that lie inside the canvas, where another view takes over), so a seam is blended rather than cut.
A side of the view that lies on the canvas border keeps full weight: nothing else covers those cells.
A wrapped axis has no border, so there every view tapers at both ends.

Every weight map is the outer product of one 1-D profile per axis, each symmetric about the view's
centre (not the lopsided Gaussian of some peers, see docs/design.md §10), and strictly positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from multidiffusion.core.engine.views import View, Wrap, resolve_wrap
from multidiffusion.core.errors import InvalidInputError

WeightKind = Literal["uniform", "feathered", "gaussian"]
WEIGHT_KINDS: tuple[str, ...] = ("uniform", "feathered", "gaussian")


def _ramp(n: int, length: int, kind: str) -> Tensor:
    """Rising half-profile over ``n`` cells: weights in (0, 1] that reach 1 after ``length`` cells.

    ``feathered``: linear, ``(i + 1) / (length + 1)``. ``gaussian``: ``exp(−(length − i)² / 2s²)`` with
    ``s = length / 3``, so it starts near e^{−4.5} ≈ 0.011 and never reaches 0.
    """
    i = torch.arange(n, dtype=torch.float64)
    if length <= 0:
        return torch.ones(n, dtype=torch.float64)
    if kind == "feathered":
        r = (i + 1) / (length + 1)
    else:
        s = length / 3.0
        r = torch.exp(-((length - i).clamp(min=0) ** 2) / (2 * s * s))
    return r.clamp(max=1.0)


def profile(n: int, ramp: int, kind: str, *, taper_start: bool, taper_end: bool) -> Tensor:
    """1-D weight profile of one view axis, symmetric when both ends taper.

    Args:
        n: Cells along the axis.
        ramp: Cells over which the weight rises to 1 at a tapered end (capped at ``n // 2``).
        kind: ``uniform``, ``feathered`` or ``gaussian``.
        taper_start: Fall off toward index 0 (that edge lies inside the canvas).
        taper_end: Fall off toward index n − 1.

    Returns:
        float64 tensor of shape (n,), values in (0, 1].
    """
    out = torch.ones(n, dtype=torch.float64)
    if kind == "uniform":
        return out
    rise = _ramp(n, min(ramp, n // 2), kind)
    if taper_start:
        out = torch.minimum(out, rise)
    if taper_end:
        out = torch.minimum(out, rise.flip(0))
    return out


def view_weights(
    views: Sequence[View],
    height: int,
    width: int,
    kind: str = "uniform",
    *,
    ramp: int | tuple[int, int] | None = None,
    circular: bool = False,
    wrap: Wrap | None = None,
) -> Tensor:
    """Weight maps of a layout.

    Args:
        views: Views of one size (h, w) on a ``height`` × ``width`` latent canvas.
        height: Canvas rows.
        width: Canvas columns.
        kind: ``uniform`` (paper), ``feathered`` (linear ramps) or ``gaussian`` (Gaussian ramps).
        ramp: Ramp length in latent cells (rows, cols). Default: half the view in each axis, i.e. a
            tent / bell over the whole view wherever both of its edges lie inside the canvas.
        circular: The canvas wraps horizontally, so no view has a left or right border side (the same as
            ``wrap=(False, True)``).
        wrap: Which axes wrap, (rows, cols): on a wrapped axis no view has a border side (unless it spans
            the whole axis).

    Returns:
        float32 tensor of shape (V, h, w), all values in (0, 1].
    """
    if kind not in WEIGHT_KINDS:
        raise InvalidInputError(f"unknown weights {kind!r}; choose one of: {', '.join(WEIGHT_KINDS)}")
    wrap_rows, wrap_cols = resolve_wrap(wrap, circular)
    h, w = views[0].height, views[0].width
    ramp_h, ramp_w = (h // 2, w // 2) if ramp is None else ((ramp, ramp) if isinstance(ramp, int) else ramp)
    maps = []
    for v in views:
        rows_wrap, cols_wrap = wrap_rows and h < height, wrap_cols and w < width
        ph = profile(h, ramp_h, kind, taper_start=rows_wrap or v.top > 0, taper_end=rows_wrap or v.top + h < height)
        pw = profile(w, ramp_w, kind, taper_start=cols_wrap or v.left > 0, taper_end=cols_wrap or v.left + w < width)
        maps.append(ph[:, None] * pw[None, :])
    return torch.stack(maps).float()
