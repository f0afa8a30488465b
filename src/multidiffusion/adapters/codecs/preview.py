"""A cheap look at latents: a linear latent-to-RGB map fitted to the model's own codec (live previews).

Decoding with the VAE every few steps would cost as much as a step. Instead, each latent cell is mapped to a colour
by ``rgb = latent · W + b`` (W: C × 3). W and b come from the loaded codec itself, not from a table: flat colour
patches are encoded once, and the map is the least-squares fit from their latents back to their colours. This
gives every family, packed SD 3 and Flux latents included, a preview of its own VAE, as well as any fine-tune.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from multidiffusion.core.types import Codec

FIT_COLOURS = 64  # flat patches encoded for the fit (a few dozen pin a 3-D affine map well)


@dataclass(frozen=True)
class LatentPreview:
    """latents (N, C, h, w) → images (N, 3, h, w) in [0, 1]: one colour per latent cell.

    Attributes:
        weights: (C, 3).
        bias: (3,).
    """

    weights: Tensor
    bias: Tensor

    def __call__(self, latents: Tensor) -> Tensor:
        rgb = torch.einsum("nchw,cd->ndhw", latents.float(), self.weights.to(latents.device))
        return (rgb + self.bias.to(latents.device)[None, :, None, None]).clamp(0.0, 1.0)


@torch.no_grad()
def fit_preview(codec: Codec, device: torch.device | str = "cpu", seed: int = 0) -> LatentPreview:
    """The least-squares latent-to-RGB map of ``codec``: ``FIT_COLOURS`` flat colours (a seeded generator; the
    global RNG is untouched), each encoded as a patch of 4 × 4 latent cells; the central cell's latent is fitted
    to the colour."""
    generator = torch.Generator().manual_seed(seed)
    colours = torch.rand(FIT_COLOURS, 3, generator=generator)
    colours[:8] = torch.tensor([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1]])
    side = 4 * codec.scale_factor
    images = (colours * 2 - 1)[:, :, None, None].expand(-1, -1, side, side).to(device)
    latents = codec.encode(images).float().cpu()  # (K, C, 4, 4)
    centre = latents[:, :, latents.shape[2] // 2, latents.shape[3] // 2]  # (K, C)
    design = torch.cat([centre, torch.ones(len(centre), 1)], dim=1).double()  # affine: [latent, 1]
    solution = torch.linalg.lstsq(design, colours.double()).solution.float()  # (C + 1, 3)
    return LatentPreview(solution[:-1], solution[-1])
