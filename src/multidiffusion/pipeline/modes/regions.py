"""Region-based generation: a layout of prompts painted onto the canvas (MultiDiffusion §4.2)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from multidiffusion.adapters import LoadedModel, check_scheduler_name
from multidiffusion.adapters.schedulers.names import check_scheduler_fits, check_scheduler_steps, scheduler_fields
from multidiffusion.core import layout_views, view_weights
from multidiffusion.core.engine.crop import crop, view_indices
from multidiffusion.core.engine.noise import initial_noise
from multidiffusion.core.engine.views import resolve_wrap
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
from multidiffusion.core.layouts.named import LAYOUT_NAMES, get_layout
from multidiffusion.core.types import ViewHook
from multidiffusion.pipeline.customise.customisation import Customisation, Customised, RegionExtras, guide_of
from multidiffusion.pipeline.inputs.masks import encode_mask
from multidiffusion.pipeline.inputs.region_file import Background
from multidiffusion.pipeline.modes.image_start import ImageStart, check_image_start
from multidiffusion.pipeline.modes.sync import SyncRequest, prepare_sync, sync_steps
from multidiffusion.pipeline.run.checkpoint import Checkpoint, CheckpointSettings
from multidiffusion.pipeline.run.generate import StepCallback, generate
from multidiffusion.pipeline.run.output import MultiDiffusionOutput
from multidiffusion.pipeline.settings.checks import (
    MAX_REGIONS,
    check_canvas_pixels,
    check_guidance,
    check_number,
    check_pixels,
    check_sampling,
    check_sync_layout,
    check_text,
    check_view_count,
    resolve_view_settings,
)
from multidiffusion.pipeline.settings.recipe import SamplingSettings

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
    circular: bool = False
    layout: str | None = None

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


@dataclass
class RegionPlan:
    """A validated region run: latent canvas size, latent region weights (background first), the tasks."""

    height_cells: int
    width_cells: int
    window_px: int
    stride_px: int
    weights: str
    guidance_scale: float
    masks: torch.Tensor
    tasks: list
    specs: list[tuple[str, str | None, float]]
    first_foreground: int


def plan_regions(
    model: LoadedModel,
    regions: Sequence[Region],
    background: Background | None,
    *,
    height: int,
    width: int,
    num_inference_steps: int,
    guidance_scale: float | None,
    guidance_rescale: float = 0.0,
    scheduler: Any,
    window: int | None,
    stride: int | None,
    weights: str | None,
    bootstrap_fraction: float,
    output_type: str = "pil",
    circular: bool = False,
    layout: str | None = None,
    sync: bool = False,
    negative_prompt: str = "",
    **_: Any,
) -> RegionPlan:
    """Every check of a region run against the model, and its tasks; no prompt is encoded."""
    check_regions(regions, background, bootstrap_fraction)
    check_sampling(num_inference_steps, guidance_scale, guidance_rescale, weights, output_type)
    scheduler = model.default_scheduler if scheduler is None else scheduler
    check_scheduler_name(scheduler)
    check_scheduler_fits(scheduler, model.scheduler_config)
    check_scheduler_steps(scheduler, model.scheduler_config, num_inference_steps)
    g = model.granularity_px
    h, w = check_pixels("height", height, g), check_pixels("width", width, g)
    check_canvas_pixels(height, width)
    if layout is not None and get_layout(layout).stride is None:
        raise InvalidInputError(
            f"layout {layout!r} moves its tiles every step; regions need a fixed layout: "
            f"{', '.join(n for n in LAYOUT_NAMES if get_layout(n).stride is not None)}"
        )
    check_sync_layout(sync, layout)
    laid = resolve_view_settings(
        window_px=window,
        stride_px=stride,
        weights=weights,
        layout=layout,
        granularity=g,
        native_px=model.native_window * g,
        default_stride_px=model.default_stride_px,
        canvas_px=(height, width),
        sync=sync,
    )
    window_px, stride_px = laid.window_px, laid.stride_px
    if guidance_scale is None:
        guidance_scale = model.default_guidance_scale
    specs: list[tuple[str, str | None, float]] = []
    if background is not None:
        specs.append((background.prompt, background.negative_prompt, background.guidance_scale))
    specs += [(r.prompt, r.negative_prompt, r.guidance_scale) for r in regions]
    specs = [(p, n, guidance_scale if g_ is None else g_) for p, n, g_ in specs]
    check_text(negative_prompt, "negative prompt")
    for i, (prompt, negative, scale) in enumerate(specs):
        check_text(prompt, f"prompt {i}")
        if negative is not None:
            check_text(negative, f"negative prompt {i}")
        check_guidance(scale, f" (prompt {i})")

    check_view_count(h, w, window_px // g, stride_px // g, (False, circular))
    masks = region_weights(regions, background, height, width, g).to(model.device)
    views = layout_views(h, w, window_px // g, stride_px // g, circular=circular)
    profiles = view_weights(views, h, w, laid.weights, circular=circular).to(model.device)
    tasks = region_tasks(views, masks, profiles)
    return RegionPlan(
        h,
        w,
        window_px,
        stride_px,
        laid.weights,
        guidance_scale,
        masks,
        tasks,
        specs,
        1 if background is not None else 0,
    )


def generate_regions(
    model: LoadedModel,
    regions: Sequence[Region],
    background: Background | None,
    *,
    height: int,
    width: int,
    negative_prompt: str,
    num_inference_steps: int,
    guidance_scale: float | None,
    guidance_rescale: float,
    generator: torch.Generator,
    seed: int | None,
    output_type: str,
    callback_on_step_end: StepCallback | None,
    scheduler: Any,
    window: int | None,
    stride: int | None,
    weights: str,
    bootstrap_fraction: float,
    view_batch_size: int | None,
    progress: bool,
    sync: SyncRequest | None = None,
    circular: bool = False,
    layout: str | None = None,
    checkpoint: CheckpointSettings | None = None,
    resume: Checkpoint | None = None,
    image: ImageStart | None = None,
    customise: Customisation | None = None,
) -> MultiDiffusionOutput:
    """See :meth:`MultiDiffusionPipeline.regions`."""
    sync = sync or SyncRequest()
    sync.check()
    scheduler = model.default_scheduler if scheduler is None else scheduler
    plan = plan_regions(
        model,
        regions,
        background,
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        guidance_rescale=guidance_rescale,
        scheduler=scheduler,
        window=window,
        stride=stride,
        weights=weights,
        bootstrap_fraction=bootstrap_fraction,
        output_type=output_type,
        circular=circular,
        layout=layout,
        sync=sync.enabled,
        negative_prompt=negative_prompt,
    )
    h, w, masks, tasks = plan.height_cells, plan.width_cells, plan.masks, plan.tasks
    customise = customise if customise is not None else Customisation()
    regional = [RegionExtras()] * plan.first_foreground + [RegionExtras(r.control, r.loras) for r in regions]
    customised = Customised(model, customise, regional, (height, width), guide_of(image), sync.enabled)
    with closing(customised):
        # each prompt encoded once per run (with its LoRA set active), tagged with its own extras
        specs = [([p], [negative_prompt if n is None else n], g_, guidance_rescale) for p, n, g_ in plan.specs]
        conditions = customised.conditions(specs)
        tasks = customised.order(tasks, conditions)

        first_fg = plan.first_foreground
        steps = bootstrap_steps(bootstrap_fraction, num_inference_steps)

        sync_fields = sync.settings_fields()
        make_sync = None
        if sync.enabled:
            make_sync, sync_fields = prepare_sync(model, sync, tasks, conditions, (h, w))

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
            height=height,
            width=width,
            negative_prompt=(negative_prompt,),
            num_inference_steps=num_inference_steps,
            guidance_scale=plan.guidance_scale,
            guidance_rescale=guidance_rescale,
            **scheduler_fields(scheduler),
            window=plan.window_px,
            stride=plan.stride_px,
            weights=plan.weights,
            bootstrap_fraction=bootstrap_fraction,
            seed=seed,
            circular=circular,
            layout=layout,
            **sync_fields,
        )
        if image is not None:
            settings = replace(settings, image=check_image_start(image, model, height, width, sync.enabled))
        settings = replace(settings, customisation=customise.record(regional))
        return generate(
            model,
            settings=settings,
            mode="regions",
            tasks=tasks,
            conditions=conditions,
            canvas_cells=(1, h, w),
            generator=generator,
            output_type=output_type,
            make_hooks=make_hooks,
            callback_on_step_end=callback_on_step_end,
            view_batch_size=view_batch_size,
            progress=progress,
            heavy_step=sync_steps(settings) if sync.enabled else None,
            wrap=resolve_wrap(circular=circular),
            checkpoint=checkpoint,
            resume=resume,
            image=image,
            customised=customised,
        )
