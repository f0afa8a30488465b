"""Regenerate an image from the recipe its PNG carries: the model, every setting, the seed, region masks.

The ``multidiffusion`` JSON chunk that every written image holds (see
:class:`~multidiffusion.pipeline.settings.recipe.GenerationMetadata`) is enough to run the same call again. The
result is bit-identical when the weights, dtype, device type, view batch size and tiled-VAE choice are
the same (all recorded); this module warns where they cannot be.
"""

from __future__ import annotations

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
from multidiffusion.pipeline.inputs.masks import decode_mask
from multidiffusion.pipeline.inputs.region_file import Background
from multidiffusion.pipeline.settings.recipe import DEFAULTS, METADATA_KEY, SYNC_RECORDED, GenerationMetadata
from multidiffusion.pipeline.settings.views import ViewSettings

MODES = ("panorama", "regions")
MAX_PIXELS = 1 << 28  # refuse decompression bombs when only the text chunks are wanted


def read_recipe(source: str | Path | Mapping[str, Any] | GenerationMetadata) -> dict[str, Any]:
    """The recipe as a dict, from a PNG written by this package, a JSON text, a dict or a metadata object.

    Raises:
        InvalidInputError: the file cannot be read, holds no ``multidiffusion`` chunk, or the JSON is bad.
    """
    if isinstance(source, GenerationMetadata):
        return source.to_dict()
    if isinstance(source, Mapping):
        return dict(source)
    text = str(source)
    if not text.lstrip().startswith("{"):
        text = _png_recipe_text(Path(source))
    try:
        recipe = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"the recipe is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    if isinstance(recipe, dict):
        refuse_image_run(recipe)
    if not isinstance(recipe, dict) or recipe.get("mode") not in MODES:
        raise InvalidInputError(f"the recipe has no known mode (expected one of: {', '.join(MODES)})")
    return recipe


def refuse_image_run(recipe: Mapping[str, Any]) -> None:
    """Raise for the recipe of a run that started from an image (upscale, outpaint, inpaint, a layout's
    ``init_image``) or used files besides the model (ControlNets and guide images, LoRAs, embeddings): its PNG does
    not hold them, so it cannot be rerun from the recipe alone (yet)."""
    custom = recipe.get("customisation")
    if isinstance(custom, Mapping) and set(custom) - {"prompt_weighting"}:
        raise InvalidInputError(
            "this run used ControlNets, LoRAs or embeddings, whose files its PNG does not hold; run it again with the "
            f"same --controlnet/--lora/--embedding files, --seed {recipe.get('seed')} and the settings its PNG records "
            "(reproducing such runs is not supported yet)"
        )
    image = recipe.get("image")
    if not image:
        return
    name = ((image.get("input") if isinstance(image, Mapping) else None) or {}).get("name") or "an image"
    mode = recipe.get("mode", "image")
    raise InvalidInputError(
        f"this {mode} run started from {name}, which its PNG does not hold; run the {mode} command again on that "
        f"image with --seed {recipe.get('seed')} and the settings its PNG records (reproducing image-input runs "
        "is not supported yet)"
    )


def _png_recipe_text(path: Path) -> str:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise InvalidInputError(f"{str(path)!r} has {image.width}×{image.height} px, more than this reads")
            image.load()  # text chunks after the image data are read here
            text = getattr(image, "text", {}).get(METADATA_KEY)
    except (OSError, UnidentifiedImageError) as exc:
        raise InvalidInputError(f"cannot read image {str(path)!r}: {exc}") from exc
    if text is None:
        raise InvalidInputError(
            f"{str(path)!r} carries no multidiffusion recipe (only PNGs written by this package do)"
        )
    return text


