"""The differentiable parts every family hands to SyncDiffusion, built one way for all of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from multidiffusion.adapters.model.loaded import Differentiable
from multidiffusion.core.engine.views import View


class TrackingDenoiser(Protocol):
    """A family's denoiser with a ``forward`` that can follow the ambient grad mode."""

    def forward(
        self, x: Tensor, t: Tensor, conds: Sequence[Any], views: Sequence[View] | None = None, *, track_grad: bool
    ) -> Tensor: ...


class SamplingDenoiser:
    """Base of the families' denoisers: calling one samples (no autograd graph); ``forward(…, track_grad=True)``
    follows the ambient grad mode instead (SyncDiffusion's gradient, through :class:`GradFollowing`)."""

    def __call__(self, x: Tensor, t: Tensor, conds: Sequence[Any], views: Sequence[View] | None = None) -> Tensor:
        return self.forward(x, t, conds, views, track_grad=False)

    def forward(
        self, x: Tensor, t: Tensor, conds: Sequence[Any], views: Sequence[View] | None = None, *, track_grad: bool
    ) -> Tensor:
        """The model output for ``x`` (see :class:`~multidiffusion.core.types.Denoiser`); a graph only when
        ``track_grad`` and grad is enabled."""
        raise NotImplementedError


class GradFollowing:
    """The differentiable face of a denoiser: the same network and settings (read at each call, so a change of
    the sampling denoiser's options applies here too), building an autograd graph when grad is enabled."""

    def __init__(self, denoiser: TrackingDenoiser) -> None:
        self.denoiser = denoiser

    def __call__(self, x: Tensor, t: Tensor, conds: Sequence[Any], views: Sequence[View] | None = None) -> Tensor:
        return self.denoiser.forward(x, t, conds, views, track_grad=True)


def checkpointing_switch(*modules: torch.nn.Module) -> Callable[[bool], None]:
    """Turns activation checkpointing of ``modules`` on or off (those that support it)."""

    def switch(on: bool) -> None:
        for module in modules:
            if hasattr(module, "enable_gradient_checkpointing"):
                module.enable_gradient_checkpointing() if on else module.disable_gradient_checkpointing()

    return switch


def differentiable_parts(
    denoiser: TrackingDenoiser, decode: Callable[[Tensor], Tensor], *modules: torch.nn.Module
) -> Differentiable:
    """The denoiser following the grad mode, a differentiable decode (latents → images in [−1, 1]) and the
    checkpointing switch of ``modules`` (the denoising network and the VAE)."""
    return Differentiable(GradFollowing(denoiser), decode, checkpointing_switch(*modules))
