"""The recipe's schema (issue 31, items 6 and 7): every crafted recipe is refused in one line or read as recorded.

Each case of the issue runs here in-process through ``read_recipe`` and ``call_arguments``, the one path that
``reproduce``, ``resume``, ``batch`` and the web UI share; tests/interfaces/cli/test_recipe_fuzz.py runs them through
the command line. The property test at the end feeds recipes generated from the schema's own tables.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.global_view import GlobalView
from multidiffusion.core.features.regions import Region
from multidiffusion.core.features.sync import SyncSettings
from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.inputs.region_file import Background
from multidiffusion.pipeline.settings.recipe_schema import (
    COMMON_KEYS,
    MAX_RECIPE_PROMPTS,
    PANORAMA_KEYS,
    REGION_KEYS,
    REGIONS_KEYS,
    Key,
)
from multidiffusion.pipeline.settings.reproduce import call_arguments, read_recipe
from multidiffusion.pipeline.settings.views import ViewSettings
from tests.pipeline.settings.recipe_cases import CASES, PANORAMA, REGIONS, with_


def refusal(recipe: Any) -> str:
    """The one-line InvalidInputError that reading and using ``recipe`` (as JSON text) gives."""
    text = recipe if isinstance(recipe, str) else json.dumps(recipe)
    with pytest.raises(InvalidInputError) as info:
        call_arguments(read_recipe(text))
    message = str(info.value)
    assert "\n" not in message and message, message
    return message


@pytest.mark.parametrize("name", list(CASES))
def test_a_crafted_recipe_is_refused_in_one_line(name):
    recipe, message = CASES[name]
    assert message in refusal(recipe)


def test_the_base_recipes_are_read_as_recorded():
    mode, kwargs = call_arguments(read_recipe(json.dumps(PANORAMA)))
    assert mode == "panorama" and kwargs["prompt"] == ["red or blue"] and kwargs["negative_prompt"] == [""]
    assert kwargs["generator"].initial_seed() == 1 and kwargs["views"] == ViewSettings(32, 8, "gaussian")
    mode, kwargs = call_arguments(read_recipe(json.dumps(REGIONS)))
    assert mode == "regions" and kwargs["background"] == Background("an orange sky")
    assert kwargs["regions"][0] == Region("a yellow sun", box=(8, 4, 40, 20), guidance_scale=3.0, name="sun")
    assert torch.equal(kwargs["regions"][1].mask, torch.ones(32, 96))


def test_a_recorded_prompt_string_is_one_prompt_not_its_characters():
    recipe = read_recipe(json.dumps(with_(PANORAMA, prompt="sky", negative_prompt="fog")))
    assert recipe["prompt"] == ["sky"] and recipe["negative_prompt"] == ["fog"]
    _, kwargs = call_arguments(recipe)
    assert kwargs["prompt"] == ["sky"] and kwargs["negative_prompt"] == ["fog"]
    _, kwargs = call_arguments(with_(PANORAMA, prompt="sky"))  # a dict straight to call_arguments too
    assert kwargs["prompt"] == ["sky"]


@pytest.mark.parametrize(
    ("circular", "tile", "wrap"),
    [(True, None, (False, True)), (False, None, (False, False)), (True, "y", None), (True, "xy", (True, True))],
)
def test_circular_is_a_real_bool_and_agrees_with_tile(circular, tile, wrap):
    recipe = with_(PANORAMA, circular=circular, tile=tile)
    if wrap is None:  # circular wraps x, tile y does not: a contradiction, not a silent choice
        assert "drop circular" in refusal(recipe)
    else:
        assert call_arguments(recipe)[1]["views"].wrap == wrap


def test_every_key_a_run_records_is_in_the_schema():
    pipe = MultiDiffusionPipeline.from_pretrained("toy")
    fast = {"height": 32, "width": 64, "num_inference_steps": 2, "progress": False}
    synced = pipe(["a", "b"], views=ViewSettings(32, 8), sync=SyncSettings(stop_step=1, loss="builtin"), **fast)
    viewed = pipe("a", views=ViewSettings(32, 8), global_view=GlobalView(2.0, 0.5), **fast)
    mask = np.zeros((32, 64), np.float32)
    mask[:, :20] = 1
    regions = pipe.regions(
        [Region("x", mask=mask, name="m"), Region("y", box=(0, 0, 64, 32))], Background("bg"), **fast
    )
    for result, table in ((synced, PANORAMA_KEYS), (viewed, PANORAMA_KEYS), (regions, REGIONS_KEYS)):
        record = result.metadata.to_dict(1 if result is synced else None)
        assert set(record) <= set(table)
        assert read_recipe(record) == record  # nothing recorded is changed by the check
    assert set(regions.metadata.to_dict()["regions"][0]) <= set(REGION_KEYS)


# The property test: recipes generated from the schema's tables, valid and mutated.

JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "x", "no", "sky", "false", "center", "ddim", "gaussian", "float32", "toy", "/etc/passwd"]),
    st.lists(st.sampled_from([0, 1, "a", None]), max_size=5),
    st.dictionaries(st.sampled_from(["prompt", "evil", "num_train_timesteps"]), st.integers(-2, 2), max_size=2),
)
"""Any JSON value of the kinds a hostile recipe may hold."""


def valid_value(key: Key) -> st.SearchStrategy[Any]:
    """Values that the key's own entry in the schema allows (small, so a run on the toy model stays cheap)."""
    nulls = [st.none()] if key.nullable else []
    if key.kind in ("int", "anchor"):
        low = int(key.low) if key.low is not None else -5
        high = int(min(key.high, low + 300)) if key.high is not None else low + 300
        ints = st.integers(low, high)
        return st.one_of(*nulls, ints, st.just("center")) if key.kind == "anchor" else st.one_of(*nulls, ints)
    if key.kind == "number":
        low = key.low if key.low is not None else -1e3
        high = key.high if key.high is not None else 1e3
        return st.one_of(*nulls, st.floats(low, high), st.integers(int(np.ceil(low)), int(high)))
    if key.kind == "bool":
        return st.one_of(*nulls, st.booleans())
    if key.kind == "text":
        texts = st.sampled_from(key.choices) if key.choices else st.text(max_size=8)
        return st.one_of(*nulls, texts)
    if key.kind == "texts":
        return st.one_of(st.text(max_size=8), st.lists(st.text(max_size=8), min_size=1, max_size=3))
    if key.kind == "ints":
        return st.one_of(*nulls, st.lists(st.integers(0, 128), min_size=key.length, max_size=key.length))
    if key.kind == "config":
        return st.one_of(*nulls, st.fixed_dictionaries({"num_train_timesteps": st.integers(1, 2000)}))
    return st.one_of(*nulls, st.just({}))


