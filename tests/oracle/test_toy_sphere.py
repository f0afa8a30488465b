"""The sphere on the exact model (docs/sphere.md, bench/sphere.py): reprojected views keep the field's statistics, and
there is no seam at ±180° or around the poles. Core-level runs with a 32-px window so they take seconds."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from multidiffusion.adapters.families.toy import SCHEDULER_CONFIG, GaussianFieldDenoiser
from multidiffusion.adapters.schedulers.names import make_scheduler
from multidiffusion.core.engine.sampling import sample
from multidiffusion.core.oracle.field import GaussianField
from multidiffusion.core.sphere.density import fov_for
from multidiffusion.core.sphere.tasks import StepFromViews, sphere_layout
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 30
SMALL = (32, 56)  # window, height (cells): fov ≈ 88° at the density of docs/sphere.md
NATIVE = (64, 108)  # the toy model's own window and the bench's height: fov ≈ 93°


def _bench():
    """bench/sphere.py: the measurement behind docs/sphere.md, with its figures."""
    path = REPO_ROOT / "bench" / "sphere.py"
    spec = importlib.util.spec_from_file_location("sphere_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _bench()


def spheres(field: GaussianField, seeds: int, canvases: int, size: tuple[int, int], steps: int = STEPS) -> torch.Tensor:
    """``seeds`` × ``canvases`` canvases (seed k draws the noise of canvases k·canvases …), sampled together: DDIM,
    the sphere's own hook."""
    window, height = size
    layout = sphere_layout(height, window, fov_for(height, window))
    denoiser = GaussianFieldDenoiser(field, SCHEDULER_CONFIG)
    scheduler = make_scheduler("ddim", dict(SCHEDULER_CONFIG))
    scheduler.set_timesteps(steps)
    shape = (canvases, 3, height, 2 * height)
    noise = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(seed)) for seed in range(seeds)])
    conds = [torch.zeros(seeds * canvases, 3)]
    return sample(denoiser, scheduler, noise, list(layout.tasks), conds, hooks=[StepFromViews()])


def figures(field: GaussianField, latents: torch.Tensor, count: int, size: tuple[int, int]) -> list[dict]:
    window, height = size
    fov = fov_for(height, window)
    return [bench.view_figures(latents, field, o, fov, window) for o in bench.orientations(count, 2026)]


def test_a_small_sphere_has_the_fields_correlation_and_no_seam():
    """12 seeds × 1 canvas, 15 DDIM steps (seconds): neighbour correlation within 5 % of the field's in every measured
    view, seams across ±180° and around the poles ≥ 0.95. (So few steps leave the variance of any DDIM sample of the
    field short; the heavy test below holds it to 5 % with 30.)"""
    field = GaussianField(3.0, 0.3)
    latents = spheres(field, 12, 1, SMALL, steps=15)
    views = figures(field, latents, 2, SMALL)
    assert all(abs(v["corr_x"] - 1) <= 0.05 and abs(v["corr_y"] - 1) <= 0.05 for v in views), views
    assert bench.wrap_seam(latents) >= 0.95
    assert min(v["seam"] for v in views if "seam" in v) >= 0.95


@pytest.mark.heavy
@pytest.mark.parametrize("ell_x", [None, 4.5], ids=["isotropic", "anisotropic"])
def test_every_reprojected_view_is_within_five_percent_of_the_field(ell_x):
    """Issue 26's bars at the toy model's own window, on 12 seeds × 4 canvases: variance and neighbour correlation
    within 5 % of the field's own in every measured view (both poles, the ±180° line, 6 random), seams across ±180°
    and around the poles ≥ 0.95. (With a 32-px window the anisotropic field's variance misses by 0.8 % in one view.)"""
    field = GaussianField(3.0, 0.3, length_scale_x=ell_x)
    latents = spheres(field, 12, 4, NATIVE)
    views = figures(field, latents, 6, NATIVE)
    for v in views:
        assert abs(v["variance"] - 1) <= 0.05, v
        assert abs(v["corr_x"] - 1) <= 0.05 and abs(v["corr_y"] - 1) <= 0.05, v
    assert bench.wrap_seam(latents) >= 0.95
    assert min(v["seam"] for v in views if "seam" in v) >= 0.95
