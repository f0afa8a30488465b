"""The high-resolution mode: one large picture from a prompt, climbing from the model's native size (docs/highres.md).

Stage 1 is a plain run at the native size (a panorama whose short side is the window). Every later stage doubles the
side (or what ``stages`` asks), starts from the previous stage's result enlarged and noised to its first step (SDEdit,
as ``upscale`` starts), and denoises with the crops of the panorama plus a global path: the pooled global view,
DemoFusion's dilated views, or both, and optionally DemoFusion's skip residual. Each stage is one run of the one
engine (docs/design.md §9): the global paths are views and hooks, never a second loop.

The stage runner follows :func:`~multidiffusion.pipeline.run.generate.generate` stage by stage (check, prepare,
denoise, decode) and adds its own parts between prepare and denoise: the start canvas (enlarged in latent space, or
in pixels as ``upscale`` enlarges), the dilated views' pre-filter and the skip residual.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from multidiffusion.adapters import LoadedModel, make_scheduler
from multidiffusion.adapters.loading.geometry import ModelGeometry, geometry_of
from multidiffusion.core.engine.noise import add_noise
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.dilated import GaussianPrefilter, dilated_schedule, dilation_factor
from multidiffusion.core.features.global_view import GlobalView
from multidiffusion.core.features.skip_residual import SkipResidual
from multidiffusion.core.types import SamplerState
from multidiffusion.pipeline.customise.cache import CustomisationCache
from multidiffusion.pipeline.customise.customisation import Customisation, Customised, guide_of
from multidiffusion.pipeline.modes.image_start import ImageStart, check_image_start, read_image, resize
from multidiffusion.pipeline.modes.panorama import panorama_geometry, panorama_tasks_of
from multidiffusion.pipeline.run.generate import RunPlan, check_run, decode, denoise, metadata_of, prepare
from multidiffusion.pipeline.run.options import RunOptions, decode_tiling
from multidiffusion.pipeline.run.output import MultiDiffusionOutput, convert, seed_of
from multidiffusion.pipeline.settings.checks import check_pixels, repeat_prompts
from multidiffusion.pipeline.settings.highres import HighresSettings, stage_count
from multidiffusion.pipeline.settings.recipe import DEFAULTS, PanoramaSettings
from multidiffusion.pipeline.settings.views import ViewSettings

REFUSED = ("sync", "global_view", "image", "checkpoint", "resume")
"""Panorama keywords a high-resolution run does not take (yet): its stages set their own global path and start."""


@dataclass
class HighresOutput(MultiDiffusionOutput):
    """What :meth:`HighresInputs.highres` returns: the final stage's output, and every stage's.

    Attributes:
        stages: Each stage's output in order, the last one the final result itself. The images of the earlier
            stages are decoded only when they are kept (``keep_stages``) or the stages climb in pixels; else they
            hold the latents.
    """

    stages: list[MultiDiffusionOutput] = field(default_factory=list)


def stage_sizes(height: int, width: int, native_px: int, granularity: int, stages: int | None) -> list[tuple[int, int]]:
    """(height, width) px of every stage: the first with its short side at ``native_px`` (the asked aspect), each next
    one the same ratio larger, the last the asked size; sides rounded to multiples of ``granularity``.

    A canvas whose short side is at most the native size is one stage (a plain panorama).
    """
    ratio = min(height, width) / native_px
    if ratio <= 1:
        return [(height, width)]
    n = stages if stages is not None else stage_count(ratio)
    sizes = []
    for j in range(n - 1):
        f = ratio ** ((n - 1 - j) / (n - 1))
        sizes.append(tuple(max(granularity, round(side / f / granularity) * granularity) for side in (height, width)))
    sizes.append((height, width))
    return sizes  # type: ignore[return-value]


def highres_geometry(
    geometry: ModelGeometry,
    height: int,
    width: int,
    views: ViewSettings | None = None,
    highres: HighresSettings | None = None,
) -> list[tuple[int, int]]:
    """Every check of a high-resolution run that needs only the model's geometry (the command line runs it before the
    model loads): the final size, and each stage's sizes, views and pooling (:func:`panorama_geometry`).

    Returns:
        (height, width) px of every stage.

    Raises:
        InvalidInputError: a size or setting some stage cannot run, in one line.
    """
    highres = highres if highres is not None else HighresSettings()
    g = geometry.granularity_px
    check_pixels("height", height, g)
    check_pixels("width", width, g)
    views = views if views is not None else ViewSettings()
    native = views.window if views.window is not None else geometry.native_px
    sizes = stage_sizes(height, width, native, g, highres.stages)
    later = later_views(views, highres)
    for j, (h, w) in enumerate(sizes):
        pooled = GlobalView(highres.pooled_weight) if highres.pooled and j else None
        panorama_geometry(geometry, h, w, later if j else views, None, pooled)
    return sizes


def later_views(views: ViewSettings | None, highres: HighresSettings) -> ViewSettings | None:
    """The views of the stages after the first: the run's, with ``highres.weights`` when they name no weights."""
    if highres.weights is not None and (views is None or (views.weights is None and views.layout is None)):
        return dataclasses.replace(views or ViewSettings(), weights=highres.weights)
    return views


