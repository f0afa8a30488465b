"""Regenerate an image from the recipe its PNG carries: the model, every setting, the seed, region masks.

The ``multidiffusion`` JSON chunk that every written image holds (see
:class:`~multidiffusion.pipeline.settings.recipe.GenerationMetadata`) is enough to run the same call again. The
result is bit-identical when the weights, dtype, device type, view batch size and tiled-VAE choice are
the same (all recorded); this module warns where they cannot be. A run with ControlNets, LoRAs or embeddings
records each file by its name and SHA-256; :func:`read_recipe`'s ``files`` says in which folders they are found
again (:mod:`~multidiffusion.pipeline.customise.recorded_files`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from multidiffusion import __version__
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.global_view import GlobalView
from multidiffusion.core.features.regions import Region
from multidiffusion.core.features.sync import SyncSettings
from multidiffusion.pipeline.customise.recorded_files import (
    FileFolders,
    RecordedCustomisation,
    recorded_customisation,
    uses_files,
)
from multidiffusion.pipeline.inputs.masks import decode_mask
from multidiffusion.pipeline.inputs.region_file import Background
from multidiffusion.pipeline.settings.recipe import DEFAULTS, SYNC_RECORDED, GenerationMetadata
from multidiffusion.pipeline.settings.recipe_png import png_recipe_text
from multidiffusion.pipeline.settings.recipe_schema import MAX_RECIPE_BYTES, check_recipe
from multidiffusion.pipeline.settings.views import ViewSettings, with_x_wrapped


class Recipe(dict[str, Any]):
    """A recipe checked against the schema, with the folders where a rerun finds the files it names.

    Attributes:
        files: Where the ControlNets, guide images, LoRAs and embeddings the recipe names by name and SHA-256 are
            looked for (:class:`~multidiffusion.pipeline.customise.recorded_files.FileFolders`); None: nowhere, so
            a run that used such files is refused by :func:`call_arguments` with a line saying what to give.
    """

    files: FileFolders | None = None


def read_recipe(
    source: str | Path | Mapping[str, Any] | GenerationMetadata, files: FileFolders | None = None
) -> Recipe:
    """The recipe as a dict checked against the schema, from a PNG written by this package, a JSON text, a dict
    or a metadata object. Every reader of a recipe (``reproduce``, ``resume``, ``batch``, the web UI) comes here.

    Args:
        source: The PNG, JSON text, dict (a :class:`Recipe` keeps its ``files`` unless ``files`` is given) or
            metadata.
        files: Where the files of a customised run are found again (its ControlNets, guide images, LoRAs and
            embeddings); they are looked up and their hashes compared by :func:`call_arguments`.

    Raises:
        InvalidInputError: the file cannot be read or holds no ``multidiffusion`` chunk, the JSON is bad or too
            deeply nested, the run started from an image, or the recipe breaks its schema
            (:mod:`~multidiffusion.pipeline.settings.recipe_schema`). One line.
    """
    if files is None and isinstance(source, Recipe):
        files = source.files
    recipe = Recipe(_read(source))
    recipe.files = files
    return recipe


def _read(source: str | Path | Mapping[str, Any] | GenerationMetadata) -> dict[str, Any]:
    if isinstance(source, GenerationMetadata):
        return checked_recipe(source.to_dict())
    if isinstance(source, Mapping):
        return checked_recipe(source)
    text = str(source)
    if not text.lstrip().startswith("{"):
        text = png_recipe_text(Path(source))
    if len(text) > MAX_RECIPE_BYTES:
        raise InvalidInputError(f"the recipe is {len(text):,} characters long; the limit is {MAX_RECIPE_BYTES:,}")
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"the recipe is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise InvalidInputError("the recipe's JSON is nested too deeply (a recipe is a few levels deep)") from None
    except ValueError as exc:  # an integer of thousands of digits
        raise InvalidInputError(f"the recipe is not valid JSON: {str(exc).splitlines()[0][:120]}") from None
    return checked_recipe(recipe)


def checked_recipe(recipe: Any) -> dict[str, Any]:
    """``recipe`` refused if it is a run this module cannot redo (:func:`refuse_image_run`), else checked against
    the schema (:func:`~multidiffusion.pipeline.settings.recipe_schema.check_recipe`), as a new dict."""
    if isinstance(recipe, Mapping):
        refuse_image_run(recipe)
    return check_recipe(recipe)


def refuse_image_run(recipe: Mapping[str, Any]) -> None:
    """Raise for the recipe of a run that started from an image (upscale, outpaint, inpaint, a layout's
    ``init_image``): its PNG does not hold the image, so it cannot be rerun from the recipe alone (yet). (The
    ControlNets, guide images, LoRAs and embeddings of a customised run are found again by name and hash:
    :func:`call_arguments`.)"""
    seed = recipe.get("seed")
    again = f"--seed {seed}" if isinstance(seed, int) and not isinstance(seed, bool) else "its seed"
    image = recipe.get("image")
    if not isinstance(image, Mapping) or not image:
        return  # null, or a wrong type the schema names
    if image.get("mode") == "highres":
        raise InvalidInputError(
            f"a highres picture cannot be reproduced from its PNG yet; run `multidiffusion highres` again with {again} "
            "and the settings its PNG records (the highres_* keys of its recipe)"
        )
    source = image.get("input")
    name = source.get("name") if isinstance(source, Mapping) else None
    shown = repr(name[:80]) if isinstance(name, str) and name else "an image"
    mode = recipe.get("mode")
    mode = mode if isinstance(mode, str) and mode.isidentifier() and len(mode) <= 20 else "image"
    raise InvalidInputError(
        f"this {mode} run started from {shown}, which its PNG does not hold; run the {mode} command again on that "
        f"image with {again} and the settings its PNG records (reproducing image-input runs is not supported yet)"
    )


def model_to_load(recipe: Mapping[str, Any], model: str | None) -> str:
    """The model source to load: ``model`` if given, else the recorded model when it is a name that says what to
    load by itself: a model spec a family claims (``toy``) or a hub repo id.

    A recipe records a local model by its folder's or file's name only, and a recipe is untrusted: a path in it
    (absolute or relative, or a repo id that is also a folder here) is never loaded, so such a model must be named
    again with ``model`` (``--model``).
    """
    from multidiffusion.adapters.families.registry import family_claiming
    from multidiffusion.adapters.loading.resolve import looks_like_repo_id

    if model is not None:
        return model
    recorded = recipe.get("model")
    if not isinstance(recorded, str) or not recorded:
        raise InvalidInputError("the recipe names no model; give the model with --model")
    shown = repr(recorded[:120])
    if family_claiming(recorded) is not None:
        return recorded
    if looks_like_repo_id(recorded):
        if not _is_local(recorded):
            return recorded
        raise InvalidInputError(
            f"the recipe's model {shown} is a hub repo id that is also a path here; give --model to say which to load"
        )
    if _looks_like_path(recorded):
        raise InvalidInputError(
            f"the recipe names its model by a path ({shown}); a recipe may name only a hub repo id or a model spec "
            "such as 'toy', so give the model with --model"
        )
    digest = recipe.get("model_sha256")
    weights = f" (weights sha256 {digest[:12]}…)" if isinstance(digest, str) and digest.isalnum() else ""
    raise InvalidInputError(
        f"the image was made with the local model {shown}{weights}; give its folder or file with --model"
    )


def _looks_like_path(name: str) -> bool:
    """A name with a folder in it or one that starts like a path (``/``, ``~``, ``.``, a drive letter)."""
    return "/" in name or "\\" in name or name.startswith(("~", ".")) or (len(name) > 1 and name[1] == ":")


def _is_local(name: str) -> bool:
    try:
        return Path(name).expanduser().exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL
        return False


def check_environment(recipe: Mapping[str, Any], model: Any) -> None:
    """Warn (once each) where the rerun cannot be bit-identical: other weights, version or device type."""
    recorded_hash = recipe.get("model_sha256")
    if recorded_hash and model.weights_sha256 and recorded_hash != model.weights_sha256:
        warnings.warn("these weights differ from the ones recorded in the image; the result will differ", stacklevel=3)
    if recipe.get("version") not in (None, __version__):
        warnings.warn(
            f"the image was made with multidiffusion {recipe['version']}, this is {__version__}; the result may differ",
            stacklevel=3,
        )
    device = recipe.get("device")
    if device is not None and device != model.device.type:
        warnings.warn(
            f"the image was made on {device} and this run is on {model.device.type}; pixels may differ slightly",
            stacklevel=3,
        )


def call_arguments(recipe: Mapping[str, Any], files: FileFolders | None = None) -> tuple[str, dict[str, Any]]:
    """(mode, keyword arguments of the pipeline method that made the image), generator included.

    The recipe is checked first (:func:`checked_recipe`; a dict from :func:`read_recipe` passes again unchanged),
    so every value below has its recorded type, and recorded masks are decoded only after their sizes are checked.
    The files a customised run used are found in ``files`` (default: the :class:`Recipe`'s own) and their hashes
    compared before anything loads.

    Raises:
        InvalidInputError: the recipe breaks its schema, no seed was recorded (the generator had drawn numbers
            before the call), its scheduler config cannot build a scheduler, or a file it names is missing or
            differs from the recorded one. One line.
    """
    if files is None and isinstance(recipe, Recipe):
        files = recipe.files
    if isinstance(recipe, Mapping) and recipe.get("mode") == "sphere":
        from multidiffusion.pipeline.settings.sphere import sphere_arguments  # it reads the panorama's part here

        return "sphere", sphere_arguments(recipe, files)
    r = checked_recipe(recipe)
    seed = r.get("seed")
    if seed is None:
        raise InvalidInputError(
            "the image records no seed (its generator had been used before the call), so it cannot be regenerated"
        )
    scheduler: Any = r.get("scheduler", DEFAULTS.scheduler)
    if r.get("scheduler_config"):
        scheduler = _recorded_scheduler(scheduler, r["scheduler_config"], r["num_inference_steps"])
    kwargs: dict[str, Any] = {
        "height": r["height"],
        "width": r["width"],
        "num_inference_steps": r["num_inference_steps"],
        "guidance_scale": r["guidance_scale"],
        "guidance_rescale": r.get("guidance_rescale", 0.0),
        "scheduler": scheduler,
        "views": recorded_views(r),
        "sync": recorded_sync(r),
        "generator": torch.Generator().manual_seed(seed),
        "view_batch_size": r.get("view_batch_size"),
    }
    if r.get("global_view") is not None:
        if r["mode"] != "panorama":
            raise InvalidInputError(f"a {r['mode']} run records a global view, which only panoramas have")
        kwargs["global_view"] = GlobalView(r["global_view"], r.get("global_view_until", 1.0))
    custom = _customisation(r, files)
    if custom is not None:
        kwargs["customise"] = custom.custom
    if r["mode"] == "panorama":
        if custom is not None and custom.regional:
            raise InvalidInputError(
                "a panorama recipe records per-region ControlNets or LoRAs, which only regions have"
            )
        kwargs.update(prompt=list(r["prompt"]), negative_prompt=list(r["negative_prompt"]))
        return "panorama", kwargs
    background = r.get("background")
    canvas = (r["height"], r["width"])
    regions = [_region(record, f"regions[{i}]", canvas) for i, record in enumerate(r["regions"])]
    if custom is not None and custom.regional:
        regions = _with_extras(regions, custom.regional)
    kwargs.update(
        regions=regions,
        background=Background(**background) if background is not None else None,
        negative_prompt=r["negative_prompt"][0],
        bootstrap_fraction=r.get("bootstrap_fraction"),
    )
    return "regions", kwargs


def _customisation(recipe: Mapping[str, Any], files: FileFolders | None) -> RecordedCustomisation | None:
    """The recipe's customisation rebuilt (its files found in ``files`` and checked); None when it records none."""
    from multidiffusion.pipeline.customise.customisation import Customisation

    record = recipe.get("customisation") or {}
    if not uses_files(record):
        if record.get("prompt_weighting") is False:
            return RecordedCustomisation(Customisation(prompt_weighting=False))
        return None
    return recorded_customisation(record, files)


def _with_extras(regions: list[Region], regional: tuple[Any, ...]) -> list[Region]:
    """The regions with their recorded ControlNets and LoRAs: ``regional`` holds one entry per condition, the
    conditions before the regions' (a background's) first, and those must record none."""
    first = len(regional) - len(regions)
    if first < 0 or any(extras.control or extras.loras for extras in regional[:first]):
        raise InvalidInputError(
            f"the recipe's per-region ControlNets and LoRAs ({len(regional)} entries) do not match its "
            f"{len(regions)} regions"
        )
    return [
        dataclasses.replace(region, control=extras.control, loras=extras.loras)
        for region, extras in zip(regions, regional[first:], strict=True)
    ]


CONFIG_ERRORS: tuple[type[Exception], ...] = (
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    IndexError,
    OverflowError,
    ZeroDivisionError,
    RuntimeError,
    NotImplementedError,
)
"""What a diffusers scheduler raises for a config of the right JSON types but values it cannot use."""


def _recorded_scheduler(name: Any, config: Mapping[str, Any], steps: int) -> Any:
    """The scheduler a recorded config builds, tried once on a one-element sample first, so that a value diffusers
    checks only when it runs (an unknown ``prediction_type`` or ``timestep_spacing``) is refused here in one line
    rather than mid-run. A config that shifts its schedule by the image size (``use_dynamic_shifting``) needs the
    model's options to set its steps, so it is only built here; the run sets its steps."""
    from multidiffusion.adapters.schedulers.names import make_scheduler

    try:
        scheduler = make_scheduler(name, {}, config)
        if not config.get("use_dynamic_shifting"):
            _try_one_step(copy.deepcopy(scheduler), steps)
    except InvalidInputError:
        raise
    except CONFIG_ERRORS as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise InvalidInputError(f"the recipe's scheduler_config cannot run a {name} scheduler: {reason}") from None
    return scheduler


def _try_one_step(scheduler: Any, steps: int) -> None:
    """Set the steps and take the first on a zero sample (1, 1, 1, 1); the global random state is left as it was
    (stochastic schedulers draw noise in a step)."""
    with torch.random.fork_rng(devices=[]):
        scheduler.set_timesteps(steps, device="cpu")
        sample = torch.zeros(1, 1, 1, 1)
        t = scheduler.timesteps[0]
        scale = getattr(scheduler, "scale_model_input", None)  # flow-matching schedulers have none
        scheduler.step(torch.zeros_like(sample), t, scale(sample, t) if scale is not None else sample)


def recorded_views(recipe: Mapping[str, Any]) -> ViewSettings:
    """The recipe's :class:`ViewSettings`. A named layout records the stride and weights it set, which it sets again;
    recipes made before ``tile`` record a 360° canvas as ``circular`` (true: the columns wrap, as ``tile`` x)."""
    layout = recipe.get("layout")
    tile = recipe.get("tile")
    if recipe.get("circular") is True:
        tile = with_x_wrapped(tile)
    return ViewSettings(
        window=recipe.get("window"),
        stride=None if layout else recipe.get("stride"),
        weights=None if layout else recipe.get("weights"),
        layout=layout,
        tile=tile,
    )


def recorded_sync(recipe: Mapping[str, Any]) -> SyncSettings | None:
    """The recipe's :class:`SyncSettings` (its ``sync_*`` fields), or None when it did not synchronise."""
    if recipe.get("sync") is not True:
        return None
    return SyncSettings(**{k: recipe[f"sync_{k}"] for k in SYNC_RECORDED if f"sync_{k}" in recipe})


def _region(record: Mapping[str, Any], where: str, canvas: tuple[int, int]) -> Region:
    box = record.get("box")
    return Region(
        prompt=record["prompt"],
        box=tuple(box) if box is not None else None,
        mask=decode_mask(record, where, canvas) if box is None else None,
        negative_prompt=record.get("negative_prompt"),
        guidance_scale=record.get("guidance_scale"),
        weight=record.get("weight", 1.0),
        name=record.get("name"),
    )
