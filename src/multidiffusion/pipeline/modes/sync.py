"""SyncDiffusion for the pipelines: validate the settings, choose the loss, build the view hook."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from multidiffusion.adapters import LoadedModel
from multidiffusion.adapters.metrics.lpips import LpipsUnavailable, lpips_loss
from multidiffusion.core import ClassifierFreeGuidance
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.sync import PerceptualLoss, SyncDiffusion, SyncSettings, anchor_task, centre_view
from multidiffusion.core.metrics.statistics_loss import statistics_distance
from multidiffusion.core.types import ViewTask

SYNC_LOSSES: tuple[str, ...] = ("lpips", "builtin")
CENTER = "center"


@dataclass(frozen=True)
class SyncRequest:
    """The sync keyword arguments of a pipeline call, before the layout and the loss are resolved."""

    enabled: bool = False
    weight: float = SyncSettings.weight
    decay: float = SyncSettings.decay
    stop_step: int | None = SyncSettings.stop_step
    every: int = SyncSettings.every
    anchor: int | str = CENTER
    loss: str | None = None
    chunk_size: int | None = None
    checkpointing: bool = False

    def check(self) -> SyncSettings:
        """Validated core settings (see :func:`check_sync`); also checks the chunk size."""
        if self.chunk_size is not None and (
            isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 1
        ):
            raise InvalidInputError(f"sync chunk size must be an integer ≥ 1, got {self.chunk_size!r}")
        return check_sync(self.weight, self.decay, self.stop_step, self.every, self.anchor, self.loss)

    def settings_fields(self, anchor: int | str | None = None, loss: str | None = None) -> dict[str, Any]:
        """The ``sync*`` fields of a settings dataclass, with the resolved anchor and loss where given."""
        return {
            "sync": self.enabled,
            "sync_weight": self.weight,
            "sync_decay": self.decay,
            "sync_stop_step": self.stop_step,
            "sync_every": self.every,
            "sync_anchor": self.anchor if anchor is None else anchor,
            "sync_loss": self.loss if loss is None else loss,
        }


def check_sync(
    weight: float, decay: float, stop_step: int | None, every: int, anchor: int | str, loss: str | None
) -> SyncSettings:
    """Validated sync settings (anchor ``"center"`` becomes None here); one clear line per problem."""
    if loss is not None and loss not in SYNC_LOSSES:
        raise InvalidInputError(f"unknown sync loss {loss!r}; choose one of: {', '.join(SYNC_LOSSES)}")
    if isinstance(anchor, str):
        if anchor != CENTER:
            raise InvalidInputError(f"sync anchor must be 'center' or a view index ≥ 0, got {anchor!r}")
        anchor_index = None
    else:
        anchor_index = anchor
    if isinstance(stop_step, bool) or isinstance(every, bool) or isinstance(anchor_index, bool):
        raise InvalidInputError("sync stop step, every and anchor must be integers")
    return SyncSettings(weight=weight, decay=decay, stop_step=stop_step, every=every, anchor=anchor_index)


def resolve_anchor(views: Sequence[View], anchor: int | None, height: int, width: int) -> int:
    """The anchor's index into ``views``: the centre view for None; an index must exist."""
    if anchor is None:
        return centre_view(views, height, width)
    if anchor >= len(views):
        raise InvalidInputError(
            f"sync anchor view {anchor} is out of range: this layout has {len(views)} views "
            f"(0…{len(views) - 1}), or use 'center'"
        )
    return anchor


def resolve_loss(name: str | None, device: Any) -> tuple[PerceptualLoss, str]:
    """(loss, name used). ``None`` tries LPIPS and falls back to the built-in loss with a one-line warning."""
    if name == "builtin":
        return statistics_distance, "builtin"
    try:
        return lpips_loss(device), "lpips"
    except LpipsUnavailable as exc:
        if name == "lpips":
            raise
        warnings.warn(f"{exc}; using the built-in statistics loss for sync", UserWarning, stacklevel=3)
        return statistics_distance, "builtin"


def layout_views(tasks: Sequence[ViewTask]) -> list[View]:
    """The distinct views of a task list, in first-appearance (layout) order."""
    seen: dict[View, None] = {}
    for task in tasks:
        seen.setdefault(task.view)
    return list(seen)


def sync_hook_factory(
    model: LoadedModel,
    settings: SyncSettings,
    loss: PerceptualLoss,
    tasks: Sequence[ViewTask],
    conditions: Sequence[Any],
    canvas_cells: tuple[int, int],
    anchor_view: int,
    *,
    chunk_size: int | None,
    checkpointing: bool,
) -> Callable[[], SyncDiffusion]:
    """A builder of the SyncDiffusion hook for :func:`~multidiffusion.pipeline.run.generate.generate`.

    Args:
        anchor_view: Resolved index into :func:`layout_views` of ``tasks``.
        chunk_size: Views per gradient batch (None: the engine's batch).
        checkpointing: Checkpoint the denoiser's and decoder's activations in the backward pass.
    """
    parts = model.differentiable
    if parts is None:
        raise InvalidInputError(f"the {model.family} model has no differentiable parts: SyncDiffusion cannot run")
    views = layout_views(tasks)
    anchor = anchor_task(tasks, views[anchor_view])

    def build() -> SyncDiffusion:
        parts.set_checkpointing(checkpointing)
        hook_settings = SyncSettings(
            weight=settings.weight,
            decay=settings.decay,
            stop_step=settings.stop_step,
            every=settings.every,
            anchor=anchor_view,
            chunk_size=chunk_size,
        )
        guided = ClassifierFreeGuidance(parts.denoiser)
        return SyncDiffusion(guided, parts.decode, loss, tasks, conditions, anchor, hook_settings, canvas_cells)

    return build


def prepare_sync(
    model: LoadedModel,
    request: SyncRequest,
    tasks: Sequence[ViewTask],
    conditions: Sequence[Any],
    canvas_cells: tuple[int, int],
) -> tuple[Callable[[], SyncDiffusion], dict[str, Any]]:
    """(hook builder, resolved ``sync*`` settings fields) for an enabled request on a planned run."""
    settings = request.check()
    anchor = resolve_anchor(layout_views(tasks), settings.anchor, *canvas_cells)
    loss, loss_name = resolve_loss(request.loss, model.device)
    build = sync_hook_factory(
        model,
        settings,
        loss,
        tasks,
        conditions,
        canvas_cells,
        anchor,
        chunk_size=request.chunk_size,
        checkpointing=request.checkpointing,
    )
    return build, request.settings_fields(anchor, loss_name)


def sync_steps(settings: Any) -> Callable[[int], bool]:
    """``is_synchronised(step_index)`` for a settings dataclass with the ``sync_*`` fields (for the ETA)."""
    core = check_sync(
        settings.sync_weight,
        settings.sync_decay,
        settings.sync_stop_step,
        settings.sync_every,
        settings.sync_anchor,
        settings.sync_loss,
    )
    return core.is_synchronised
