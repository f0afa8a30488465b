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

A unit acts on step i of the n steps run when ``start ≤ i / n`` and ``(i + 1) / n ≤ end`` (diffusers'
``controlnet_keep``; for an adapter with start 0 it is diffusers' ``i < int(n · end)``); outside them the
network is not called. Units may apply to every row (the run's) or to one condition's rows (a region's,
carried by :class:`~multidiffusion.core.tags.Tagged`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from ..core.channels import crop_window
from ..core.errors import InvalidInputError
from ..core.tags import control_of, untag
from ..core.views import View
from .differentiable import SamplingDenoiser

CONTROLNET = "controlnet"
T2I_ADAPTER = "t2i-adapter"


@dataclass(frozen=True, eq=False)
class ControlUnit:
    """One control network with its image for the whole canvas (compared by identity).

    Attributes:
        network: A diffusers ``ControlNetModel`` or ``T2IAdapter``.
        kind: :data:`CONTROLNET` or :data:`T2I_ADAPTER`.
        image: (1 or N, C, H, W) in [0, 1], the canvas's size in pixels, on the network's device.
        scale: Conditioning scale (multiplies the residuals).
        start: First fraction of the steps run where it acts, in [0, 1).
        end: Last fraction, in (start, 1].
        label: For messages and metadata (the network's file or folder name).
    """

    network: torch.nn.Module
    kind: str
    image: Tensor
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    label: str = ""

    def keep(self, step_index: int, steps: int) -> bool:
        """Whether the unit acts on step ``step_index`` of the ``steps`` run (diffusers' ``controlnet_keep``)."""
        return not (step_index / steps < self.start or (step_index + 1) / steps > self.end)


class UNetFamilyDenoiser(Protocol):
    """A family denoiser whose network takes control residuals (SD 1.x/2.x and SDXL UNets)."""

    unet: torch.nn.Module

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


def _rows(value: Any, rows: Tensor, batch: int) -> Any:
    """``value`` (a tensor, dict or None) restricted to the batch rows ``rows`` (tensors with ``batch`` rows)."""
    if isinstance(value, dict):
        return {k: _rows(v, rows, batch) for k, v in value.items()}
    if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return value.index_select(0, rows.to(value.device))
    return value


def _spread(part: Tensor, rows: Tensor | None, batch: int) -> Tensor:
    """``part`` for ``rows`` placed into a zero tensor of ``batch`` rows (as is when it covers every row)."""
    if rows is None:
        return part
    full = part.new_zeros((batch, *part.shape[1:]))
    return full.index_copy(0, rows.to(part.device), part)


def _add(total: list[Tensor] | None, more: Sequence[Tensor]) -> list[Tensor]:
    return list(more) if total is None else [a + b for a, b in zip(total, more, strict=True)]


class ControlledDenoiser(SamplingDenoiser):
    """Wraps a UNet family's denoiser: every row's control residuals from the crops under its view.

    Args:
        base: The family denoiser (:class:`UNetFamilyDenoiser`).
        units: Units for every row; rows of a :class:`~multidiffusion.core.tags.Tagged` condition add its own.
        scale_factor: Pixels per latent cell (views are in cells, control images in pixels).

    Call :meth:`set_timesteps` with the steps the run takes before sampling (start/end fractions count them).
    """

    def __init__(self, base: UNetFamilyDenoiser, units: Sequence[ControlUnit], scale_factor: int) -> None:
        self.base = base
        self.units = tuple(units)
        self.scale_factor = scale_factor
        self.timesteps: list[float] = []

    def set_timesteps(self, timesteps: Sequence[Any]) -> None:
        """The timesteps the run takes, in order (an image start's are the tail of the scheduler's)."""
        self.timesteps = [float(t) for t in timesteps]

    def _step_index(self, t: Tensor) -> tuple[int, int]:
        value = float(t)
        if value not in self.timesteps:
            raise ValueError(f"timestep {value} is not one of the run's; call set_timesteps first")
        return self.timesteps.index(value), len(self.timesteps)

    def _crops(self, unit: ControlUnit, views: Sequence[View], n: int, dtype: torch.dtype) -> Tensor:
        """The unit's image under each view (in pixels), n rows per view: (len(views)·n, C, h·f, w·f)."""
        f = self.scale_factor
        parts = []
        for view in views:
            pixels = View(view.top * f, view.left * f, view.height * f, view.width * f)
            parts.append(crop_window(unit.image, pixels).expand(n, -1, -1, -1))
        return torch.cat(parts).to(dtype)

    def forward(
        self, x: Tensor, t: Tensor, conds: Sequence[Any], views: Sequence[View] | None = None, *, track_grad: bool
    ) -> Tensor:
        """x: (len(conds)·N, C, h, w) → the UNet's output with every row's control, float32."""
        inner = untag(conds)
        per_cond = [self.units + control_of(c) for c in conds]
        if not any(per_cond):
            return self.base.forward(x, t, inner, views, track_grad=track_grad)
        if views is None:
            raise ValueError("control needs the views each batch row was cropped from")
        batch, n = x.shape[0], x.shape[0] // len(conds)
        inputs = self.base.network_inputs(x, inner, views)
        step, steps = self._step_index(t)
        down: list[Tensor] | None = None
        mid: Tensor | None = None
        intra: list[Tensor] | None = None
        with torch.set_grad_enabled(track_grad and torch.is_grad_enabled()):
            for unit in dict.fromkeys(u for units in per_cond for u in units):
                if unit.scale == 0 or not unit.keep(step, steps):
                    continue
                members = [i for i, units in enumerate(per_cond) if unit in units]
                rows = None
                if len(members) < len(conds):
                    rows = torch.cat([torch.arange(i * n, (i + 1) * n) for i in members]).to(x.device)
                dtype = unit.network.dtype
                crops = self._crops(unit, [views[i] for i in members], n, dtype)
                if unit.kind == CONTROLNET:
                    part_down, part_mid = self._controlnet(unit, x, t, inputs, rows, crops)
                    down = _add(down, [_spread(d, rows, batch) for d in part_down])
                    mid = _spread(part_mid, rows, batch) if mid is None else mid + _spread(part_mid, rows, batch)
                else:  # diffusers' adapter pipelines: features · scale, added inside the down blocks
                    features = unit.network(crops)
                    intra = _add(intra, [_spread(feature * unit.scale, rows, batch) for feature in features])
        residuals: dict[str, Any] = {}
        if down is not None:
            residuals |= {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        if intra is not None:
            residuals["down_intrablock_additional_residuals"] = intra
        return self.base.forward(x, t, inner, views, track_grad=track_grad, residuals=residuals or None)

    def _controlnet(
        self, unit: ControlUnit, x: Tensor, t: Tensor, inputs: dict[str, Any], rows: Tensor | None, crops: Tensor
    ) -> tuple[Sequence[Tensor], Tensor]:
        """One ControlNet on the rows ``rows`` (None: all): its down and mid residuals at the unit's scale."""
        net = unit.network
        latent = x[:, : net.config.in_channels]  # an inpainting UNet's extra channels are not the ControlNet's
        taken = {k: v for k, v in inputs.items() if k in _accepted(net)}
        if getattr(net.config, "time_cond_proj_dim", None) is None:
            taken.pop("timestep_cond", None)
        if rows is not None:
            latent = latent.index_select(0, rows)
            taken = _rows(taken, rows, x.shape[0])
        down, mid = net(
            latent.to(net.dtype),
            t,
            controlnet_cond=crops,
            conditioning_scale=unit.scale,
            return_dict=False,
            **taken,
        )
        return down, mid


def _accepted(network: torch.nn.Module) -> set[str]:
    """The keyword inputs ``network.forward`` takes."""
    return set(inspect.signature(network.forward).parameters)


def check_fits(base: UNetFamilyDenoiser, network: torch.nn.Module, kind: str, label: str) -> None:
    """A control network made for another model family, as one line (before any step runs)."""
    unet = base.unet.config
    if kind == CONTROLNET:
        mine = (
            getattr(network.config, "cross_attention_dim", None),
            getattr(network.config, "addition_embed_type", None),
        )
        theirs = (unet.cross_attention_dim, getattr(unet, "addition_embed_type", None))
        if mine != theirs or tuple(network.config.block_out_channels) != tuple(unet.block_out_channels):
            raise InvalidInputError(
                f"ControlNet {label!r} was made for another model (text width {mine[0]}, blocks "
                f"{list(network.config.block_out_channels)}); this model has text width {theirs[0]} and blocks "
                f"{list(unet.block_out_channels)}: use a ControlNet for this family"
            )
    else:
        channels = list(getattr(network.config, "channels", []))
        if channels and channels[: len(unet.block_out_channels)] != list(unet.block_out_channels)[: len(channels)]:
            raise InvalidInputError(
                f"T2I-Adapter {label!r} was made for another model (channels {channels}); this model's blocks are "
                f"{list(unet.block_out_channels)}: use an adapter for this family"
            )


def controlled(base: UNetFamilyDenoiser, scale_factor: int) -> Any:
    """The family's control factory (``LoadedModel.control``): ``make(units, regional)`` → a
    :class:`ControlledDenoiser` with ``units`` for every row, after checking every network (``units`` and the
    ``regional`` ones that tagged conditions carry) against the UNet."""

    def make(units: Sequence[ControlUnit], regional: Sequence[ControlUnit] = ()) -> ControlledDenoiser:
        for unit in (*units, *regional):
            check_fits(base, unit.network, unit.kind, unit.label)
        return ControlledDenoiser(base, units, scale_factor)

    return make