def model_to_load(recipe: Mapping[str, Any], model: str | None) -> str:
    """The model source to load: ``model`` if given, else the recorded repo id or spec.

    A local model is recorded by its folder or file name only, so it must be named again.
    """
    from multidiffusion.adapters.families.registry import family_claiming
    from multidiffusion.adapters.loading.resolve import looks_like_repo_id

    if model is not None:
        return model
    recorded = str(recipe.get("model", ""))
    if family_claiming(recorded) is not None or looks_like_repo_id(recorded) or Path(recorded).exists():
        return recorded
    digest = recipe.get("model_sha256")
    weights = f" (weights sha256 {digest[:12]}…)" if digest else ""
    raise InvalidInputError(
        f"the image was made with the local model {recorded!r}{weights}; give its folder or file with --model"
    )


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


def call_arguments(recipe: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(mode, keyword arguments of the pipeline method that made the image), generator included.

    Raises:
        InvalidInputError: no seed was recorded (the generator had drawn numbers before the call).
    """
    from multidiffusion.adapters.schedulers.names import make_scheduler

    seed = recipe.get("seed")
    if seed is None:
        raise InvalidInputError(
            "the image records no seed (its generator had been used before the call), so it cannot be regenerated"
        )
    r = dict(recipe)
    refuse_image_run(r)
    scheduler: Any = r.get("scheduler", DEFAULTS.scheduler)
    if r.get("scheduler_config"):
        scheduler = make_scheduler(scheduler, {}, r["scheduler_config"])
    kwargs: dict[str, Any] = {
        "height": r["height"],
        "width": r["width"],
        "num_inference_steps": r["num_inference_steps"],
        "guidance_scale": r["guidance_scale"],
        "guidance_rescale": r.get("guidance_rescale", 0.0),
        "scheduler": scheduler,
        "views": recorded_views(r),
        "sync": recorded_sync(r),
        "generator": torch.Generator().manual_seed(int(seed)),
        "view_batch_size": r.get("view_batch_size"),
    }
    if r.get("global_view") is not None:
        if r["mode"] != "panorama":
            raise InvalidInputError(f"a {r['mode']} run records a global view, which only panoramas have")
        kwargs["global_view"] = GlobalView(r["global_view"], r.get("global_view_until", 1.0))
    if (r.get("customisation") or {}).get("prompt_weighting") is False:  # the one customisation a recipe holds
        from multidiffusion.pipeline.customise.customisation import Customisation

        kwargs["customise"] = Customisation(prompt_weighting=False)
    if r["mode"] == "panorama":
        kwargs.update(prompt=list(r["prompt"]), negative_prompt=list(r["negative_prompt"]))
        return "panorama", kwargs
    background = r.get("background")
    kwargs.update(
        regions=[_region(record, f"regions[{i}]") for i, record in enumerate(r.get("regions", []))],
        background=Background(**background) if background else None,
        negative_prompt=(r.get("negative_prompt") or [""])[0],
        bootstrap_fraction=r.get("bootstrap_fraction"),
    )
    return "regions", kwargs


def recorded_views(recipe: Mapping[str, Any]) -> ViewSettings:
    """The recipe's :class:`ViewSettings`. A named layout records the stride and weights it set, which it sets again;
    recipes made before ``tile`` record a 360° canvas as ``circular``."""
    layout = recipe.get("layout")
    tile = recipe.get("tile") or ("x" if recipe.get("circular") else None)
    return ViewSettings(
        window=recipe.get("window"),
        stride=None if layout else recipe.get("stride"),
        weights=None if layout else recipe.get("weights"),
        layout=layout,
        tile=tile,
    )


def recorded_sync(recipe: Mapping[str, Any]) -> SyncSettings | None:
    """The recipe's :class:`SyncSettings` (its ``sync_*`` fields), or None when it did not synchronise."""
    if not recipe.get("sync"):
        return None
    return SyncSettings(**{k: recipe[f"sync_{k}"] for k in SYNC_RECORDED if f"sync_{k}" in recipe})


def _region(record: Mapping[str, Any], where: str) -> Region:
    box = record.get("box")
    return Region(
        prompt=record["prompt"],
        box=tuple(box) if box is not None else None,
        mask=decode_mask(dict(record), where) if box is None else None,
        negative_prompt=record.get("negative_prompt"),
        guidance_scale=record.get("guidance_scale"),
        weight=record.get("weight", 1.0),
        name=record.get("name"),
    )
