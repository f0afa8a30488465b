"""The recipes the recipe tests start from, and the crafted cases of issue 31 (items 6 and 7) with the message each
must give: shared by the in-process tests (test_recipe_schema.py) and the command-line ones
(tests/interfaces/cli/test_recipe_fuzz.py)."""

from __future__ import annotations

import copy
import json
from typing import Any

import torch

from multidiffusion.pipeline.inputs.masks import encode_mask

PANORAMA: dict[str, Any] = {
    "mode": "panorama", "model": "toy", "model_sha256": None, "dtype": "float32", "device": "cpu",
    "view_batch_size": 9, "tiled_vae": None, "version": "0.1.0", "negative_prompt": [""], "height": 32,
    "width": 96, "num_inference_steps": 2, "guidance_scale": 1.0, "guidance_rescale": 0.0, "scheduler": "ddim",
    "scheduler_config": None, "window": 32, "stride": 8, "weights": "gaussian", "layout": None, "tile": None,
    "seed": 1, "sync": False, "global_view": None, "image": None, "customisation": None, "prompt": ["red or blue"],
}  # fmt: skip
"""A panorama recipe as this version records it (the toy model, 32×96 px)."""

REGIONS: dict[str, Any] = {
    **{k: v for k, v in PANORAMA.items() if k != "prompt"},
    "mode": "regions",
    "regions": [
        {"prompt": "a yellow sun", "weight": 1.0, "box": [8, 4, 40, 20], "guidance_scale": 3.0, "name": "sun"},
        {"prompt": "a dark blue sea", "weight": 1.0, **encode_mask(torch.ones(32, 96))},
    ],
    "background": {"prompt": "an orange sky", "negative_prompt": None, "guidance_scale": None},
    "bootstrap_fraction": 0.2,
}
"""A regions recipe with a box, a recorded mask and a background."""


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with keys set (``...`` deletes one)."""
    recipe = copy.deepcopy(base)
    for key, value in changes.items():
        if value is ...:
            recipe.pop(key)
        else:
            recipe[key] = value
    return recipe


DDIM = {"scheduler": "DDIMScheduler"}
H = "0" * 64  # a SHA-256 of the right form
CONTROL = {"model": "cn", "image": {"name": "e.png", "sha256": H}, "scale": 1.0, "start": 0.0, "end": 1.0}
CN = {"controlnet": {"cn": H}}
CASES: dict[str, tuple[Any, str]] = {
    # item 6, missing keys
    "missing height": (with_(PANORAMA, height=...), "no height"),
    "missing prompt": (with_(PANORAMA, prompt=...), "no prompt"),
    "missing mode": (with_(PANORAMA, mode=...), "no known mode"),
    # item 6, wrong types
    "int prompt": (with_(PANORAMA, prompt=5), "prompt must be a string or a list of strings"),
    "int in the prompt list": (with_(PANORAMA, prompt=["a", 5]), "prompt[1] must be a string"),
    "null negative prompt": (with_(PANORAMA, negative_prompt=None), "negative_prompt must not be null"),
    "string seed": (with_(PANORAMA, seed="3"), "seed must be an integer"),
    "2e200 seed": (with_(PANORAMA, seed=2e200), "seed must be an integer"),
    "seed of 400 digits": (
        json.dumps(PANORAMA).replace('"seed": 1', '"seed": ' + "9" * 400),
        "an integer of 400 digits",
    ),
    "seed of 5000 digits": (json.dumps(PANORAMA).replace('"seed": 1', '"seed": ' + "9" * 5000), "not valid JSON"),
    "string scheduler config": (with_(PANORAMA, scheduler_config="ddim"), "scheduler_config must be an object"),
    "dict dtype": (with_(PANORAMA, dtype={"a": 1}), "dtype must be a string"),
    "unknown dtype": (with_(PANORAMA, dtype="float64"), "dtype must be one of"),
    "string customisation": (with_(PANORAMA, customisation="lora"), "customisation must be an object"),
    "string region item": (with_(REGIONS, regions=["sun"]), "regions[0] must be an object"),
    "regions not a list": (with_(REGIONS, regions={"prompt": "sun"}), "regions must be a list of objects"),
    "bool steps": (with_(PANORAMA, num_inference_steps=True), "num_inference_steps must be an integer"),
    "NaN guidance": (
        json.dumps(PANORAMA).replace('"guidance_scale": 1.0', '"guidance_scale": NaN'),
        "guidance_scale must be a finite number",
    ),
    # item 6, unknown keys
    "Background(evil=…)": (with_(REGIONS, background={"prompt": "sky", "evil": 1}), "unknown recipe key background"),
    "unknown region key": (with_(REGIONS, regions=[{"prompt": "a", "box": [0, 0, 8, 8], "x": 1}]), "regions[0].x"),
    "unknown top-level key": (with_(PANORAMA, evil=1), "unknown recipe key evil"),
    "unknown customisation": (with_(PANORAMA, customisation={"evil": 1}), "unknown recipe key customisation.evil"),
    # issue 30 item 7: a customised run's files are recorded by their own name, never a path
    "LoRA label with a folder": (
        with_(PANORAMA, customisation={"loras": ["../x.safetensors:1.0"], "sha256": {"lora": {"x.safetensors": H}}}),
        "customisation.loras[0] must be a file's own name",
    ),
    "LoRA named '..'": (with_(PANORAMA, customisation={"loras": ["..:1.0"]}), "customisation.loras[0] must be"),
    "digest of a path": (
        with_(PANORAMA, customisation={"sha256": {"lora": {"/etc/passwd": H}}}),
        "customisation.sha256.lora name must be a file's own name",
    ),
    "digest not hex": (
        with_(PANORAMA, customisation={"sha256": {"embedding": {"e.pt": "x" * 64}}}),
        "must be a SHA-256",
    ),
    "ControlNet at a path": (
        with_(PANORAMA, customisation={"control": [CONTROL | {"model": "/srv/nets/canny"}]}),
        "control[0].model must be a folder's own name or a hub repo id",
    ),
    "ControlNet up a folder": (
        with_(PANORAMA, customisation={"control": [CONTROL | {"model": "../canny"}]}),
        "control[0].model must be a folder's own name or a hub repo id",
    ),
    "guide image at a path": (
        with_(PANORAMA, customisation={"control": [CONTROL | {"image": {"name": "../e.png", "sha256": H}}]}),
        "control[0].image.name must be a file's own name",
    ),
    "guide image without its hash": (
        with_(PANORAMA, customisation={"control": [CONTROL | {"image": {"name": "e.png", "sha256": None}}]}),
        "control[0].image.sha256 must not be null",
    ),
    "region LoRAs not lists": (
        with_(REGIONS, customisation={"region_loras": ["x.safetensors:1"]}),
        "region_loras[0] must be a list",
    ),
    "unknown resize": (
        with_(PANORAMA, customisation={"control": [CONTROL | {"resize": "zoom"}]}),
        "resize must be one of: stretch, crop, pad",
    ),
    "LoRA without its hash": (
        with_(PANORAMA, customisation={"loras": ["x.safetensors:1.0"], "sha256": {"lora": {"x.safetensors": None}}}),
        "no single sha256 for the LoRA 'x.safetensors'",
    ),
    "guide given in memory": (
        with_(PANORAMA, customisation={"control": [CONTROL | {"image": "in memory"}], "sha256": CN}),
        "an image given in memory, which its PNG does not hold",
    ),
    # item 6, out of range
    "image index 5": (with_(PANORAMA, image_index=5), "image_index must be the index of one of its 1"),
    "image index 'x'": (with_(PANORAMA, image_index="x"), "image_index must be an integer"),
    "negative training steps": (
        with_(PANORAMA, **DDIM, scheduler_config={"num_train_timesteps": -5}),
        "num_train_timesteps must be an integer in [1, 10000]",
    ),
    "1e9 training steps": (
        with_(PANORAMA, **DDIM, scheduler_config={"num_train_timesteps": 10**9}),
        "num_train_timesteps must be an integer in [1, 10000]",
    ),
    "1e9 training steps as a float": (
        with_(PANORAMA, **DDIM, scheduler_config={"num_train_timesteps": 1e9}),
        "num_train_timesteps must be an integer",
    ),
    "scheduler config diffusers refuses": (
        with_(PANORAMA, **DDIM, scheduler_config={"beta_schedule": "nope"}),
        "scheduler_config cannot run a DDIMScheduler scheduler",
    ),
    "unknown prediction type": (
        with_(PANORAMA, **DDIM, scheduler_config={"prediction_type": "x"}),
        "prediction_type given as x must be one of",
    ),
    "unknown timestep spacing": (with_(PANORAMA, **DDIM, scheduler_config={"timestep_spacing": "x"}), "not supported"),
    "nested scheduler config": (with_(PANORAMA, **DDIM, scheduler_config={"a": {"b": 1}}), "scheduler_config.a"),
    "canvas over the pixel limit": (with_(PANORAMA, height=2**20, width=2**20), "the limit is"),
    "region with a box and a mask": (
        with_(REGIONS, regions=[{"prompt": "a", "box": [0, 0, 8, 8], **encode_mask(torch.ones(32, 96))}]),
        "both a box and a mask",
    ),
    "region with neither": (with_(REGIONS, regions=[{"prompt": "a"}]), "neither a box nor a mask"),
    # item 6, bombs (the PNG ones are in test_recipe_png.py)
    "JSON nesting": ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    "10k prompts": (with_(PANORAMA, prompt=["sky"] * 10_000, negative_prompt=[""] * 10_000), "the limit is 256"),
    "100k-character prompt": (with_(PANORAMA, prompt=["a" * 100_000]), "100,000 characters"),
    # item 7: a string where a bool is recorded
    "'circular': 'no'": (with_(PANORAMA, circular="no"), "circular must be true or false"),
    "'sync': 1": (with_(PANORAMA, sync=1), "sync must be true or false"),
    "'tiled_vae': 'false'": (with_(PANORAMA, tiled_vae="false"), "tiled_vae must be true or false"),
    # what a refused image run echoes stays on one line
    "image run with a newline in its name": (
        with_(PANORAMA, mode="upscale", image={"input": {"name": "a\nb.png"}}),
        "started from 'a\\nb.png'",
    ),
    "region mask of the wrong shape": (
        with_(REGIONS, regions=[{"prompt": "a", **encode_mask(torch.ones(16, 16))}]),
        "the recorded mask is 16×16 px (width×height); the canvas is 96×32 px",
    ),
}
