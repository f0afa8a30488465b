"""Every setting of a run, with its default: the one source of defaults for the API and CLI."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from multidiffusion.core.features.global_view import GlobalView
from multidiffusion.core.features.sync import SyncSettings
from multidiffusion.pipeline.settings.views import ViewSettings

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-base"
METADATA_KEY = "multidiffusion"  # the PNG text chunk that holds the JSON recipe


@dataclass(frozen=True)
class SamplingSettings:
    """Settings every mode shares, as one run resolved them: what its recipe records. Sizes in pixels.

    The recipe is flat JSON. A grouped setting is recorded under its group's name joined to its field's, the same
    words as the command line's flags: ``sync=SyncSettings(stop_step=3)`` is ``sync_stop_step`` in the recipe and
    ``--sync-stop-step`` on the command line; the views' fields (``window``, ``stride``, ``weights``, ``layout``,
    ``tile``) and the global view's weight are recorded under their own names (:meth:`to_dict`).

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
        views: How the views are laid (:class:`~multidiffusion.pipeline.settings.views.ViewSettings`; recorded
            resolved, as the canvas used them: :func:`used_views`).
        seed: The generator's seed when it was freshly seeded, else None (then not reproducible from
            the metadata alone).
        sync: SyncDiffusion (Lee et al. 2023), :class:`~multidiffusion.core.features.sync.SyncSettings` with the
            anchor's view index and the loss used; None: off.
        global_view: One extra view of the whole canvas pooled to fit the window, fused by least squares in x̂₀ space
            (:class:`~multidiffusion.core.features.global_view.GlobalView`, docs/fusion.md); None: off.
        image: For a run that started from an image (upscale, outpaint, inpaint, a layout's ``init_image``):
            the input's file name and SHA-256 (None when it was not a file), ``strength``, ``feather`` and
            ``noise_inversion_steps``, the conditional sampler other than the blend (``conditional``, ``resample``,
            ``fraction``, and ``span`` and ``iterations`` where they apply:
            :meth:`~multidiffusion.core.features.conditional.ConditionalSampler.record`), and the command's own
            options (``scale``, ``resample``, margins); None: a text-only run.
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
    views: ViewSettings = field(default_factory=ViewSettings)
    seed: int | None = None
    sync: SyncSettings | None = None
    global_view: GlobalView | None = None
    image: dict[str, Any] | None = None
    customisation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON recipe (tuples become lists; the groups spelled as the class docstring says)."""
        record: dict[str, Any] = {}
        for entry in fields(self):
            value = getattr(self, entry.name)
            if entry.name == "views":
                record.update(asdict(used_views(value, self.height, self.width)))
            elif entry.name == "sync":
                record["sync"] = value is not None
                if value is not None:
                    record.update({f"sync_{k}": getattr(value, k) for k in SYNC_RECORDED})
            elif entry.name == "global_view":
                record["global_view"] = None if value is None else value.weight
                if value is not None:
                    record["global_view_until"] = value.until
            else:
                record[entry.name] = list(value) if isinstance(value, tuple) else value
        return record

    def a1111_extra(self) -> list[str]:
        """Fields of the A1111 ``parameters`` text that only this kind of run has (none here)."""
        return []


def used_views(views: ViewSettings, height: int, width: int) -> ViewSettings:
    """The resolved ``views`` as a canvas of ``height`` × ``width`` px used them: what the recipe records.

    A canvas smaller than the window in a dimension gets one view of its own size there, so a sliding window
    larger than both sides is in fact a window of the longer side (one view of the whole canvas), and the stride
    at most that. Rerun with these, the views are the same ones, so the pixels are too. A named layout's window is
    recorded as given (the layout decides what it does with it).
    """
    if views.layout is not None or views.window is None or views.window <= max(height, width):
        return views
    window = max(height, width)
    stride = min(views.stride, window) if views.stride is not None else None
    return dataclasses.replace(views, window=window, stride=stride)


def as_used(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """A flat recipe with its ``window`` and ``stride`` as :func:`used_views` records them: a recipe written before
    the window used was recorded (a small canvas's requested window) compares equal to one written after."""
    record = dict(recipe)
    window, stride, height, width = (record.get(k) for k in ("window", "stride", "height", "width"))
    if record.get("layout") or not all(isinstance(v, int) for v in (window, height, width)):
        return record
    if window > max(height, width):
        record["window"] = max(height, width)
        if isinstance(stride, int):
            record["stride"] = min(stride, record["window"])
    return record


SYNC_RECORDED: tuple[str, ...] = ("weight", "decay", "stop_step", "every", "anchor", "loss")
"""The :class:`SyncSettings` fields a recipe records: those that change the result (not chunk size or checkpointing)."""


@dataclass(frozen=True)
class PanoramaSettings(SamplingSettings):
    """The settings that, with the model, determine a panorama exactly.

    Attributes:
        prompt: One prompt per canvas.
    """

    prompt: tuple[str, ...] = ("",)


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
        views = used_views(s.views, s.height, s.width)
        fields_ = [
            f"Steps: {s.num_inference_steps}",
            f"Sampler: {s.scheduler}",
            f"CFG scale: {s.guidance_scale:g}",
            f"Seed: {s.seed if s.seed is not None else 'unknown'}",
            f"Size: {s.width}x{s.height}",
            f"Model: {self.model}",
            *([f"Model hash: {self.model_sha256[:10]}"] if self.model_sha256 else []),
            f"MultiDiffusion window: {views.window}",
            f"MultiDiffusion stride: {views.stride}",
            f"MultiDiffusion weights: {s.views.weights}",
            f"Circular: {s.views.wrap[1]}",
        ]
        if s.views.tile:
            fields_.append(f"Tile: {s.views.tile}")
        if s.views.layout:
            fields_.append(f"MultiDiffusion layout: {s.views.layout}")
        if s.guidance_rescale:
            fields_.append(f"Guidance rescale: {s.guidance_rescale:g}")
        if s.image:
            fields_.append(f"Denoising strength: {s.image['strength']:g}")
        if s.sync is not None:
            fields_.append(
                f"SyncDiffusion: weight {s.sync.weight:g}, decay {s.sync.decay:g}, stop {s.sync.stop_step}, "
                f"every {s.sync.every}, anchor {s.sync.anchor}, loss {s.sync.loss}"
            )
        if s.global_view is not None:
            fields_.append(f"Global view: weight {s.global_view.weight:g}, until {s.global_view.until:g}")
        fields_ += s.a1111_extra()
        text = s.prompt[index]
        if s.negative_prompt[index]:
            text += f"\nNegative prompt: {s.negative_prompt[index]}"
        return text + "\n" + ", ".join(fields_)
