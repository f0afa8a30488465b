"""KID warns when it is computed on fewer samples than its subset size, where its estimate is noise."""

from __future__ import annotations

import warnings

import pytest
import torch

from multidiffusion.adapters.metrics.quality import KID_SUBSET, kid


def features(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))


def test_kid_on_four_samples_warns_with_the_size_it_needs():
    with pytest.warns(UserWarning, match=rf"KID on 4 samples per set is unreliable.*at least {KID_SUBSET}"):
        _, std = kid(features(4, 0), features(4, 1))
    assert std > 0  # the spread over subsets is still reported


def test_kid_on_enough_samples_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        kid(features(KID_SUBSET, 0), features(KID_SUBSET, 1))
