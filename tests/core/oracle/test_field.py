"""The Gaussian field of the core's oracle: exact posterior against brute force, eigenbasis, sampler, parameters."""

from __future__ import annotations

import math

import pytest
import torch

from multidiffusion.core import InvalidInputError
from multidiffusion.core.oracle.field import PREDICTION_TYPES, GaussianField, se_kernel
from tests.helpers.numerics import assert_close_scaled

REL_F32_VS_F64 = 1e-5
# Relative to max|expected| (tests/helpers/numerics.py). float64 eigenbasis vs a dense LAPACK solve of 35 unknowns:
# measured 2.1e-13 (eps 2.2e-16); float32 predictions (|x| up to 56) vs float64, one eigenbasis transform: measured
# 1.6e-7.
REL_F64 = 1e-10


def dense_posterior(field: GaussianField, x_t, mean, alpha, s):
    """E[x₀ | x_t] and E[ε | x_t] by a dense (hw × hw) solve per row: the definition, no eigenbasis."""
    b, c, h, w = x_t.shape
    cov = field.covariance(h, w)
    eye = torch.eye(h * w, dtype=torch.float64)
    x0s, epss = [], []
    for i in range(b):
        a, sd = float(alpha[i]), float(s[i])
        var = a * a * cov + sd * sd * eye  # Var(x_t)
        resid = (x_t[i].reshape(c, h * w) - a * mean[i][:, None]).T  # (hw, C)
        solved = torch.linalg.solve(var, resid)
        x0s.append((mean[i][:, None] + (a * cov @ solved).T).reshape(c, h, w))
        epss.append((sd * solved).T.reshape(c, h, w))
    return torch.stack(x0s), torch.stack(epss)


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(3)
    field = GaussianField(length_scale=1.7, sigma=0.4)
    abar = torch.tensor([0.003, 0.2, 0.5, 0.93, 0.9991], dtype=torch.float64)
    alpha, s = abar.sqrt(), (1 - abar).sqrt()
    mean = torch.rand(5, 3, generator=g, dtype=torch.float64) * 2 - 1
    x_t = torch.randn(5, 3, 5, 7, generator=g, dtype=torch.float64)  # non-square: catches a transposed axis
    return field, x_t, mean, alpha, s


@pytest.mark.float_sensitive
def test_posterior_matches_dense_brute_force(problem):
    field, x_t, mean, alpha, s = problem
    x0, eps = field.posterior(x_t, mean, alpha, s)
    ref_x0, ref_eps = dense_posterior(field, x_t, mean, alpha, s)
    assert_close_scaled(x0, ref_x0, rel=REL_F64, what="E[x0|x_t] vs dense solve")
    assert_close_scaled(eps, ref_eps, rel=REL_F64, what="E[eps|x_t] vs dense solve")
    v = field.predict(x_t, mean, alpha, s, "v_prediction")
    a, sd = alpha.reshape(-1, 1, 1, 1), s.reshape(-1, 1, 1, 1)
    assert_close_scaled(v, a * ref_eps - sd * ref_x0, rel=REL_F64, what="v vs dense solve")  # v = α ε − s x₀


@pytest.mark.float_sensitive
def test_predictions_reassemble_x_t(problem):
    """E[x_t | x_t] = α E[x₀ | x_t] + s E[ε | x_t] = x_t, and each prediction type is one of them."""
    field, x_t, mean, alpha, s = problem
    x0, eps = field.posterior(x_t, mean, alpha, s)
    a, sd = alpha.reshape(-1, 1, 1, 1), s.reshape(-1, 1, 1, 1)
    assert_close_scaled(a * x0 + sd * eps, x_t, rel=REL_F64, what="α x0 + s eps vs x_t")
    assert torch.equal(field.predict(x_t, mean, alpha, s, "sample"), x0)
    assert torch.equal(field.predict(x_t, mean, alpha, s, "epsilon"), eps)
    assert PREDICTION_TYPES == ("epsilon", "sample", "v_prediction")
    with pytest.raises(InvalidInputError, match="unknown prediction type"):
        field.predict(x_t, mean, alpha, s, "score")


@pytest.mark.float_sensitive
def test_float32_matches_float64(problem):
    field, x_t, mean, alpha, s = problem
    ref = field.predict(x_t, mean, alpha, s)
    out = field.predict(x_t.float(), mean.float(), alpha.float(), s.float())
    assert out.dtype == torch.float32
    assert_close_scaled(out, ref, rel=REL_F32_VS_F64, what="float32 vs float64 prediction")


def test_scalar_noise_level_and_pure_noise_limit():
    field = GaussianField()
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean = torch.tensor([0.2, -0.1, 0.4], dtype=torch.float64)
    # α = 0: x_t is pure noise, so E[x₀ | x_t] = μ and E[ε | x_t] = x_t.
    x0, eps = field.posterior(x, mean, 0.0, 1.0)
    assert torch.allclose(x0, mean[None, :, None, None].expand_as(x0))
    assert torch.allclose(eps, x)


