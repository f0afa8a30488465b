"""Named layouts: cheaper ways to lay views than the paper's small stride, each measured to keep seams away.

A layout recipe says how to lay views and weight them in proportion to the window, so one name works
for any model and canvas. Only recipes whose seam figure on the exact Gaussian-field model stays at
≥ 0.95 of the interior are offered by name (:data:`LAYOUTS`); docs/layouts.md has the measurements of
these and of the recipes that failed, and ``scripts/layout_figures.py`` regenerates them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from multidiffusion.core.engine.tasks import TaskSchedule, panorama_tasks
from multidiffusion.core.engine.views import Wrap
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.layouts.shifted import shifted_schedule
from multidiffusion.core.types import ViewTask


@dataclass(frozen=True)
class LayoutRecipe:
    """How to lay and weight views, in proportion to the window.

    Attributes:
        name: What the recipe is called.
        stride: Stride as a fraction of the window (rounded down to whole latent cells, at least 1);
            None: shifted non-overlapping tiles, a new shift each step (:mod:`~multidiffusion.core.layouts.shifted`).
        weights: Weight kind, ``uniform``, ``feathered`` or ``gaussian``.
        summary: One line for help texts.
    """

    name: str
    stride: Fraction | None
    weights: str
    summary: str = ""

    def stride_cells(self, window: int) -> int:
        """The stride in latent cells for a window of ``window`` cells (sliding recipes only)."""
        if self.stride is None:
            sliding = ", ".join(name for name, recipe in LAYOUTS.items() if recipe.stride is not None)
            raise InvalidInputError(
                f"layout {self.name!r} has no stride: it shifts non-overlapping tiles; layouts with a stride: {sliding}"
            )
        return max(1, math.floor(window * self.stride))

    def tasks(
        self,
        height: int,
        width: int,
        window: int | tuple[int, int],
        *,
        circular: bool = False,
        wrap: Wrap | None = None,
        condition: int = 0,
    ) -> list[ViewTask] | TaskSchedule:
        """The engine's tasks on a ``height`` × ``width`` latent canvas (a schedule for shifted tiles).

        Args:
            height: Canvas rows, latent cells.
            width: Canvas columns, latent cells.
            window: View size in latent cells, an int or (rows, cols).
            circular: 360° canvas (views wrap around horizontally; the same as ``wrap=(False, True)``).
            wrap: Which axes wrap, (rows, cols): ``(True, True)`` for a texture that tiles.
            condition: The condition index of every task.
        """
        if self.stride is None:
            return shifted_schedule(
                height, width, window, weights=self.weights, circular=circular, wrap=wrap, condition=condition
            )
        win = (window, window) if isinstance(window, int) else tuple(window)
        stride = (self.stride_cells(win[0]), self.stride_cells(win[1]))
        return panorama_tasks(
            height, width, win, stride, weights=self.weights, circular=circular, wrap=wrap, condition=condition
        )


# The named layouts: each holds the seam figure ≥ 0.95 of the interior on the exact model (docs/layouts.md).
LAYOUTS: dict[str, LayoutRecipe] = {
    recipe.name: recipe
    for recipe in (
        LayoutRecipe(
            "half-overlap",
            Fraction(1, 2),
            "gaussian",
            "views every half window, Gaussian-ramp weights",
        ),
        LayoutRecipe(
            "quarter-overlap",
            Fraction(3, 4),
            "gaussian",
            "views every 3/4 window, Gaussian-ramp weights",
        ),
        LayoutRecipe(
            "shifted",
            None,
            "gaussian",
            "one tiling per step, shifted every step (SpotDiffusion); Gaussian ramps where border tiles overlap",
        ),
    )
}
LAYOUT_NAMES: tuple[str, ...] = tuple(LAYOUTS)


def get_layout(name: str) -> LayoutRecipe:
    """The named layout ``name``, or :class:`InvalidInputError` listing the names."""
    if name not in LAYOUTS:
        raise InvalidInputError(f"unknown layout {name!r}; choose one of: {', '.join(LAYOUT_NAMES)}")
    return LAYOUTS[name]


def layout_tasks(
    name: str,
    height: int,
    width: int,
    window: int | tuple[int, int],
    *,
    circular: bool = False,
    wrap: Wrap | None = None,
    condition: int = 0,
) -> list[ViewTask] | TaskSchedule:
    """The tasks of the named layout ``name`` (see :meth:`LayoutRecipe.tasks`); sizes in latent cells."""
    return get_layout(name).tasks(height, width, window, circular=circular, wrap=wrap, condition=condition)


def evaluations_per_step(tasks: Sequence[ViewTask] | TaskSchedule, num_steps: int = 50) -> float:
    """Mean number of tasks (denoiser evaluations per canvas and guidance half) per step over ``num_steps``."""
    if not isinstance(tasks, TaskSchedule):
        return float(len(tasks))
    return sum(len(tasks.tasks_at(k)) for k in range(num_steps)) / num_steps
