"""The families' denoisers refuse conditions that do not match the canvases with one clear line.

A caller of ``core.sample`` hands the conditions over unchanged, so a condition with the wrong number of rows
reaches the family's denoiser: each condition holds one entry per canvas. The checks run before the network,
so stand-ins for the networks (only their configs are read) are enough.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from multidiffusion.adapters.families.flux import FluxCondition, FluxDenoiser
from multidiffusion.adapters.families.sd import UNetDenoiser
from multidiffusion.adapters.families.sd3 import Sd3Condition, Sd3Denoiser
from multidiffusion.adapters.families.sdxl import SdxlCondition, SdxlDenoiser
from multidiffusion.core import InvalidInputError

X = torch.zeros(4, 4, 8, 8)  # two conditions × two canvases
T = torch.tensor(500)


def test_sd_needs_one_text_embedding_per_row():
    conds = [torch.zeros(2, 77, 8), torch.zeros(1, 77, 8)]
    with pytest.raises(InvalidInputError, match="4 latents but 3 text embeddings; each condition needs one row per"):
        UNetDenoiser(unet=None).network_inputs(X, conds)


def test_sdxl_needs_one_entry_per_canvas():
    conds = [
        SdxlCondition(torch.zeros(2, 77, 8), torch.zeros(2, 4)),
        SdxlCondition(torch.zeros(1, 77, 8), torch.zeros(1, 4)),
    ]
    with pytest.raises(InvalidInputError, match=r"4 latents but conditions of \[2, 1\] entries; each condition needs"):
        SdxlDenoiser(unet=None).network_inputs(X, conds)


def test_sd3_needs_one_entry_per_canvas():
    transformer = SimpleNamespace(config=SimpleNamespace(patch_size=2, pos_embed_max_size=None))
    conds = [Sd3Condition(torch.zeros(3, 77, 8), torch.zeros(3, 4))]
    with pytest.raises(InvalidInputError, match=r"4 latents but conditions of \[3\] entries; each condition needs"):
        Sd3Denoiser(transformer).forward(X, T, conds)


def test_flux_needs_one_row_per_canvas_and_its_guidance():
    transformer = SimpleNamespace(config=SimpleNamespace(guidance_embeds=True))
    flux = FluxDenoiser(transformer)
    short = [FluxCondition(torch.zeros(3, 16, 8), torch.zeros(3, 4), guidance=3.5)]
    with pytest.raises(InvalidInputError, match="4 latents but 3 text embeddings; each condition needs one row per"):
        flux.network_inputs(X, short)
    unguided = [FluxCondition(torch.zeros(4, 16, 8), torch.zeros(4, 4))]
    with pytest.raises(InvalidInputError, match=r"embeds the guidance scale; the condition carries none \(set it with"):
        flux.network_inputs(X, unguided)
