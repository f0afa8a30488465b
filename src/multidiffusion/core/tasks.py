"""Task lists for the common case: one condition over a sliding-window layout."""

from __future__ import annotations

from .types import ViewTask
from .views import layout_views
from .weights import view_weights


def panorama_tasks(
    height: int,
    width: int,
    window: int | tuple[int, int],
    stride: int | tuple[int, int],
    *,
    weights: str = "uniform",
    circular: bool = False,
    condition: int = 0,
) -> list[ViewTask]:
    """(view, condition, weight) tasks of a panorama: :func:`layout_views` × :func:`view_weights`.

    All sizes in latent cells; see those functions for the arguments.
    """
    views = layout_views(height, width, window, stride, circular=circular)
    maps = view_weights(views, height, width, weights, circular=circular)
    return [ViewTask(view, condition, w) for view, w in zip(views, maps, strict=True)]