@pytest.mark.float_sensitive
def test_eigenbasis_diagonalises_the_covariance():
    field = GaussianField(length_scale=2.5, sigma=0.3)
    u_h, u_w, lam = field.eigenbasis(4, 6)
    u = torch.kron(u_h, u_w)
    assert_close_scaled(u @ torch.diag(lam.reshape(-1)) @ u.T, field.covariance(4, 6), rel=REL_F64, what="U Λ Uᵀ vs K")
    assert bool((lam >= 0).all())
    assert field.axis_basis(4) is field.axis_basis(4)  # cached per size
    k = se_kernel(5, 2.0)
    assert torch.allclose(torch.diagonal(k), torch.ones(5, dtype=torch.float64))
    assert math.isclose(float(k[0, 1]), math.exp(-1 / 8))


def test_exact_sampler_has_the_field_covariance():
    field = GaussianField(length_scale=1.5, sigma=0.5)
    mean = torch.tensor([0.3, -0.2, 0.0])
    x = field.sample(20000, 3, 4, mean, generator=torch.Generator().manual_seed(1)).double()
    assert x.shape == (20000, 3, 3, 4)
    centred = (x - mean.double()[None, :, None, None]).reshape(-1, 12)  # rows: (sample, channel)
    empirical = centred.T @ centred / centred.shape[0]
    # std of each entry ≤ σ²·sqrt(2/n) ≈ 0.0014 for n = 60000: 0.008 is > 5 standard deviations.
    assert (empirical - field.covariance(3, 4)).abs().max() < 0.008
    assert (x.mean((0, 2, 3)) - mean.double()).abs().max() < 0.02
    again = field.sample(5, 3, 4, mean, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, field.sample(5, 3, 4, mean, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize(("ell", "sigma"), [(0.0, 0.3), (3.0, -1.0), (float("nan"), 0.3), (3.0, float("inf"))])
def test_field_rejects_bad_parameters(ell, sigma):
    with pytest.raises(InvalidInputError, match="must be a finite number > 0"):
        GaussianField(ell, sigma)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"long_scale": 0.0}, "long length scale must be > 0, got 0.0"),
        ({"long_scale": float("inf")}, "long length scale must be > 0, got inf"),
        ({"long_weight": 1.0}, r"long weight must be in \[0, 1\), got 1.0"),
        ({"long_weight": -0.1}, r"long weight must be in \[0, 1\), got -0.1"),
    ],
)
def test_field_rejects_bad_long_range_parameters(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        GaussianField(3.0, 0.3, **kwargs)


def test_predictions_reject_bad_shapes():
    """Bad input to the public denoiser raises InvalidInputError (a ValueError) saying what shape is allowed."""
    field = GaussianField()
    flat = torch.zeros(3, 6, 6)  # no batch axis
    with pytest.raises(InvalidInputError, match=r"x_t must be \(B, C, h, w\), got shape \(3, 6, 6\)"):
        field.predict(flat, torch.zeros(3), 0.5, 0.5)
    with pytest.raises(InvalidInputError, match=r"x_t must be \(B, C, h, w\), got shape \(3, 6, 6\)"):
        field.predict_mixture(flat, torch.zeros(1, 2, 3), 0.5, 0.5)
    with pytest.raises(InvalidInputError, match=r"means must be \(B, K, C\) = \(2, K, 3\), got \(2, 3\)"):
        field.predict_mixture(torch.zeros(2, 3, 6, 6), torch.zeros(2, 3), 0.5, 0.5)
    with pytest.raises(InvalidInputError, match="unknown prediction type 'score'"):
        field.predict_mixture(torch.zeros(2, 3, 6, 6), torch.zeros(2, 2, 3), 0.5, 0.5, "score")
    assert issubclass(InvalidInputError, ValueError)  # callers that catch ValueError still catch these


def test_field_statistics_theory():
    field = GaussianField(length_scale=3.0, sigma=0.3)
    assert math.isclose(field.variance, 0.09)
    assert math.isclose(field.correlation(1), math.exp(-1 / 18))


def test_a_long_range_component_keeps_the_denoiser_exact():
    """The harder oracle (docs/quality.md): each axis kernel mixes ℓ = 4 with L = 32 at ρ = 0.3. The eigenbasis
    posterior equals the dense closed form, Eq. 2, E[x₀ | x_t] = μ + α Σ (α² Σ + s² I)⁻¹ (x_t − α μ), to float64
    rounding (measured 1.7e-15), and the field's correlation is the mixture's."""
    field = GaussianField(4.0, 0.3, 32.0, 0.3)
    h, w, alpha, s = 6, 7, 0.6, 0.8
    x = torch.randn(2, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mean = torch.full((2, 3), 0.1, dtype=torch.float64)
    sigma = field.covariance(h, w)
    gain = alpha * sigma @ torch.linalg.inv(alpha**2 * sigma + s**2 * torch.eye(h * w, dtype=torch.float64))
    centred = (x - alpha * mean[:, :, None, None]).reshape(2, 3, h * w, 1)
    dense = mean[:, :, None, None] + (gain @ centred).reshape(x.shape)
    assert (field.predict(x, mean, alpha, s, "sample") - dense).abs().max() < 1e-12
    expected = 0.7 * math.exp(-(16**2) / 32) + 0.3 * math.exp(-(16**2) / (2 * 32**2))
    assert abs(field.correlation(16) - expected) < 1e-15


def test_long_range_options_of_the_toy_model_are_checked():
    from multidiffusion.adapters.families.toy import parse_spec

    assert parse_spec("toy:ell=8,long=64,rho=0.3").rho == 0.3
    for bad in ("toy:rho=1", "toy:rho=-0.1", "toy:long=0"):
        with pytest.raises(InvalidInputError):
            parse_spec(bad)