def enlarge_latents(latents: Tensor, height: int, width: int, patch: int = 1) -> Tensor:
    """Latents (N, C, h, w) enlarged to (N, C, height, width) cells by bicubic interpolation (DemoFusion's choice).

    Latents packed p × p (``patch``, Flux and SD 3 here) are unpacked to the VAE's grid first, so the interpolation
    runs over space, not over the packed channels."""
    if tuple(latents.shape[2:]) == (height, width):
        return latents
    if patch > 1:
        grid = F.pixel_shuffle(latents, patch)
        grid = F.interpolate(grid, size=(height * patch, width * patch), mode="bicubic", align_corners=False)
        return F.pixel_unshuffle(grid, patch)
    return F.interpolate(latents, size=(height, width), mode="bicubic", align_corners=False)


@dataclass(frozen=True)
class StageRequest:
    """One later stage: its canvas, settings and start.

    Attributes:
        settings: The stage's resolved panorama settings (its size, steps, global view).
        previous: The previous stage's output (its latents; its images in [0, 1] for the pixel route).
        highres: The run's :class:`HighresSettings`.
        index: 1-based stage number, and ``count`` the stages in all.
        scale: The stage's side over the first stage's (the dilated views' stride k at most).
        customise: The run's customisation.
        first_steps: The first stage's steps, and ``first_weights`` its views' weights as given (None: the default):
            recorded, with the stage's own settings, so the recipe names the whole run.
    """

    settings: PanoramaSettings
    previous: MultiDiffusionOutput
    highres: HighresSettings
    index: int
    count: int
    scale: int
    customise: Customisation
    first_steps: int = DEFAULTS.num_inference_steps
    first_weights: str | None = None


def _record(request: StageRequest, strength: float) -> dict[str, Any]:
    """What the stage's recipe records under ``image``."""
    return {
        "mode": "highres",
        "input": None,
        "stage": request.index,
        "stages": request.count,
        "strength": float(strength),
        "first_steps": request.first_steps,
        "first_weights": request.first_weights,
        "feather": 0.0,
        "noise_inversion_steps": 0,
        **request.highres.record(),
    }


