"""Region-based generation: a layout of prompts painted onto the canvas (MultiDiffusion §4.2)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from multidiffusion.adapters import LoadedModel
from multidiffusion.adapters.loading.geometry import ModelGeometry, geometry_of
from multidiffusion.adapters.schedulers.names import checked_scheduler_fields
from multidiffusion.core import layout_views, view_weights
from multidiffusion.core.engine.crop import crop, view_indices
from multidiffusion.core.engine.noise import initial_noise
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.bootstrap import Bootstrap, bootstrap_steps, constant_colour_latents
from multidiffusion.core.features.regions import (
    Region,
    mask_tensor,
    pixel_mask,
    region_tasks,
    to_latent_grid,
    with_background,
)
from multidiffusion.core.features.sync import SyncSettings
from multidiffusion.core.layouts.named import LAYOUT_NAMES, get_layout
from multidiffusion.core.types import ViewHook
from multidiffusion.pipeline.customise.cache import CustomisationCache
from multidiffusion.pipeline.customise.customisation import Customisation, Customised, RegionExtras, guide_of
from multidiffusion.pipeline.inputs.masks import encode_mask
from multidiffusion.pipeline.inputs.region_file import Background
from multidiffusion.pipeline.modes.image_start import ImageStart, check_image_start
from multidiffusion.pipeline.modes.sync import prepare_sync, resolve_anchor, task_views
from multidiffusion.pipeline.run.generate import RunPlan, generate
from multidiffusion.pipeline.run.memory import check_weight_maps_memory
from multidiffusion.pipeline.run.options import RunOptions
from multidiffusion.pipeline.run.output import MultiDiffusionOutput, seed_of
from multidiffusion.pipeline.settings.checks import (
    MAX_REGIONS,
    check_canvas_pixels,
    check_guidance,
    check_number,
    check_pixels,
    check_sampling,
    check_text,
    check_view_count,
)
from multidiffusion.pipeline.settings.recipe import SamplingSettings
from multidiffusion.pipeline.settings.views import ViewSettings

DEFAULT_BOOTSTRAP_FRACTION = 0.2  # the paper's "first 20% of the process"; docs/regions.md
BOOTSTRAP_COLOURS = 8  # constant-colour backgrounds encoded once per run


@dataclass(frozen=True)
class RegionSettings(SamplingSettings):
    """Everything that, with the model and the masks, determines a region image.

    Attributes:
        regions: Each region's prompt, box (or mask hash and size), overrides and weight.
        background: The background's prompt and overrides, or None.
        bootstrap_fraction: Fraction of the steps that bootstrap.
    """

    regions: tuple[dict[str, Any], ...] = ()
    background: dict[str, Any] | None = None
    bootstrap_fraction: float = DEFAULT_BOOTSTRAP_FRACTION

    @property
    def prompt(self) -> tuple[str, ...]:
        """The prompts, background first, as one text (for the A1111 text)."""
        prompts = [self.background["prompt"]] if self.background else []
        return (" | ".join(prompts + [r["prompt"] for r in self.regions]),)

    def a1111_extra(self) -> list[str]:
        """Each prompt's own guidance scale (``CFG scale`` is only the default of those that set none)."""
        entries = [self.background] if self.background else []
        entries += list(self.regions)
        scales = [
            e.get("guidance_scale") if e.get("guidance_scale") is not None else self.guidance_scale for e in entries
        ]
        return [
            "Region CFG scales: " + "; ".join(f"{e['prompt']}: {g:g}" for e, g in zip(entries, scales, strict=True)),
            f"Bootstrap fraction: {self.bootstrap_fraction:g}",
        ]


def _region_record(region: Region) -> dict[str, Any]:
    record = {"prompt": region.prompt, "weight": region.weight}
    if region.box is not None:
        record["box"] = list(region.box)
    else:  # the mask itself, compressed, so the image regenerates from its metadata alone
        record.update(encode_mask(mask_tensor(region.mask, "region mask")))
    for key in ("name", "negative_prompt", "guidance_scale"):
        if getattr(region, key) is not None:
            record[key] = getattr(region, key)
    return record


