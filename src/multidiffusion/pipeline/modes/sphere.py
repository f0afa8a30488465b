"""The sphere mode: a 360° × 180° panorama, an equirectangular canvas seen through perspective views (docs/sphere.md).

The views are the core's (:func:`~multidiffusion.core.sphere.tasks.sphere_layout`): one task per orientation, its F_i a
gather of canvas cells, fused by Eq. 5 on the one engine (:func:`~multidiffusion.pipeline.run.generate.generate`), the
columns wrapped for the decode. :func:`resolve_sphere` is every check against the model, once; :func:`run_sphere` runs
the resolved settings.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from contextlib import closing
from typing import Any

from multidiffusion.adapters import LoadedModel
from multidiffusion.adapters.schedulers.names import checked_scheduler_fields
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.conditional import ConditionalSampler
from multidiffusion.core.sphere.photo import photo_on_sphere
from multidiffusion.core.sphere.projection import Orientation
from multidiffusion.core.sphere.tasks import SphereLayout, StepFromViews, sphere_layout
from multidiffusion.pipeline.customise.cache import CustomisationCache
from multidiffusion.pipeline.customise.customisation import Customisation, Customised, guide_of
from multidiffusion.pipeline.modes.image_start import DEFAULT_FEATHER_PX, ImageStart, check_image_start, read_image
from multidiffusion.pipeline.modes.panorama import negatives_for
from multidiffusion.pipeline.run.generate import RunPlan, generate
from multidiffusion.pipeline.run.memory import check_weight_maps_memory
from multidiffusion.pipeline.run.options import RunOptions
from multidiffusion.pipeline.run.output import MultiDiffusionOutput
from multidiffusion.pipeline.settings.checks import as_prompt_list, check_canvas_pixels, check_pixels, check_sampling
from multidiffusion.pipeline.settings.sphere import SpherePanoramaSettings, SphereSettings
from multidiffusion.pipeline.settings.views import ViewSettings


def resolve_sphere(
    model: LoadedModel,
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None,
    *,
    height: int,
    num_inference_steps: int,
    guidance_scale: float | None,
    guidance_rescale: float,
    scheduler: Any,
    sphere: SphereSettings,
    seed: int | None,
    output_type: str = "pil",
    sync: Any = None,
    global_view: Any = None,
) -> SpherePanoramaSettings:
    """A sphere's settings with the model's defaults filled in, every check against the model made once.

    Args:
        height: Canvas height in px (a multiple of the model's latent cell); the canvas is 2 × height wide.
        sphere: The sphere's own settings; its fov is filled in from the height when not given.
        sync, global_view: Refused when given (neither is defined on the sphere yet).

    Raises:
        InvalidInputError: anything the model cannot run, in one line that says what is allowed.
    """
    if sync is not None and sync is not False:
        raise InvalidInputError(
            "SyncDiffusion is not available on the sphere yet (its anchor is a crop of a flat canvas); drop sync"
        )
    if global_view is not None:
        raise InvalidInputError(
            "the global view is not available on the sphere (pooling an equirectangular canvas is not a view of the "
            "sphere); drop global_view"
        )
    prompts = as_prompt_list(prompt)
    negatives = negatives_for(prompts, negative_prompt)
    check_sampling(num_inference_steps, guidance_scale, guidance_rescale, output_type)
    g = model.granularity_px
    check_pixels("height", height, g)
    check_canvas_pixels(height, 2 * height)
    window_px = model.native_window * g
    resolved = sphere.resolved(height, window_px, g)
    layout = layout_of(model, height, resolved)  # builds the maps once here: a layout that cannot cover refuses now
    check_weight_maps_memory(model, len(layout.tasks), model.native_window)
    scheduler = model.default_scheduler if scheduler is None else scheduler
    scheduler_name = checked_scheduler_fields(scheduler, model.scheduler_config, num_inference_steps)
    return SpherePanoramaSettings(
        prompt=tuple(prompts),
        negative_prompt=tuple(negatives),
        height=height,
        width=2 * height,
        num_inference_steps=num_inference_steps,
        guidance_scale=model.default_guidance_scale if guidance_scale is None else guidance_scale,
        guidance_rescale=guidance_rescale,
        **scheduler_name,
        views=ViewSettings(window=window_px, stride=window_px, weights=resolved.weights, tile="x"),
        seed=seed,
        sphere=resolved,
    )


def layout_of(model: LoadedModel, height_px: int, sphere: SphereSettings) -> SphereLayout:
    """The core's views of a resolved sphere (latent cells); built once per distinct geometry (the check and the run
    share it)."""
    if sphere.fov is None:
        raise InvalidInputError("the sphere's fov must be resolved before its views are laid (SphereSettings.resolved)")
    return _layout(height_px // model.granularity_px, model.native_window, sphere)


@functools.lru_cache(maxsize=4)
def _layout(height: int, window: int, sphere: SphereSettings) -> SphereLayout:
    return sphere_layout(
        height, window, sphere.fov, overlap=sphere.overlap, weights=sphere.weights, pole_roll=sphere.pole_roll
    )


def run_sphere(
    model: LoadedModel,
    s: SpherePanoramaSettings,
    run: RunOptions,
    *,
    image: ImageStart | None = None,
    customise: Customisation | None = None,
    cache: CustomisationCache | None = None,
) -> MultiDiffusionOutput:
    """Stages 2–5 of a sphere call on resolved settings: lay the views, encode the prompts, denoise and decode.
    ``image``: a start on the equirectangular canvas (a photo placed on the sphere, :func:`photo_start`), kept where
    it is known as a flat outpaint keeps its picture.

    Raises:
        InvalidInputError: control networks (their guide images are flat crops, not views of the sphere).
    """
    customise = customise if customise is not None else Customisation()
    if customise.control:
        raise InvalidInputError("control networks are not available on the sphere yet; drop control")
    layout = layout_of(model, s.height, s.sphere)
    if image is not None:
        s = dataclasses.replace(s, image=check_image_start(image, model, s.height, s.width, False))
    customised = Customised(
        model,
        customise,
        (),
        (s.height, s.width),
        guide_of(image),
        False,
        cache=CustomisationCache() if cache is None else cache,
    )
    s = dataclasses.replace(s, customisation=customise.record())
    g = model.granularity_px
    with closing(customised):
        condition = customised.conditions([(s.prompt, s.negative_prompt, s.guidance_scale, s.guidance_rescale)])[0]
        plan = RunPlan(
            mode="sphere",
            tasks=list(layout.tasks),
            conditions=[condition],
            canvas_cells=(len(s.prompt), s.height // g, s.width // g),
            make_hooks=lambda: [StepFromViews()],
            image=image,
            customised=customised,
        )
        return generate(model, s, plan, run)


def photo_start(
    photo: Any,
    height: int,
    fov: float,
    *,
    yaw: float = 0.0,
    pitch: float = 0.0,
    roll: float = 0.0,
    feather: float = DEFAULT_FEATHER_PX,
    conditional: ConditionalSampler | None = None,
    record: dict[str, Any] | None = None,
) -> ImageStart:
    """A photo placed on an H × 2H sphere (``height`` = H px) at its horizontal field of view ``fov`` (degrees), looking
    at longitude ``yaw`` and latitude ``pitch`` (degrees): the start of a photo-to-360 run, whose known part is the
    photo (:func:`~multidiffusion.core.sphere.photo.photo_on_sphere`) and the rest is drawn."""
    pixels = read_image(photo)
    canvas, known = photo_on_sphere(pixels, height, fov, Orientation(yaw, pitch, roll))
    if not bool(known.any()):
        raise InvalidInputError("the photo covers no pixel of the sphere: give it a wider fov or a taller sphere")
    info = {"mode": "photo-sphere", "fov": float(fov), "yaw": float(yaw), "pitch": float(pitch), "roll": float(roll)}
    return ImageStart(
        canvas, known, strength=1.0, feather=feather, conditional=conditional, record={**info, **(record or {})}
    )
