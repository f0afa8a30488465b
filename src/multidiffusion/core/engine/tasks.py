"""Task lists for the common case (one condition over a sliding-window layout), and layouts that change
from step to step (:class:`TaskSchedule`)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from multidiffusion.core.engine.views import Wrap, layout_views
from multidiffusion.core.engine.weights import view_weights
from multidiffusion.core.types import ViewTask


def panorama_tasks(
    height: int,
    width: int,
    window: int | tuple[int, int],
    stride: int | tuple[int, int],
    *,
    weights: str = "uniform",
    circular: bool = False,
    wrap: Wrap | None = None,
    condition: int = 0,
) -> list[ViewTask]:
    """(view, condition, weight) tasks of a panorama: :func:`layout_views` × :func:`view_weights`.

    All sizes in latent cells; see those functions for the arguments (``circular`` wraps the columns,
    ``wrap`` = (rows, cols) either or both axes).
    """
    views = layout_views(height, width, window, stride, circular=circular, wrap=wrap)
    maps = view_weights(views, height, width, weights, circular=circular, wrap=wrap)
    return [ViewTask(view, condition, w) for view, w in zip(views, maps, strict=True)]


@dataclass(frozen=True)
class TaskSchedule:
    """Tasks that change from step to step: step k fuses ``build(key(k))`` (e.g. shifted windows).

    :func:`~multidiffusion.core.engine.sampling.sample` takes one in place of a task list. Steps whose keys are
    equal share one layout, so the engine builds one fusion plan per distinct key, not per step.

    Attributes:
        key: 0-based step index → a hashable name of that step's layout (e.g. its shift in latent cells).
        build: A layout key → its task list; every canvas cell needs positive total weight.
    """

    key: Callable[[int], Hashable]
    build: Callable[[Hashable], Sequence[ViewTask]]

    @classmethod
    def fixed(cls, tasks: Sequence[ViewTask]) -> TaskSchedule:
        """The same tasks at every step (what a plain task list means)."""
        return cls(key=lambda _: None, build=lambda _: tasks)

    def tasks_at(self, step_index: int) -> Sequence[ViewTask]:
        """The task list of step ``step_index``."""
        return self.build(self.key(step_index))
