"""The user-facing panorama pipeline: pixels in, images out. No math here (docs/design.md §1)."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from multidiffusion.adapters import LoadedModel, check_scheduler_name, load_model
from multidiffusion.adapters.schedulers.names import check_scheduler_fits, check_scheduler_steps, scheduler_fields
from multidiffusion.core import layout_tasks, panorama_tasks
from multidiffusion.core.engine.views import layout_views, parse_tile, tile_name
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.global_view import GlobalView, pooling_factor
from multidiffusion.core.features.regions import Region
from multidiffusion.pipeline.customise.customisation import Customisation, Customised, guide_of
from multidiffusion.pipeline.inputs.region_file import Background
from multidiffusion.pipeline.modes.image import ImageInputs
from multidiffusion.pipeline.modes.image_start import ImageStart, check_image_start
from multidiffusion.pipeline.modes.regions import DEFAULT_BOOTSTRAP_FRACTION, RegionPlan, generate_regions, plan_regions
from multidiffusion.pipeline.modes.sync import SyncRequest, check_sync, prepare_sync, resolve_anchor, sync_steps
from multidiffusion.pipeline.modes.sync import layout_views as layout_views_of
from multidiffusion.pipeline.run.checkpoint import Checkpoint, CheckpointSettings
from multidiffusion.pipeline.run.generate import StepCallback, generate
from multidiffusion.pipeline.run.output import MultiDiffusionOutput, seed_of
from multidiffusion.pipeline.settings.checks import (
    as_prompt_list,
    check_canvas_pixels,
    check_generator,
    check_pixels,
    check_sampling,
    check_sync_layout,
    check_view_count,
    repeat_prompts,
    resolve_view_settings,
)
from multidiffusion.pipeline.settings.recipe import DEFAULTS, GenerationMetadata, PanoramaSettings
from multidiffusion.pipeline.settings.reproduce import call_arguments, check_environment, model_to_load, read_recipe


class MultiDiffusionPipeline(ImageInputs):
    """Text-to-panorama with MultiDiffusion (Bar-Tal et al., ICML 2023), and canvases that start from an image
    (:meth:`upscale`, :meth:`outpaint`, :meth:`inpaint`).

    Build it with :meth:`from_pretrained` or :meth:`from_single_file`, or from a :class:`LoadedModel`.
    """

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    @classmethod
    def from_pretrained(
        cls,
        repo_or_folder: str,
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        channels_last: bool = False,
        compile: bool = False,
        config: str | None = None,
        allow_pickle: bool = False,
    ) -> MultiDiffusionPipeline:
        """Load a model: a hub repo id, a local diffusers folder, a single-file checkpoint or ``toy``.

        Args:
            repo_or_folder: e.g. ``"stabilityai/stable-diffusion-2-base"``, a folder saved with
                ``save_pretrained``, a ``.safetensors`` checkpoint, or ``"toy"`` (the exact Gaussian-field
                model, no weights).
            dtype: ``float32``, ``float16``, ``bfloat16`` or a torch dtype; default float16 on CUDA,
                float32 on the CPU.
            device: ``cpu``, ``cuda``, ``cuda:N``; default CUDA when available.
            channels_last: Store the networks NHWC (docs/performance.md); same results to float rounding.
            compile: ``torch.compile`` the denoiser network (slow first call per batch shape).
            config: For a single-file checkpoint: a diffusers folder or repo id whose configs describe it
                (needed offline).
            allow_pickle: Also load pickled weights (``.ckpt``, ``.pt``, ``.pth``, ``.bin``), which can run code
                when loaded; by default only ``.safetensors`` are read.
        """
        return cls(
            load_model(
                repo_or_folder,
                dtype=dtype,
                device=device,
                channels_last=channels_last,
                compile=compile,
                config=config,
                allow_pickle=allow_pickle,
            )
        )

    @classmethod
    def from_metadata(
        cls,
        metadata: str | Path | Mapping[str, Any] | GenerationMetadata,
        *,
        model: str | None = None,
        device: str | torch.device | None = None,
        allow_pickle: bool = False,
    ) -> MultiDiffusionPipeline:
        """Load the model an image was made with, in the dtype it was made with.

        Args:
            metadata: A PNG written by this package, its JSON recipe (text or dict), or a
                :class:`GenerationMetadata`.
            model: Where the model is; needed when the image was made with a local folder or file (the
                metadata records only its name and weights hash). Default: the recorded repo id or spec.
            device: Default: CUDA when available, as for :meth:`from_pretrained`.
            allow_pickle: As for :meth:`from_pretrained`.
        """
        recipe = read_recipe(metadata)
        source = model_to_load(recipe, model)
        pipe = cls.from_pretrained(source, dtype=recipe.get("dtype"), device=device, allow_pickle=allow_pickle)
        check_environment(recipe, pipe.model)
        return pipe

    def reproduce(
        self,
        metadata: str | Path | Mapping[str, Any] | GenerationMetadata,
        *,
        progress: bool = True,
        checkpoint: CheckpointSettings | str | os.PathLike[str] | None = None,
        resume: Checkpoint | None = None,
    ) -> MultiDiffusionOutput:
        """Run again the call that made an image (panorama or regions), from its recipe.

        Bit-identical when the weights, dtype, device type, view batch size and tiled-VAE choice match the
        recorded ones (warnings say where they do not). For a batch of several prompts every canvas is
        regenerated; the recipe's ``image_index`` says which one the image was.
        """
        recipe = read_recipe(metadata)
        mode, kwargs = call_arguments(recipe)
        codec = self.model.codec
        tiled = getattr(codec, "tiled", None)
        if recipe.get("tiled_vae") is not None and hasattr(codec, "tiled"):
            codec.tiled = recipe["tiled_vae"]  # the recorded choice, for this call only
        try:
            kwargs.update(progress=progress, checkpoint=checkpoint, resume=resume)
            return self.regions(**kwargs) if mode == "regions" else self(**kwargs)
        finally:
            if hasattr(codec, "tiled"):
                codec.tiled = tiled

    def resume(
        self,
        checkpoint: str | os.PathLike[str] | Checkpoint,
        *,
        progress: bool = True,
        keep_checkpointing: CheckpointSettings | str | os.PathLike[str] | None = None,
    ) -> MultiDiffusionOutput:
        """Finish an interrupted run from its checkpoint (written with ``checkpoint=``): the run is rebuilt from
        the recipe the checkpoint holds, as :meth:`reproduce` rebuilds it, then continues from the recorded step.
        The result is bit-identical to the uninterrupted run on the same weights, dtype, device type and view
        batch size.

        Args:
            checkpoint: The checkpoint file, or a loaded :class:`~multidiffusion.pipeline.run.checkpoint.Checkpoint`.
                Load only files this tool wrote: loading unpickles.
            progress: Show a progress bar.
            keep_checkpointing: Keep writing checkpoints of the rest of the run (a path or settings); None: none.

        Raises:
            InvalidInputError: the file is not a checkpoint, or it belongs to another model or run.
        """
        ck = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
        ck.check_model(self.model)
        return self.reproduce(ck.recipe, progress=progress, checkpoint=keep_checkpointing, resume=ck)

    @classmethod
    def from_single_file(
        cls,
        path: str,
        *,
        config: str | None = None,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        allow_pickle: bool = False,
    ) -> MultiDiffusionPipeline:
        """Load an original-format checkpoint (``.safetensors``; ``.ckpt`` and other pickles with ``allow_pickle``)
        of any supported family (read from its tensor names); ``config`` is a diffusers folder or repo id describing
        it (needed offline)."""
        if not Path(path).expanduser().is_file():
            raise InvalidInputError(f"model file {path!r} does not exist")
        return cls(load_model(path, dtype=dtype, device=device, config=config, allow_pickle=allow_pickle))

    @property
    def native_window_px(self) -> int:
        """The model's training resolution in pixels (the default window)."""
        return self.model.native_window * self.model.granularity_px

    def settings(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> PanoramaSettings:
        """Validated settings for a call (same arguments as ``__call__`` without the runtime ones)."""
        prompts = as_prompt_list(prompt)
        if negative_prompt is None:
            negatives = [""] * len(prompts)
        else:
            negatives = as_prompt_list(negative_prompt, "negative prompt")
            if len(negatives) == 1:
                negatives *= len(prompts)
            if len(negatives) != len(prompts):
                raise InvalidInputError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
        scheduler = kwargs.get("scheduler", DEFAULTS.scheduler)
        kwargs.update(scheduler_fields(self.model.default_scheduler if scheduler is None else scheduler))
        s = PanoramaSettings(prompt=tuple(prompts), negative_prompt=tuple(negatives), **kwargs)
        wrap = parse_tile(s.tile)
        if s.circular and not wrap[1] and s.tile is not None:
            raise InvalidInputError(
                f"circular=True wraps x but tile={s.tile!r} does not; use tile='xy' or drop circular"
            )
        s = dataclasses.replace(s, tile=tile_name((wrap[0], wrap[1] or s.circular)), circular=wrap[1] or s.circular)
        g = self.model.granularity_px
        check_sync_layout(s.sync, s.layout)
        check_pixels("height", s.height, g)
        check_pixels("width", s.width, g)
        check_canvas_pixels(s.height, s.width)
        views = resolve_view_settings(
            window_px=s.window,
            stride_px=s.stride,
            weights=s.weights,
            layout=s.layout,
            granularity=g,
            native_px=self.native_window_px,
            default_stride_px=self.model.default_stride_px,
            canvas_px=(s.height, s.width),
            sync=s.sync,
        )
        window, stride = views.window_px, views.stride_px
        guidance = self.model.default_guidance_scale if s.guidance_scale is None else s.guidance_scale
        s = dataclasses.replace(s, window=window, stride=stride, weights=views.weights, guidance_scale=guidance)
        check_scheduler_name(s.scheduler)
        check_scheduler_fits(s.scheduler, self.model.scheduler_config, s.scheduler_config)
        check_sampling(s.num_inference_steps, s.guidance_scale, s.guidance_rescale, s.weights, "pil")
        check_scheduler_steps(s.scheduler, self.model.scheduler_config, s.num_inference_steps, s.scheduler_config)
        check_view_count(s.height // g, s.width // g, window // g, stride // g, parse_tile(s.tile))
        sync = check_sync(s.sync_weight, s.sync_decay, s.sync_stop_step, s.sync_every, s.sync_anchor, s.sync_loss)
        if s.sync:
            views = layout_views(s.height // g, s.width // g, window // g, stride // g, wrap=parse_tile(s.tile))
            anchor = resolve_anchor(views, sync.anchor, s.height // g, s.width // g)
            s = dataclasses.replace(s, sync_anchor=anchor)
        if s.global_view is not None:  # a bad weight, fraction or canvas size fails here, before any model call
            settings = GlobalView(s.global_view, s.global_view_until)
            pooling_factor(s.height // g, s.width // g, (window // g, window // g), settings.factor)
        return s

    def __call__(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        height: int = DEFAULTS.height,
        width: int = DEFAULTS.width,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        guidance_scale: float | None = DEFAULTS.guidance_scale,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        callback_on_step_end: StepCallback | None = None,
        *,
        guidance_rescale: float = DEFAULTS.guidance_rescale,
        scheduler: Any = DEFAULTS.scheduler,
        window: int | None = DEFAULTS.window,
        stride: int | None = DEFAULTS.stride,
        weights: str | None = DEFAULTS.weights,
        circular: bool = DEFAULTS.circular,
        tile: str | None = DEFAULTS.tile,
        layout: str | None = DEFAULTS.layout,
        num_images_per_prompt: int = 1,
        view_batch_size: int | None = None,
        progress: bool = True,
        sync: bool = DEFAULTS.sync,
        sync_weight: float = DEFAULTS.sync_weight,
        sync_decay: float = DEFAULTS.sync_decay,
        sync_stop_step: int | None = DEFAULTS.sync_stop_step,
        sync_every: int = DEFAULTS.sync_every,
        sync_anchor: int | str = DEFAULTS.sync_anchor,
        sync_loss: str | None = DEFAULTS.sync_loss,
        sync_chunk_size: int | None = None,
        sync_checkpointing: bool = False,
        checkpoint: CheckpointSettings | str | os.PathLike[str] | None = None,
        resume: Checkpoint | None = None,
        image: ImageStart | None = None,
        customise: Customisation | None = None,
        global_view: float | None = DEFAULTS.global_view,
        global_view_until: float = DEFAULTS.global_view_until,
    ) -> MultiDiffusionOutput:
        """Generate N panoramas (one per prompt).

        Args:
            prompt: A prompt or a list of N prompts (an empty list raises).
            negative_prompt: One for all, or one per prompt; default "".
            height: Canvas height in px (multiple of the model's granularity, 8 for SD).
            width: Canvas width in px, likewise.
            num_inference_steps: Scheduler steps.
            guidance_scale: Classifier-free guidance scale ≥ 0 (1 = off); default the model's (7.5 for SD).
            generator: Source of all randomness; default a fresh seed, recorded in the metadata.
            output_type: ``pil``, ``np``, ``pt`` or ``latent`` (see :class:`MultiDiffusionOutput`).
            callback_on_step_end: Called after each step with a
                :class:`~multidiffusion.core.types.StepState`; return True to stop early.
            guidance_rescale: φ of Lin et al. 2023, in [0, 1].
            scheduler: A short name (``ddim``, ``dpmpp_2m``, ``euler_a``, … built from the model's own
                scheduler config), any diffusers scheduler class name (likewise), or a configured diffusers
                scheduler instance (used as it is; a fresh copy per run). Recorded in the metadata.
            window: View size in px (default: the model's native size). Larger than native is allowed.
            stride: Step between views in px, 0 < stride ≤ window; default the model's, else window / 8
                (64 px for SD).
            weights: ``gaussian``, ``feathered`` or ``uniform`` (the paper's and diffusers'); None: ``gaussian``, or
                ``uniform`` with sync (docs/fusion.md, "Default weights").
            circular: Wrap views horizontally so the left and right edges continue each other (360°);
                the same as ``tile="x"`` (recorded so).
            tile: Seamless texture: ``x``, ``y`` or ``xy`` wraps the views and the decode around those axes
                so the image tiles without a seam (docs/theory.md, "Seamless tiles"); None: no wrap.
            layout: A named cheaper layout, ``half-overlap``, ``quarter-overlap`` or ``shifted``
                (docs/layouts.md); it sets the stride and weights, so give neither with it.
            num_images_per_prompt: Canvases per prompt (diffusers' meaning): the prompts are repeated
                prompt-major and all canvases share the view batches; the one generator draws their noise
                together, so image k of a batch differs from a single run with the same seed.
            view_batch_size: Views per denoiser call; default all that fit in about half the free memory.
            progress: Show a progress bar.
            sync: Run SyncDiffusion (Lee et al. 2023): each view's latent takes a perceptual-loss gradient
                step toward the anchor view's foreseen image before it is denoised (docs/sync.md).
            sync_weight: w ≥ 0 (the paper's 20).
            sync_decay: λ in (0, 1]; the step size at step index i is w · λ^i (the paper's 0.95).
            sync_stop_step: Synchronise while the step index is below this; None = every step.
            sync_every: Synchronise every n-th step.
            sync_anchor: ``"center"`` or the anchor view's index in layout order (row-major).
            sync_loss: ``lpips`` (needs the ``lpips`` extra and VGG weights) or ``builtin`` (weight-free
                colour and texture statistics); None tries LPIPS and falls back with a warning.
            sync_chunk_size: Views per gradient batch (default: the engine's batch, at most 128 views of 64×64
                latent cells: ``core.features.sync.DEFAULT_GRADIENT_CELLS``); lower saves memory.
            sync_checkpointing: Checkpoint activations in the sync backward pass (less memory, more time).
            checkpoint: Write the run's state to this file (a path: after every step; or
                :class:`~multidiffusion.pipeline.run.checkpoint.CheckpointSettings`), atomically, after the last step
                and on Ctrl-C; finish an interrupted run with :meth:`resume`.
            resume: A :class:`~multidiffusion.pipeline.run.checkpoint.Checkpoint` of this same call to continue from
                (:meth:`resume` passes it); a checkpoint of another run raises InvalidInputError.
            image: Start from an image of the canvas size
            (:class:`~multidiffusion.pipeline.modes.image_start.ImageStart`;
                :meth:`upscale`, :meth:`outpaint` and :meth:`inpaint` build one); None: from noise.
            customise: ControlNets, T2I-Adapters, LoRAs, embeddings and prompt weighting for every view
                (:class:`~multidiffusion.pipeline.customise.customisation.Customisation`, docs/control.md); None: the
                model as loaded, prompts weighted where the family supports it.
            global_view: ω > 0: add one view of the whole canvas, average-pooled to fit the window, fused with the
                crops by least squares in x̂₀ space (docs/fusion.md): long-range coherence for one more model call
                per step. Its block means move ω / (1 + ω) of the way to the global view's. None: off.
            global_view_until: The fraction of the steps, from the first, that use the global view, in (0, 1].
        """
        check_sampling(num_inference_steps, guidance_scale, guidance_rescale, weights, output_type)
        check_generator(generator)
        prompt, negative_prompt = repeat_prompts(prompt, negative_prompt, num_images_per_prompt)
        if generator is None:
            generator = torch.Generator().manual_seed(secrets.randbits(63))
        s = self.settings(
            prompt,
            negative_prompt,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            scheduler=scheduler,
            window=window,
            stride=stride,
            weights=weights,
            circular=circular,
            tile=tile,
            layout=layout,
            seed=seed_of(generator),
            sync=sync,
            sync_weight=sync_weight,
            sync_decay=sync_decay,
            sync_stop_step=sync_stop_step,
            sync_every=sync_every,
            sync_anchor=sync_anchor,
            sync_loss=sync_loss,
            global_view=global_view,
            global_view_until=global_view_until,
        )
        m = self.model
        g = m.granularity_px
        if image is not None:
            s = dataclasses.replace(s, image=check_image_start(image, m, s.height, s.width, s.sync))
        wrap = parse_tile(s.tile)
        if s.layout is not None:
            tasks = layout_tasks(s.layout, s.height // g, s.width // g, s.window // g, wrap=wrap)
        else:
            tasks = panorama_tasks(
                s.height // g, s.width // g, s.window // g, s.stride // g, weights=s.weights, wrap=wrap
            )
        customise = customise if customise is not None else Customisation()
        if s.global_view is not None and customise.control:
            raise InvalidInputError("a global view cannot be combined with control yet: drop one of them")
        customised = Customised(m, customise, (), (s.height, s.width), guide_of(image), s.sync)
        s = dataclasses.replace(s, customisation=customise.record())
        try:
            specs = [(s.prompt, s.negative_prompt, s.guidance_scale, s.guidance_rescale)]
            condition = customised.conditions(specs)[0]
            make_hooks = None
            if s.sync:
                request = SyncRequest(
                    True,
                    s.sync_weight,
                    s.sync_decay,
                    s.sync_stop_step,
                    s.sync_every,
                    s.sync_anchor,
                    s.sync_loss,
                    sync_chunk_size,
                    sync_checkpointing,
                )
                make_hooks, fields = prepare_sync(m, request, tasks, [condition], (s.height // g, s.width // g))
                s = dataclasses.replace(s, **fields)
            return generate(
                m,
                settings=s,
                mode=s.image["mode"] if s.image else "panorama",
                tasks=tasks,
                conditions=[condition],
                canvas_cells=(len(s.prompt), s.height // g, s.width // g),
                generator=generator,
                output_type=output_type,
                make_hooks=lambda: [make_hooks()] if make_hooks is not None else [],
                callback_on_step_end=callback_on_step_end,
                view_batch_size=view_batch_size,
                progress=progress,
                heavy_step=sync_steps(s) if s.sync else None,
                wrap=wrap,
                checkpoint=CheckpointSettings.of(checkpoint),
                resume=resume,
                image=image,
                customised=customised,
            )
        finally:
            customised.close()

    def check_regions(
        self, regions: Sequence[Region], background: str | Background | None = None, **kwargs: Any
    ) -> RegionPlan:
        """Validate a region run (same arguments as :meth:`regions`) without running it."""
        if isinstance(background, str):
            background = Background(background)
        defaults = dict(
            height=DEFAULTS.height,
            width=DEFAULTS.width,
            num_inference_steps=DEFAULTS.num_inference_steps,
            guidance_scale=DEFAULTS.guidance_scale,
            scheduler=DEFAULTS.scheduler,
            window=DEFAULTS.window,
            stride=DEFAULTS.stride,
            weights=DEFAULTS.weights,
            bootstrap_fraction=DEFAULT_BOOTSTRAP_FRACTION,
        )
        names = ("sync", "sync_weight", "sync_decay", "sync_stop_step", "sync_every", "sync_anchor", "sync_loss")
        request = SyncRequest(*(kwargs.pop(k, getattr(DEFAULTS, k)) for k in names))
        settings = request.check()
        plan = plan_regions(self.model, list(regions), background, sync=request.enabled, **{**defaults, **kwargs})
        if request.enabled:
            resolve_anchor(layout_views_of(plan.tasks), settings.anchor, plan.height_cells, plan.width_cells)
        return plan

    def regions(
        self,
        regions: Sequence[Region],
        background: str | Background | None = None,
        height: int = DEFAULTS.height,
        width: int = DEFAULTS.width,
        negative_prompt: str = "",
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        guidance_scale: float | None = DEFAULTS.guidance_scale,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        callback_on_step_end: StepCallback | None = None,
        *,
        guidance_rescale: float = DEFAULTS.guidance_rescale,
        scheduler: Any = DEFAULTS.scheduler,
        window: int | None = DEFAULTS.window,
        stride: int | None = DEFAULTS.stride,
        weights: str | None = DEFAULTS.weights,
        bootstrap_fraction: float = DEFAULT_BOOTSTRAP_FRACTION,
        circular: bool = DEFAULTS.circular,
        layout: str | None = DEFAULTS.layout,
        view_batch_size: int | None = None,
        progress: bool = True,
        sync: bool = DEFAULTS.sync,
        sync_weight: float = DEFAULTS.sync_weight,
        sync_decay: float = DEFAULTS.sync_decay,
        sync_stop_step: int | None = DEFAULTS.sync_stop_step,
        sync_every: int = DEFAULTS.sync_every,
        sync_anchor: int | str = DEFAULTS.sync_anchor,
        sync_loss: str | None = DEFAULTS.sync_loss,
        sync_chunk_size: int | None = None,
        sync_checkpointing: bool = False,
        checkpoint: CheckpointSettings | str | os.PathLike[str] | None = None,
        resume: Checkpoint | None = None,
        image: ImageStart | None = None,
        customise: Customisation | None = None,
    ) -> MultiDiffusionOutput:
        """Region-based generation (MultiDiffusion §4.2): each region's prompt is painted by its mask or box.

        Args:
            regions: :class:`~multidiffusion.core.features.regions.Region` objects (mask or box in pixels).
            background: Prompt (or :class:`Background`) for every cell the regions leave; weight
                max(0, 1 − Σ foreground). Without one the regions must cover the canvas.
            height: Canvas height in px.
            width: Canvas width in px.
            negative_prompt: Default negative prompt of every region and the background.
            num_inference_steps: Scheduler steps.
            guidance_scale: Default guidance scale of every region and the background.
            generator: Source of all randomness (noise, bootstrap colours); default a fresh seed.
            output_type: ``pil``, ``np``, ``pt`` or ``latent``.
            callback_on_step_end: As in ``__call__``.
            guidance_rescale: φ of Lin et al. 2023.
            scheduler: Short scheduler name.
            window: View size in px (default: the model's native size).
            stride: Step between views in px.
            weights: View profile (``gaussian``, ``feathered``, ``uniform``; None: ``gaussian``, or ``uniform`` with
                sync), multiplied by the masks.
            bootstrap_fraction: Fraction of the steps during which foreground views see their region on a
                random constant-colour background (0 = off; default 0.2, the paper's 20 %).
            circular: Wrap the views horizontally (a 360° canvas), as in ``__call__``.
            layout: ``half-overlap`` or ``quarter-overlap`` (docs/layouts.md), which set the stride and
                weights; ``shifted`` tiles move every step and are refused here.
            view_batch_size: (view, region) pairs per denoiser call.
            progress: Show a progress bar.
            sync, sync_weight, sync_decay, sync_stop_step, sync_every, sync_anchor, sync_loss,
            sync_chunk_size, sync_checkpointing: SyncDiffusion, as in ``__call__``; the anchor is a view of
                the layout, denoised with its first task's prompt (the background where it has weight).
            checkpoint, resume: Checkpoints, as in ``__call__``.
            image: Start from an image and keep its known part (a layout's ``init_image``; see
                :class:`~multidiffusion.pipeline.modes.image_start.ImageStart`): outpaint a picture with region prompts.
            customise: Control and customisation for every view, as in ``__call__``; a region's own ControlNets
                and LoRAs are its ``control`` and ``loras`` (:class:`~multidiffusion.core.features.regions.Region`).
        """
        check_generator(generator)
        if generator is None:
            generator = torch.Generator().manual_seed(secrets.randbits(63))
        if isinstance(background, str):
            background = Background(background)
        return generate_regions(
            self.model,
            list(regions),
            background,
            height=height,
            width=width,
            negative_prompt=negative_prompt,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            generator=generator,
            seed=seed_of(generator),
            output_type=output_type,
            callback_on_step_end=callback_on_step_end,
            scheduler=scheduler,
            window=window,
            stride=stride,
            weights=weights,
            bootstrap_fraction=bootstrap_fraction,
            view_batch_size=view_batch_size,
            progress=progress,
            circular=circular,
            layout=layout,
            sync=SyncRequest(
                sync,
                sync_weight,
                sync_decay,
                sync_stop_step,
                sync_every,
                sync_anchor,
                sync_loss,
                sync_chunk_size,
                sync_checkpointing,
            ),
            checkpoint=CheckpointSettings.of(checkpoint),
            resume=resume,
            image=image,
            customise=customise,
        )
