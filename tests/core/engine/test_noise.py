"""The initial noise (core.engine.noise.initial_noise): packing and generators."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from multidiffusion.core import InvalidInputError, initial_noise


def test_packed_noise_is_the_unpacked_draw_space_to_depth():
    packed = initial_noise((1, 8, 3, 5), torch.Generator().manual_seed(0), "cpu", torch.float32, patch=2)
    flat = torch.randn(1, 2, 6, 10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(packed, torch.nn.functional.pixel_unshuffle(flat, 2))


def test_channels_that_do_not_pack_are_refused():
    message = "6 channels do not pack into 2×2 patches; the channels must be a multiple of 4"
    with pytest.raises(InvalidInputError, match=message):
        initial_noise((1, 6, 4, 4), None, "cpu", torch.float32, patch=2)


def test_a_generator_on_another_accelerator_is_refused():
    gpu_generator = SimpleNamespace(device=torch.device("cuda"))  # only its device is read before refusing
    with pytest.raises(InvalidInputError, match="cannot draw cpu noise from a cuda generator; use a CPU generator"):
        initial_noise((1, 4, 4, 4), gpu_generator, "cpu", torch.float32)
