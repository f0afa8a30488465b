"""Region-based generation (MultiDiffusion §4.2) on tiny SD components (native window 16 cells = 128 px)."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.adapters import make_scheduler
from multidiffusion.core import ClassifierFreeGuidance, GuidedCondition, layout_views, sample, view_weights
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.regions import Region, region_tasks, to_latent_grid, with_background
from multidiffusion.core.types import ViewTask
from multidiffusion.pipeline.modes.regions import region_weights
from tests.helpers.numerics import assert_close_scaled
from tests.helpers.reference_impl import per_view_regions
from tests.helpers.tiny_models import loaded

# Relative to max|expected| (tests/helpers/numerics.py): 3–4 steps of the tiny UNet with CFG over 3 prompts, latents |x|
# ≈ 17; fused vs per-view regions and view_batch_size 3 vs all measured up to 1.86e-6 (oneDNN limited to AVX2), 1.45e-6
# otherwise, on AVX2 and AVX-512 kernels.
REL_UNET = 5e-5

H, W = 192, 320  # px: 24 × 40 latent cells, 2 rows × 4 columns of 16-cell views at stride 8
REGIONS = [Region("a red ball", box=(64, 32, 160, 128)), Region("a green tree", box=(200, 80, 304, 184))]
BACKGROUND = "a sandy beach"


def run(pipe, seed=0, **kwargs):
    args = dict(
        height=H,
        width=W,
        num_inference_steps=4,
        output_type="latent",
        progress=False,
        bootstrap_fraction=0.0,
        stride=64,
    )
    args.update(kwargs)
    return pipe.regions(REGIONS, BACKGROUND, generator=torch.Generator().manual_seed(seed), **args)


@pytest.mark.float_sensitive
def test_matches_official_per_view_region_algorithm(small, small_pipe):
    """Bootstrapping off: the fused engine equals stepping every view × region and averaging with the masks."""
    ours = run(small_pipe, seed=3, weights="uniform").latents  # the official algorithm's view weights
    model = loaded(small)
    sched = make_scheduler("ddim", small["scheduler"].config)
    sched.set_timesteps(4)
    latents = torch.randn((1, 4, 24, 40), generator=torch.Generator().manual_seed(3)) * sched.init_noise_sigma
    masks = region_weights(REGIONS, _bg(), H, W, 8)
    views = layout_views(24, 40, 16, 8)
    prompts = [BACKGROUND] + [r.prompt for r in REGIONS]
    conds = [model.encode_prompts([p]) for p in prompts]
    unconds = [model.encode_prompts([""]) for _ in prompts]
    expected = per_view_regions(small["unet"], sched, latents, views, masks, conds, unconds, 7.5)
    assert expected.abs().max() > 1
    assert_close_scaled(ours, expected, rel=REL_UNET, what="fused regions vs per-view regions")


def _bg():
    from multidiffusion.pipeline.inputs.region_file import Background

    return Background(BACKGROUND)


@pytest.mark.float_sensitive
def test_skipping_empty_view_region_pairs_changes_nothing_and_saves_calls(small):
    """All (view, region) pairs vs only those with weight in the view: same canvas, fewer denoiser rows."""
    model = loaded(small)
    masks = region_weights(REGIONS, _bg(), H, W, 8)
    views = layout_views(24, 40, 16, 8)
    profiles = view_weights(views, 24, 40, "uniform")
    kept = region_tasks(views, masks, profiles)
    everything = [ViewTask(v, r, masks[r, v.top : v.top + 16, v.left : v.left + 16]) for v in views for r in range(3)]
    conds = [
        GuidedCondition(model.encode_prompts([p]), model.encode_prompts([""]), 7.5)
        for p in [BACKGROUND, "a red ball", "a green tree"]
    ]
    rows = []

    def counting(x, t, c, views=None):
        rows.append(x.shape[0])
        return model.denoiser(x, t, c, views=views)

    results = []
    for tasks in (everything, kept):
        rows.clear()
        sched = make_scheduler("ddim", small["scheduler"].config)
        sched.set_timesteps(3)
        x_T = torch.randn((1, 4, 24, 40), generator=torch.Generator().manual_seed(0))
        results.append(
            (sample(ClassifierFreeGuidance(counting), sched, x_T, tasks, conds, view_batch_size=4), sum(rows))
        )
    (full, full_rows), (skipped, skipped_rows) = results
    assert_close_scaled(skipped, full, rel=REL_UNET, what="kept pairs vs all pairs")
    assert len(everything) == 24 and len(kept) < len(everything)  # 2 × 4 views × 3 prompts
    assert skipped_rows == full_rows * len(kept) // len(everything) < full_rows
    print(f"(view, region) pairs: {len(everything)} -> {len(kept)}; denoiser rows {full_rows} -> {skipped_rows}")


def test_bootstrapping_is_seeded_and_fraction_zero_is_off(small_pipe):
    a = run(small_pipe, seed=5, bootstrap_fraction=0.5).latents
    b = run(small_pipe, seed=5, bootstrap_fraction=0.5).latents
    off = run(small_pipe, seed=5, bootstrap_fraction=0.0).latents
    tiny = run(small_pipe, seed=5, bootstrap_fraction=0.1).latents  # rounds to 0 of 4 steps
    assert torch.equal(a, b)
    assert torch.equal(off, tiny)
    assert (a - off).abs().max().item() > 1e-3  # bootstrapping changes what the regions' views see
    assert not torch.equal(a, run(small_pipe, seed=6, bootstrap_fraction=0.5).latents)


@pytest.mark.float_sensitive
def test_view_batch_size_invariance_with_bootstrapping(small_pipe):
    a = run(small_pipe, seed=2, bootstrap_fraction=0.5, view_batch_size=3).latents
    b = run(small_pipe, seed=2, bootstrap_fraction=0.5, view_batch_size=None).latents
    assert_close_scaled(a, b, rel=REL_UNET, what="view_batch_size=3 vs all, bootstrapped")


def test_masks_go_to_the_latent_grid_by_area():
    mask = torch.zeros(16, 24)
    mask[0:8, 0:12] = 1.0  # covers one full cell and half of the next
    grid = to_latent_grid(mask[None], 8)[0]
    assert grid.tolist() == [[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]]
    weights = with_background(grid[None])
    assert torch.allclose(weights.sum(0), torch.ones(2, 3))


def test_regions_without_background_must_cover_the_canvas(small_pipe):
    with pytest.raises(
        InvalidInputError, match=r"px uncovered \(within the box \[x0, y0, x1, y1\] = .*\) and there is no"
    ):
        small_pipe.regions(REGIONS, None, height=H, width=W, num_inference_steps=1, progress=False)
    full = [Region("left", box=(0, 0, 160, H)), Region("right", box=(160, 0, W, H))]
    out = small_pipe.regions(full, None, height=H, width=W, num_inference_steps=1, output_type="latent", progress=False)
    assert out.latents.shape == (1, 4, 24, 40)


@pytest.mark.heavy
def test_wide_canvas_several_rows_and_soft_mask(small_pipe):
    soft = torch.zeros(256, 1024)
    soft[:, 300:700] = torch.linspace(0, 1, 400)
    out = small_pipe.regions(
        [Region("a ramp", mask=soft), Region("a box", box=(800, 100, 1000, 240))],
        "sky",
        height=256,
        width=1024,
        num_inference_steps=2,
        output_type="latent",
        progress=False,
        bootstrap_fraction=0.5,
    )
    assert out.latents.shape == (1, 4, 32, 128) and bool(torch.isfinite(out.latents).all())
    assert out.metadata.to_dict()["regions"][0]["mask_size"] == [256, 1024]


@pytest.mark.parametrize(
    ("regions", "background", "kwargs", "message"),
    [
        ([Region("x", box=(0, 0, 400, 10))], "bg", {}, r"regions\[0\].box \[0, 0, 400, 10\] must satisfy"),
        ([Region("x", box=(10, 10, 10, 20))], "bg", {}, r"regions\[0\].box"),
        (
            [Region("x", mask=torch.ones(5, 5))],
            "bg",
            {},
            r"regions\[0\].mask is 5×5 px \(width×height\); the canvas is",
        ),
        ([Region("x", mask=torch.full((H, W), 2.0))], "bg", {}, r"values must lie in \[0, 1\]"),
        ([Region("x")], "bg", {}, "exactly one of mask and box"),
        ([], None, {}, "no regions and no background"),
        (
            [Region("x", box=(0, 0, 8, 8), name="a"), Region("y", box=(0, 0, 8, 8), name="a")],
            "bg",
            {},
            "name 'a' is used more than once",
        ),
        (REGIONS, "bg", {"bootstrap_fraction": 1.5}, r"bootstrap fraction must be in \[0, 1\]"),
        ([Region("x", box=(0, 0, 8, 8), weight=0.0)], "bg", {}, r"weight must be > 0"),
    ],
)
def test_bad_regions_raise_one_line(small_pipe, regions, background, kwargs, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        small_pipe.regions(regions, background, height=H, width=W, num_inference_steps=1, progress=False, **kwargs)
    assert "\n" not in str(info.value)
