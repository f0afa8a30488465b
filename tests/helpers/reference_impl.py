"""A direct, deliberately naive implementation of MultiDiffusion as the official code runs it.

Each view is cropped with plain slicing (``torch.roll`` for wrap-around), denoised on its own with
classifier-free guidance, stepped on its own with a private copy of the scheduler, and the stepped views
are averaged with their weights (paper Eq. 5 applied to x_{t−1}). Used where diffusers is known to be
wrong (uncovered strips, wrap-around with several rows) and as the region reference later.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor


def per_view_multidiffusion(
    unet,
    scheduler,
    latents: Tensor,
    views: Sequence,
    weights: Sequence[Tensor],
    cond: Tensor,
    uncond: Tensor,
    guidance_scale: float,
) -> Tensor:
    """views: objects with top/left/height/width (latent cells); weights: (h, w) per view."""
    _, _, _height, _width = latents.shape
    states = [copy.deepcopy(scheduler) for _ in views]
    x = latents.clone()
    for t in scheduler.timesteps:
        value = torch.zeros_like(x)
        count = torch.zeros_like(x)
        for view, w, sched in zip(views, weights, states, strict=True):
            rolled = torch.roll(x, shifts=-view.left, dims=3)
            crop = rolled[:, :, view.top : view.top + view.height, : view.width]
            inp = sched.scale_model_input(torch.cat([crop, crop]), t)
            with torch.no_grad():
                eps = unet(inp, t, encoder_hidden_states=torch.cat([uncond, cond])).sample
            eps_u, eps_c = eps.chunk(2)
            eps = eps_u + guidance_scale * (eps_c - eps_u)
            stepped = sched.step(eps, t, crop).prev_sample
            pad_v = torch.zeros_like(x)
            pad_c = torch.zeros_like(x)
            pad_v[:, :, view.top : view.top + view.height, : view.width] = stepped * w
            pad_c[:, :, view.top : view.top + view.height, : view.width] = w
            value += torch.roll(pad_v, shifts=view.left, dims=3)
            count += torch.roll(pad_c, shifts=view.left, dims=3)
        assert bool((count > 0).all()), "reference: uncovered cell"
        x = value / count
    return x


def per_view_regions(
    unet,
    scheduler,
    latents: Tensor,
    views: Sequence,
    masks: Tensor,
    conds: Sequence[Tensor],
    unconds: Sequence[Tensor],
    guidance_scale: float,
) -> Tensor:
    """The official region-based MultiDiffusion loop (no bootstrapping): every view × region is denoised and
    stepped on its own, and the stepped crops are averaged with the region masks (latent grid, (R, H, W))."""
    states = {(v, r): copy.deepcopy(scheduler) for v in range(len(views)) for r in range(len(conds))}
    x = latents.clone()
    for t in scheduler.timesteps:
        value = torch.zeros_like(x)
        count = torch.zeros_like(x)
        for v, view in enumerate(views):
            rows, cols = slice(view.top, view.top + view.height), slice(view.left, view.left + view.width)
            crop = x[:, :, rows, cols]
            for r, (cond, uncond) in enumerate(zip(conds, unconds, strict=True)):
                sched = states[(v, r)]
                inp = sched.scale_model_input(torch.cat([crop, crop]), t)
                with torch.no_grad():
                    eps = unet(inp, t, encoder_hidden_states=torch.cat([uncond, cond])).sample
                eps_u, eps_c = eps.chunk(2)
                stepped = sched.step(eps_u + guidance_scale * (eps_c - eps_u), t, crop).prev_sample
                mask = masks[r, rows, cols]
                value[:, :, rows, cols] += stepped * mask
                count[:, :, rows, cols] += mask
        x = torch.where(count > 0, value / count, value)
    return x


def per_view_stepped(predict, scheduler, latents: Tensor, views: Sequence, weights: Sequence[Tensor]) -> Tensor:
    """The official algorithm for any model: each view's crop (plain slicing, no wrap) is predicted by
    ``predict(crop, t, view)`` (guided output, the model's own input scaling included), stepped with a private
    copy of ``scheduler``, and the stepped crops are averaged with their (h, w) weights (paper Eq. 5 on
    x_{t−1}). ``scheduler`` has had ``set_timesteps`` called."""
    states = [copy.deepcopy(scheduler) for _ in views]
    x = latents.clone()
    for t in scheduler.timesteps:
        value = torch.zeros_like(x)
        count = torch.zeros_like(x)
        for view, w, sched in zip(views, weights, states, strict=True):
            rows, cols = slice(view.top, view.top + view.height), slice(view.left, view.left + view.width)
            crop = x[:, :, rows, cols]
            with torch.no_grad():
                out = predict(crop, t, view)
            value[:, :, rows, cols] += sched.step(out, t, crop).prev_sample * w
            count[:, :, rows, cols] += w
        assert bool((count > 0).all()), "reference: uncovered cell"
        x = value / count
    return x
