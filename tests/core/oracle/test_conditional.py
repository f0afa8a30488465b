"""The field given some of its pixels (the exact E[x | known pixels]): input checks.

Its agreement with the dense Gaussian conditioning formulas is tested in tests/oracle/test_image_exact.py.
"""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core import InvalidInputError
from multidiffusion.core.oracle.conditional import conditional
from multidiffusion.core.oracle.field import GaussianField

FIELD = GaussianField(length_scale=2.0, sigma=0.3)
VALUES = torch.zeros(3, 4, 6)
MASK = torch.zeros(4, 6, dtype=torch.bool)
MASK[:, :2] = True


def test_known_pixels_keep_their_values_and_have_no_variance():
    values = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(0))
    result = conditional(FIELD, values, MASK)
    assert torch.equal(result.mean[..., :2], values[..., :2].double())
    assert bool((result.variance[:, :2] == 0).all()) and bool((result.variance[:, 2:] > 0).all())
    assert result.unknown.numel() == result.covariance.shape[0] == 16


@pytest.mark.parametrize(
    ("values", "mask", "jitter", "message"),
    [
        (torch.zeros(4, 6), MASK, 1e-12, r"known_values must be \(\.\.\., C, H, W\), got shape \(4, 6\)"),
        (VALUES, MASK.T, 1e-12, r"known_mask must be \(H, W\) = \(4, 6\), got shape \(6, 4\)"),
        (VALUES, MASK, -1.0, "jitter must be a finite number >= 0, got -1.0"),
        (VALUES, MASK, float("nan"), "jitter must be a finite number >= 0, got nan"),
        (VALUES, MASK.float() * 0.5, 1e-12, "known_mask must be boolean or hold only 0 and 1"),
        (VALUES, torch.zeros(4, 6, dtype=torch.bool), 1e-12, "known_mask has no known pixel; set at least one"),
    ],
)
def test_bad_input_is_refused(values, mask, jitter, message):
    with pytest.raises(InvalidInputError, match=message):
        conditional(FIELD, values, mask, jitter=jitter)


def test_a_jitter_too_small_for_cholesky_is_refused():
    """63 known pixels of an 8 × 8 canvas at ℓ = 8: the smallest eigenvalues of Σ_kk (products of those of K_8, which
    fall far below float64's 2e-16 relative) make it numerically singular, so jitter 0 cannot factor it."""
    field = GaussianField(length_scale=8.0, sigma=0.3)
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[0, 0] = False
    with pytest.raises(InvalidInputError, match="not numerically positive definite with jitter 0; use a larger jitter"):
        conditional(field, torch.zeros(1, 8, 8), mask, jitter=0.0)
