"""The run shared by every mode: scheduler, initial noise, the engine with progress, decoding, output."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from multidiffusion import __version__
from multidiffusion.adapters import LoadedModel, make_scheduler
from multidiffusion.adapters.schedulers.inversion import InvertingScheduler
from multidiffusion.core import ClassifierFreeGuidance, GuidedCondition, initial_noise, sample
from multidiffusion.core.engine.decoding import decode_wrapped
from multidiffusion.core.engine.shards import Shard, imbalance
from multidiffusion.core.engine.tasks import TaskSchedule
from multidiffusion.core.engine.views import Wrap, resolve_wrap
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.channels import ConcatChannels
from multidiffusion.core.features.global_view import GlobalView
from multidiffusion.core.types import SamplerState, StepState, ViewHook, ViewTask
from multidiffusion.pipeline.customise.customisation import Customised
from multidiffusion.pipeline.modes.image_start import ImageStart, PreparedStart, inpaint_channels, noised, prepare_start
from multidiffusion.pipeline.run.checkpoint import Checkpoint, CheckpointSettings, Recorder
from multidiffusion.pipeline.run.distributed import process_shard
from multidiffusion.pipeline.run.memory import check_decode_memory, check_view_memory, device_free_bytes
from multidiffusion.pipeline.run.output import MultiDiffusionOutput, convert
from multidiffusion.pipeline.run.progress import Phase, StepProgress
from multidiffusion.pipeline.settings.recipe import GenerationMetadata

StepCallback = Callable[[StepState], "bool | None"]


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


def global_view_of(settings: Any) -> GlobalView | None:
    """The run's :class:`~multidiffusion.core.features.global_view.GlobalView` (None when its settings have none)."""
    weight = getattr(settings, "global_view", None)
    return None if weight is None else GlobalView(weight, settings.global_view_until)


