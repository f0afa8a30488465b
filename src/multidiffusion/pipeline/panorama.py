"""The user-facing panorama pipeline: pixels in, images out. No math here (DESIGN.md §3)."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from typing import Any

import torch

from ..adapters import LoadedModel, check_scheduler_name, load_model
from ..adapters.loading import resolve_device, resolve_dtype
from ..adapters.stable_diffusion import load_single_file
from ..core import GuidedCondition, layout_tasks, panorama_tasks
from ..core.errors import InvalidInputError
from ..core.layouts import get_layout
from ..core.regions import Region
from ..core.views import layout_views
from .checks import as_prompt_list, check_pixels, check_sampling, resolve_window_stride
from .layout import Background
from .output import MultiDiffusionOutput, seed_of
from .regions import DEFAULT_BOOTSTRAP_FRACTION, RegionPlan, generate_regions, plan_regions
from .run import StepCallback, generate
from .settings import DEFAULTS, PanoramaSettings
from .sync import SyncRequest, check_sync, prepare_sync, resolve_anchor
from .sync import layout_views as layout_views_of


class MultiDiffusionPipeline:
    """Text-to-panorama with MultiDiffusion (Bar-Tal et al., ICML 2023).

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
    ) -> MultiDiffusionPipeline:
        """Load a diffusers-format model (hub repo id or local folder).

        Args:
            repo_or_folder: e.g. ``"stabilityai/stable-diffusion-2-base"`` or a folder saved with
                ``save_pretrained``.
            dtype: ``float32``, ``float16``, ``bfloat16`` or a torch dtype; default float16 on CUDA,
                float32 on the CPU.
            device: ``cpu``, ``cuda``, ``cuda:N``; default CUDA when available.
            channels_last: Store the networks NHWC (docs/performance.md); same results to float rounding.
            compile: ``torch.compile`` the denoiser network (slow first call per batch shape).
        """
        return cls(load_model(repo_or_folder, dtype=dtype, device=device, channels_last=channels_last, compile=compile))

    @classmethod
    def from_single_file(
        cls,
        path: str,
        *,
        config: str | None = None,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> MultiDiffusionPipeline:
        """Load an original-format checkpoint (``.safetensors``/``.ckpt``); ``config`` is a diffusers
        folder or repo id describing it (needed offline)."""
        dev = resolve_device(device)
        return cls(load_single_file(path, resolve_dtype(dtype, dev), dev, config=config))

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
        s = PanoramaSettings(prompt=tuple(prompts), negative_prompt=tuple(negatives), **kwargs)
        g = self.model.granularity_px
        if s.layout is not None:
            get_layout(s.layout)
            if s.stride is not None or s.weights != DEFAULTS.weights:
                raise InvalidInputError(
                    f"layout {s.layout!r} sets the stride and weights itself; omit stride and weights"
                )
            if s.sync:
                raise InvalidInputError("SyncDiffusion runs on a fixed layout; omit layout (or sync)")
        check_pixels("height", s.height, g)
        check_pixels("width", s.width, g)
        window, stride = resolve_window_stride(
            s.window, s.stride, g, self.native_window_px, self.model.default_stride_px
        )
        guidance = self.model.default_guidance_scale if s.guidance_scale is None else s.guidance_scale
        s = dataclasses.replace(s, window=window, stride=stride, guidance_scale=guidance)
        if s.layout is not None:
            recipe = get_layout(s.layout)
            stride = recipe.stride_cells(window // g) * g if recipe.stride is not None else None
            s = dataclasses.replace(s, stride=stride, weights=recipe.weights)
        check_scheduler_name(s.scheduler)
        check_sampling(s.num_inference_steps, s.guidance_scale, s.guidance_rescale, s.weights, "pil")
        sync = check_sync(s.sync_weight, s.sync_decay, s.sync_stop_step, s.sync_every, s.sync_anchor, s.sync_loss)
        if s.sync:
            views = layout_views(s.height // g, s.width // g, window // g, stride // g, circular=s.circular)
            anchor = resolve_anchor(views, sync.anchor, s.height // g, s.width // g)
            s = dataclasses.replace(s, sync_anchor=anchor)
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
        scheduler: str = DEFAULTS.scheduler,
        window: int | None = DEFAULTS.window,
        stride: int | None = DEFAULTS.stride,
        weights: str = DEFAULTS.weights,
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
            scheduler: Short scheduler name, e.g. ``ddim``, ``dpmpp_2m``, ``euler_a``.
            window: View size in px (default: the model's native size). Larger than native is allowed.
            stride: Step between views in px, 0 < stride ≤ window; default the model's, else window / 8
                (64 px for SD).
            weights: ``uniform`` (paper), ``feathered`` or ``gaussian``.
            circular: Wrap views horizontally so the left and right edges continue each other.
            layout: A named cheaper layout, ``half-overlap``, ``quarter-overlap`` or ``shifted``
                (docs/layouts.md); it sets the stride and weights, so give neither with it.
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
            sync_chunk_size: Views per gradient batch (default: the engine's batch); lower saves memory.
            sync_checkpointing: Checkpoint activations in the sync backward pass (less memory, more time).
        """
        check_sampling(num_inference_steps, guidance_scale, guidance_rescale, weights, output_type)
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
            layout=layout,
            seed=seed_of(generator),
            sync=sync,
            sync_weight=sync_weight,
            sync_decay=sync_decay,
            sync_stop_step=sync_stop_step,
            sync_every=sync_every,
            sync_anchor=sync_anchor,
            sync_loss=sync_loss,
        )
        m = self.model
        g = m.granularity_px
        if s.layout is not None:
            tasks = layout_tasks(s.layout, s.height // g, s.width // g, s.window // g, circular=s.circular)
        else:
            tasks = panorama_tasks(
                s.height // g, s.width // g, s.window // g, s.stride // g, weights=s.weights, circular=s.circular
            )
        guided = s.guidance_scale != 1.0
        condition = GuidedCondition(
            positive=m.encode_prompts(list(s.prompt)),
            negative=m.encode_prompts(list(s.negative_prompt)) if guided else None,
            guidance_scale=s.guidance_scale,
            guidance_rescale=s.guidance_rescale,
        )
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
            mode="panorama",
            tasks=tasks,
            conditions=[condition],
            canvas_cells=(len(s.prompt), s.height // g, s.width // g),
            generator=generator,
            output_type=output_type,
            make_hooks=lambda: [make_hooks()] if make_hooks is not None else [],
            callback_on_step_end=callback_on_step_end,
            view_batch_size=view_batch_size,
            progress=progress,
            circular=s.circular,
        )

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
        plan = plan_regions(self.model, list(regions), background, **{**defaults, **kwargs})
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
        scheduler: str = DEFAULTS.scheduler,
        window: int | None = DEFAULTS.window,
        stride: int | None = DEFAULTS.stride,
        weights: str = DEFAULTS.weights,
        bootstrap_fraction: float = DEFAULT_BOOTSTRAP_FRACTION,
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
    ) -> MultiDiffusionOutput:
        """Region-based generation (MultiDiffusion §4.2): each region's prompt is painted by its mask or box.

        Args:
            regions: :class:`~multidiffusion.core.regions.Region` objects (mask or box in pixels).
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
            weights: View profile (``uniform``, ``feathered``, ``gaussian``), multiplied by the masks.
            bootstrap_fraction: Fraction of the steps during which foreground views see their region on a
                random constant-colour background (0 = off; default 0.2, the paper's 20 %).
            view_batch_size: (view, region) pairs per denoiser call.
            progress: Show a progress bar.
            sync, sync_weight, sync_decay, sync_stop_step, sync_every, sync_anchor, sync_loss,
            sync_chunk_size, sync_checkpointing: SyncDiffusion, as in ``__call__``; the anchor is a view of
                the layout, denoised with its first task's prompt (the background where it has weight).
        """
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
        )