def check_regions(regions: Sequence[Region], background: Background | None, bootstrap_fraction: float) -> None:
    """Layout-level checks: something to draw, unique names, a bootstrap fraction in [0, 1]."""
    if not regions and background is None:
        raise InvalidInputError("the layout has no regions and no background; give at least one")
    if len(regions) > MAX_REGIONS:
        raise InvalidInputError(
            f"{len(regions)} regions; the limit is {MAX_REGIONS} (merge regions that share a prompt)"
        )
    names = [r.name for r in regions if r.name is not None]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInputError(f"region name {duplicates[0]!r} is used more than once; names must be unique")
    check_number("bootstrap fraction", bootstrap_fraction, 0.0, 1.0)


def region_weights(
    regions: Sequence[Region], background: Background | None, height: int, width: int, scale_factor: int
) -> torch.Tensor:
    """(R', h, w) latent-grid weights: background first (if any), then each region's weighted mask."""
    masks = [pixel_mask(r, height, width, f"regions[{i}]") * r.weight for i, r in enumerate(regions)]
    fg = (
        to_latent_grid(torch.stack(masks), scale_factor)
        if masks
        else torch.zeros(0, height // scale_factor, width // scale_factor)
    )
    if background is not None:
        return with_background(fg)
    hole = fg.sum(0) <= 0
    if bool(hole.any()):
        rows, cols = hole.nonzero(as_tuple=True)
        f = scale_factor
        box = [int(cols.min()) * f, int(rows.min()) * f, (int(cols.max()) + 1) * f, (int(rows.max()) + 1) * f]
        raise InvalidInputError(
            f"the regions leave {int(hole.sum()) * f * f} px uncovered (within the box [x0, y0, x1, y1] = {box} px) "
            "and there is no background; add a background or cover the canvas"
        )
    return fg


@dataclass(frozen=True)
class RegionRequest:
    """The settings of a region call as the user gave them (pixels), before they are resolved against the model.

    Attributes:
        height: Canvas height, px.
        width: Canvas width, px.
        negative_prompt: Default negative prompt of every region and the background.
        num_inference_steps: Scheduler steps.
        guidance_scale: Default guidance of every region and the background; None: the model's.
        guidance_rescale: φ of Lin et al. 2023.
        scheduler: A scheduler name or instance; None: the model's default.
        views: How the views are laid (wrap-around only along x; a fixed named layout only).
        bootstrap_fraction: Fraction of the steps that bootstrap, in [0, 1].
        sync: SyncDiffusion's settings; None: off.
        output_type: ``pil``, ``np``, ``pt`` or ``latent``.
    """

    height: int
    width: int
    negative_prompt: str
    num_inference_steps: int
    guidance_scale: float | None
    guidance_rescale: float
    scheduler: Any
    views: ViewSettings
    bootstrap_fraction: float
    sync: SyncSettings | None
    output_type: str = "pil"


@dataclass
class RegionPlan:
    """A validated region run: latent canvas size, resolved views, latent region weights (background first), tasks.

    Attributes:
        height_cells: Canvas rows, latent cells.
        width_cells: Canvas columns, latent cells.
        views: The views as resolved (window, stride and weights in px and by name).
        guidance_scale: The default guidance scale, resolved.
        scheduler: The scheduler's recorded fields (``scheduler``, ``scheduler_config``).
        sync: SyncDiffusion's settings (the anchor resolved by the run); None: off.
        masks: (R', h, w) region weights on the latent grid, background first.
        tasks: The engine's (view, condition, weight) tasks.
        specs: (prompt, negative prompt or None, guidance scale) per condition, background first.
        first_foreground: Index of the first region's condition (1 with a background, else 0).
        request: The settings as the user gave them.
    """

    height_cells: int
    width_cells: int
    views: ViewSettings
    guidance_scale: float
    scheduler: dict[str, Any]
    sync: SyncSettings | None
    masks: torch.Tensor
    tasks: list
    specs: list[tuple[str, str | None, float]]
    first_foreground: int
    request: RegionRequest


@dataclass(frozen=True)
class RegionGeometry:
    """A region run's sizes, views and masks checked against a model's geometry.

    Attributes:
        views: The views with the model's defaults filled in (window, stride, weights; px).
        view_count: Views per step.
        masks: (R', h, w) region weights on the latent grid, background first, on the CPU.
    """

    views: ViewSettings
    view_count: int
    masks: torch.Tensor


def region_geometry(
    geometry: ModelGeometry, regions: Sequence[Region], background: Background | None, request: RegionRequest
) -> RegionGeometry:
    """Every check of a region run that needs only the model's geometry, not its weights: the layout's regions,
    sampling settings and prompts, the canvas size (px, multiples of the latent cell), the views (a fixed layout,
    wrap along x only, window and stride, their number) and each region's box or mask against the canvas, with the
    canvas's coverage. :func:`plan_regions` runs it on the loaded model; the command line also runs it before
    loading, on the geometry read from the model's configs. The sync anchor is checked by :func:`plan_regions` only:
    it indexes the run's tasks, built on the model's device.

    Raises:
        InvalidInputError: anything the model cannot run, in one line that says what is allowed.
    """
    r = request
    check_regions(regions, background, r.bootstrap_fraction)
    check_sampling(r.num_inference_steps, r.guidance_scale, r.guidance_rescale, r.output_type)
    g = geometry.granularity_px
    h, w = check_pixels("height", r.height, g), check_pixels("width", r.width, g)
    check_canvas_pixels(r.height, r.width)
    if r.views.layout is not None and get_layout(r.views.layout).stride is None:
        raise InvalidInputError(
            f"layout {r.views.layout!r} moves its tiles every step; regions need a fixed layout: "
            f"{', '.join(n for n in LAYOUT_NAMES if get_layout(n).stride is not None)}"
        )
    if r.views.wrap[0]:
        raise InvalidInputError(f"regions wrap around x only: use tile='x', not {r.views.tile!r}")
    views = r.views.resolved(
        granularity=g,
        native_px=geometry.native_px,
        default_stride_px=geometry.default_stride_px,
        canvas_px=(r.height, r.width),
        sync=r.sync is not None,
    )
    check_text(r.negative_prompt, "negative prompt")
    entries = [background] if background is not None else []
    for i, entry in enumerate([*entries, *regions]):
        check_text(entry.prompt, f"prompt {i}")
        if entry.negative_prompt is not None:
            check_text(entry.negative_prompt, f"negative prompt {i}")
        if entry.guidance_scale is not None:
            check_guidance(entry.guidance_scale, f" (prompt {i})")
    view_count = check_view_count(h, w, views.window // g, views.stride // g, views.wrap)
    return RegionGeometry(views, view_count, region_weights(regions, background, r.height, r.width, g))


def plan_regions(
    model: LoadedModel, regions: Sequence[Region], background: Background | None, request: RegionRequest
) -> RegionPlan:
    """Every check of a region run against the model, once (:func:`region_geometry` and the model's own), and its
    tasks; no prompt is encoded."""
    r = request
    laid_out = region_geometry(geometry_of(model), regions, background, r)
    named = model.default_scheduler if r.scheduler is None else r.scheduler
    scheduler = checked_scheduler_fields(named, model.scheduler_config, r.num_inference_steps)
    g = model.granularity_px
    h, w, views = r.height // g, r.width // g, laid_out.views
    guidance_scale = model.default_guidance_scale if r.guidance_scale is None else r.guidance_scale
    specs: list[tuple[str, str | None, float]] = []
    if background is not None:
        specs.append((background.prompt, background.negative_prompt, background.guidance_scale))
    specs += [(region.prompt, region.negative_prompt, region.guidance_scale) for region in regions]
    specs = [(p, n, guidance_scale if g_ is None else g_) for p, n, g_ in specs]

    window, stride = views.window // g, views.stride // g
    check_weight_maps_memory(model, laid_out.view_count, window)
    masks = laid_out.masks.to(model.device)
    laid = layout_views(h, w, window, stride, wrap=views.wrap)
    profiles = view_weights(laid, h, w, views.weights, wrap=views.wrap).to(model.device)
    tasks = region_tasks(laid, masks, profiles)
    if r.sync is not None:  # checked here; resolved by the run, on its tasks as ordered by LoRA set
        resolve_anchor(task_views(tasks), r.sync.anchor, h, w)
    first_foreground = 1 if background is not None else 0
    return RegionPlan(h, w, views, guidance_scale, scheduler, r.sync, masks, tasks, specs, first_foreground, r)


def run_regions(
    model: LoadedModel,
    regions: Sequence[Region],
    background: Background | None,
    plan: RegionPlan,
    run: RunOptions,
    *,
    image: ImageStart | None = None,
    customise: Customisation | None = None,
    cache: CustomisationCache | None = None,
) -> MultiDiffusionOutput:
    """Stages 2–5 of :meth:`MultiDiffusionPipeline.regions` on a checked plan: encode each prompt once, order the
    tasks by LoRA set, build the bootstrapping and sync hooks, then denoise and decode. ``cache``: the pipeline's,
    kept between runs (None: one for this run only)."""
    h, w, masks, tasks, request = plan.height_cells, plan.width_cells, plan.masks, plan.tasks, plan.request
    customise = customise if customise is not None else Customisation()
    regional = [RegionExtras()] * plan.first_foreground + [RegionExtras(r.control, r.loras) for r in regions]
    customised = Customised(
        model,
        customise,
        regional,
        (request.height, request.width),
        guide_of(image),
        plan.sync is not None,
        cache=CustomisationCache() if cache is None else cache,
    )
    with closing(customised):
        # each prompt encoded once per run (with its LoRA set active), tagged with its own extras
        negative = request.negative_prompt
        specs = [([p], [negative if n is None else n], g_, request.guidance_rescale) for p, n, g_ in plan.specs]
        conditions = customised.conditions(specs)
        tasks = customised.order(tasks, conditions)

        first_fg = plan.first_foreground
        steps = bootstrap_steps(request.bootstrap_fraction, request.num_inference_steps)
        generator = run.generator

        sync = plan.sync
        make_sync = None
        if sync is not None:
            make_sync, sync = prepare_sync(model, sync, tasks, conditions, (h, w))

        def make_hooks() -> list[ViewHook]:
            hooks = make_bootstrap()
            return [*hooks, make_sync()] if make_sync is not None else hooks

        def make_bootstrap() -> list[ViewHook]:
            foreground = [i for i, t in enumerate(tasks) if t.condition >= first_fg]
            if steps == 0 or not foreground:
                return []
            view = tasks[0].view
            index = view_indices([tasks[i].view for i in foreground], h, w, model.device)
            region_masks = crop(masks[None], index, (view.height, view.width))  # (F, R', h, w)
            task_masks = {i: region_masks[k, tasks[i].condition] for k, i in enumerate(foreground)}
            backgrounds = constant_colour_latents(
                model.codec, BOOTSTRAP_COLOURS, (view.height, view.width), generator, model.device
            )
            noise = initial_noise((1, model.codec.latent_channels, h, w), generator, model.device, model.dtype).float()
            return [Bootstrap(tasks, task_masks, backgrounds, noise, steps, generator)]

        settings = RegionSettings(
            regions=tuple(_region_record(r) for r in regions),
            background=asdict(background) if background is not None else None,
            height=request.height,
            width=request.width,
            negative_prompt=(negative,),
            num_inference_steps=request.num_inference_steps,
            guidance_scale=plan.guidance_scale,
            guidance_rescale=request.guidance_rescale,
            **plan.scheduler,
            views=plan.views,
            bootstrap_fraction=request.bootstrap_fraction,
            seed=seed_of(generator),
            sync=sync,
        )
        if image is not None:
            started = check_image_start(image, model, request.height, request.width, sync is not None)
            settings = replace(settings, image=started)
        settings = replace(settings, customisation=customise.record(regional))
        run_plan = RunPlan(
            mode="regions",
            tasks=tasks,
            conditions=conditions,
            canvas_cells=(1, h, w),
            make_hooks=make_hooks,
            heavy_step=sync.is_synchronised if sync is not None else None,
            image=image,
            customised=customised,
        )
        return generate(model, settings, run_plan, run)
