"""The user-facing panorama pipeline: pixels in, images out. No math here (docs/design.md §1)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from multidiffusion.adapters import LoadedModel, load_model
from multidiffusion.core.engine.sampling import StepCallback
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.conditional import ConditionalSampler
from multidiffusion.core.features.global_view import GlobalView
from multidiffusion.core.features.regions import Region
from multidiffusion.core.features.sync import SyncSettings
from multidiffusion.pipeline.customise.cache import CustomisationCache
from multidiffusion.pipeline.customise.customisation import Customisation
from multidiffusion.pipeline.inputs.region_file import Background
from multidiffusion.pipeline.modes.highres import HighresInputs
from multidiffusion.pipeline.modes.image import ImageInputs
from multidiffusion.pipeline.modes.image_start import DEFAULT_FEATHER_PX, ImageStart
from multidiffusion.pipeline.modes.panorama import resolve_settings, run_panorama
from multidiffusion.pipeline.modes.regions import (
    DEFAULT_BOOTSTRAP_FRACTION,
    RegionPlan,
    RegionRequest,
    plan_regions,
    run_regions,
)
from multidiffusion.pipeline.modes.sphere import photo_start, resolve_sphere, run_sphere
from multidiffusion.pipeline.run.checkpoint import Checkpoint, CheckpointSettings
from multidiffusion.pipeline.run.options import RunOptions
from multidiffusion.pipeline.run.output import MultiDiffusionOutput, seed_of
from multidiffusion.pipeline.settings.checks import check_generator, repeat_prompts
from multidiffusion.pipeline.settings.legacy import fold_global_view, fold_sync, fold_views, refuse_unknown
from multidiffusion.pipeline.settings.recipe import DEFAULTS, GenerationMetadata, PanoramaSettings
from multidiffusion.pipeline.settings.reproduce import call_arguments, check_environment, model_to_load, read_recipe
from multidiffusion.pipeline.settings.sphere import SphereSettings
from multidiffusion.pipeline.settings.views import ViewSettings


class MultiDiffusionPipeline(ImageInputs, HighresInputs):
    """Text-to-panorama with MultiDiffusion (Bar-Tal et al., ICML 2023), and canvases that start from an image
    (:meth:`upscale`, :meth:`outpaint`, :meth:`inpaint`).

    Build it with :meth:`from_pretrained` or :meth:`from_single_file`, or from a :class:`LoadedModel`.
    """

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.customisation_cache = CustomisationCache()  # control networks kept from one run to the next

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
        if hasattr(self.model.codec, "tiled"):  # the recorded choice (None: automatic, as recorded)
            kwargs["tiled_vae"] = recipe.get("tiled_vae")
        kwargs.update(progress=progress, checkpoint=checkpoint, resume=resume)
        if mode == "sphere":
            return self.sphere(**kwargs)
        return self.regions(**kwargs) if mode == "regions" else self(**kwargs)

    def resume(
        self,
        checkpoint: str | os.PathLike[str] | Checkpoint,
        *,
        progress: bool = True,
        keep_checkpointing: CheckpointSettings | str | os.PathLike[str] | None = None,
        allow_pickle: bool = False,
    ) -> MultiDiffusionOutput:
        """Finish an interrupted run from its checkpoint (written with ``checkpoint=``): the run is rebuilt from
        the recipe the checkpoint holds, as :meth:`reproduce` rebuilds it, then continues from the recorded step.
        The result is bit-identical to the uninterrupted run on the same weights, dtype, device type and view
        batch size.

        Args:
            checkpoint: The checkpoint file, or a loaded :class:`~multidiffusion.pipeline.run.checkpoint.Checkpoint`.
                Reading one runs no code (safetensors and JSON).
            progress: Show a progress bar.
            keep_checkpointing: Keep writing checkpoints of the rest of the run (a path or settings); None: none.
            allow_pickle: Also read a checkpoint in the first, pickled format (which can run code when read):
                only for files you wrote yourself.

        Raises:
            InvalidInputError: the file is not a checkpoint (or an old pickled one without ``allow_pickle``), it
                is damaged or holds non-finite latents, or it belongs to another model or run.
        """
        if isinstance(checkpoint, Checkpoint):
            ck = checkpoint
        else:
            ck = Checkpoint.load(checkpoint, allow_pickle=allow_pickle)
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
        height: int = DEFAULTS.height,
        width: int = DEFAULTS.width,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        guidance_scale: float | None = DEFAULTS.guidance_scale,
        *,
        guidance_rescale: float = DEFAULTS.guidance_rescale,
        scheduler: Any = DEFAULTS.scheduler,
        views: ViewSettings | None = None,
        sync: SyncSettings | bool | None = None,
        global_view: GlobalView | float | None = None,
        seed: int | None = None,
        output_type: str = "pil",
        **deprecated: Any,
    ) -> PanoramaSettings:
        """The validated settings of a panorama call (the same arguments as ``__call__`` without the runtime ones),
        every check against the model made once; nothing runs."""
        views = fold_views(deprecated, views)
        sync = fold_sync(deprecated, sync)
        global_view = fold_global_view(deprecated, global_view)
        refuse_unknown(deprecated, "settings")
        return resolve_settings(
            self.model,
            prompt,
            negative_prompt,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            scheduler=scheduler,
            views=views,
            sync=sync,
            global_view=global_view,
            seed=seed,
            output_type=output_type,
        )

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
        num_images_per_prompt: int = 1,
        views: ViewSettings | None = None,
        sync: SyncSettings | bool | None = None,
        global_view: GlobalView | float | None = None,
        image: ImageStart | None = None,
        customise: Customisation | None = None,
        checkpoint: CheckpointSettings | str | os.PathLike[str] | None = None,
        resume: Checkpoint | None = None,
        view_batch_size: int | None = None,
        progress: bool = True,
        tiled_vae: bool | None = None,
        **deprecated: Any,
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
                :class:`~multidiffusion.core.types.StepState` (``step_index``, ``num_steps``, ``timestep``, the
                canvas ``latents`` and the ``view_batch_size`` in use); return True to stop early.
            guidance_rescale: φ of Lin et al. 2023, in [0, 1].
            scheduler: A short name (``ddim``, ``dpmpp_2m``, ``euler_a``, … built from the model's own
                scheduler config), any diffusers scheduler class name (likewise), or a configured diffusers
                scheduler instance (used as it is; a fresh copy per run). Recorded in the metadata.
            num_images_per_prompt: Canvases per prompt (diffusers' meaning): the prompts are repeated
                prompt-major and all canvases share the view batches; the one generator draws their noise
                together, so image k of a batch differs from a single run with the same seed.
            views: How the views are laid: window, stride, weights, a named layout, wrap-around
                (:class:`~multidiffusion.pipeline.settings.views.ViewSettings`); None: the model's defaults.
            sync: SyncDiffusion (Lee et al. 2023): each view's latent takes a perceptual-loss gradient step toward
                the anchor view's foreseen image before it is denoised (docs/sync.md).
                :class:`~multidiffusion.core.features.sync.SyncSettings`, or True for its defaults; None: off.
            global_view: One more view of the whole canvas, average-pooled to fit the window, fused with the crops by
                least squares in x̂₀ space (docs/fusion.md): long-range coherence for one more model call per step.
                :class:`~multidiffusion.core.features.global_view.GlobalView`, or its weight ω > 0; None: off.
            image: Start from an image of the canvas size
                (:class:`~multidiffusion.pipeline.modes.image_start.ImageStart`; :meth:`upscale`, :meth:`outpaint`
                and :meth:`inpaint` build one); None: from noise.
            customise: ControlNets, T2I-Adapters, LoRAs, embeddings and prompt weighting for every view
                (:class:`~multidiffusion.pipeline.customise.customisation.Customisation`, docs/control.md); None: the
                model as loaded, prompts weighted where the family supports it.
            checkpoint: Write the run's state to this file (a path: after every step; or
                :class:`~multidiffusion.pipeline.run.checkpoint.CheckpointSettings`), atomically, after the last
                step and on Ctrl-C; finish an interrupted run with :meth:`resume`.
            resume: A :class:`~multidiffusion.pipeline.run.checkpoint.Checkpoint` of this same call to continue from
                (:meth:`resume` passes it); a checkpoint of another run raises InvalidInputError.
            view_batch_size: Views per denoiser call; default all that fit in about half the free memory.
            progress: Show a progress bar.
            tiled_vae: Decode in tiles (True), whole (False), or by size (None, the codec's choice); for this call.
            **deprecated: The flat keywords of earlier versions (``window``, ``stride``, ``weights``, ``layout``,
                ``tile``, ``circular``, ``sync_*``, ``global_view_until``), each warning once with its new spelling.
        """
        # 1. check: every input against the model, once, before anything is encoded or drawn
        check_generator(generator)
        prompt, negative_prompt = repeat_prompts(prompt, negative_prompt, num_images_per_prompt)
        generator = generator if generator is not None else fresh_generator()
        s = self.settings(
            prompt,
            negative_prompt,
            height,
            width,
            num_inference_steps,
            guidance_scale,
            guidance_rescale=guidance_rescale,
            scheduler=scheduler,
            views=views,
            sync=sync,
            global_view=global_view,
            seed=seed_of(generator),
            output_type=output_type,
            **deprecated,
        )
        run = RunOptions(
            generator,
            output_type,
            callback_on_step_end,
            view_batch_size,
            progress,
            CheckpointSettings.of(checkpoint),
            resume,
            tiled_vae,
        )
        # 2.–5. encode the prompts, prepare tasks and hooks, denoise, decode
        return run_panorama(self.model, s, run, image=image, customise=customise, cache=self.customisation_cache)

    def check_regions(
        self,
        regions: Sequence[Region],
        background: str | Background | None = None,
        height: int = DEFAULTS.height,
        width: int = DEFAULTS.width,
        negative_prompt: str = "",
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        guidance_scale: float | None = DEFAULTS.guidance_scale,
        *,
        guidance_rescale: float = DEFAULTS.guidance_rescale,
        scheduler: Any = DEFAULTS.scheduler,
        views: ViewSettings | None = None,
        bootstrap_fraction: float = DEFAULT_BOOTSTRAP_FRACTION,
        sync: SyncSettings | bool | None = None,
        output_type: str = "pil",
        **deprecated: Any,
    ) -> RegionPlan:
        """Validate a region run (the same arguments as :meth:`regions` without the runtime ones) without running it."""
        views = fold_views(deprecated, views)
        sync = fold_sync(deprecated, sync)
        refuse_unknown(deprecated, "check_regions")
        return plan_regions(
            self.model,
            list(regions),
            Background(background) if isinstance(background, str) else background,
            RegionRequest(
                height=height,
                width=width,
                negative_prompt=negative_prompt,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                guidance_rescale=guidance_rescale,
                scheduler=scheduler,
                views=views,
                bootstrap_fraction=bootstrap_fraction,
                sync=sync,
                output_type=output_type,
            ),
        )

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
        views: ViewSettings | None = None,
        bootstrap_fraction: float = DEFAULT_BOOTSTRAP_FRACTION,
        sync: SyncSettings | bool | None = None,
        image: ImageStart | None = None,
        customise: Customisation | None = None,
        checkpoint: CheckpointSettings | str | os.PathLike[str] | None = None,
        resume: Checkpoint | None = None,
        view_batch_size: int | None = None,
        progress: bool = True,
        tiled_vae: bool | None = None,
        **deprecated: Any,
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
            views: As in ``__call__``; the view weights are multiplied by the masks. Regions wrap around x only
                (``tile='x'``); a named layout must be fixed (``half-overlap``, ``quarter-overlap``).
            bootstrap_fraction: Fraction of the steps during which foreground views see their region on a
                random constant-colour background (0 = off; default 0.2, the paper's 20 %).
            sync: SyncDiffusion, as in ``__call__``; the anchor is a view of the layout, denoised with its first
                task's prompt (the background where it has weight).
            image: Start from an image and keep its known part (a layout's ``init_image``; see
                :class:`~multidiffusion.pipeline.modes.image_start.ImageStart`): outpaint a picture with region
                prompts.
            customise: Control and customisation for every view, as in ``__call__``; a region's own ControlNets
                and LoRAs are its ``control`` and ``loras`` (:class:`~multidiffusion.core.features.regions.Region`).
            checkpoint, resume, view_batch_size, progress, tiled_vae: As in ``__call__``.
            **deprecated: The flat keywords of earlier versions, as in ``__call__``.
        """
        # 1. check: every input against the model, once
        check_generator(generator)
        generator = generator if generator is not None else fresh_generator()
        background = Background(background) if isinstance(background, str) else background
        plan = self.check_regions(
            regions,
            background,
            height,
            width,
            negative_prompt,
            num_inference_steps,
            guidance_scale,
            guidance_rescale=guidance_rescale,
            scheduler=scheduler,
            views=views,
            bootstrap_fraction=bootstrap_fraction,
            sync=sync,
            output_type=output_type,
            **deprecated,
        )
        run = RunOptions(
            generator,
            output_type,
            callback_on_step_end,
            view_batch_size,
            progress,
            CheckpointSettings.of(checkpoint),
            resume,
            tiled_vae,
        )
        # 2.–5. encode the prompts, prepare tasks and hooks (bootstrapping, sync), denoise, decode
        return run_regions(
            self.model,
            list(regions),
            background,
            plan,
            run,
            image=image,
            customise=customise,
            cache=self.customisation_cache,
        )

    def sphere(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        height: int = 1024,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        guidance_scale: float | None = DEFAULTS.guidance_scale,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        callback_on_step_end: StepCallback | None = None,
        *,
        sphere: SphereSettings | None = None,
        guidance_rescale: float = DEFAULTS.guidance_rescale,
        scheduler: Any = DEFAULTS.scheduler,
        num_images_per_prompt: int = 1,
        sync: SyncSettings | bool | None = None,
        global_view: GlobalView | float | None = None,
        customise: Customisation | None = None,
        checkpoint: CheckpointSettings | str | os.PathLike[str] | None = None,
        resume: Checkpoint | None = None,
        view_batch_size: int | None = None,
        progress: bool = True,
        tiled_vae: bool | None = None,
        image: ImageStart | None = None,
    ) -> MultiDiffusionOutput:
        """Generate N whole spheres: equirectangular images ``2 × height`` wide, 360° × 180° (docs/sphere.md).

        Perspective views of the model's native size look out from the centre in every direction, one at each pole;
        their outputs are fused on the equirectangular canvas by Eq. 5, and the decode wraps around in longitude.

        Args:
            prompt, negative_prompt, num_inference_steps, guidance_scale, generator, output_type, callback_on_step_end,
                guidance_rescale, scheduler, num_images_per_prompt, checkpoint, resume, view_batch_size, progress,
                tiled_vae: As in ``__call__``.
            height: Canvas height in px (a multiple of the model's latent cell); the image is 2 × height wide. With
                the native window it sets the views' field of view (about 81° for SD at 1024 px).
            sphere: The views' fov (None: chosen from the height; a given one must fit it), overlap, weights and the
                poles' roll (:class:`~multidiffusion.pipeline.settings.sphere.SphereSettings`); None: the defaults.
            sync, global_view: Not available on the sphere: refused when given.
            customise: LoRAs, embeddings and prompt weighting as in ``__call__``; control networks are refused.
            image: A start on the equirectangular canvas, kept where known: a photo placed on the sphere
                (:meth:`plan_photo_sphere`, photo to 360°); None: from noise.
        """
        # 1. check: every input against the model, once
        check_generator(generator)
        prompt, negative_prompt = repeat_prompts(prompt, negative_prompt, num_images_per_prompt)
        generator = generator if generator is not None else fresh_generator()
        s = resolve_sphere(
            self.model,
            prompt,
            negative_prompt,
            height=height,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_rescale=guidance_rescale,
            scheduler=scheduler,
            sphere=sphere if sphere is not None else SphereSettings(),
            seed=seed_of(generator),
            output_type=output_type,
            sync=sync,
            global_view=global_view,
        )
        run = RunOptions(
            generator,
            output_type,
            callback_on_step_end,
            view_batch_size,
            progress,
            CheckpointSettings.of(checkpoint),
            resume,
            tiled_vae,
        )
        # 2.–5. lay the views, encode the prompts, denoise, decode
        return run_sphere(self.model, s, run, image=image, customise=customise, cache=self.customisation_cache)

    def plan_photo_sphere(
        self,
        photo: Any,
        height: int,
        fov: float,
        *,
        yaw: float = 0.0,
        pitch: float = 0.0,
        feather: float = DEFAULT_FEATHER_PX,
        conditional: ConditionalSampler | None = None,
    ) -> ImageStart:
        """Photo to 360°: ``photo`` (a path, PIL image, array or tensor) placed on a sphere ``height`` px high at its
        horizontal field of view ``fov`` (degrees), its centre looking at longitude ``yaw`` and latitude ``pitch``
        (degrees). Hand the result to :meth:`sphere` as ``image``: the photo's pixels on the canvas are kept beyond
        the feathering (``feather`` px) as in a flat outpaint, and the rest of the sphere is drawn (docs/sphere.md)."""
        from multidiffusion.pipeline.modes.image import file_input

        return photo_start(
            photo,
            height,
            fov,
            yaw=yaw,
            pitch=pitch,
            feather=feather,
            conditional=conditional,
            record={"input": file_input(photo)},
        )


def fresh_generator() -> torch.Generator:
    """A CPU generator with a fresh random seed (recorded, so the image can be made again)."""
    return torch.Generator().manual_seed(secrets.randbits(63))
