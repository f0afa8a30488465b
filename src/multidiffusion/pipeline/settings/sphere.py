"""The sphere's settings (docs/sphere.md): one frozen object, checked once, and how a recipe records it.

A sphere run is a panorama whose canvas is the whole sphere, H × 2H px equirectangular, seen through perspective views
of the model's native window. With the window fixed, the canvas height and the views' field of view decide together
how many canvas cells a view pixel spans, and the noise a view sees stays white only near one density
(:mod:`~multidiffusion.core.sphere.density`): so the fov is chosen from the height unless it is given, and a given one
must agree with the height.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from multidiffusion.core.engine.weights import WEIGHT_KINDS
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.sphere.density import DENSITY_TOLERANCE, density_error, fov_for, height_for
from multidiffusion.pipeline.customise.recorded_files import FileFolders
from multidiffusion.pipeline.settings.recipe import PanoramaSettings
from multidiffusion.pipeline.settings.reproduce import call_arguments, checked_recipe

FOV_RANGE: tuple[float, float] = (30.0, 120.0)
"""Fields of view a sphere accepts, degrees: narrower needs hundreds of views, wider stretches a view's edges to
more than twice its centre's scale."""


@dataclass(frozen=True)
class SphereSettings:
    """How the sphere is seen: the views' field of view, their overlap, weights and the poles' roll.

    Attributes:
        fov: Field of view of each perspective view, degrees, in :data:`FOV_RANGE`; None: chosen from the canvas height
            (recorded resolved).
        overlap: Fraction of a view's field of view its neighbours share, in [0, 0.9].
        weights: Per-pixel view weights, ``gaussian``, ``feathered`` or ``uniform``.
        pole_roll: Roll of the two pole views about their axes, degrees (docs/sphere.md, "The poles").
    """

    fov: float | None = None
    overlap: float = 0.5
    weights: str = "gaussian"
    pole_roll: float = 0.0

    def __post_init__(self) -> None:
        low, high = FOV_RANGE
        if self.fov is not None and not (_real(self.fov) and low <= self.fov <= high):
            raise InvalidInputError(f"the sphere's fov must be {low:g}…{high:g} degrees, got {self.fov!r}")
        if not (_real(self.overlap) and 0.0 <= self.overlap <= 0.9):
            raise InvalidInputError(f"the sphere's view overlap must be in 0…0.9, got {self.overlap!r}")
        if self.weights not in WEIGHT_KINDS:
            raise InvalidInputError(f"unknown weights {self.weights!r}; choose one of: {', '.join(WEIGHT_KINDS)}")
        if not _real(self.pole_roll):
            raise InvalidInputError(
                f"the sphere's pole roll must be a finite number of degrees, got {self.pole_roll!r}"
            )

    def resolved(self, height_px: int, window_px: int, granularity: int) -> SphereSettings:
        """These settings with the fov filled in for a canvas ``height_px`` high and views ``window_px`` wide.

        Raises:
            InvalidInputError: a height that needs a fov outside :data:`FOV_RANGE`, or a given fov too far from the
                one the height asks for (the line says which fov fits this height, and which height this fov).
        """
        h, w = height_px // granularity, window_px // granularity
        wanted = fov_for(h, w, self.weights)
        low, high = FOV_RANGE

        def height_px_for(fov: float) -> int:
            return height_for(fov, w, self.weights) * granularity

        if self.fov is None:
            if not low <= wanted <= high:
                raise InvalidInputError(
                    f"a sphere {height_px} px high needs views of {wanted:.0f}°, outside {low:g}…{high:g}°; "
                    f"choose a height of {height_px_for(high)}…{height_px_for(low)} px"
                )
            return SphereSettings(round(wanted, 4), self.overlap, self.weights, self.pole_roll)
        error = density_error(h, w, self.fov, self.weights)
        if abs(error) > DENSITY_TOLERANCE:
            raise InvalidInputError(
                f"views of {self.fov:g}° on a sphere {height_px} px high would see "
                f"{'duplicated' if error < 0 else 'thinned'} noise; for this height use fov {wanted:.1f}° (or give "
                f"none), or for {self.fov:g}° a height of {height_px_for(self.fov)} px"
            )
        return self


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


SPHERE_RECORDED: tuple[str, ...] = ("fov", "overlap", "weights", "pole_roll")
"""The :class:`SphereSettings` fields a recipe records, as ``sphere_<field>``."""


@dataclass(frozen=True)
class SpherePanoramaSettings(PanoramaSettings):
    """A sphere run's settings: a panorama's (width = 2 × height, columns wrapped) and its :class:`SphereSettings`.

    Attributes:
        sphere: The resolved sphere settings (fov filled in).
    """

    sphere: SphereSettings = field(default_factory=SphereSettings)

    def to_dict(self) -> dict[str, Any]:
        """The flat recipe: the panorama's keys, and ``sphere_<field>`` for each of :data:`SPHERE_RECORDED`."""
        record = {k: v for k, v in super().to_dict().items() if k != "sphere"}
        record.update({f"sphere_{k}": getattr(self.sphere, k) for k in SPHERE_RECORDED})
        return record

    def a1111_extra(self) -> list[str]:
        """The A1111 ``parameters`` field of a sphere run."""
        s = self.sphere
        return [f"Sphere: fov {s.fov:g}, overlap {s.overlap:g}, weights {s.weights}, pole roll {s.pole_roll:g}"]


def recorded_sphere(recipe: Mapping[str, Any]) -> SphereSettings:
    """The :class:`SphereSettings` a sphere recipe records (its ``sphere_*`` keys)."""
    return SphereSettings(**{k: recipe[f"sphere_{k}"] for k in SPHERE_RECORDED if f"sphere_{k}" in recipe})


def sphere_arguments(recipe: Mapping[str, Any], files: FileFolders | None = None) -> dict[str, Any]:
    """The keyword arguments of :meth:`~multidiffusion.pipeline.MultiDiffusionPipeline.sphere` that made a sphere
    recipe's image, generator included: the panorama's (read by
    :func:`~multidiffusion.pipeline.settings.reproduce.call_arguments`, with ``files`` as there) with the sphere's own.

    Raises:
        InvalidInputError: not a sphere recipe, or one that breaks its schema (one line).
    """
    if files is None:
        files = getattr(recipe, "files", None)
    r = checked_recipe(recipe)
    if r["mode"] != "sphere":
        raise InvalidInputError(f"a {r['mode']} recipe is not a sphere's; rerun it with reproduce")
    flat = {k: v for k, v in r.items() if not k.startswith("sphere_")}
    _, kwargs = call_arguments({**flat, "mode": "panorama"}, files)
    for name in ("width", "views", "sync"):
        kwargs.pop(name, None)
    return {**kwargs, "sphere": recorded_sphere(r)}
