"""The anisotropic Gaussian field (ℓx ≠ ℓ, docs/sphere.md): separable, exact, and the isotropic default unchanged."""

from __future__ import annotations

import math

import pytest
import torch

from multidiffusion.core import InvalidInputError
from multidiffusion.core.oracle.field import GaussianField, pooled_field, se_kernel

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_default_and_an_equal_ell_x_are_bit_identical_to_the_isotropic_field():
    x = torch.randn(3, 3, 12, 20, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor([0.1, -0.2, 0.3])
    plain = GaussianField(3.0, 0.3).predict(x.clone(), mean, 0.6, 0.8)
    assert torch.equal(plain, GaussianField(3.0, 0.3, length_scale_x=None).predict(x.clone(), mean, 0.6, 0.8))
    assert torch.equal(plain, GaussianField(3.0, 0.3, length_scale_x=3.0).predict(x.clone(), mean, 0.6, 0.8))
    assert not GaussianField(3.0, 0.3, length_scale_x=3.0).anisotropic


def test_the_anisotropic_covariance_is_the_kronecker_product_of_its_axis_kernels():
    field = GaussianField(2.0, 0.5, length_scale_x=4.0)
    expected = 0.25 * torch.kron(se_kernel(5, 2.0), se_kernel(7, 4.0))
    assert torch.allclose(field.covariance(5, 7), expected, rtol=0, atol=1e-15)
    assert math.isclose(field.correlation(1, "rows"), math.exp(-1 / 8))
    assert math.isclose(field.correlation(1, "cols"), math.exp(-1 / 32))


def test_the_anisotropic_posterior_mean_is_the_dense_regression():
    """E[x₀ | x_t] = μ + α Σ (α² Σ + s² I)⁻¹ (x_t − α μ) with the dense Σ, to float64 rounding."""
    field = GaussianField(1.5, 0.4, length_scale_x=3.0)
    h, w, alpha, s = 6, 9, 0.7, math.sqrt(1 - 0.49)
    x = torch.randn(1, 1, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sigma = field.covariance(h, w)
    dense = (
        alpha
        * sigma
        @ torch.linalg.solve(alpha**2 * sigma + s**2 * torch.eye(h * w, dtype=torch.float64), x.reshape(-1))
    )
    got = field.predict(x, torch.zeros(1, 1, dtype=torch.float64), alpha, s, "sample")
    assert torch.allclose(got.reshape(-1), dense, rtol=0, atol=1e-10)


def test_exact_draws_have_the_axis_correlations():
    field = GaussianField(2.0, 1.0, length_scale_x=5.0)
    x = field.sample(400, 16, 16, (0.0,), generator=torch.Generator().manual_seed(2), channels=1).double()
    power = (x * x).mean()
    along = float((x[..., 1:] * x[..., :-1]).mean() / power)
    down = float((x[..., 1:, :] * x[..., :-1, :]).mean() / power)
    assert abs(along - field.correlation(1, "cols")) < 0.01 and abs(down - field.correlation(1, "rows")) < 0.01


def test_pooling_keeps_the_column_length_scale_and_bad_values_are_refused():
    pooled = pooled_field(GaussianField(2.0, 0.3, length_scale_x=4.0), 2)
    assert pooled.length_scale_x == 4.0
    with pytest.raises(InvalidInputError, match="ell_x"):
        GaussianField(2.0, 0.3, length_scale_x=-1.0)
