"""Tiny random ControlNets and T2I-Adapters, built in-process and saved as diffusers folders (safetensors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def _randomise(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    """Every parameter drawn afresh from a seeded generator (the zero convolutions too, so residuals are not 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)


def tiny_controlnet(unet: Any, seed: int = 0, conditioning_channels: int = 3) -> Any:
    """A ControlNet shaped for ``unet`` (diffusers' ``from_unet``), every weight random."""
    from diffusers import ControlNetModel

    net = ControlNetModel.from_unet(unet, conditioning_channels=conditioning_channels)
    _randomise(net, seed)
    return net.eval()


def tiny_adapter(channels: tuple[int, ...] = (16, 32), seed: int = 0, adapter_type: str = "full_adapter") -> Any:
    """A T2I-Adapter with the UNet's block widths, every weight random."""
    from diffusers import T2IAdapter

    adapter = T2IAdapter(
        in_channels=3, channels=list(channels), num_res_blocks=1, downscale_factor=8, adapter_type=adapter_type
    )
    _randomise(adapter, seed)
    return adapter.eval()


def save_network(network: Any, folder: Path) -> Path:
    """``save_pretrained`` as safetensors; returns the folder."""
    network.save_pretrained(folder, safe_serialization=True)
    return folder


def guide_image(height: int, width: int, seed: int = 0) -> Any:
    """A random RGB PIL image (a stand-in for an edge or depth map)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
