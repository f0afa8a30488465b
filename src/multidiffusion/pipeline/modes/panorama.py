"""The panorama mode: one prompt per canvas over a sliding-window (or named) layout, run on the one engine.

:func:`resolve_settings` is every check of a panorama call against the model, run once per call; its checks of sizes and
views, :func:`panorama_geometry`, need only the model's geometry, so the command line runs them before the model
loads too. :func:`run_panorama` encodes the prompts, prepares the hooks and hands the run to
:func:`~multidiffusion.pipeline.run.generate.generate`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from multidiffusion.adapters import LoadedModel
from multidiffusion.adapters.loading.geometry import ModelGeometry, geometry_of
from multidiffusion.adapters.schedulers.names import checked_scheduler_fields
from multidiffusion.core import layout_tasks, panorama_tasks
from multidiffusion.core.engine.tasks import TaskSchedule
from multidiffusion.core.engine.views import layout_views
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.global_view import GlobalView, pooling_factor
from multidiffusion.core.features.sync import SyncSettings
from multidiffusion.core.types import ViewTask
from multidiffusion.pipeline.customise.cache import CustomisationCache
from multidiffusion.pipeline.customise.customisation import Customisation, Customised, guide_of
from multidiffusion.pipeline.modes.image_start import ImageStart, check_image_start
from multidiffusion.pipeline.modes.sync import prepare_sync, resolve_anchor
from multidiffusion.pipeline.run.generate import RunPlan, generate
from multidiffusion.pipeline.run.memory import check_weight_maps_memory
from multidiffusion.pipeline.run.options import RunOptions
from multidiffusion.pipeline.run.output import MultiDiffusionOutput
from multidiffusion.pipeline.settings.checks import (
    as_prompt_list,
    check_canvas_pixels,
    check_pixels,
    check_sampling,
    check_view_count,
)
from multidiffusion.pipeline.settings.recipe import PanoramaSettings
from multidiffusion.pipeline.settings.views import ViewSettings


def negatives_for(prompts: Sequence[str], negative_prompt: str | Sequence[str] | None) -> list[str]:
    """One negative prompt per prompt: "" for None, one for all, or one each."""
    if negative_prompt is None:
        return [""] * len(prompts)
    negatives = as_prompt_list(negative_prompt, "negative prompt")
    if len(negatives) == 1:
        negatives *= len(prompts)
    if len(negatives) != len(prompts):
        raise InvalidInputError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
    return negatives


@dataclass(frozen=True)
class PanoramaGeometry:
    """A panorama's sizes and views checked against a model's geometry.

    Attributes:
        views: The views with the model's defaults filled in (window, stride, weights; px).
        sync: SyncDiffusion's settings with the anchor resolved to a view index; None: off.
        view_count: Views per step.
    """

    views: ViewSettings
    sync: SyncSettings | None
    view_count: int


def panorama_geometry(
    geometry: ModelGeometry,
    height: int,
    width: int,
    views: ViewSettings,
    sync: SyncSettings | None = None,
    global_view: GlobalView | None = None,
) -> PanoramaGeometry:
    """Every check of a panorama's sizes and views that needs only the model's geometry, not its weights: canvas
    sizes (px, multiples of its latent cell), window and stride, the number of views, the sync anchor and the global
    view's pooling. :func:`resolve_settings` runs it on the loaded model; the command line also runs it before
    loading, on the geometry read from the model's configs.

    Raises:
        InvalidInputError: a size or view setting the model cannot run, in one line that says what is allowed.
    """
    g = geometry.granularity_px
    h, w = check_pixels("height", height, g), check_pixels("width", width, g)
    check_canvas_pixels(height, width)
    views = views.resolved(
        granularity=g,
        native_px=geometry.native_px,
        default_stride_px=geometry.default_stride_px,
        canvas_px=(height, width),
        sync=sync is not None,
    )
    window, stride = views.window // g, views.stride // g
    view_count = check_view_count(h, w, window, stride, views.wrap)
    if sync is not None:
        anchor = resolve_anchor(layout_views(h, w, window, stride, wrap=views.wrap), sync.anchor, h, w)
        sync = dataclasses.replace(sync, anchor=anchor)
    if global_view is not None:  # a canvas no factor pools fails here, before any model call
        pooling_factor(h, w, (window, window), global_view.factor)
    return PanoramaGeometry(views, sync, view_count)


def resolve_settings(
    model: LoadedModel,
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None,
    *,
    height: int,
    width: int,
    num_inference_steps: int,
    guidance_scale: float | None,
    guidance_rescale: float,
    scheduler: Any,
    views: ViewSettings,
    sync: SyncSettings | None,
    global_view: GlobalView | None,
    seed: int | None,
    output_type: str = "pil",
) -> PanoramaSettings:
    """A panorama's settings with the model's defaults filled in, every check against the model made once.

    Sizes are pixels; ``views``, ``sync`` and ``global_view`` come checked by their own constructors.

    Raises:
        InvalidInputError: anything the model cannot run, in one line that says what is allowed.
    """
    prompts = as_prompt_list(prompt)
    negatives = negatives_for(prompts, negative_prompt)
    check_sampling(num_inference_steps, guidance_scale, guidance_rescale, output_type)
    scheduler = model.default_scheduler if scheduler is None else scheduler
    scheduler_name = checked_scheduler_fields(scheduler, model.scheduler_config, num_inference_steps)
    laid = panorama_geometry(geometry_of(model), height, width, views, sync, global_view)
    views, sync = laid.views, laid.sync
    check_weight_maps_memory(model, laid.view_count, views.window // model.granularity_px)
    return PanoramaSettings(
        prompt=tuple(prompts),
        negative_prompt=tuple(negatives),
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        guidance_scale=model.default_guidance_scale if guidance_scale is None else guidance_scale,
        guidance_rescale=guidance_rescale,
        **scheduler_name,
        views=views,
        seed=seed,
        sync=sync,
        global_view=global_view,
    )


def panorama_tasks_of(model: LoadedModel, s: PanoramaSettings) -> list[ViewTask] | TaskSchedule:
    """The engine's tasks of a resolved panorama: its named layout's, or the sliding window's (latent cells)."""
    g = model.granularity_px
    h, w, window = s.height // g, s.width // g, s.views.window // g
    if s.views.layout is not None:
        return layout_tasks(s.views.layout, h, w, window, wrap=s.views.wrap)
    return panorama_tasks(h, w, window, s.views.stride // g, weights=s.views.weights, wrap=s.views.wrap)


def run_panorama(
    model: LoadedModel,
    s: PanoramaSettings,
    run: RunOptions,
    *,
    image: ImageStart | None = None,
    customise: Customisation | None = None,
    cache: CustomisationCache | None = None,
) -> MultiDiffusionOutput:
    """Stages 2–5 of a panorama call on resolved settings: prepare the tasks, encode the prompts, build the sync hook,
    then denoise and decode (:func:`~multidiffusion.pipeline.run.generate.generate`). ``cache``: the pipeline's,
    kept between runs (None: one for this run only)."""
    g = model.granularity_px
    if image is not None:
        s = dataclasses.replace(s, image=check_image_start(image, model, s.height, s.width, s.sync is not None))
    customise = customise if customise is not None else Customisation()
    if s.global_view is not None and customise.control:
        raise InvalidInputError("a global view cannot be combined with control yet: drop one of them")
    tasks = panorama_tasks_of(model, s)
    customised = Customised(
        model,
        customise,
        (),
        (s.height, s.width),
        guide_of(image),
        s.sync is not None,
        cache=CustomisationCache() if cache is None else cache,
    )
    s = dataclasses.replace(s, customisation=customise.record())
    with closing(customised):
        condition = customised.conditions([(s.prompt, s.negative_prompt, s.guidance_scale, s.guidance_rescale)])[0]
        make_hooks = None
        if s.sync is not None:
            build, resolved = prepare_sync(model, s.sync, tasks, [condition], (s.height // g, s.width // g))
            s = dataclasses.replace(s, sync=resolved)
            make_hooks = lambda: [build()]  # noqa: E731  (built after the noise is drawn)
        plan = RunPlan(
            mode=s.image["mode"] if s.image else "panorama",
            tasks=tasks,
            conditions=[condition],
            canvas_cells=(len(s.prompt), s.height // g, s.width // g),
            make_hooks=make_hooks,
            heavy_step=s.sync.is_synchronised if s.sync is not None else None,
            image=image,
            customised=customised,
        )
        return generate(model, s, plan, run)
