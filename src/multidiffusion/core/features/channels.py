"""Extra input channels cropped per view: a denoiser wrapper for models that see more than x_t.

Inpainting UNets (SD 1.x/2.x and SDXL "inpainting" checkpoints, 9 input channels) take the latent, the
known-region mask and the masked image's latents side by side. Those live once for the whole canvas; each
view's rows get their crop (the window of the canvas they were cut from, ``views``), concatenated after the
latent channels, as the family's own pipeline concatenates them for one image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.types import Denoiser


def crop_window(canvas: Tensor, view: View) -> Tensor:
    """The cells of ``view`` from ``canvas`` (N, C, H, W) → (N, C, h, w); rows and columns wrap around."""
    height, width = canvas.shape[-2:]
    rows = torch.arange(view.top, view.top + view.height, device=canvas.device) % height
    cols = torch.arange(view.left, view.left + view.width, device=canvas.device) % width
    return canvas.index_select(-2, rows).index_select(-1, cols)


class ConcatChannels:
    """Wraps a denoiser: each batch row gets its view's crop of ``extra`` after its latent channels.

    Args:
        denoiser: The inner denoiser; it receives (B, C + C', h, w) and returns (B, C, h, w).
        extra: (N, C', H, W) on the canvas grid (N canvases; 1 broadcasts to all).

    Sits inside classifier-free guidance: both halves of a guided condition see the same extra channels (as
    diffusers duplicates them). Needs ``views``; the engine always passes them.
    """

    def __init__(self, denoiser: Denoiser, extra: Tensor) -> None:
        if extra.ndim != 4:
            raise InvalidInputError(f"extra channels must be (N, C', H, W), got shape {tuple(extra.shape)}")
        self.denoiser = denoiser
        self.extra = extra

    def __call__(self, x: Tensor, t: Tensor, conds: Sequence[Any], views: Sequence[View] | None = None) -> Tensor:
        """x: (len(conds)·N, C, h, w) → the inner denoiser's output for x with its extra channels."""
        if views is None:
            raise ValueError("extra input channels need the views each batch row was cropped from")
        n = x.shape[0] // len(conds)
        parts = [crop_window(self.extra, view).to(x.dtype).expand(n, -1, -1, -1) for view in views]
        return self.denoiser(torch.cat([x, torch.cat(parts)], dim=1), t, conds, views=views)