def run_stage(
    model: LoadedModel, request: StageRequest, run: RunOptions, cache: CustomisationCache
) -> MultiDiffusionOutput:
    """One later stage on the engine: :func:`~multidiffusion.pipeline.run.generate.generate`'s stages, with the
    stage's start, dilated views and skip residual put in between prepare and denoise."""
    s, hr = request.settings, request.highres
    g = model.granularity_px
    h, w = s.height // g, s.width // g
    n = len(s.prompt)
    image = None
    if hr.upscale == "pixels":
        if n != 1:
            raise InvalidInputError(
                "highres upscale='pixels' runs one canvas at a time; use upscale='latent' for several"
            )
        pixels = read_image(request.previous.images[0])  # the previous stage's decoded image, as upscale reads one
        image = ImageStart(resize(pixels, s.height, s.width, "lanczos"), strength=hr.strength, record={})
        s = dataclasses.replace(s, image=check_image_start(image, model, s.height, s.width, False))
    s = dataclasses.replace(s, image={**(s.image or {}), **_record(request, hr.strength)})
    customise = request.customise
    if customise.control and hr.global_path != "none":
        raise InvalidInputError("a highres global path cannot be combined with control yet: use global_path='none'")
    tasks: Any = panorama_tasks_of(model, s)
    window = s.views.window // g
    hooks: list[Any] = []
    factor = dilation_factor(h, w, (window, window), request.scale) if hr.dilated else 1
    steps = s.num_inference_steps
    if factor > 1:
        if not isinstance(tasks, list):
            raise InvalidInputError("dilated views need a fixed sliding-window layout; drop the named layout")
        timer = make_scheduler(s.scheduler, model.scheduler_config, s.scheduler_config)
        model.set_timesteps(timer, steps, (window, window))
        train = int(model.scheduler_config.get("num_train_timesteps", 1000))
        stride = s.views.stride // g
        tasks = dilated_schedule(
            tasks,
            h,
            w,
            (window, window),
            (stride, stride),
            factor,
            timer.timesteps,
            train,
            hr.dilation,
            hr.dilation_decay,
        )
        hooks.append(GaussianPrefilter(hr.blur * factor, hr.dilation_decay, train))  # also wraps the denoiser below
    customised = Customised(model, customise, (), (s.height, s.width), guide_of(image), False, cache=cache)
    s = dataclasses.replace(s, customisation=customise.record())
    with closing(customised):
        condition = customised.conditions([(s.prompt, s.negative_prompt, s.guidance_scale, s.guidance_rescale)])[0]
        plan = RunPlan(
            mode="highres",
            tasks=tasks,
            conditions=[condition],
            canvas_cells=(n, h, w),
            make_hooks=(lambda: hooks) if hooks else None,
            image=image,
            customised=customised,
        )
        view = check_run(model, s, plan.tasks, plan.canvas_cells, run)
        with decode_tiling(model.codec, run.tiled_vae, model.family):
            ready = prepare(model, s, plan, run, view)
            scheduler = ready.scheduler
            noise = ready.x_T / getattr(scheduler, "init_noise_sigma", 1.0)
            if image is None:  # the latent route: the previous latents enlarged, noised to the first step
                start = enlarge_latents(request.previous.latents.to(noise), h, w, model.noise_patch)
                first = min(
                    model.first_step(steps, hr.strength) * int(getattr(scheduler, "order", 1)), len(scheduler.timesteps)
                )
                if hasattr(scheduler, "set_begin_index"):
                    scheduler.set_begin_index(first)
                if first < len(scheduler.timesteps):
                    level = scheduler.timesteps[first].expand(n)
                    ready.start = SamplerState(first, add_noise(scheduler, start, noise, level))
                else:
                    ready.start = SamplerState(first, start.clone())
                ready.skipped = first
            elif hr.residual > 0:
                with torch.no_grad():
                    start = model.codec.encode(image.image.to(model.device)).float().to(noise.device)
            if hr.residual > 0:
                train = int(model.scheduler_config.get("num_train_timesteps", 1000))
                ready.post_step.append(SkipResidual(start, noise, hr.residual, hr.residual_decay, train))
            for hook in hooks:
                ready.denoiser = hook.wrap(ready.denoiser)
            metadata = metadata_of(model, s, plan.mode, ready.view_batch_size)
            latents, steps_run, used_batch, _ = denoise(plan, s, ready, run, metadata)
            images = decode(model, latents, s.views.wrap, ready, run.output_type)
    if used_batch != ready.view_batch_size:
        metadata = dataclasses.replace(metadata, view_batch_size=used_batch)
    return MultiDiffusionOutput(images=images, latents=latents, metadata=metadata, steps_run=steps_run)


def _write_stage(model: LoadedModel, out: MultiDiffusionOutput, folder: Path, index: int, count: int) -> None:
    """Stage ``index`` of ``count`` as PNGs in ``folder`` (``stage-1-of-4.png``; ``-k`` per canvas of a batch),
    decoded from its latents when the stage's output is not PIL images."""
    if not isinstance(out.images, list):
        with torch.no_grad():
            out = dataclasses.replace(out, images=convert(model.codec.decode(out.latents), "pil"))
    folder.mkdir(parents=True, exist_ok=True)
    out.save(folder / f"stage-{index}-of-{count}.png")


