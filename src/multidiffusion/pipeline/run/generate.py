"""The run shared by every mode: scheduler, initial noise, the engine with progress, decoding, output."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from multidiffusion import __version__
from multidiffusion.adapters import LoadedModel, make_scheduler
from multidiffusion.adapters.schedulers.inversion import InvertingScheduler
from multidiffusion.core import ClassifierFreeGuidance, GuidedCondition, initial_noise, sample
from multidiffusion.core.engine.decoding import decode_wrapped
from multidiffusion.core.engine.shards import Shard, imbalance
from multidiffusion.core.engine.tasks import TaskSchedule
from multidiffusion.core.engine.views import View, Wrap
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.channels import ConcatChannels
from multidiffusion.core.types import SamplerState, StepState, ViewHook, ViewTask
from multidiffusion.pipeline.customise.customisation import Customised
from multidiffusion.pipeline.modes.image_start import ImageStart, PreparedStart, inpaint_channels, noised, prepare_start
from multidiffusion.pipeline.run.checkpoint import Recorder
from multidiffusion.pipeline.run.distributed import process_shard
from multidiffusion.pipeline.run.memory import (
    check_run_memory,
    check_view_memory,
    device_free_bytes,
    estimate_run_bytes,
)
from multidiffusion.pipeline.run.options import RunOptions, decode_tiling
from multidiffusion.pipeline.run.output import MultiDiffusionOutput, convert
from multidiffusion.pipeline.run.progress import Phase, StepProgress
from multidiffusion.pipeline.settings.recipe import GenerationMetadata, SamplingSettings

Tasks = Sequence[ViewTask] | TaskSchedule
Cells = tuple[int, int, int]


def auto_view_batch_size(model: LoadedModel, view_cells: int, rows_per_task: int, num_tasks: int) -> int:
    """Tasks per denoiser call that fit in about half the free memory (all of them if they fit).

    Args:
        model: Supplies ``bytes_per_view_cell`` (0 = unknown: one batch) and the device.
        view_cells: Latent cells in one view (h · w).
        rows_per_task: Denoiser rows per task (N canvases × 2 with guidance).
        num_tasks: Tasks in the run.
    """
    if model.bytes_per_view_cell <= 0:
        return num_tasks
    free = device_free_bytes(model.device)
    per_task = model.bytes_per_view_cell * view_cells * rows_per_task
    return max(1, min(num_tasks, int(free * 0.5) // max(per_task, 1)))


def start_canvas(
    model: LoadedModel,
    image: ImageStart,
    prepared: PreparedStart,
    scheduler: Any,
    noise: torch.Tensor,
    denoiser: Any,
    tasks: Sequence[ViewTask] | TaskSchedule,
    conditions: Sequence[GuidedCondition],
    view_batch_size: int | None,
    progress: bool,
    shard: Shard | None = None,
) -> torch.Tensor:
    """The canvas at the first step of an image start (strength < 1, or noise inversion): the encoded image itself
    at strength 0, else noised to the first step's level with the canvas's noise, or inverted to it through the
    same views."""
    if prepared.first_step >= len(scheduler.timesteps):  # strength 0: nothing to denoise
        return prepared.latents.expand_as(noise).clone()
    if not image.noise_inversion_steps:
        return noised(scheduler, prepared, noise)
    target = scheduler.timesteps[prepared.first_step]
    inverter = InvertingScheduler(scheduler, target, image.noise_inversion_steps, model.scheduler_config)
    # Inversion follows the prompt without guidance: an inverted path with g > 1 drifts (Mokady et al. 2023, §3).
    unguided = [dataclasses.replace(c, negative=None) for c in conditions]
    bar = StepProgress(image.noise_inversion_steps, enabled=progress, desc="inverting")
    try:
        inverted = sample(
            ClassifierFreeGuidance(denoiser),
            inverter,
            prepared.latents.expand_as(noise).clone(),
            tasks,
            unguided,
            callback=lambda state: bar.step(state.step_index),
            view_batch_size=view_batch_size,
            shard=shard,
        )
    finally:
        bar.close()
    return inverter.to_scheduler(inverted)


@dataclass(frozen=True)
class RunPlan:
    """What a mode hands to :func:`generate`: the engine's tasks and conditions and what runs around them.

    Attributes:
        mode: ``panorama``, ``regions``, ``upscale``, ``outpaint``, ``inpaint`` or ``img2img`` (recorded).
        tasks: The engine's (view, condition, weight) tasks, or a per-step :class:`TaskSchedule`.
        conditions: Guided conditions indexed by the tasks.
        canvas_cells: (N, h, w): canvases and latent size.
        make_hooks: Builds the view hooks after the initial noise is drawn (they may draw from the generator).
        heavy_step: ``heavy_step(i)`` is True for the step indices that cost more (synchronised steps), so the ETA can
            weigh them (see :class:`~multidiffusion.pipeline.run.progress.StepProgress`).
        image: Start from an image (:class:`~multidiffusion.pipeline.modes.image_start.ImageStart`): the encoded image
            noised to its strength (or inverted), denoised from the step the strength selects; a known region is put
            back after every step. Its size must be the canvas's.
        customised: The run's control, LoRA sets and tagged conditions; None: the model as loaded.
    """

    mode: str
    tasks: Tasks
    conditions: Sequence[GuidedCondition]
    canvas_cells: Cells
    make_hooks: Callable[[], Sequence[ViewHook]] | None = None
    heavy_step: Callable[[int], bool] | None = None
    image: ImageStart | None = None
    customised: Customised | None = None


@dataclass
class Prepared:
    """What stage 2 of :func:`generate` hands to the denoising loop.

    Attributes:
        scheduler: The run's scheduler, its timesteps set for the views' size.
        x_T: The initial canvas (N, C, h, w), scaled by the scheduler's ``init_noise_sigma``.
        denoiser: The model's denoiser wrapped with the run's control, LoRA sets and extra input channels.
        hooks: The view hooks (bootstrapping, sync), built after the noise is drawn.
        post_step: Canvas hooks after each scheduler step (an image start's known region).
        start: Where the loop starts (an image start's first step, or a checkpoint's); None: from x_T.
        skipped: Scheduler steps an image start leaves out (its strength); not counted as run.
        view_batch_size: Tasks per denoiser call, resolved.
        shard: This process's share of every step's tasks.
        progress: Whether this process shows progress (rank 0 only under torchrun).
    """

    scheduler: Any
    x_T: torch.Tensor
    denoiser: Any
    hooks: list[ViewHook]
    post_step: list[Any]
    start: SamplerState | None
    skipped: int
    view_batch_size: int
    shard: Shard
    progress: bool


def check_run(
    model: LoadedModel, settings: SamplingSettings, tasks: Tasks, canvas_cells: Cells, run: RunOptions
) -> View:
    """Stage 1: what can be refused before anything is drawn: checkpoints of image starts, a view row that cannot
    fit, a run whose canvases, fusion plans or decode cannot fit here. Returns the first step's first view (its size
    sets the batch)."""
    if settings.image is not None and (run.checkpoint is not None or run.resume is not None):
        raise InvalidInputError(
            "runs that start from an image cannot be checkpointed or resumed yet (their input is not in the "
            "checkpoint); drop checkpoint="
        )
    layouts = distinct_layouts(tasks, settings.num_inference_steps)
    view = layouts[0][0].view
    check_view_memory(model, (view.height, view.width))  # one row must fit: the batch backs off no further
    # Every allocation that grows with the canvas (its copies, the fusion plans, the decode), refused before any
    # is made; the view batch beyond one row backs off when memory runs out.
    plan_cells = sum(len(layout) * layout[0].view.height * layout[0].view.width for layout in layouts)
    decode = run.output_type != "latent"
    need = estimate_run_bytes(model, canvas_cells, (view.height, view.width), plan_cells, len(layouts), decode)
    check_run_memory(model, need, canvas_cells)
    return view


def distinct_layouts(tasks: Tasks, num_steps: int) -> list[Sequence[ViewTask]]:
    """Each distinct layout of the run once, in the order of the steps that first use it."""
    if isinstance(tasks, TaskSchedule):
        return [tasks.build(key) for key in dict.fromkeys(map(tasks.key, range(num_steps)))]
    return [tasks]


def first_layout(tasks: Tasks, num_steps: int) -> tuple[Sequence[ViewTask], int]:
    """(the first step's tasks, the most tasks any step has): each distinct layout of a schedule built once."""
    if isinstance(tasks, TaskSchedule):
        layouts = [tasks.build(key) for key in dict.fromkeys(map(tasks.key, range(num_steps)))]
        return layouts[0], max(len(layout) for layout in layouts)
    return tasks, len(tasks)


def prepare(
    model: LoadedModel,
    settings: SamplingSettings,
    plan: RunPlan,
    run: RunOptions,
    view: View,
) -> Prepared:
    """Stage 2: scheduler, this process's shard, the initial noise (drawn first, as diffusers draws it), the hooks,
    an image start's first canvas, and the denoiser wrapped with the run's own inputs."""
    n, h, w = plan.canvas_cells
    first, count = first_layout(plan.tasks, settings.num_inference_steps)
    batch = run.view_batch_size
    if batch is None:
        guided = any(c.guided for c in plan.conditions)
        batch = auto_view_batch_size(model, view.height * view.width, n * (2 if guided else 1), count)
    scheduler = make_scheduler(settings.scheduler, model.scheduler_config, settings.scheduler_config)
    model.set_timesteps(scheduler, settings.num_inference_steps, (view.height, view.width))
    shard = process_shard(model.device)  # under torchrun: this rank's share of every step's views
    shard.share_generator(run.generator, model.device)  # rank 0's state: the same noise, hooks and steps everywhere
    progress = run.progress
    if not shard.alone:
        progress = progress and shard.rank == 0  # one progress display, rank 0's
        if progress:
            costs = [2.0 if plan.conditions[t.condition].guided else 1.0 for t in first]
            print(
                f"{shard.world} processes share {len(first)} view tasks per step; the busiest does "
                f"{imbalance(costs, shard.world):.2f}× the mean work",
                file=sys.stderr,
            )
    shape = (n, model.codec.latent_channels, h, w)
    noise = initial_noise(shape, run.generator, model.device, model.dtype, patch=model.noise_patch)
    x_T = noise * getattr(scheduler, "init_noise_sigma", 1.0)  # flow-matching schedulers start at ε itself
    hooks = list(plan.make_hooks()) if plan.make_hooks is not None else []
    image = plan.image
    extra = None
    if model.inpaint_channels:  # an inpainting model sees the mask and the masked image's latents, per view
        px = (h * model.codec.scale_factor, w * model.codec.scale_factor)
        extra = inpaint_channels(model, image.image if image else None, image.known if image else None, px)
        extra = extra.to(x_T.device)
    customised = plan.customised

    def with_inputs(denoiser: Any) -> Any:
        """The run's own inputs around a denoiser: LoRA sets per batch, an inpainting model's extra channels."""
        denoiser = customised.by_set(denoiser) if customised is not None else denoiser
        return ConcatChannels(denoiser, extra) if extra is not None else denoiser

    post_step: list[Any] = []
    start = None
    skipped = 0
    if image is not None:
        prepared = prepare_start(model, image, scheduler, noise, settings.num_inference_steps)
        # An inpainting model repaints from its own inputs (diffusers does not blend for it); others blend.
        post_step = [] if model.inpaint_channels else prepared.hooks
        if image.strength < 1 or image.noise_inversion_steps:
            plain = customised.plain(model.denoiser) if customised is not None else model.denoiser
            canvas = start_canvas(
                model,
                image,
                prepared,
                scheduler,
                noise,
                with_inputs(plain),
                plan.tasks,
                plan.conditions,
                batch,
                progress,
                shard,
            )
            start = SamplerState(prepared.first_step, canvas)
            skipped = prepared.first_step
    denoiser = model.denoiser
    if customised is not None:  # control acts over the steps run (an image start's are the schedule's tail)
        denoiser = customised.wrap(denoiser, scheduler.timesteps[skipped:])
    return Prepared(scheduler, x_T, with_inputs(denoiser), hooks, post_step, start, skipped, batch, shard, progress)


def metadata_of(model: LoadedModel, settings: SamplingSettings, mode: str, view_batch_size: int) -> GenerationMetadata:
    """What the run's images record (the settings, the model, the batch size that sets float rounding)."""
    return GenerationMetadata(
        model=model.name,
        settings=settings,
        dtype=str(model.dtype).removeprefix("torch."),
        version=__version__,
        mode=mode,
        model_sha256=model.weights_sha256,
        view_batch_size=view_batch_size,
        device=model.device.type,
        tiled_vae=getattr(model.codec, "tiled", None),
    )


def denoise(
    plan: RunPlan,
    settings: SamplingSettings,
    ready: Prepared,
    run: RunOptions,
    metadata: GenerationMetadata,
) -> tuple[torch.Tensor, int, int, Recorder | None]:
    """Stage 3: the engine's loop (docs/design.md §3), with progress, the user's callback and checkpoints.

    Returns:
        (latents, steps run, the view batch size the loop ended with (smaller after an out-of-memory back-off),
        the checkpoint recorder, for an interrupt during decoding).
    """
    scheduler, start, skipped = ready.scheduler, ready.start, ready.skipped
    generator = run.generator
    if run.resume is not None:
        run.resume.check_run(json.loads(metadata.to_json()), tuple(ready.x_T.shape), scheduler)
        scheduler = run.resume.scheduler_for(scheduler, ready.x_T.device)
        generator.set_state(run.resume.generator_state)
        start = SamplerState(run.resume.step, run.resume.latents.to(ready.x_T.device))
    recorder = None
    if run.checkpoint is not None and ready.shard.rank == 0:  # rank 0 writes checkpoints, as it writes images
        recorder = Recorder(run.checkpoint, metadata.to_dict(), scheduler, generator, len(scheduler.timesteps))
    steps_run = 0 if start is None else start.step_index - skipped
    # The bar counts the steps this run takes: an image start's skipped steps are not part of it.
    heavy = (lambda i: plan.heavy_step(i + skipped)) if plan.heavy_step is not None else None
    bar = StepProgress(len(scheduler.timesteps) - skipped, heavy, enabled=ready.progress)
    used_batch = ready.view_batch_size

    def on_step(state: StepState) -> bool:
        nonlocal steps_run, used_batch
        steps_run = state.step_index + 1 - skipped
        used_batch = state.view_batch_size
        if recorder is not None:
            recorder.step(steps_run, state.latents)
        bar.step(state.step_index - skipped)
        return bool(run.callback_on_step_end(state)) if run.callback_on_step_end is not None else False

    try:
        latents = sample(
            ClassifierFreeGuidance(ready.denoiser),
            scheduler,
            ready.x_T,
            plan.tasks,
            plan.conditions,
            hooks=ready.hooks,
            callback=on_step,
            view_batch_size=ready.view_batch_size,
            generator=generator,
            start=start,
            post_step=ready.post_step,
            shard=ready.shard,
            global_view=settings.global_view,
        )
    except KeyboardInterrupt:
        if recorder is not None:
            recorder.write()
        raise
    finally:
        bar.close()
    return latents, steps_run, used_batch, recorder


def decode(model: LoadedModel, latents: torch.Tensor, wrap: Wrap, ready: Prepared, output_type: str) -> Any:
    """Stage 4: the images in the requested form (the latents themselves for ``latent``; None on ranks other than 0,
    which hold the same latents: rank 0 alone decodes and writes)."""
    if output_type == "latent":
        return latents
    if ready.shard.rank != 0:
        return None
    with Phase("decoding", enabled=ready.progress):
        decoded = decode_wrapped(model.codec, latents, wrap=wrap) if any(wrap) else model.codec.decode(latents)
    return convert(decoded, output_type)


def generate(model: LoadedModel, settings: SamplingSettings, plan: RunPlan, run: RunOptions) -> MultiDiffusionOutput:
    """Sample a canvas with the engine and turn it into the requested output, in diffusers' numbered stages.

    Args:
        model: The loaded model.
        settings: The run's resolved settings (recorded in the output's metadata).
        plan: The mode's tasks, conditions and hooks.
        run: Randomness, output type, callback, batching, checkpoints and decoding options of this call.
    """
    view = check_run(model, settings, plan.tasks, plan.canvas_cells, run)  # 1. check
    with decode_tiling(model.codec, run.tiled_vae, model.family):
        ready = prepare(model, settings, plan, run, view)  # 2. prepare
        metadata = metadata_of(model, settings, plan.mode, ready.view_batch_size)
        latents, steps_run, used_batch, recorder = denoise(plan, settings, ready, run, metadata)  # 3. denoise
        try:
            images = decode(model, latents, settings.views.wrap, ready, run.output_type)  # 4. decode
        except KeyboardInterrupt:
            if recorder is not None:
                recorder.write()
            raise
    if used_batch != ready.view_batch_size:  # an out-of-memory back-off: record the batch that reproduces the result
        metadata = dataclasses.replace(metadata, view_batch_size=used_batch)
    return MultiDiffusionOutput(images=images, latents=latents, metadata=metadata, steps_run=steps_run)
