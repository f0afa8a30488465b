"""ControlNets and T2I-Adapters for a run: what the user asks for, checked, and the canvas-sized guide images.

A guide image covers the whole canvas: it is fitted to the canvas once (``resize``), and each view reads its
crop while it is denoised (:mod:`multidiffusion.adapters.customise.control`). Nothing is preprocessed per view: give
the edge map, depth map or pose image itself (annotators are not part of this package).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multidiffusion.adapters import LoadedModel
from multidiffusion.adapters.customise.control import ControlUnit
from multidiffusion.adapters.customise.control_loading import control_kind, load_control_network
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline.modes.image_start import file_record, read_image, resize

RESIZE_MODES = ("stretch", "crop", "pad")
MAX_CONTROL_SCALE = 100.0  # ControlNet scales run 0–2 in practice; far beyond is a typo, not a choice


@dataclass(frozen=True)
class ControlSpec:
    """One ControlNet or T2I-Adapter and its guide image.

    Attributes:
        model: A diffusers folder (``config.json`` naming ``ControlNetModel``, ``T2IAdapter``, ``SD3ControlNetModel``
            or ``FluxControlNetModel``) or a hub id.
        image: The guide image for the whole canvas: a path, PIL image, uint8 array (H, W, 3) or float tensor
            (3, H, W) in [0, 1]; None: the run's input image (an upscale's: ControlNet tile).
        scale: Conditioning scale, ≥ 0 (diffusers' ``controlnet_conditioning_scale``).
        start: Fraction of the steps run before it starts acting, in [0, 1) (``control_guidance_start``).
        end: Fraction of the steps run after which it stops, in (start, 1] (``control_guidance_end``).
        resize: How the image is fitted to the canvas: ``stretch`` (to the canvas size, as diffusers does),
            ``crop`` (scaled to cover it, the overflow cut evenly) or ``pad`` (scaled to fit inside, black around).
    """

    model: str
    image: Any = None
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    resize: str = "stretch"

    def check(self, where: str = "control") -> None:
        """Every setting in range, as one line naming ``where``; the model's source checked cheaply."""
        if not isinstance(self.model, (str, Path)) or not str(self.model):
            raise InvalidInputError(f"{where}: the control network must be a folder or hub id, got {self.model!r}")
        numbers = {"scale": self.scale, "start": self.start, "end": self.end}
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidInputError(f"{where}: {name} must be a finite number, got {value!r}")
        if not 0 <= self.scale <= MAX_CONTROL_SCALE:
            raise InvalidInputError(f"{where}: scale must be in [0, {MAX_CONTROL_SCALE:g}], got {self.scale}")
        if not 0 <= self.start < self.end <= 1:
            raise InvalidInputError(
                f"{where}: need 0 ≤ start < end ≤ 1 (fractions of the steps), got start {self.start}, end {self.end}"
            )
        if self.resize not in RESIZE_MODES:
            raise InvalidInputError(f"{where}: resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")

    def record(self) -> dict[str, Any]:
        """For metadata: the network's and image's names (never their directories) and the settings."""
        image: Any = "input image" if self.image is None else "in memory"
        if isinstance(self.image, (str, Path)):
            image = file_record(self.image)
        name = Path(str(self.model)).name if Path(str(self.model)).exists() else str(self.model)
        return {
            "model": name,
            "image": image,
            "scale": self.scale,
            "start": self.start,
            "end": self.end,
            "resize": self.resize,
        }


def fit_image(image: Tensor, height: int, width: int, mode: str) -> Tensor:
    """(1, 3, h, w) in [−1, 1] → (1, 3, height, width): stretched, cropped to cover, or padded to fit (Lanczos)."""
    if mode == "stretch":
        return resize(image, height, width, "lanczos")
    h, w = image.shape[-2:]
    ratio = max(height / h, width / w) if mode == "crop" else min(height / h, width / w)
    inner_h, inner_w = max(1, round(h * ratio)), max(1, round(w * ratio))
    scaled = resize(image, inner_h, inner_w, "lanczos")
    if mode == "crop":
        top, left = (inner_h - height) // 2, (inner_w - width) // 2
        return scaled[..., top : top + height, left : left + width]
    out = torch.full((1, 3, height, width), -1.0)  # black
    top, left = (height - inner_h) // 2, (width - inner_w) // 2
    out[..., top : top + inner_h, left : left + inner_w] = scaled
    return out


def guide_tensor(spec: ControlSpec, network: Any, height: int, width: int, fallback: Any = None) -> Tensor:
    """The spec's image fitted to the canvas (height × width px): (1, C, H, W) in [0, 1], C the channels the
    network reads (3; 1 for grey-scale adapters: BT.601 luminance, as PIL's ``convert("L")``)."""
    source = spec.image if spec.image is not None else fallback
    if source is None:
        raise InvalidInputError(f"ControlNet {spec.model!r} has no control image (give one for it)")
    pixels = (fit_image(read_image(source, "control image"), height, width, spec.resize) + 1.0) / 2.0
    channels = int(getattr(network.config, "conditioning_channels", getattr(network.config, "in_channels", 3)))
    if channels == 1:
        luma = torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
        pixels = (pixels * luma).sum(dim=1, keepdim=True)
    return pixels


def check_controls(specs: tuple[ControlSpec, ...], allow_pickle: bool, where: str = "control") -> None:
    """Cheap checks of every spec before anything loads."""
    for i, spec in enumerate(specs):
        if not isinstance(spec, ControlSpec):
            raise InvalidInputError(f"{where} {i}: expected a ControlSpec, got {type(spec).__name__}")
        spec.check(f"{where} {i}")
        control_kind(str(spec.model), allow_pickle)


class ControlLoader:
    """Loads each control network once: several specs or regions may share one, and the next run of the same pipeline
    reuses it (``networks``: its :attr:`~multidiffusion.pipeline.customise.cache.CustomisationCache.control_networks`).
    :meth:`keep_only_used` drops those a run no longer names; a run without control drops them all
    (:class:`~multidiffusion.pipeline.customise.customisation.Customised`).

    Args:
        model: The loaded model (of a family with control).
        allow_pickle: Allow pickled weights.
        networks: Source → (network, kind) loaded before, updated in place; None: a dict of this loader's own.
    """

    def __init__(
        self, model: LoadedModel, allow_pickle: bool, networks: dict[str, tuple[Any, str]] | None = None
    ) -> None:
        if model.control is None:
            raise InvalidInputError(
                f"the {model.family} model takes no ControlNet or T2I-Adapter (SD 1.x/2.x, SDXL, SD 3 and Flux do)"
            )
        self.model = model
        self.allow_pickle = allow_pickle
        self.networks: dict[str, tuple[Any, str]] = networks if networks is not None else {}
        self.used: set[str] = set()

    def keep_only_used(self) -> None:
        """Forget the networks this run did not use (one run's networks stay in memory, not every run's)."""
        for key in set(self.networks) - self.used:
            del self.networks[key]

    def unit(self, spec: ControlSpec, height: int, width: int, fallback: Any = None) -> ControlUnit:
        """The spec as a :class:`ControlUnit` on the canvas of height × width px (its guide prepared once)."""
        key = str(spec.model)
        label = Path(key).name or key
        if key not in self.networks:
            network, kind = load_control_network(
                key, self.model.dtype, self.model.device, allow_pickle=self.allow_pickle
            )
            self.model.control.check(network, kind, label)
            self.networks[key] = (network, kind)
        self.used.add(key)
        network, kind = self.networks[key]
        pixels = guide_tensor(spec, network, height, width, fallback).to(self.model.device)
        with torch.no_grad():
            guide, factor = self.model.control.guide(network, kind, pixels)
        image = guide.to(self.model.device, network.dtype)
        return ControlUnit(network, kind, image, float(spec.scale), float(spec.start), float(spec.end), label, factor)
