"""The size and view checks of the panorama and regions modes need only a model's geometry: the same functions run
before loading (on the geometry read from configs) and inside the loaded model's checks, with the same results."""

from __future__ import annotations

import pytest

from multidiffusion.adapters.loading.geometry import ModelGeometry, geometry_of
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.regions import Region
from multidiffusion.core.features.sync import SyncSettings
from multidiffusion.pipeline import ViewSettings
from multidiffusion.pipeline.inputs.region_file import Background
from multidiffusion.pipeline.modes.panorama import panorama_geometry
from multidiffusion.pipeline.modes.regions import RegionRequest, region_geometry

SD3_LIKE = ModelGeometry("sd3", 16, 64)


def test_panorama_geometry_is_what_the_loaded_check_resolves(small_pipe):
    views = ViewSettings(window=64, stride=16)
    sync = SyncSettings(anchor="center")
    laid = panorama_geometry(geometry_of(small_pipe.model), 64, 256, views, sync)
    settings = small_pipe.settings("sky", height=64, width=256, num_inference_steps=2, views=views, sync=sync)
    assert laid.views == settings.views and laid.sync == settings.sync
    assert laid.view_count == 13 and laid.views.weights == "uniform"  # (256 − 64) / 16 + 1 views; sync's weights


def test_panorama_geometry_defaults_come_from_the_geometry():
    laid = panorama_geometry(SD3_LIKE, 1024, 2048, ViewSettings())
    assert (laid.views.window, laid.views.stride, laid.views.weights) == (1024, 128, "gaussian")
    toy = panorama_geometry(ModelGeometry("gaussian-field", 1, 64, 16), 64, 128, ViewSettings())
    assert (toy.views.window, toy.views.stride, toy.view_count) == (64, 16, 5)


@pytest.mark.parametrize(
    ("height", "width", "views", "message"),
    [
        (264, 512, ViewSettings(), "height must be a multiple of 16 px for this model, got 264 (nearest: 256)"),
        (256, 512, ViewSettings(window=136), "window must be a multiple of 16 px"),
        (256, 512, ViewSettings(window=128, stride=24), "stride must be a multiple of 16 px"),
        (256, 512, ViewSettings(stride=2048), "stride (2048 px) must not exceed the window (1024 px)"),
    ],
)
def test_panorama_geometry_refuses(height, width, views, message):
    with pytest.raises(InvalidInputError) as caught:
        panorama_geometry(SD3_LIKE, height, width, views)
    assert message in str(caught.value)


def _request(height: int = 64, width: int = 128, views: ViewSettings | None = None) -> RegionRequest:
    return RegionRequest(height, width, "", 2, None, 0.0, None, views or ViewSettings(), 0.2, None)


def test_region_geometry_masks_are_the_plans(small_pipe):
    regions = [Region("a red ball", box=(0, 0, 32, 32))]
    laid = region_geometry(geometry_of(small_pipe.model), regions, Background("sky"), _request())
    plan = small_pipe.check_regions(regions, "sky", 64, 128, num_inference_steps=2)
    assert laid.masks.shape == (2, 8, 16) and bool((laid.masks == plan.masks.cpu()).all())
    assert laid.views == plan.views


@pytest.mark.parametrize(
    ("regions", "background", "request_", "message"),
    [
        (
            [Region("ball", box=(0, 0, 32, 32))],
            Background("sky"),
            _request(width=136),
            "width must be a multiple of 16",
        ),
        ([Region("ball", box=(0, 0, 160, 32))], Background("sky"), _request(), "must satisfy 0 ≤ x0 < x1 ≤ 128"),
        ([Region("ball", box=(0, 0, 32, 32))], None, _request(), "px uncovered"),
        ([Region("ball", box=(0, 0, 32, 32))], Background("sky"), _request(views=ViewSettings(tile="y")), "wrap"),
    ],
)
def test_region_geometry_refuses(regions, background, request_, message):
    with pytest.raises(InvalidInputError) as caught:
        region_geometry(SD3_LIKE, regions, background, request_)
    assert message in str(caught.value)