class HighresInputs:
    """Mixin of :class:`~multidiffusion.pipeline.facade.MultiDiffusionPipeline`: :meth:`highres`. ``self(...)`` is the
    panorama call (stage 1), ``self.settings(...)`` its checked settings (every later stage's)."""

    model: Any
    customisation_cache: CustomisationCache
    __call__: Callable[..., MultiDiffusionOutput]
    settings: Callable[..., PanoramaSettings]

    def plan_highres(
        self, height: int, width: int, highres: HighresSettings | None = None, views: ViewSettings | None = None
    ) -> list[tuple[int, int]]:
        """(height, width) px of every stage of :meth:`highres` for this model, without running it."""
        highres = highres if highres is not None else HighresSettings()
        if not isinstance(highres, HighresSettings):
            raise InvalidInputError(f"highres must be a HighresSettings, got {type(highres).__name__}")
        return highres_geometry(geometry_of(self.model), height, width, views, highres)

    def highres(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        width: int,
        height: int,
        highres: HighresSettings | None = None,
        keep_stages: str | os.PathLike[str] | None = None,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        guidance_scale: float | None = DEFAULTS.guidance_scale,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        views: ViewSettings | None = None,
        num_images_per_prompt: int = 1,
        customise: Customisation | None = None,
        view_batch_size: int | None = None,
        progress: bool = True,
        tiled_vae: bool | None = None,
        **panorama_kwargs: Any,
    ) -> HighresOutput:
        """One large picture from a prompt: a native-size run, then stages that climb to ``width`` × ``height`` px.

        Args:
            prompt: A prompt or one per canvas.
            negative_prompt: As for a panorama.
            width: The final width, px (a multiple of the model's granularity).
            height: The final height, px.
            highres: How to climb (:class:`~multidiffusion.pipeline.settings.highres.HighresSettings`); None: its
                defaults (the measured best, docs/highres.md).
            keep_stages: A folder to write every stage's images into (``stage-j-of-n.png``); None: only the result
                (every stage's output is in the result's ``stages`` either way).
            num_inference_steps: Steps of the first stage (and of the later ones unless ``later_steps`` is set;
                each later stage runs ``strength`` of its steps).
            guidance_scale, generator, output_type, views, num_images_per_prompt, customise, view_batch_size,
                progress, tiled_vae: As for the panorama call; ``views.window`` is the native size the run climbs
                from (default the model's).
            **panorama_kwargs: Other keywords of the panorama call (``scheduler``, ``guidance_rescale``,
                ``callback_on_step_end``: called by every stage, its step index counting from each stage's first);
                ``sync``, ``global_view``, ``image``, ``checkpoint`` and ``resume`` are refused.

        Returns:
            The final stage's output with every stage's in ``stages``.
        """
        from multidiffusion.pipeline.facade import fresh_generator  # the facade imports this module

        refused = [k for k in REFUSED if k in panorama_kwargs]
        if refused:
            raise InvalidInputError(f"highres does not take {', '.join(refused)}: its stages set their own")
        highres = highres if highres is not None else HighresSettings()
        sizes = self.plan_highres(height, width, highres, views)
        generator = generator if generator is not None else fresh_generator()
        seed = seed_of(generator)  # recorded by every stage: the run starts from this state
        keep = Path(keep_stages) if keep_stages is not None else None
        pixels = highres.upscale == "pixels"
        callback = panorama_kwargs.pop("callback_on_step_end", None)
        common = dict(guidance_scale=guidance_scale, views=views, customise=customise, **panorama_kwargs)
        next_views = later_views(views, highres)
        prompts, negatives = repeat_prompts(prompt, negative_prompt, num_images_per_prompt)
        wanted = [
            output_type if j == len(sizes) - 1 else ("pt" if pixels or keep is not None else "latent")
            for j in range(len(sizes))
        ]
        later: list[PanoramaSettings] = []
        g = self.model.granularity_px
        for j, (h, w) in enumerate(sizes[1:], start=1):  # every later stage checked (sizes, views, memory) up front
            s = self.settings(
                prompts,
                negatives,
                h,
                w,
                highres.later_steps or num_inference_steps,
                guidance_scale,
                views=next_views,
                global_view=GlobalView(highres.pooled_weight) if highres.pooled else None,
                seed=seed,
                output_type=wanted[j],
                **{k: v for k, v in panorama_kwargs.items() if k in ("scheduler", "guidance_rescale")},
            )
            options = RunOptions(generator, wanted[j], callback, view_batch_size, progress, None, None, tiled_vae)
            check_run(self.model, s, panorama_tasks_of(self.model, s), (len(prompts), h // g, w // g), options)
            later.append(s)
        outputs: list[MultiDiffusionOutput] = []
        for index, (h, w) in enumerate(sizes, start=1):
            if progress and len(sizes) > 1:
                print(f"highres stage {index}/{len(sizes)}: {w}×{h} px", file=sys.stderr)
            if index == 1:  # the native stage: a plain panorama call, so one stage is exactly a panorama
                out = self(
                    prompt,
                    negative_prompt,
                    height=h,
                    width=w,
                    num_inference_steps=num_inference_steps,
                    generator=generator,
                    output_type=wanted[0],
                    num_images_per_prompt=num_images_per_prompt,
                    view_batch_size=view_batch_size,
                    progress=progress,
                    tiled_vae=tiled_vae,
                    callback_on_step_end=callback,
                    **common,
                )
            else:
                request = StageRequest(
                    later[index - 2],
                    outputs[-1],
                    highres,
                    index,
                    len(sizes),
                    max(1, round(min(h, w) / min(sizes[0]))),
                    customise if customise is not None else Customisation(),
                    num_inference_steps,
                    views.weights if views is not None else None,
                )
                run = RunOptions(
                    generator, wanted[index - 1], callback, view_batch_size, progress, None, None, tiled_vae
                )
                out = run_stage(self.model, request, run, self.customisation_cache)
            if keep is not None:
                _write_stage(self.model, out, keep, index, len(sizes))
            outputs.append(out)
        final = outputs[-1]
        return HighresOutput(final.images, final.latents, final.metadata, final.steps_run, stages=outputs)
