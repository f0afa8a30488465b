"""Every setting of a run, with its default: the one source of defaults for the API and CLI."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from multidiffusion.core.features.sync import SyncSettings

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-base"
OUTPUT_TYPES: tuple[str, ...] = ("pil", "np", "pt", "latent")
METADATA_KEY = "multidiffusion"  # the PNG text chunk that holds the JSON recipe


@dataclass(frozen=True)
class SamplingSettings:
    """Settings every mode shares. Sizes in pixels.

    Attributes:
        negative_prompt: One per canvas; "" is the unconditional prompt.
        height: Canvas height, px, a multiple of the model's granularity (8 for SD).
        width: Canvas width, px, likewise.
        num_inference_steps: Scheduler steps, ≥ 1.
        guidance_scale: Classifier-free guidance g ≥ 0; 1 disables the negative pass; None means the
            model's default (7.5 for SD; recorded resolved).
        guidance_rescale: φ ∈ [0, 1] of Lin et al. 2023 (0 = off).
        scheduler: Short scheduler name (see ``multidiffusion.adapters.SCHEDULER_NAMES``) or a diffusers
            scheduler class name; None means the model's default (``ddim`` for SD 1.x/2.x, the one its config
            names for SDXL, SD3, Flux and few-step models; recorded resolved).
        scheduler_config: The full config of a scheduler instance the caller passed (its class name is then
            ``scheduler``); None: the scheduler is built from the model's own config.
        window: View size, px; None means the model's native size (recorded resolved).
        stride: Step between views, px, 0 < stride ≤ window; None means the model's default, else
            window / 8 (64 px for SD; recorded resolved).
        weights: ``gaussian``, ``feathered`` or ``uniform`` (the paper's, and diffusers' panorama pipeline's); None
            (the default): ``gaussian``, or ``uniform`` with sync (docs/fusion.md, "Default weights"; recorded
            resolved).
        seed: The generator's seed when it was freshly seeded, else None (then not reproducible from
            the metadata alone).
        sync: Run SyncDiffusion (Lee et al. 2023); the ``sync_*`` settings below apply only then.
        sync_weight: w of Eq. 14, ≥ 0 (the paper's 20).
        sync_decay: λ of Eq. 14 in (0, 1]: the step size at step index i is w · λ^i (the paper's 0.95).
        sync_stop_step: Synchronise while the step index is below this; None = every step (docs/sync.md).
        sync_every: Synchronise every n-th step.
        sync_anchor: The anchor view's index in layout order, or ``"center"`` (recorded resolved).
        sync_loss: ``lpips`` or ``builtin``; None tries LPIPS, else the built-in loss (recorded resolved).
        global_view: ω > 0, the weight of one extra view of the whole canvas pooled to fit the window, fused by
            least squares in x̂₀ space (docs/fusion.md); None: off.
        global_view_until: The fraction of the steps, from the first, that use the global view, in (0, 1].
        image: For a run that started from an image (upscale, outpaint, inpaint, a layout's ``init_image``):
            the input's file name and SHA-256 (None when it was not a file), ``strength``, ``feather`` and
            ``noise_inversion_steps``, and the command's own options (``scale``, ``resample``, margins); None:
            a text-only run.
        customisation: What the run added to the model (ControlNets and their guide images' names, LoRAs,
            embeddings, prompt weighting;
            :meth:`~multidiffusion.pipeline.customise.customisation.Customisation.record`); None: nothing.
    """

    negative_prompt: tuple[str, ...] = ("",)
    height: int = 512
    width: int = 2048
    num_inference_steps: int = 50
    guidance_scale: float | None = None
    guidance_rescale: float = 0.0
    scheduler: str | None = None
    scheduler_config: dict[str, Any] | None = None
    window: int | None = None
    stride: int | None = None
    weights: str | None = None
    seed: int | None = None
    sync: bool = False
    sync_weight: float = SyncSettings.weight
    sync_decay: float = SyncSettings.decay
    sync_stop_step: int | None = SyncSettings.stop_step
    sync_every: int = SyncSettings.every
    sync_anchor: int | str = "center"
    sync_loss: str | None = None
    global_view: float | None = None
    global_view_until: float = 1.0
    image: dict[str, Any] | None = None
    customisation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def a1111_extra(self) -> list[str]:
        """Fields of the A1111 ``parameters`` text that only this kind of run has (none here)."""
        return []


@dataclass(frozen=True)
class PanoramaSettings(SamplingSettings):
    """The settings that, with the model, determine a panorama exactly.

    Attributes:
        prompt: One prompt per canvas.
        circular: Wrap views around horizontally (360° panorama); recorded True whenever ``tile`` wraps x.
        layout: A named cheaper layout (``multidiffusion.core.LAYOUT_NAMES``, docs/layouts.md) that sets
            the stride and weights itself (shifted tiles record the window as their stride); None: the sliding
            window of ``stride`` and ``weights``.
        tile: Seamless tiling: ``x``, ``y`` or ``xy`` wraps the views (and the decode) around those axes so
            the image tiles without a seam; None: no wrap. ``circular=True`` is recorded as ``x``.
    """

    prompt: tuple[str, ...] = ("",)
    circular: bool = False
    layout: str | None = None
    tile: str | None = None


DEFAULTS = PanoramaSettings()


def default(name: str) -> Any:
    """The default of one setting (the CLI builds its options from these)."""
    return getattr(DEFAULTS, name)


@dataclass(frozen=True)
class GenerationMetadata:
    """Everything needed to regenerate an image: the model, the settings, the package version.

    Attributes:
        model: The model's name: a hub repo id or model spec as given, or a local folder's or file's own name
            (never an absolute path).
        settings: The resolved settings of the run.
        dtype: The weights dtype, e.g. ``float32``.
        version: This package's version.
        mode: ``panorama``, ``regions``, ``upscale``, ``outpaint``, ``inpaint`` or ``img2img``.
        model_sha256: SHA-256 of a local model's weights (None for repo ids and the toy model).
        view_batch_size: Tasks per denoiser call as resolved: float rounding depends on it, so a bit-identical
            rerun uses the same.
        device: The device type the run used (``cpu``, ``cuda``); other devices round differently.
        tiled_vae: The codec's tiling choice (True, False, or None for automatic; None for codecs without).
    """

    model: str
    settings: PanoramaSettings
    dtype: str
    version: str
    mode: str = "panorama"
    model_sha256: str | None = None
    view_batch_size: int | None = None
    device: str | None = None
    tiled_vae: bool | None = None

    def to_dict(self, index: int | None = None) -> dict[str, Any]:
        """JSON-ready; ``index`` (the image's place in a batch of several) is recorded as ``image_index``."""
        record = {
            "mode": self.mode,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "dtype": self.dtype,
            "device": self.device,
            "view_batch_size": self.view_batch_size,
            "tiled_vae": self.tiled_vae,
            "version": self.version,
            **self.settings.to_dict(),
        }
        if index is not None and len(self.settings.prompt) > 1:
            record["image_index"] = index
        return record

    def to_json(self, index: int | None = None) -> str:
        return json.dumps(self.to_dict(index), sort_keys=True)

    def to_a1111(self, index: int = 0) -> str:
        """The ``parameters`` text of AUTOMATIC1111's web UI for canvas ``index``."""
        s = self.settings
        fields_ = [
            f"Steps: {s.num_inference_steps}",
            f"Sampler: {s.scheduler}",
            f"CFG scale: {s.guidance_scale:g}",
            f"Seed: {s.seed if s.seed is not None else 'unknown'}",
            f"Size: {s.width}x{s.height}",
            f"Model: {self.model}",
            *([f"Model hash: {self.model_sha256[:10]}"] if self.model_sha256 else []),
            f"MultiDiffusion window: {s.window}",
            f"MultiDiffusion stride: {s.stride}",
            f"MultiDiffusion weights: {s.weights}",
            f"Circular: {s.circular}",
        ]
        if getattr(s, "tile", None):
            fields_.append(f"Tile: {s.tile}")
        if getattr(s, "layout", None):
            fields_.append(f"MultiDiffusion layout: {s.layout}")
        if s.guidance_rescale:
            fields_.append(f"Guidance rescale: {s.guidance_rescale:g}")
        if s.image:
            fields_.append(f"Denoising strength: {s.image['strength']:g}")
        if s.sync:
            fields_.append(
                f"SyncDiffusion: weight {s.sync_weight:g}, decay {s.sync_decay:g}, stop {s.sync_stop_step}, "
                f"every {s.sync_every}, anchor {s.sync_anchor}, loss {s.sync_loss}"
            )
        if getattr(s, "global_view", None) is not None:
            fields_.append(f"Global view: weight {s.global_view:g}, until {s.global_view_until:g}")
        fields_ += s.a1111_extra()
        text = s.prompt[index]
        if s.negative_prompt[index]:
            text += f"\nNegative prompt: {s.negative_prompt[index]}"
        return text + "\n" + ", ".join(fields_)
