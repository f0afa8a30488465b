"""One settings object per concept: views, sync and the global view are each checked once, in their constructor, and
spelled the same in Python, on the command line and in a recipe; the older flat keywords still work and warn once."""

from __future__ import annotations

import warnings

import pytest
import torch

from multidiffusion import GlobalView, MultiDiffusionPipeline, SyncSettings, ViewSettings
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli.main import build_parser
from multidiffusion.interfaces.cli.settings_options import sync_flag
from multidiffusion.pipeline.settings import legacy
from multidiffusion.pipeline.settings.recipe import SYNC_RECORDED
from multidiffusion.pipeline.settings.reproduce import call_arguments

SMALL = dict(height=32, width=96, num_inference_steps=3, output_type="latent", progress=False)


@pytest.fixture(scope="module")
def toy() -> MultiDiffusionPipeline:
    return MultiDiffusionPipeline.from_pretrained("toy", device="cpu")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ViewSettings(window=0), "window must be a positive number of pixels"),
        (lambda: ViewSettings(window=16, stride=32), "must not exceed the window"),
        (lambda: ViewSettings(weights="round"), "unknown weights 'round'"),
        (lambda: ViewSettings(layout="zigzag"), "zigzag"),
        (lambda: ViewSettings(layout="half-overlap", stride=8), "sets the stride and weights itself"),
        (lambda: ViewSettings(tile="z"), "unknown tile 'z'"),
        (lambda: SyncSettings(stop_step=True), "sync stop step must be an integer"),
        (lambda: SyncSettings(anchor="left"), "sync anchor must be 'center' or a view index"),
        (lambda: SyncSettings(loss="l2"), "unknown sync loss 'l2'"),
        (lambda: SyncSettings(chunk_size=0), "sync chunk size must be an integer ≥ 1"),
        (lambda: GlobalView(0.0), "weight must be a number > 0"),
    ],
)
def test_each_object_refuses_bad_values_in_one_line(make, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_grouped_and_flat_keywords_make_the_same_canvas_and_recipe(toy):
    grouped = toy(
        "a red field",
        **SMALL,
        generator=torch.Generator().manual_seed(3),
        views=ViewSettings(window=32, stride=8, weights="uniform"),
        sync=SyncSettings(loss="builtin", stop_step=2),
        global_view=GlobalView(1.0, until=0.5),
    )
    with pytest.warns(FutureWarning):
        legacy._warned.clear()
        flat = toy(
            "a red field",
            **SMALL,
            generator=torch.Generator().manual_seed(3),
            window=32,
            stride=8,
            weights="uniform",
            sync=True,
            sync_loss="builtin",
            sync_stop_step=2,
            global_view=1.0,
            global_view_until=0.5,
        )
    assert torch.equal(grouped.latents, flat.latents)
    assert grouped.metadata.to_dict() == flat.metadata.to_dict()


def test_each_old_keyword_warns_once_with_its_new_spelling(toy):
    legacy._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            toy.settings("sky", height=32, width=96, window=32, sync_stop_step=3)
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert messages == [
        "window= is deprecated; use views=ViewSettings(window=…)",
        "sync_stop_step= is deprecated; use sync=SyncSettings(stop_step=…)",
    ]


def test_old_and_new_spellings_together_are_refused(toy):
    with pytest.raises(InvalidInputError, match="give views= or the old keywords window, not both"):
        toy.settings("sky", views=ViewSettings(), window=32)
    with pytest.raises(InvalidInputError, match="not both"):
        toy.settings("sky", sync=SyncSettings(), sync_weight=3.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'windows'"):
        toy.settings("sky", windows=32)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (dict(views={"window": 32}), "views must be a ViewSettings, got dict"),
        (dict(sync="yes"), "sync must be a SyncSettings, True or False, got str"),
        (dict(global_view=True), "global_view must be a GlobalView or its weight"),
    ],
)
def test_a_wrong_settings_type_is_one_line(toy, given, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        toy.settings("sky", height=32, width=96, **given)
    assert "\n" not in str(info.value)


def test_one_spelling_across_api_cli_and_recipe(toy):
    """Every recorded sync field is a ``--sync-<field>`` option and a ``sync_<field>`` recipe key; the view fields
    are options and keys of their own names; a recipe read back gives the same objects."""
    parser = build_parser()
    options = {
        o for action in parser._subparsers._group_actions[0].choices["panorama"]._actions for o in action.option_strings
    }
    for field in SYNC_RECORDED:
        assert sync_flag(field) in options
    for field in ("window", "stride", "weights", "layout", "tile"):
        assert f"--{field}" in options
    assert {"--global-view", "--global-view-until"} <= options
    s = toy.settings(
        "sky",
        height=32,
        width=96,
        views=ViewSettings(window=32, stride=16, tile="x"),
        sync=SyncSettings(stop_step=2, loss="builtin"),
        global_view=GlobalView(2.0, until=0.5),
        seed=1,
    )
    record = {**s.to_dict(), "mode": "panorama", "model": "toy"}
    assert {f"sync_{f}" for f in SYNC_RECORDED} <= set(record)
    assert record["window"] == 32 and record["tile"] == "x" and record["global_view_until"] == 0.5
    _, kwargs = call_arguments(record)
    assert kwargs["views"] == s.views
    assert kwargs["sync"] == SyncSettings(stop_step=2, loss="builtin", anchor=s.sync.anchor)
    assert kwargs["global_view"] == s.global_view


def test_a_recipe_from_before_tile_reads_circular_as_x():
    old = {"mode": "panorama", "seed": 1, "height": 32, "width": 96, "num_inference_steps": 2, "guidance_scale": 1.0,
           "prompt": ["sky"], "negative_prompt": [""], "window": 32, "stride": 8, "weights": "uniform",
           "circular": True, "sync": False}  # fmt: skip
    _, kwargs = call_arguments(old)
    assert kwargs["views"] == ViewSettings(window=32, stride=8, weights="uniform", tile="x")
    assert kwargs["sync"] is None
