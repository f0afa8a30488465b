"""ControlNet and T2I-Adapter as a wrapped denoiser: each view reads its crop of one control image.

The control image covers the whole canvas in pixels and is prepared once per run; every batch row gets the
crop under its view (``views``, wrap-around included), so a guide drawn at a canvas position steers exactly
the views that contain it, where it lies (docs/control.md). Peers feed the whole guide image to every tile, or
re-run the preprocessing per tile; here nothing is recomputed per view but the network itself.

Per row, as diffusers' ``StableDiffusionControlNetPipeline`` (and its SDXL twin) does for one image:

* ControlNet (Zhang et al. 2023): ``down, mid = controlnet(x_t, t, text, crop, scale)``, the same text and
  micro-conditioning as the UNet's row; several ControlNets sum their residuals (diffusers'
  ``MultiControlNetModel``); the UNet adds them to its skip connections.
* T2I-Adapter (Mou et al. 2023): ``features = adapter(crop) · scale``, added inside the UNet's down blocks.
  It depends on the crop alone, yet runs once per view row per step: about 77 M parameters against the SD
  UNet's 860 M, at most a few per cent of a step (docs/control.md).

SD 3 and Flux ControlNets (InstantX's and diffusers' ``SD3ControlNetModel`` / ``FluxControlNetModel``) read the
guide encoded by the VAE, packed like the canvas, so their crops are taken on the latent grid; their residuals go
into the transformer's blocks. Each family says how (:class:`FamilyControl`; the SD 3 and Flux parts live in
their adapter modules).

A unit acts on step i of the n steps run when ``start ≤ i / n`` and ``(i + 1) / n ≤ end`` (diffusers'
``controlnet_keep``; for an adapter with start 0 it is diffusers' ``i < int(n · end)``); outside them the
network is not called. Units may apply to every row (the run's) or to one condition's rows (a region's,
carried by :class:`~multidiffusion.core.features.tags.Tagged`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from multidiffusion.adapters.model.differentiable import SamplingDenoiser
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.channels import crop_window
from multidiffusion.core.features.tags import control_of, untag


@dataclass(frozen=True)
class ControlKind:
    """One kind of control network; a family declares the kinds it takes (``Family.control_kinds``).

    Attributes:
        name: What :attr:`ControlUnit.kind` holds (``"controlnet"``).
        class_name: The diffusers class that loads it, as its ``config.json`` names it (``_class_name``).
        title: For people: what it is and for which models (error messages).
    """

    name: str
    class_name: str
    title: str


CONTROLNET = "controlnet"
T2I_ADAPTER = "t2i-adapter"
UNET_KINDS: tuple[ControlKind, ...] = (
    ControlKind(CONTROLNET, "ControlNetModel", "ControlNet for SD 1.x/2.x or SDXL"),
    ControlKind(T2I_ADAPTER, "T2IAdapter", "T2I-Adapter for SD 1.x/2.x or SDXL"),
)
"""The kinds :class:`UNetControl` runs (the SD 1.x/2.x and SDXL families share them)."""


def kind_title(name: str) -> str:
    """The title of the kind called ``name``, among those of every registered family (the name itself if none)."""
    from multidiffusion.adapters.families.registry import control_kinds  # the registry imports the families

    return next((kind.title for kind in control_kinds() if kind.name == name), name)


@dataclass(frozen=True, eq=False)
class ControlUnit:
    """One control network with its guide for the whole canvas (compared by identity).

    Attributes:
        network: A diffusers ``ControlNetModel``, ``T2IAdapter``, ``SD3ControlNetModel`` or ``FluxControlNetModel``.
        kind: The :attr:`ControlKind.name` of its kind.
        image: The guide on the canvas: (1 or N, C, H·factor, W·factor) for a canvas of H × W cells (pixels in [0, 1]
            for UNet families; encoded, packed latents for SD 3 and Flux), on the network's device.
        scale: Conditioning scale (multiplies the residuals).
        start: First fraction of the steps run where it acts, in [0, 1).
        end: Last fraction, in (start, 1].
        label: For messages and metadata (the network's file or folder name).
        factor: Guide-grid cells per canvas cell (8 for a pixel guide of SD, 1 for packed latents).
    """

    network: torch.nn.Module
    kind: str
    image: Tensor
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    label: str = ""
    factor: int = 8

    def keep(self, step_index: int, steps: int) -> bool:
        """Whether the unit acts on step ``step_index`` of the ``steps`` run (diffusers' ``controlnet_keep``)."""
        return not (step_index / steps < self.start or (step_index + 1) / steps > self.end)


class ResidualDenoiser(Protocol):
    """A family denoiser whose network takes control residuals."""

    def network_inputs(
        self, x: Tensor, conds: Sequence[Any], views: Sequence[View] | None = None
    ) -> dict[str, Any]: ...

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        conds: Sequence[Any],
        views: Sequence[View] | None = None,
        *,
        track_grad: bool,
        residuals: dict[str, Any] | None = None,
    ) -> Tensor: ...


class FamilyControl:
    """What a family does with control networks; ``LoadedModel.control`` is one of these.

    Args:
        base: The family's denoiser (:class:`ResidualDenoiser`).
        kinds: The network kinds the family takes (its ``Family.control_kinds``).
    """

    def __init__(self, base: ResidualDenoiser, kinds: tuple[ControlKind, ...]) -> None:
        self.base = base
        self.kinds = kinds

    def check(self, network: torch.nn.Module, kind: str, label: str) -> None:
        """A network made for another family, as one line (before any step runs)."""
        if kind not in (k.name for k in self.kinds):
            taken = " or ".join(k.title for k in self.kinds)
            raise InvalidInputError(f"{label!r} is a {kind_title(kind)}; this model takes a {taken}")

    def guide(self, network: torch.nn.Module, kind: str, pixels: Tensor) -> tuple[Tensor, int]:
        """(guide on the canvas, guide cells per canvas cell) from the canvas-sized image (1, C, H, W) in [0, 1]."""
        raise NotImplementedError

    def residuals(
        self, unit: ControlUnit, x: Tensor, t: Tensor, inputs: dict[str, Any], crops: Tensor, views: Sequence[View]
    ) -> dict:
        """One unit's residuals for the rows ``x`` (their network inputs ``inputs``, guide ``crops``; ``views[i]`` is
        the view of rows i·n … i·n + n − 1), at its scale: keyword arguments of the family's network, each a tensor
        or a list of tensors with one row per x row (other values, such as flags, are passed as they are)."""
        raise NotImplementedError

    def __call__(self, units: Sequence[ControlUnit], regional: Sequence[ControlUnit] = ()) -> ControlledDenoiser:
        """The denoiser with ``units`` for every row, after checking every network (``regional`` too)."""
        for unit in (*units, *regional):
            self.check(unit.network, unit.kind, unit.label)
        return ControlledDenoiser(self, units)


def take_rows(value: Any, rows: Tensor, batch: int) -> Any:
    """``value`` (a tensor, a list or dict of them, anything else) restricted to the batch rows ``rows``: tensors
    with ``batch`` rows are sliced, everything else is kept."""
    if isinstance(value, dict):
        return {k: take_rows(v, rows, batch) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [take_rows(v, rows, batch) for v in value]
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return value.index_select(0, rows.to(value.device))
    return value


def _spread(part: Any, rows: Tensor | None, batch: int) -> Any:
    """``part`` (a tensor or a list of them) for ``rows`` placed into zeros of ``batch`` rows (as is for all rows)."""
    if rows is None or not isinstance(part, (Tensor, list, tuple)):
        return part
    if isinstance(part, (list, tuple)):
        return [_spread(p, rows, batch) for p in part]
    full = part.new_zeros((batch, *part.shape[1:]))
    return full.index_copy(0, rows.to(part.device), part)


def _add(total: Any, more: Any) -> Any:
    """Residuals summed (several networks), tensor by tensor (diffusers' multi-ControlNet)."""
    if total is None or not isinstance(more, (Tensor, list, tuple)):
        return list(more) if isinstance(more, (list, tuple)) else more
    if isinstance(more, (list, tuple)):
        return [a + b for a, b in zip(total, more, strict=True)]
    return total + more


class ControlledDenoiser(SamplingDenoiser):
    """Wraps a family's denoiser: every row's control residuals from the guide crops under its view.

    Args:
        family: The family's control (:class:`FamilyControl`), holding its denoiser.
        units: Units for every row; rows of a :class:`~multidiffusion.core.features.tags.Tagged` condition add its own.

    Call :meth:`set_timesteps` with the steps the run takes before sampling (start/end fractions count them).
    """

    def __init__(self, family: FamilyControl, units: Sequence[ControlUnit]) -> None:
        self.family = family
        self.base = family.base
        self.units = tuple(units)
        self.timesteps: list[float] = []

    def set_timesteps(self, timesteps: Sequence[Any]) -> None:
        """The timesteps the run takes, in order (an image start's are the tail of the scheduler's)."""
        self.timesteps = [float(t) for t in timesteps]

    def _step_index(self, t: Tensor) -> tuple[int, int]:
        value = float(t)
        if value not in self.timesteps:
            raise ValueError(f"timestep {value} is not one of the run's; call set_timesteps first")
        return self.timesteps.index(value), len(self.timesteps)

    @staticmethod
    def _crops(unit: ControlUnit, views: Sequence[View], n: int, dtype: torch.dtype) -> Tensor:
        """The unit's guide under each view, n rows per view: (len(views)·n, C, h·factor, w·factor)."""
        f = unit.factor
        parts = []
        for view in views:
            grid = View(view.top * f, view.left * f, view.height * f, view.width * f)
            parts.append(crop_window(unit.image, grid).expand(n, -1, -1, -1))
        return torch.cat(parts).to(dtype)

    def forward(
        self, x: Tensor, t: Tensor, conds: Sequence[Any], views: Sequence[View] | None = None, *, track_grad: bool
    ) -> Tensor:
        """x: (len(conds)·N, C, h, w) → the family network's output with every row's control, float32."""
        inner = untag(conds)
        per_cond = [self.units + control_of(c) for c in conds]
        if not any(per_cond):
            return self.base.forward(x, t, inner, views, track_grad=track_grad)
        if views is None:
            raise ValueError("control needs the views each batch row was cropped from")
        batch, n = x.shape[0], x.shape[0] // len(conds)
        inputs = self.base.network_inputs(x, inner, views)
        step, steps = self._step_index(t)
        residuals: dict[str, Any] = {}
        with torch.set_grad_enabled(track_grad and torch.is_grad_enabled()):
            for unit in dict.fromkeys(u for units in per_cond for u in units):
                if unit.scale == 0 or not unit.keep(step, steps):
                    continue
                members = [i for i, units in enumerate(per_cond) if unit in units]
                rows, x_rows, taken = None, x, inputs
                if len(members) < len(conds):
                    rows = torch.cat([torch.arange(i * n, (i + 1) * n) for i in members]).to(x.device)
                    x_rows, taken = x.index_select(0, rows), take_rows(inputs, rows, batch)
                seen = [views[i] for i in members]
                crops = self._crops(unit, seen, n, unit.network.dtype)
                for key, value in self.family.residuals(unit, x_rows, t, taken, crops, seen).items():
                    residuals[key] = _add(residuals.get(key), _spread(value, rows, batch))
        return self.base.forward(x, t, inner, views, track_grad=track_grad, residuals=residuals or None)


class UNetControl(FamilyControl):
    """ControlNets and T2I-Adapters on an SD 1.x/2.x or SDXL UNet: pixel guides, cropped at 8 px per cell."""

    def __init__(self, base: ResidualDenoiser, scale_factor: int) -> None:
        super().__init__(base, UNET_KINDS)
        self.scale_factor = scale_factor

    def check(self, network: torch.nn.Module, kind: str, label: str) -> None:
        super().check(network, kind, label)
        unet = self.base.unet.config  # type: ignore[attr-defined]
        config = network.config
        if kind == CONTROLNET:
            mine = (getattr(config, "cross_attention_dim", None), getattr(config, "addition_embed_type", None))
            theirs = (unet.cross_attention_dim, getattr(unet, "addition_embed_type", None))
            if mine != theirs or tuple(config.block_out_channels) != tuple(unet.block_out_channels):
                raise InvalidInputError(
                    f"ControlNet {label!r} was made for another model (text width {mine[0]}, blocks "
                    f"{list(config.block_out_channels)}); this model has text width {theirs[0]} and blocks "
                    f"{list(unet.block_out_channels)}: use a ControlNet for this family"
                )
        else:
            channels = list(getattr(config, "channels", []))
            if channels and channels[: len(unet.block_out_channels)] != list(unet.block_out_channels)[: len(channels)]:
                raise InvalidInputError(
                    f"T2I-Adapter {label!r} was made for another model (channels {channels}); this model's blocks "
                    f"are {list(unet.block_out_channels)}: use an adapter for this family"
                )

    def guide(self, network: torch.nn.Module, kind: str, pixels: Tensor) -> tuple[Tensor, int]:
        """The image itself in [0, 1], as diffusers' control image processor leaves it (no normalisation)."""
        return pixels, self.scale_factor

    def residuals(
        self, unit: ControlUnit, x: Tensor, t: Tensor, inputs: dict[str, Any], crops: Tensor, views: Sequence[View]
    ) -> dict:
        net = unit.network
        if unit.kind == T2I_ADAPTER:  # diffusers' adapter pipelines: features · scale, added inside the down blocks
            return {"down_intrablock_additional_residuals": [f * unit.scale for f in net(crops)]}
        latent = x[:, : net.config.in_channels]  # an inpainting UNet's extra channels are not the ControlNet's
        taken = {k: v for k, v in inputs.items() if k in _accepted(net)}
        if getattr(net.config, "time_cond_proj_dim", None) is None:
            taken.pop("timestep_cond", None)
        down, mid = net(
            latent.to(net.dtype), t, controlnet_cond=crops, conditioning_scale=unit.scale, return_dict=False, **taken
        )
        return {"down_block_additional_residuals": list(down), "mid_block_additional_residual": mid}


def check_transformer_control(network: torch.nn.Module, transformer: torch.nn.Module, label: str) -> None:
    """An SD 3 or Flux ControlNet whose latent or text widths are not the transformer's, as one line."""
    mine, theirs = network.config, transformer.config
    for key in ("in_channels", "patch_size", "joint_attention_dim", "pooled_projection_dim"):
        a, b = getattr(mine, key, None), getattr(theirs, key, None)
        if a is not None and b is not None and a != b:
            raise InvalidInputError(
                f"ControlNet {label!r} was made for another model ({key} {a}; this model's is {b}): use a ControlNet "
                "for this model"
            )


def _accepted(network: torch.nn.Module) -> set[str]:
    """The keyword inputs ``network.forward`` takes."""
    return set(inspect.signature(network.forward).parameters)