def generate(
    model: LoadedModel,
    *,
    settings: Any,
    mode: str,
    tasks: Sequence[ViewTask] | TaskSchedule,
    conditions: Sequence[GuidedCondition],
    canvas_cells: tuple[int, int, int],
    generator: torch.Generator,
    output_type: str,
    make_hooks: Callable[[], Sequence[ViewHook]] | None = None,
    callback_on_step_end: StepCallback | None = None,
    view_batch_size: int | None = None,
    progress: bool = True,
    heavy_step: Callable[[int], bool] | None = None,
    wrap: Wrap | None = None,
    checkpoint: CheckpointSettings | None = None,
    resume: Checkpoint | None = None,
    image: ImageStart | None = None,
    customised: Customised | None = None,
) -> MultiDiffusionOutput:
    """Sample a canvas with the engine and turn it into the requested output.

    Args:
        model: The loaded model.
        settings: A frozen settings dataclass with ``scheduler`` and ``num_inference_steps`` (recorded).
        mode: ``panorama`` or ``regions`` (recorded).
        tasks: The engine's (view, condition, weight) tasks, or a per-step :class:`TaskSchedule`.
        conditions: Guided conditions indexed by the tasks.
        canvas_cells: (N, h, w): canvases and latent size.
        generator: Draws the initial noise first (diffusers' order), then anything the hooks need.
        output_type: ``pil``, ``np``, ``pt`` or ``latent``.
        make_hooks: Builds the view hooks after the initial noise is drawn.
        callback_on_step_end: See :func:`multidiffusion.core.engine.sampling.sample`.
        view_batch_size: Tasks per denoiser call; None chooses from free memory.
        progress: Show a progress bar with ETA, then the decoding time.
        heavy_step: ``heavy_step(i)`` is True for the step indices that cost more (synchronised steps), so
            the ETA can weigh them (see :class:`~multidiffusion.pipeline.run.progress.StepProgress`).
        wrap: Which axes to decode with wrap-around context, (rows, cols): a 360° panorama or a seamless
            ``tile``; None: neither.
        checkpoint: Write a checkpoint of the run (see :mod:`~multidiffusion.pipeline.run.checkpoint`) as it says,
            after the last step, and on KeyboardInterrupt (the last finished step; then the interrupt goes on).
        resume: Continue from this checkpoint of the same run (same recipe, else InvalidInputError): the
            initial noise and hooks are built as usual (they draw from the generator), then the canvas, the
            scheduler and the generator's state are taken from the checkpoint.
        image: Start from an image (see :class:`~multidiffusion.pipeline.modes.image_start.ImageStart`): the encoded
            image noised to its strength (or inverted, with noise inversion), denoised from the step the strength
            selects; a known region is put back after every step. Its size must be the canvas's.
        customised: The run's control, LoRA sets and tagged conditions
        (:class:`~multidiffusion.pipeline.customise.customisation.
            Customised`): the denoiser is wrapped with them; None: the model as loaded.
    """
    n, h, w = canvas_cells
    if image is not None and (checkpoint is not None or resume is not None):
        raise InvalidInputError(
            "runs that start from an image cannot be checkpointed or resumed yet (their input is not in the "
            "checkpoint); drop checkpoint="
        )
    if output_type != "latent":  # before any denoising: a canvas that cannot be decoded here is refused now
        f = model.codec.scale_factor
        check_decode_memory(model, n, h * f, w * f)
    if isinstance(tasks, TaskSchedule):  # each distinct layout built once, not once per step
        layouts = [tasks.build(key) for key in dict.fromkeys(map(tasks.key, range(settings.num_inference_steps)))]
        first, count = layouts[0], max(len(layout) for layout in layouts)
    else:
        first, count = tasks, len(tasks)
    view = first[0].view
    check_view_memory(model, (view.height, view.width))  # one row must fit: the batch backs off no further
    if view_batch_size is None:
        guided = any(c.guided for c in conditions)
        view_batch_size = auto_view_batch_size(model, view.height * view.width, n * (2 if guided else 1), count)
    scheduler = make_scheduler(settings.scheduler, model.scheduler_config, settings.scheduler_config)
    model.set_timesteps(scheduler, settings.num_inference_steps, (view.height, view.width))
    shape = (n, model.codec.latent_channels, h, w)
    shard = process_shard(model.device)  # under torchrun: this rank's share of every step's views
    shard.share_generator(generator, model.device)  # rank 0's state: the same noise, hooks and steps everywhere
    if not shard.alone:
        progress = progress and shard.rank == 0  # one progress display, rank 0's
        if progress:
            costs = [2.0 if conditions[t.condition].guided else 1.0 for t in first]
            print(
                f"{shard.world} processes share {len(first)} view tasks per step; the busiest does "
                f"{imbalance(costs, shard.world):.2f}× the mean work",
                file=sys.stderr,
            )
    noise = initial_noise(shape, generator, model.device, model.dtype, patch=model.noise_patch)
    x_T = noise * getattr(scheduler, "init_noise_sigma", 1.0)  # flow-matching schedulers start at ε itself
    hooks = list(make_hooks()) if make_hooks is not None else []
    extra = None
    if model.inpaint_channels:  # an inpainting model sees the mask and the masked image's latents, per view
        px = (h * model.codec.scale_factor, w * model.codec.scale_factor)
        extra = inpaint_channels(model, image.image if image else None, image.known if image else None, px)
        extra = extra.to(x_T.device)

    def with_inputs(denoiser: Any) -> Any:
        """The run's own inputs around a denoiser: LoRA sets per batch, an inpainting model's extra channels."""
        denoiser = customised.by_set(denoiser) if customised is not None else denoiser
        return ConcatChannels(denoiser, extra) if extra is not None else denoiser

    post_step: list[Any] = []
    start = None
    skipped = 0  # steps an image start leaves out (its strength); not counted as run
    if image is not None:
        prepared = prepare_start(model, image, scheduler, noise, settings.num_inference_steps)
        # An inpainting model repaints from its own inputs (diffusers does not blend for it); others blend.
        post_step = [] if model.inpaint_channels else prepared.hooks
        if image.strength < 1 or image.noise_inversion_steps:
            plain = customised.plain(model.denoiser) if customised is not None else model.denoiser
            first = start_canvas(
                model,
                image,
                prepared,
                scheduler,
                noise,
                with_inputs(plain),
                tasks,
                conditions,
                view_batch_size,
                progress,
                shard,
            )
            start = SamplerState(prepared.first_step, first)
            skipped = prepared.first_step
    denoiser = model.denoiser
    if customised is not None:  # control acts over the steps run (an image start's are the schedule's tail)
        denoiser = customised.wrap(denoiser, scheduler.timesteps[skipped:])
    denoiser = with_inputs(denoiser)
    metadata = GenerationMetadata(
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
    if resume is not None:
        resume.check_run(json.loads(metadata.to_json()), tuple(x_T.shape), scheduler)
        scheduler = resume.scheduler_for(scheduler, x_T.device)
        generator.set_state(resume.generator_state)
        start = SamplerState(resume.step, resume.latents.to(x_T.device))
    recorder = None
    if checkpoint is not None and shard.rank == 0:  # rank 0 writes checkpoints, as it writes images
        recorder = Recorder(checkpoint, metadata.to_dict(), scheduler, generator, len(scheduler.timesteps))

    steps_run = 0 if start is None else start.step_index - skipped
    # The bar counts the steps this run takes: an image start's skipped steps are not part of it.
    heavy = (lambda i: heavy_step(i + skipped)) if heavy_step is not None else None
    bar = StepProgress(len(scheduler.timesteps) - skipped, heavy, enabled=progress)

    used_batch = view_batch_size

    def on_step(state: StepState) -> bool:
        nonlocal steps_run, used_batch
        steps_run = state.step_index + 1 - skipped
        used_batch = state.view_batch_size
        if recorder is not None:
            recorder.step(steps_run, state.latents)
        bar.step(state.step_index - skipped)
        return bool(callback_on_step_end(state)) if callback_on_step_end is not None else False

    try:
        try:
            latents = sample(
                ClassifierFreeGuidance(denoiser),
                scheduler,
                x_T,
                tasks,
                conditions,
                hooks=hooks,
                callback=on_step,
                view_batch_size=view_batch_size,
                generator=generator,
                start=start,
                post_step=post_step,
                shard=shard,
                global_view=global_view_of(settings),
            )
        finally:
            bar.close()
        if output_type == "latent":
            images: Any = latents
        elif shard.rank != 0:  # rank 0 alone decodes (and writes): the others hold the same latents
            images = None
        else:
            with Phase("decoding", enabled=progress):
                wrap = resolve_wrap(wrap)
                decoded = decode_wrapped(model.codec, latents, wrap=wrap) if any(wrap) else model.codec.decode(latents)
            images = convert(decoded, output_type)
    except KeyboardInterrupt:
        if recorder is not None:
            recorder.write()
        raise
    if used_batch != view_batch_size:  # an out-of-memory back-off: record the batch that reproduces the result
        metadata = dataclasses.replace(metadata, view_batch_size=used_batch)
    return MultiDiffusionOutput(images=images, latents=latents, metadata=metadata, steps_run=steps_run)
