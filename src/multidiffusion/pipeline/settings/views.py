"""How a run lays its views on the canvas: one settings object for the API, the command line and the recipe.

The command line spells each field as the recipe does, with dashes: ``window`` is ``--window`` and the recipe's
``window``; ``layout`` (a named view layout, docs/layouts.md) is ``--layout``. Sizes are pixels here; the core
works in latent cells (docs/design.md §1).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

from multidiffusion.core.engine.views import Wrap, parse_tile, tile_name
from multidiffusion.core.engine.weights import WEIGHT_KINDS
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.layouts.named import get_layout
from multidiffusion.pipeline.settings.checks import check_pixels, check_stride

AUTOMATIC_WEIGHTS = "gaussian"
"""The view weights when none are given, without SyncDiffusion: Gaussian ramps keep the seams and more of the variance
than the paper's uniform weights on every exact oracle (docs/fusion.md, "Default weights")."""
SYNC_WEIGHTS = "uniform"
"""The view weights when none are given with SyncDiffusion: its paper's, and on the toy montage test Gaussian ramps left
9 % of crops off the anchor's colour where uniform weights left none (docs/fusion.md)."""


@dataclass(frozen=True)
class ViewSettings:
    """The views F_i of Eq. 3: their size, spacing, weights W_i, a named layout, and wrap-around.

    Every field is checked here, once, when the object is made; :meth:`resolved` fills the model's defaults.

    Attributes:
        window: View size, px; None: the model's native size (recorded resolved). Larger than native is allowed.
        stride: Step between views, px, 0 < stride ≤ window; None: the model's default, else window / 8 (64 px for
            SD; recorded resolved).
        weights: ``gaussian``, ``feathered`` or ``uniform`` (the paper's, and diffusers' panorama pipeline's); None:
            ``gaussian``, or ``uniform`` with sync (docs/fusion.md, "Default weights"; recorded resolved).
        layout: A named cheaper layout, ``half-overlap``, ``quarter-overlap`` or ``shifted`` (docs/layouts.md); it sets
            the stride and weights itself (shifted tiles record the window as their stride), so give neither with it.
        tile: ``x``, ``y`` or ``xy`` wraps the views (and the decode) around those axes, so the image tiles without a
            seam (``x`` is a 360° panorama); None: no wrap.
    """

    window: int | None = None
    stride: int | None = None
    weights: str | None = None
    layout: str | None = None
    tile: str | None = None

    def __post_init__(self) -> None:
        if self.window is not None:
            check_pixels("window", self.window, 1)
        if self.stride is not None:
            check_stride(self.stride, self.window if self.window is not None else self.stride)
        if self.weights is not None and self.weights not in WEIGHT_KINDS:
            raise InvalidInputError(f"unknown weights {self.weights!r}; choose one of: {', '.join(WEIGHT_KINDS)}")
        if self.layout is not None:
            get_layout(self.layout)
            if self.stride is not None or self.weights is not None:
                raise InvalidInputError(
                    f"layout {self.layout!r} sets the stride and weights itself; omit stride and weights"
                )
        parse_tile(self.tile)

    @property
    def wrap(self) -> Wrap:
        """(rows, columns): which axes the views wrap around."""
        return parse_tile(self.tile)

    def check_sync(self) -> None:
        """SyncDiffusion needs one fixed layout of same-size views; a named layout may change every step."""
        if self.layout is not None:
            raise InvalidInputError(
                f"SyncDiffusion runs on a fixed sliding-window layout; omit layout {self.layout!r} (or sync)"
            )

    def resolved(
        self,
        *,
        granularity: int,
        native_px: int,
        default_stride_px: int | None,
        canvas_px: tuple[int, int] | None = None,
        sync: bool = False,
    ) -> ViewSettings:
        """These settings with the model's defaults filled in and checked against its cell size (px per latent cell).

        A sliding window whose stride equals the window on an axis the canvas spans with several views warns: the
        views then do not overlap and cannot blend, so every view border shows (MultiDiffusion needs overlap, §3.2).

        Args:
            granularity: The model's latent cell, px: window and stride must be multiples of it.
            native_px: The model's native window, px (the default window).
            default_stride_px: The model's default stride, px; None: window / 8 rounded down to the cell.
            canvas_px: (height, width) of the canvas, for the no-overlap warning; None skips it.
            sync: Whether the run synchronises its views: None ``weights`` then resolve to :data:`SYNC_WEIGHTS`.
        """
        if sync:
            self.check_sync()
        window = native_px if self.window is None else self.window
        check_pixels("window", window, granularity)
        if self.stride is None:
            stride = default_stride_px if default_stride_px is not None else (window // 8) // granularity * granularity
            stride = max(granularity, min(stride, window))
        else:
            stride = self.stride
        check_stride(stride, window)
        check_pixels("stride", stride, granularity)
        if self.layout is not None:
            recipe = get_layout(self.layout)
            cells = window // granularity
            stride = recipe.stride_cells(cells) * granularity if recipe.stride is not None else window
            resolved = dataclasses.replace(self, window=window)
            # What the layout set is recorded with it; the constructor's rule is for what users give, so it is
            # bypassed here as frozen dataclasses allow in their own code.
            object.__setattr__(resolved, "stride", stride)
            object.__setattr__(resolved, "weights", recipe.weights)
            return resolved
        if canvas_px is not None and stride == window and any(size > window for size in canvas_px):
            suggestion = max(granularity, window // 4 // granularity * granularity)
            warnings.warn(
                f"the stride equals the window ({window} px): views will not overlap or blend, so their borders "
                f"will show as a grid; use a smaller stride (e.g. {suggestion} px)",
                UserWarning,
                stacklevel=4,
            )
        weights = self.weights if self.weights is not None else (SYNC_WEIGHTS if sync else AUTOMATIC_WEIGHTS)
        return dataclasses.replace(self, window=window, stride=stride, weights=weights)


def with_x_wrapped(tile: str | None, *, cli: bool = False) -> str:
    """``tile`` with the columns wrapped too: what the older ``circular=True`` (``--circular``) asks for; refused with
    a tile that wraps only the rows (``y``), which it would contradict."""
    rows, cols = parse_tile(tile)
    if tile is not None and not cols:
        if cli:
            raise InvalidInputError(f"--circular wraps x but --tile {tile} does not; use --tile xy or drop --circular")
        raise InvalidInputError(f"circular=True wraps x but tile={tile!r} does not; use tile='xy' or drop circular")
    return str(tile_name((rows, True)))
