"""``multidiffusion panorama --sphere``: the whole sphere, an equirectangular PNG twice as wide as high
(docs/sphere.md), with its GPano tags, and with ``--cubemap DIR`` the six faces of a skybox."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli import launch

NOT_ON_THE_SPHERE = {
    "window": "--window",
    "stride": "--stride",
    "layout": "--layout",
    "tile": "--tile",
    "circular": "--circular",
    "sync": "--sync",
    "global_view": "--global-view",
    "checkpoint": "--checkpoint",
}
"""Options a sphere run does not take (its views are the sphere's own), by their argparse names."""


def add_sphere_options(p: argparse.ArgumentParser) -> None:
    """--sphere and what it takes: the views' fov, overlap and pole roll, and the cube faces to write."""
    from multidiffusion.pipeline.settings.sphere import FOV_RANGE, SphereSettings

    defaults = SphereSettings()
    group = p.add_argument_group("the whole sphere (docs/sphere.md)")
    group.add_argument(
        "--sphere",
        action="store_true",
        help="draw the whole sphere, 360° × 180°: an equirectangular PNG --height high and twice as wide, tagged as a "
        "photo sphere; --weights sets the views' weights",
    )
    group.add_argument(
        "--fov",
        type=float,
        default=None,
        metavar="DEG",
        help=f"each view's field of view, {FOV_RANGE[0]:g}…{FOV_RANGE[1]:g}° (default: chosen from --height; a given "
        "one must fit it, and the error says which fits)",
    )
    group.add_argument(
        "--sphere-overlap",
        type=float,
        default=defaults.overlap,
        metavar="F",
        help="fraction of a view's field of view its neighbours share, 0…0.9 (default: %(default)s)",
    )
    group.add_argument(
        "--sphere-pole-roll",
        type=float,
        default=defaults.pole_roll,
        metavar="DEG",
        help="roll of the two pole views about their axes (default: %(default)s)",
    )
    group.add_argument(
        "--cubemap",
        default=None,
        metavar="DIR",
        help="also write the six cube faces (front, right, back, left, up, down .png, as Unity's 6-sided skybox "
        "names them) into DIR",
    )


def refuse_flat_options(args: argparse.Namespace) -> None:
    """One line for the first option given that only a flat canvas takes (:data:`NOT_ON_THE_SPHERE`)."""
    for name, option in NOT_ON_THE_SPHERE.items():
        if getattr(args, name, None) not in (None, False):
            raise InvalidInputError(f"{option} does not apply to --sphere: the sphere lays its own views")


def _sphere_call(args: argparse.Namespace, pipe: Any, height: int, settings: Any, image: Any = None) -> Any:
    """``make(generator)`` for :func:`launch.each_image`: the pipeline's sphere call with the command's options."""

    def make(generator: Any) -> Any:
        return pipe.sphere(
            args.prompt,
            args.negative_prompt,
            height=height,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            generator=generator,
            sphere=settings,
            guidance_rescale=getattr(args, "guidance_rescale", 0.0),
            scheduler=args.scheduler,
            image=image,
            **launch.runtime_kwargs(args),
        )

    return make


def sphere_settings(args: argparse.Namespace) -> Any:
    """The run's :class:`~multidiffusion.pipeline.settings.sphere.SphereSettings`, checked now."""
    from multidiffusion.pipeline.settings.sphere import SphereSettings

    weights = args.weights if args.weights is not None else SphereSettings().weights
    return SphereSettings(args.fov, args.sphere_overlap, weights, args.sphere_pole_roll)


def run_sphere(args: argparse.Namespace) -> int:
    """``multidiffusion panorama --sphere``: check every option before the model loads (the fov against the height on
    the geometry read from the model's configs), load, then make and write each sphere (and its cube faces)."""
    from multidiffusion.pipeline.files.cubemap import write_cubemap
    from multidiffusion.pipeline.settings.checks import check_canvas_pixels

    refuse_flat_options(args)
    height = args.height
    if args.width is not None and args.width != 2 * height:
        raise InvalidInputError(f"a sphere is twice as wide as high: leave out --width, or give {2 * height}")
    check_canvas_pixels(height, 2 * height)
    settings = sphere_settings(args)
    if args.cubemap is not None and Path(args.cubemap).exists() and not Path(args.cubemap).is_dir():
        raise InvalidInputError(f"--cubemap {args.cubemap!r} is a file; give a folder for the six faces")
    outs = launch.check_common(args)
    if args.cubemap is not None and len(outs) > 1:
        raise InvalidInputError("--cubemap writes one set of faces: give --num-images 1")
    launch.check_geometry_before_loading(
        args, lambda geometry: settings.resolved(height, geometry.native_px, geometry.granularity_px)
    )
    launch.check_memory_before_loading(args, height, 2 * height)
    pipe = launch.load_pipeline(args, args.model, args.dtype, args.config)
    sphere = _sphere_call(args, pipe, height, settings)

    def make(generator: Any) -> Any:
        result = sphere(generator)
        if args.cubemap is not None and result.images is not None:
            faces = write_cubemap(_rgb(result.images[0]), args.cubemap)
            launch.logger(args)(f"wrote the cube faces {', '.join(f.name for f in faces)} into {args.cubemap}")
        return result

    launch.each_image(args, outs, launch.seeds(args.seed, len(outs)), make, f"{2 * height}×{height}")
    return 0


def _rgb(image: Any) -> Any:
    import numpy as np

    return np.asarray(image.convert("RGB"))


def add_photo_sphere_options(p: argparse.ArgumentParser) -> None:
    """``outpaint --sphere``: the photo's field of view and where it looks, and the sphere's height."""
    group = p.add_argument_group("photo to 360° (docs/sphere.md)")
    group.add_argument(
        "--sphere",
        action="store_true",
        help="place IMAGE on the whole sphere and draw the rest: an equirectangular PNG --height high and twice as "
        "wide (the margins are not used)",
    )
    group.add_argument(
        "--fov", type=float, default=None, metavar="DEG", help="with --sphere: the photo's horizontal field of view"
    )
    group.add_argument("--yaw", type=float, default=0.0, metavar="DEG", help="longitude the photo's centre looks at")
    group.add_argument("--pitch", type=float, default=0.0, metavar="DEG", help="latitude the photo's centre looks at")
    group.add_argument("--height", type=int, default=None, metavar="PX", help="with --sphere: the sphere's height")


def run_photo_sphere(args: argparse.Namespace, outs: list[str], conditional: Any) -> int:
    """``multidiffusion outpaint IMAGE --sphere --fov DEG``: the photo placed on the sphere (its pixels kept beyond the
    feathering), the rest drawn; checked before the model loads."""
    from multidiffusion.pipeline.modes.sphere import photo_start
    from multidiffusion.pipeline.settings.checks import check_canvas_pixels
    from multidiffusion.pipeline.settings.sphere import SphereSettings

    if args.fov is None or args.height is None:
        raise InvalidInputError("--sphere needs --fov (the photo's horizontal field of view) and --height (px)")
    if any(getattr(args, side) for side in ("left", "right", "top", "bottom")):
        raise InvalidInputError("--sphere draws the whole sphere: leave out --left, --right, --top and --bottom")
    refuse_flat_options(args)
    height = args.height
    if height <= 0:
        raise InvalidInputError(f"--height must be a positive number of pixels, got {height}")
    check_canvas_pixels(height, 2 * height)
    settings = SphereSettings(weights=args.weights) if args.weights is not None else SphereSettings()
    start = photo_start(
        args.image, height, args.fov, yaw=args.yaw, pitch=args.pitch, feather=args.feather, conditional=conditional
    )
    launch.check_geometry_before_loading(
        args, lambda geometry: settings.resolved(height, geometry.native_px, geometry.granularity_px)
    )
    launch.check_memory_before_loading(args, height, 2 * height)
    pipe = launch.load_pipeline(args, args.model, args.dtype, args.config)
    make = _sphere_call(args, pipe, height, settings, image=start)
    launch.each_image(args, outs, launch.seeds(args.seed, len(outs)), make, f"{2 * height}×{height}")
    return 0
