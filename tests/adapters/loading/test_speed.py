"""Speed settings of the networks (channels-last, torch.compile): they change how the model runs, not what."""

from __future__ import annotations

import copy

import pytest
import torch

from multidiffusion.adapters import load_model
from multidiffusion.adapters.loading.speed import apply_speed_settings, networks
from multidiffusion.adapters.model.state import SpeedSettings
from tests.helpers.numerics import assert_close_scaled
from tests.helpers.tiny_models import loaded

# Relative to max|before| (tests/helpers/numerics.py): one tiny-UNet call whose convolutions take other oneDNN kernels
# in channels-last (outputs |x| ≈ 1.4); measured 1.0e-6 on AVX2 and AVX-512 kernels.
REL_CHANNELS_LAST = 2e-5

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def fresh(small):
    """A model on copies of the small components, so settings do not leak into other tests."""
    return loaded({**small, "unet": copy.deepcopy(small["unet"]), "vae": copy.deepcopy(small["vae"])})


@pytest.mark.float_sensitive
def test_channels_last_keeps_the_outputs(fresh, small):
    x = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    text = fresh.encode_prompts(["a", "b", "c"])
    before = fresh.denoiser(x, torch.tensor(500), [text])
    apply_speed_settings(fresh, channels_last=True)
    unet, vae = networks(fresh)
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    after = fresh.denoiser(x, torch.tensor(500), [text])
    assert after.is_contiguous() or after.is_contiguous(memory_format=torch.channels_last)
    assert_close_scaled(after, before, rel=REL_CHANNELS_LAST, what="channels-last UNet vs contiguous")
    assert fresh.state.speed == SpeedSettings(channels_last=True, compile=False)
    assert not small["unet"].conv_in.weight.is_contiguous(memory_format=torch.channels_last)  # a copy changed


def test_compile_wraps_the_denoiser_network_only(fresh):
    """Compiling happens at the first call (minutes on a CPU), so only the wrapping is checked here."""
    apply_speed_settings(fresh, compile=True)
    unet, vae = networks(fresh)
    assert unet._compiled_call_impl is not None
    assert vae._compiled_call_impl is None  # the codec runs once per image: not worth compiling


def test_models_without_networks_are_left_alone():
    toy = load_model("toy", device="cpu", channels_last=True, compile=True)
    assert networks(toy) == []
    assert apply_speed_settings(toy, channels_last=True) is toy
