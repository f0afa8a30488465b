"""The requested layout as a colour-coded image, with a legend of prompts in its PNG metadata."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from multidiffusion.core.features.regions import Region, pixel_mask
from multidiffusion.pipeline.inputs.region_file import Background

BACKGROUND_COLOUR = (128, 128, 128)
# Distinct, saturated colours for the regions (then repeated with a darker shade).
PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40),
]  # fmt: skip


def region_colour(index: int) -> tuple[int, int, int]:
    """The colour of foreground region ``index``."""
    r, g, b = PALETTE[index % len(PALETTE)]
    shade = 1.0 / (1 + index // len(PALETTE))
    return int(r * shade), int(g * shade), int(b * shade)


def hex_colour(rgb: tuple[int, int, int]) -> str:
    """``#rrggbb``."""
    return "#" + "".join(f"{c:02x}" for c in rgb)


def segmentation_image(
    regions: Sequence[Region], background: Background | None, height: int, width: int
) -> tuple[np.ndarray, dict[str, str]]:
    """Each pixel coloured by the region with the largest weight there (background: grey).

    Returns:
        (H, W, 3) uint8 image and the legend ``{"#rrggbb": prompt}``.
    """
    masks = [pixel_mask(r, height, width, f"regions[{i}]") * r.weight for i, r in enumerate(regions)]
    fg = torch.stack(masks) if masks else torch.zeros(0, height, width)
    bg = (1 - fg.sum(0, keepdim=True)).clamp(min=0)
    owner = torch.cat([bg, fg]).argmax(0).numpy()
    colours = np.array([BACKGROUND_COLOUR] + [region_colour(i) for i in range(len(regions))], dtype=np.uint8)
    legend = {}
    if background is not None:
        legend[hex_colour(BACKGROUND_COLOUR)] = background.prompt
    for i, r in enumerate(regions):
        legend[hex_colour(region_colour(i))] = r.label
    return colours[owner], legend


def save_segmentation(
    regions: Sequence[Region], background: Background | None, height: int, width: int, path: str | Path
) -> None:
    """Write the colour-coded layout PNG (atomically) with a ``legend`` JSON text chunk."""
    from PIL import Image

    from multidiffusion.pipeline.files.png import save_png

    image, legend = segmentation_image(regions, background, height, width)
    save_png(Image.fromarray(image), path, {"legend": json.dumps(legend)})
