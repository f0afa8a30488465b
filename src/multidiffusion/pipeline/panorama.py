"""The user-facing panorama pipeline: pixels in, images out. No math here (DESIGN.md §3)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import __version__
from ..adapters import LoadedModel, check_scheduler_name, load_model, make_scheduler
from ..adapters.loading import resolve_device, resolve_dtype
from ..adapters.stable_diffusion import load_single_file
from ..core import ClassifierFreeGuidance, GuidedCondition, initial_noise, panorama_tasks, sample
from ..core.decoding import decode_wrapped
from ..core.errors import InvalidInputError
from ..core.types import StepState
from .checks import as_prompt_list, check_pixels, check_sampling, check_stride
from .output import MultiDiffusionOutput, convert, seed_of
from .settings import DEFAULTS, GenerationMetadata, PanoramaSettings

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
    if model.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(model.device)
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = 4 << 30
    per_task = model.bytes_per_view_cell * view_cells * rows_per_task
    return max(1, min(num_tasks, int(free * 0.5) // max(per_task, 1)))


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
    ) -> MultiDiffusionPipeline:
        """Load a diffusers-format model (hub repo id or local folder).

        Args:
            repo_or_folder: e.g. ``"stabilityai/stable-diffusion-2-base"`` or a folder saved with
                ``save_pretrained``.
            dtype: ``float32``, ``float16``, ``bfloat16`` or a torch dtype; default float16 on CUDA,
                float32 on the CPU.
            device: ``cpu``, ``cuda``, ``cuda:N``; default CUDA when available.
        """
        return cls(load_model(repo_or_folder, dtype=dtype, device=device))

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
        check_pixels("height", s.height, g)
        check_pixels("width", s.width, g)
        window = self.native_window_px if s.window is None else s.window
        check_pixels("window", window, g)
        check_stride(s.stride, window)
        check_pixels("stride", s.stride, g)
        check_scheduler_name(s.scheduler)
        check_sampling(s.num_inference_steps, s.guidance_scale, s.guidance_rescale, s.weights, "pil")
        return s

    def __call__(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        height: int = DEFAULTS.height,
        width: int = DEFAULTS.width,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        guidance_scale: float = DEFAULTS.guidance_scale,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        callback_on_step_end: StepCallback | None = None,
        *,
        guidance_rescale: float = DEFAULTS.guidance_rescale,
        scheduler: str = DEFAULTS.scheduler,
        window: int | None = DEFAULTS.window,
        stride: int = DEFAULTS.stride,
        weights: str = DEFAULTS.weights,
        circular: bool = DEFAULTS.circular,
        view_batch_size: int | None = None,
        progress: bool = True,
    ) -> MultiDiffusionOutput:
        """Generate N panoramas (one per prompt).

        Args:
            prompt: A prompt or a list of N prompts (an empty list raises).
            negative_prompt: One for all, or one per prompt; default "".
            height: Canvas height in px (multiple of the model's granularity, 8 for SD).
            width: Canvas width in px, likewise.
            num_inference_steps: Scheduler steps.
            guidance_scale: Classifier-free guidance scale ≥ 0 (1 = off).
            generator: Source of all randomness; default a fresh seed, recorded in the metadata.
            output_type: ``pil``, ``np``, ``pt`` or ``latent`` (see :class:`MultiDiffusionOutput`).
            callback_on_step_end: Called after each step with a
                :class:`~multidiffusion.core.types.StepState`; return True to stop early.
            guidance_rescale: φ of Lin et al. 2023, in [0, 1].
            scheduler: Short scheduler name, e.g. ``ddim``, ``dpmpp_2m``, ``euler_a``.
            window: View size in px (default: the model's native size). Larger than native is allowed.
            stride: Step between views in px, 0 < stride ≤ window.
            weights: ``uniform`` (paper), ``feathered`` or ``gaussian``.
            circular: Wrap views horizontally so the left and right edges continue each other.
            view_batch_size: Views per denoiser call; default all that fit in about half the free memory.
            progress: Show a progress bar.
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
            seed=seed_of(generator),
        )
        m = self.model
        g = m.granularity_px
        window_px = self.native_window_px if s.window is None else s.window
        tasks = panorama_tasks(
            s.height // g, s.width // g, window_px // g, s.stride // g, weights=s.weights, circular=s.circular
        )
        n = len(s.prompt)
        guided = s.guidance_scale != 1.0
        positive = m.encode_prompts(list(s.prompt))
        condition = GuidedCondition(
            positive=positive,
            negative=m.encode_prompts(list(s.negative_prompt)) if guided else None,
            guidance_scale=s.guidance_scale,
            guidance_rescale=s.guidance_rescale,
        )
        if view_batch_size is None:
            view = tasks[0].view
            view_batch_size = auto_view_batch_size(m, view.height * view.width, n * (2 if guided else 1), len(tasks))

        sched = make_scheduler(s.scheduler, m.scheduler_config)
        sched.set_timesteps(s.num_inference_steps, device=m.device)
        shape = (n, m.codec.latent_channels, s.height // g, s.width // g)
        noise = initial_noise(shape, generator, m.device, m.dtype)
        x_T = noise * sched.init_noise_sigma

        steps_run = 0
        bar = tqdm(total=len(sched.timesteps), disable=not progress, desc="denoising", unit="step")

        def on_step(state: StepState) -> bool:
            nonlocal steps_run
            steps_run = state.step_index + 1
            bar.update(1)
            return bool(callback_on_step_end(state)) if callback_on_step_end is not None else False

        try:
            latents = sample(
                ClassifierFreeGuidance(m.denoiser),
                sched,
                x_T,
                tasks,
                [condition],
                callback=on_step,
                view_batch_size=view_batch_size,
                generator=generator,
            )
        finally:
            bar.close()
        metadata = GenerationMetadata(
            model=m.source, settings=s, dtype=str(m.dtype).removeprefix("torch."), version=__version__
        )
        if output_type == "latent":
            images: Any = latents
        else:
            decoded = decode_wrapped(m.codec, latents) if s.circular else m.codec.decode(latents)
            images = convert(decoded, output_type)
        return MultiDiffusionOutput(images=images, latents=latents, metadata=metadata, steps_run=steps_run)
