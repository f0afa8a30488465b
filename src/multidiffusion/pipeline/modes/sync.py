"""SyncDiffusion for the pipelines: resolve the anchor, choose the loss, build the view hook."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from multidiffusion.adapters import LoadedModel
from multidiffusion.adapters.metrics.lpips import LpipsUnavailable, lpips_loss
from multidiffusion.core import ClassifierFreeGuidance
from multidiffusion.core.engine.views import View
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.sync import (
    CENTER,
    PerceptualLoss,
    SyncDiffusion,
    SyncSettings,
    anchor_task,
    centre_view,
)
from multidiffusion.core.metrics.statistics_loss import statistics_distance
from multidiffusion.core.types import ViewTask


def resolve_anchor(views: Sequence[View], anchor: int | str, height: int, width: int) -> int:
    """The anchor's index into ``views``: the centre view for ``"center"``; an index must exist."""
    if anchor == CENTER:
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


def task_views(tasks: Sequence[ViewTask]) -> list[View]:
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
) -> Callable[[], SyncDiffusion]:
    """A builder of the SyncDiffusion hook for :func:`~multidiffusion.pipeline.run.generate.generate`.

    Args:
        anchor_view: Resolved index into :func:`task_views` of ``tasks``.
    """
    parts = model.differentiable
    if parts is None:
        raise InvalidInputError(f"the {model.family} model has no differentiable parts: SyncDiffusion cannot run")
    views = task_views(tasks)
    anchor = anchor_task(tasks, views[anchor_view])

    def build() -> SyncDiffusion:
        parts.set_checkpointing(settings.checkpointing)
        guided = ClassifierFreeGuidance(parts.denoiser)
        return SyncDiffusion(guided, parts.decode, loss, tasks, conditions, anchor, settings, canvas_cells)

    return build


def prepare_sync(
    model: LoadedModel,
    settings: SyncSettings,
    tasks: Sequence[ViewTask],
    conditions: Sequence[Any],
    canvas_cells: tuple[int, int],
) -> tuple[Callable[[], SyncDiffusion], SyncSettings]:
    """(hook builder, the settings as the run resolves them: the anchor's view index and the loss used)."""
    anchor = resolve_anchor(task_views(tasks), settings.anchor, *canvas_cells)
    loss, loss_name = resolve_loss(settings.loss, model.device)
    build = sync_hook_factory(model, settings, loss, tasks, conditions, canvas_cells, anchor)
    return build, dataclasses.replace(settings, anchor=anchor, loss=loss_name)