@st.composite
def recipes(draw: st.DrawFn) -> dict[str, Any]:
    """A recorded recipe with a few keys redrawn: from their schema entries, from any JSON, or removed, and
    maybe an unknown key added."""
    base = draw(st.sampled_from([PANORAMA, REGIONS]))
    table = PANORAMA_KEYS if base is PANORAMA else REGIONS_KEYS
    recipe = copy.deepcopy(base)
    for name in draw(st.lists(st.sampled_from(sorted(table)), max_size=4, unique=True)):
        how = draw(st.sampled_from(["valid", "valid", "any", "remove"]))
        if how == "remove":
            recipe.pop(name, None)
        elif how == "any" or table[name].kind in ("object", "objects"):
            recipe[name] = draw(JSON_VALUES)
        else:
            recipe[name] = draw(valid_value(table[name]))
    if draw(st.booleans()) and isinstance(recipe.get("regions"), list) and isinstance(recipe["regions"][0], dict):
        region = recipe["regions"][0]
        name = draw(st.sampled_from([*sorted(REGION_KEYS), "evil"]))
        region[name] = draw(st.one_of(JSON_VALUES, valid_value(REGION_KEYS.get(name, Key("int")))))
    if draw(st.sampled_from([False] * 9 + [True])):  # now and then a key no run records
        recipe[draw(st.sampled_from(["evil", "out", "Mode", "sync_chunk_size"]))] = draw(JSON_VALUES)
    return recipe


def as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def assert_read_as_recorded(recipe: dict[str, Any], mode: str, kwargs: dict[str, Any]) -> None:
    """The call arguments say exactly what the recipe says (no key ignored, no value coerced)."""
    table = PANORAMA_KEYS if recipe["mode"] == "panorama" else REGIONS_KEYS
    assert set(recipe) <= set(table) and mode == recipe["mode"]
    for name in ("height", "width", "num_inference_steps", "guidance_scale"):
        assert kwargs[name] == recipe[name] and type(kwargs[name]) is type(recipe[name])
    assert kwargs["generator"].initial_seed() == recipe["seed"]
    assert kwargs["view_batch_size"] == recipe.get("view_batch_size")
    for name, key in COMMON_KEYS.items():
        if key.kind == "bool" and recipe.get(name) is not None:
            assert isinstance(recipe[name], bool)
    views = kwargs["views"]
    assert views.window == recipe.get("window") and views.layout == recipe.get("layout")
    tile_x = "x" in (recipe.get("tile") or "")
    assert views.wrap[1] == (tile_x or recipe.get("circular") is True)
    assert (kwargs["sync"] is not None) == (recipe.get("sync") is True)
    if mode == "panorama":
        prompts = as_list(recipe["prompt"])
        assert kwargs["prompt"] == prompts and 1 <= len(prompts) <= MAX_RECIPE_PROMPTS
        assert kwargs["negative_prompt"] == as_list(recipe["negative_prompt"])
        assert 0 <= recipe.get("image_index", 0) < len(prompts)
    else:
        assert [r.prompt for r in kwargs["regions"]] == [r["prompt"] for r in recipe["regions"]]
        assert kwargs["negative_prompt"] == as_list(recipe["negative_prompt"])[0]


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(recipes())
def test_random_recipes_are_refused_in_one_line_or_read_as_recorded(recipe):
    text = json.dumps(recipe)
    try:
        mode, kwargs = call_arguments(read_recipe(text))
    except InvalidInputError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert_read_as_recorded(json.loads(text), mode, kwargs)


def test_a_recorded_scheduler_config_of_every_scheduler_is_read_without_side_effects():
    from multidiffusion.adapters.schedulers.names import SCHEDULERS, make_scheduler

    base = MultiDiffusionPipeline.from_pretrained("toy").model.scheduler_config
    state = torch.get_rng_state()
    for name in SCHEDULERS:
        if name.startswith("flow_"):
            continue  # flow matching: not the toy model's kind
        instance = make_scheduler(name, base)
        recipe = with_(PANORAMA, scheduler=type(instance).__name__, scheduler_config=dict(instance.config))
        _, kwargs = call_arguments(read_recipe(json.dumps(recipe)))
        assert type(kwargs["scheduler"]) is type(instance) and dict(kwargs["scheduler"].config) == dict(instance.config)
    assert torch.equal(torch.get_rng_state(), state)  # the trial step of a stochastic scheduler drew nothing here
