"""The toy family's adapter (adapters.families.toy): the input it refuses, each with one clear line.

Its exactness and its conformance to the method are tested in tests/oracle.
"""

from __future__ import annotations

import pytest
import torch

from multidiffusion.adapters.families.toy import (
    SCHEDULER_CONFIG,
    GaussianFieldDenoiser,
    IdentityCodec,
    NoiseLevels,
    alphas_cumprod,
)
from multidiffusion.core import InvalidInputError
from multidiffusion.core.oracle.field import GaussianField

T = torch.tensor(500)


def test_an_unsupported_beta_schedule_is_refused():
    config = {**SCHEDULER_CONFIG, "beta_schedule": "squaredcos_cap_v2"}
    message = "beta schedule 'squaredcos_cap_v2' is not supported by the toy model; use 'linear' or 'scaled_linear'"
    with pytest.raises(InvalidInputError, match=message):
        alphas_cumprod(config)


def test_a_timestep_out_of_the_trained_range_is_refused():
    with pytest.raises(InvalidInputError, match=r"timestep out of the trained range 0…999: \[1000.5\]"):
        NoiseLevels(SCHEDULER_CONFIG)(torch.tensor(1000.5), 1)


def test_the_codec_takes_rgb_batches_only():
    with pytest.raises(InvalidInputError, match=r"expected \(B, 3, H, W\), got shape \(1, 4, 8, 8\)"):
        IdentityCodec().encode(torch.zeros(1, 4, 8, 8))
    with pytest.raises(InvalidInputError, match=r"expected \(B, 3, H, W\), got shape \(3, 8, 8\)"):
        IdentityCodec().decode(torch.zeros(3, 8, 8))


def test_the_denoiser_refuses_latents_and_conditions_that_do_not_match():
    denoiser = GaussianFieldDenoiser(GaussianField(), SCHEDULER_CONFIG)
    with pytest.raises(InvalidInputError, match=r"takes \(B, 3, h, w\) latents, got shape \(2, 4, 8, 8\)"):
        denoiser(torch.zeros(2, 4, 8, 8), T, [torch.zeros(2, 3)])
    message = r"2 latents but mean colours of shape \(1, 1, 3\); conditions must be \(N, 3\) or \(N, K, 3\)"
    with pytest.raises(InvalidInputError, match=message):
        denoiser(torch.zeros(2, 3, 8, 8), T, [torch.zeros(1, 3)])
