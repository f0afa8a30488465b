"""``multidiffusion panorama``: a panorama of any size and aspect ratio from a text prompt."""

from __future__ import annotations

import argparse
from typing import Any

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli import launch
from multidiffusion.interfaces.cli.commands.sphere import add_sphere_options, run_sphere
from multidiffusion.interfaces.cli.options import (
    add_checkpoint,
    add_guidance,
    add_model_and_sampling,
    checkpoint_settings,
)
from multidiffusion.interfaces.cli.settings_options import (
    add_global_view_options,
    add_sync_options,
    add_view_options,
    global_view_settings,
)
from multidiffusion.pipeline.settings.recipe import default


def add(p: argparse.ArgumentParser) -> None:
    """The ``panorama`` command's options."""
    p.description = "Generate a panorama (any size and aspect ratio) from a text prompt."
    p.add_argument("prompt", metavar="PROMPT", help="what the panorama shows")
    p.add_argument("--negative-prompt", default="", metavar="TEXT", help="what to steer away from (default: none)")
    p.add_argument(
        "--height", type=int, default=default("height"), metavar="PX", help="canvas height (default: %(default)s)"
    )
    p.add_argument(
        "--width",
        type=int,
        default=None,
        metavar="PX",
        help=f"canvas width (default: {default('width')}; with --sphere, twice the height)",
    )
    add_guidance(p)
    add_model_and_sampling(p, "a fresh one")
    add_view_options(p)
    add_sync_options(p)
    add_global_view_options(p)
    add_checkpoint(p)
    add_sphere_options(p)


def run(args: argparse.Namespace) -> int:
    """``multidiffusion panorama``: check (every setting once, before the model loads where it can), load, then make
    and write each image through the panorama mode."""
    import dataclasses

    from multidiffusion.pipeline.modes.panorama import panorama_geometry
    from multidiffusion.pipeline.modes.panorama import run_panorama as panorama_mode
    from multidiffusion.pipeline.run.output import seed_of
    from multidiffusion.pipeline.settings.checks import check_canvas_pixels, check_text

    check_text(args.prompt, "prompt")
    if not args.prompt.strip():
        raise InvalidInputError("PROMPT is empty; describe what the panorama should show")
    for name in ("height", "width"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise InvalidInputError(f"--{name} must be a positive number of pixels, got {getattr(args, name)}")
    if args.sphere:
        return run_sphere(args)
    for name in ("fov", "cubemap"):
        if getattr(args, name) is not None:
            raise InvalidInputError(f"--{name} applies to --sphere only")
    if args.width is None:
        args.width = default("width")
    for name in ("height", "width"):
        if getattr(args, name) <= 0:
            raise InvalidInputError(f"--{name} must be a positive number of pixels, got {getattr(args, name)}")
    check_canvas_pixels(args.height, args.width)
    outs = launch.check_common(args)
    global_view = global_view_settings(args)
    launch.check_geometry_before_loading(
        args,
        lambda geometry: panorama_geometry(
            geometry, args.height, args.width, args.views, args.sync_settings, global_view
        ),
    )
    launch.check_memory_before_loading(args, args.height, args.width)
    checkpoint = checkpoint_settings(args)
    pipe = launch.load_pipeline(args, args.model, args.dtype, args.config)
    settings = pipe.settings(  # every check against the model, once, before the first image
        args.prompt,
        args.negative_prompt,
        args.height,
        args.width,
        guidance_scale=args.guidance,
        **launch.sampling_kwargs(args),
        global_view=global_view,
    )

    def make(generator: Any) -> Any:
        s = dataclasses.replace(settings, seed=seed_of(generator))
        run = launch.run_options(args, generator, checkpoint)
        return panorama_mode(pipe.model, s, run, customise=args.customise, cache=pipe.customisation_cache)

    launch.each_image(args, outs, launch.seeds(args.seed, len(outs)), make, f"{args.width}×{args.height}")
    return 0
