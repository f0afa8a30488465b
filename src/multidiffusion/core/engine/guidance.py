"""Classifier-free guidance as a wrapper around a :class:`~multidiffusion.core.types.Denoiser`.

k-diffusion style: the loop never knows about guidance. Both halves of a guided condition go through
the inner denoiser in the same batch as the other views.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.engine.views import View
from multidiffusion.core.types import Denoiser


@dataclass(frozen=True)
class GuidedCondition:
    """A condition with its classifier-free guidance settings.

    Attributes:
        positive: The inner denoiser's condition for the prompt (N entries).
        negative: Its condition for the negative / empty prompt, or None for no guidance.
        guidance_scale: g in ε̂ = ε_u + g (ε_c − ε_u) (Ho & Salimans 2022). g ≤ 1 is no guidance: the
            conditional output alone, one pass (diffusers' rule; few-step models run at g ≤ 1).
        guidance_rescale: φ of Lin et al. 2023 §3.4 (0 = off).
    """

    positive: Any
    negative: Any | None = None
    guidance_scale: float = 7.5
    guidance_rescale: float = 0.0

    @property
    def guided(self) -> bool:
        """Whether the negative half is evaluated."""
        return self.negative is not None and self.guidance_scale > 1.0


def rescale_guidance(guided: Tensor, cond: Tensor, phi: float | Tensor) -> Tensor:
    """Lin et al. 2023, Eq. 15–16: match the std of the guided output to the conditional one, per sample.

    ``phi`` is a number or a tensor broadcast over the rows (B, 1, …, 1), one φ per sample.
    """
    dims = list(range(1, guided.ndim))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return phi * rescaled + (1 - phi) * guided


class ClassifierFreeGuidance:
    """Wraps a denoiser whose conditions are :class:`GuidedCondition`; calls the inner one once per batch."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser

    def __call__(
        self, x: Tensor, t: Tensor, conds: Sequence[GuidedCondition], views: Sequence[View] | None = None
    ) -> Tensor:
        """x: (len(conds)·N, C, h, w) → guided model output of the same shape; ``views`` as for a Denoiser."""
        n = x.shape[0] // len(conds)
        inner: list[Any] = []
        inner_views: list[View] = []
        repeats: list[int] = []
        for i, c in enumerate(conds):
            inner += [c.negative, c.positive] if c.guided else [c.positive]
            repeats.append(2 if c.guided else 1)
            if views is not None:
                inner_views += [views[i]] * repeats[-1]
        if any(r == 2 for r in repeats):  # each guided condition's rows twice, gathered with one index
            index = torch.cat([torch.arange(i * n, (i + 1) * n).repeat(r) for i, r in enumerate(repeats)])
            batch = x.index_select(0, index.to(x.device))
        else:
            batch = x
        out = self.denoiser(batch, t, inner, views=inner_views if views is not None else None)
        if not any(c.guided for c in conds):
            return out
        # Gather every condition's unconditional and conditional rows with one index each (an unguided
        # condition's rows serve as both, with g = 1) rather than slicing per condition: the backward pass of
        # V slices would build V batch-sized zero gradients (O(V²); SyncDiffusion differentiates through this).
        uncond_rows: list[Tensor] = []
        cond_rows: list[Tensor] = []
        scales: list[float] = []
        row = 0
        for c in conds:
            rows = torch.arange(row, row + n)
            if c.guided:
                uncond_rows.append(rows)
                cond_rows.append(rows + n)
                row += 2 * n
            else:
                uncond_rows.append(rows)
                cond_rows.append(rows)
                row += n
            scales += [c.guidance_scale if c.guided else 1.0] * n
        device = out.device
        uncond = out.index_select(0, torch.cat(uncond_rows).to(device))
        cond = out.index_select(0, torch.cat(cond_rows).to(device))
        g = torch.tensor(scales, dtype=out.dtype, device=device).reshape(-1, *([1] * (out.ndim - 1)))
        phis = [c.guidance_rescale if c.guided else 0.0 for c in conds]
        if (torch.is_grad_enabled() and out.requires_grad) or any(phi > 0 for phi in phis):
            guided = uncond + g * (cond - uncond)  # ε̂ = ε_u + g (ε_c − ε_u); exactly ε_c where g = 1, ε_u = ε_c
        else:  # the same three operations in place on the two gathered copies: no more batch-sized buffers
            guided = uncond.add_(cond.sub_(uncond).mul_(g))
        if any(phi > 0 for phi in phis):  # Lin et al. 2023 §3.4 on the rows that ask for it, in one batch
            rows = torch.cat([torch.arange(i * n, (i + 1) * n) for i, phi in enumerate(phis) if phi > 0]).to(device)
            phi = torch.tensor([phi for phi in phis if phi > 0], dtype=out.dtype, device=device)
            phi = phi.repeat_interleave(n).reshape(-1, *([1] * (out.ndim - 1)))
            part = rescale_guidance(guided.index_select(0, rows), cond.index_select(0, rows), phi)
            guided = guided.index_copy(0, rows, part)
        return guided
