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

from .types import Denoiser


@dataclass(frozen=True)
class GuidedCondition:
    """A condition with its classifier-free guidance settings.

    Attributes:
        positive: The inner denoiser's condition for the prompt (N entries).
        negative: Its condition for the negative / empty prompt, or None for no guidance.
        guidance_scale: g in ε̂ = ε_u + g (ε_c − ε_u) (Ho & Salimans 2022). g = 1 needs no negative pass.
        guidance_rescale: φ of Lin et al. 2023 §3.4 (0 = off).
    """

    positive: Any
    negative: Any | None = None
    guidance_scale: float = 7.5
    guidance_rescale: float = 0.0

    @property
    def guided(self) -> bool:
        """Whether the negative half is evaluated."""
        return self.negative is not None and self.guidance_scale != 1.0


def rescale_guidance(guided: Tensor, cond: Tensor, phi: float) -> Tensor:
    """Lin et al. 2023, Eq. 15–16: match the std of the guided output to the conditional one, per sample."""
    dims = list(range(1, guided.ndim))
    rescaled = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return phi * rescaled + (1 - phi) * guided


class ClassifierFreeGuidance:
    """Wraps a denoiser whose conditions are :class:`GuidedCondition`; calls the inner one once per batch."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser = denoiser

    def __call__(self, x: Tensor, t: Tensor, conds: Sequence[GuidedCondition]) -> Tensor:
        """x: (len(conds)·N, C, h, w) → guided model output of the same shape."""
        n = x.shape[0] // len(conds)
        parts: list[Tensor] = []
        inner: list[Any] = []
        for i, c in enumerate(conds):
            xi = x[i * n : (i + 1) * n]
            if c.guided:
                parts += [xi, xi]
                inner += [c.negative, c.positive]
            else:
                parts.append(xi)
                inner.append(c.positive)
        out = self.denoiser(torch.cat(parts) if len(parts) > 1 else parts[0], t, inner)
        results: list[Tensor] = []
        row = 0
        for c in conds:
            if c.guided:
                uncond, cond = out[row : row + n], out[row + n : row + 2 * n]
                row += 2 * n
                guided = uncond + c.guidance_scale * (cond - uncond)
                if c.guidance_rescale > 0:
                    guided = rescale_guidance(guided, cond, c.guidance_rescale)
                results.append(guided)
            else:
                results.append(out[row : row + n])
                row += n
        return torch.cat(results) if len(results) > 1 else results[0]
