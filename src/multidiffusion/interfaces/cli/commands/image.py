"""The image commands: ``upscale``, ``outpaint`` and ``inpaint``. Each checks what it can before the model loads
(the files, the numbers, the output), then asks the pipeline for the checked start of its run
(``plan_upscale`` / ``plan_outpaint`` / ``plan_inpaint``) and makes one image per seed."""

from __future__ import annotations

import argparse
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli import launch
from multidiffusion.interfaces.cli.commands.sphere import add_photo_sphere_options, run_photo_sphere
from multidiffusion.interfaces.cli.options import (
    add_feather,
    add_guidance,
    add_image_prompts,
    add_model_and_sampling,
    check_image_numbers,
)
from multidiffusion.interfaces.cli.settings_options import (
    add_global_view_options,
    add_sync_options,
    add_view_options,
    global_view_settings,
)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """What every image command takes from the panorama: guidance, wrap and view layout, model and sampling, sync and
    the global view."""
    add_guidance(p)
    add_model_and_sampling(p, "a fresh one")
    add_view_options(p)
    add_sync_options(p)
    add_global_view_options(p)


def _add_conditional(p: argparse.ArgumentParser) -> None:
    """How the redrawn part is drawn given the kept one: the fields of
    :class:`~multidiffusion.core.features.conditional.ConditionalSampler`, spelt as its recipe records them."""
    from multidiffusion.core.features.conditional import (
        DEFAULT_ITERATIONS,
        DEFAULT_REPAINT_PASSES,
        MAX_ITERATIONS,
        SAMPLERS,
        SPANS,
    )

    p.add_argument(
        "--conditional",
        default="blend",
        choices=SAMPLERS,
        help="how the redrawn part follows the kept one: blend puts the kept part back each step; repaint resamples "
        "each step (--passes times); ddnm projects x̂₀ onto it; tweedie projects x̂₀ by the exact Gaussian "
        "conditional (1 + --iterations model passes a step); docs/image_inputs.md compares them (default: blend)",
    )
    p.add_argument(
        "--passes",
        type=int,
        default=None,
        metavar="U",
        help=f"times each resampled step is taken: repaint ≥ 2 (default {DEFAULT_REPAINT_PASSES}), ddnm > 1 adds "
        "time travel; 1 otherwise",
    )
    p.add_argument(
        "--fraction",
        type=float,
        default=1.0,
        metavar="F",
        help="resample or project only this fraction of the steps, in (0, 1] (default: %(default)s, all)",
    )
    p.add_argument(
        "--span",
        default="first",
        choices=SPANS,
        help="which steps --fraction takes; on the exact model 'last' keeps the gain (default: %(default)s)",
    )
    p.add_argument(
        "--iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        metavar="K",
        help=f"tweedie: conjugate-gradient iterations a step, 1…{MAX_ITERATIONS} (default: %(default)s)",
    )


def _conditional(args: argparse.Namespace) -> Any:
    """The run's conditional sampler, checked now (before any model loads); None for the blend."""
    from multidiffusion.core.features.conditional import ConditionalSampler

    sampler = ConditionalSampler(args.conditional, args.passes, args.fraction, args.span, args.iterations)
    return None if sampler.name == "blend" else sampler


def _api(method: Callable[..., Any], name: str) -> Any:
    """The default the pipeline's method gives ``name`` (defaults live in one place)."""
    return inspect.signature(method).parameters[name].default


def add_upscale(u: argparse.ArgumentParser) -> None:
    """The ``upscale`` command's options (no --checkpoint: runs that start from an image cannot be resumed yet)."""
    from multidiffusion.pipeline.modes.image import ImageInputs
    from multidiffusion.pipeline.modes.image_start import MAX_INVERSION_STEPS, RESAMPLERS

    u.description = (
        "Tiled upscaling: enlarge IMAGE, noise it to --strength and denoise it again in overlapping "
        "views, so a model with small views adds detail to a large image (docs/image_inputs.md)."
    )
    u.add_argument("image", metavar="IMAGE", help="the image to enlarge (PNG, JPEG, …)")
    u.add_argument(
        "--scale",
        type=float,
        required=True,
        metavar="S",
        help="each side × S, rounded to the model's size step (8 px for SD, 16 for SD3 and Flux); e.g. 2",
    )
    u.add_argument(
        "--strength",
        type=float,
        default=_api(ImageInputs.upscale, "strength"),
        metavar="S",
        help="how much is redrawn, in [0, 1]: 0 returns the enlargement, 1 ignores the image (default: %(default)s)",
    )
    u.add_argument(
        "--noise-inversion",
        type=int,
        default=_api(ImageInputs.upscale, "noise_inversion_steps"),
        metavar="STEPS",
        help=f"invert the enlargement to the starting noise in STEPS steps (0…{MAX_INVERSION_STEPS}) instead of "
        "adding fresh noise, which keeps more of the image at high strengths (default: %(default)s, off)",
    )
    u.add_argument(
        "--resample",
        default=_api(ImageInputs.upscale, "resample"),
        choices=RESAMPLERS,
        help="how the image is enlarged before it is redrawn (default: %(default)s)",
    )
    add_image_prompts(u, "what the image shows", required=False)
    _add_run_options(u)
    u.set_defaults(input_guide=True)  # --controlnet without --control-image: the enlargement guides it (tile)


def add_outpaint(o: argparse.ArgumentParser) -> None:
    """The ``outpaint`` command's options."""
    o.description = (
        "Extend IMAGE by margins drawn from a prompt; the image itself is kept. Give at least one "
        "margin, in px: multiples of the model's size step (8 px for SD, 16 for SD3 and Flux; the image's sides "
        "too). With --tile x the left and right ends join into a 360° panorama."
    )
    o.add_argument("image", metavar="IMAGE", help="the image to extend (PNG, JPEG, …)")
    for side in ("left", "right", "top", "bottom"):
        o.add_argument(f"--{side}", type=int, default=0, metavar="PX", help=f"pixels to add on the {side} (default: 0)")
    add_image_prompts(o, "what the margins show (the image's scene, usually)", required=True)
    add_feather(o)
    _add_conditional(o)
    _add_run_options(o)
    add_photo_sphere_options(o)


def add_inpaint(i: argparse.ArgumentParser) -> None:
    """The ``inpaint`` command's options."""
    from multidiffusion.pipeline.modes.image import ImageInputs

    i.description = (
        "Redraw the part of IMAGE that MASK paints white (AUTOMATIC1111's and diffusers' convention) "
        "from a prompt; the black part is kept. IMAGE's sides must be multiples of the model's size step (8 px for "
        "SD, 16 for SD3 and Flux)."
    )
    i.add_argument("image", metavar="IMAGE", help="the image to change (PNG, JPEG, …)")
    i.add_argument(
        "--mask",
        required=True,
        metavar="MASK",
        help="greyscale image of IMAGE's size: white = redraw, black = keep, grey = in between",
    )
    add_image_prompts(i, "what the redrawn part shows", required=True)
    i.add_argument(
        "--strength",
        type=float,
        default=_api(ImageInputs.inpaint, "strength"),
        metavar="S",
        help="in [0, 1]: below 1 the white part starts from the image noised that far (default: %(default)s)",
    )
    add_feather(i)
    _add_conditional(i)
    _add_run_options(i)


def _same_file(a: str, b: str) -> bool:
    """Whether two paths name one file, however they are spelt (relative, ``~``, links)."""
    first, second = Path(a).expanduser(), Path(b).expanduser()
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # either is missing: not one existing file
        return False


def _check_image_command(args: argparse.Namespace, inputs: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
    """Checks shared by the image commands, all before any model loads: the prompts, strength, feather and noise
    inversion, the options of every generating command, and an output that would overwrite one of the ``inputs``
    (option name → path). Returns the output paths and the global-view keyword argument."""
    from multidiffusion.pipeline.settings.checks import check_text

    check_text(args.prompt, "prompt")
    check_image_numbers(args)
    outs = launch.check_common(args)
    global_view = global_view_settings(args)
    for out in outs:
        for name, path in inputs.items():
            if _same_file(out, path):
                raise InvalidInputError(f"--out must name a different file than {name} ({path!r})")
    return outs, {"global_view": global_view}


def _image_size(path: str) -> tuple[int, int]:
    """(height, width) of the input image in px, read before any model loads (missing, corrupt and over-large
    files are one error)."""
    from multidiffusion.pipeline.inputs.image_files import open_image

    image = open_image(path, "image", "RGB")
    return image.height, image.width


def _check_views_before_loading(
    args: argparse.Namespace, extra: dict[str, Any], canvas: Callable[[Any], tuple[int, int]]
) -> None:
    """Before the model loads, on its geometry read from its configs: the canvas ``canvas(geometry)`` gives (which
    checks the image's sides and the margins against the model's latent cell), then its views, sync and global view
    as a panorama of that size checks them (the pipeline checks the same again once the model is loaded)."""
    from multidiffusion.pipeline.modes.panorama import panorama_geometry

    def check(geometry: Any) -> None:
        height, width = canvas(geometry)
        panorama_geometry(geometry, height, width, args.views, args.sync_settings, extra["global_view"])

    launch.check_geometry_before_loading(args, check)


def _run(args: argparse.Namespace, pipe: Any, start: Any, outs: list[str], extra: dict[str, Any]) -> int:
    """Check the run against the loaded model (sizes, views, scheduler), then make and write one image per seed."""
    height, width = start.size
    kwargs = {**launch.sampling_kwargs(args), "guidance_scale": args.guidance, **extra}
    pipe.settings(args.prompt, args.negative_prompt, height=height, width=width, **kwargs)  # pre-run

    def make(generator: Any) -> Any:
        return pipe(
            args.prompt,
            args.negative_prompt,
            height=height,
            width=width,
            image=start,
            generator=generator,
            **launch.runtime_kwargs(args),
            **kwargs,
        )

    launch.each_image(args, outs, launch.seeds(args.seed, len(outs)), make, f"{width}×{height}")
    return 0


def run_upscale(args: argparse.Namespace) -> int:
    """``multidiffusion upscale``: check, read the image, load, enlarge and redraw, write."""
    from multidiffusion.pipeline.modes.image_geometry import upscale_canvas
    from multidiffusion.pipeline.modes.image_start import scaled_size
    from multidiffusion.pipeline.settings.checks import check_canvas_pixels

    outs, sync = _check_image_command(args, {"IMAGE": args.image})
    image_size = _image_size(args.image)
    # the size step is the model's: 1 px bounds the canvas now, the exact size is checked on its geometry below
    check_canvas_pixels(*scaled_size(*image_size, args.scale, 1))
    _check_views_before_loading(args, sync, lambda geometry: upscale_canvas(geometry, image_size, args.scale))
    launch.check_memory_before_loading(args, *scaled_size(*image_size, args.scale, 1))
    pipe = launch.load_pipeline(args, args.model, args.dtype, args.config)
    start = pipe.plan_upscale(
        args.image,
        args.scale,
        strength=args.strength,
        noise_inversion_steps=args.noise_inversion,
        resample=args.resample,
    )
    return _run(args, pipe, start, outs, sync)


def run_outpaint(args: argparse.Namespace) -> int:
    """``multidiffusion outpaint``: check, read the image, load, draw the margins, write."""
    from multidiffusion.pipeline.modes.image_geometry import outpaint_canvas
    from multidiffusion.pipeline.settings.checks import check_canvas_pixels

    margins = {side: getattr(args, side) for side in ("left", "right", "top", "bottom")}
    for side, px in margins.items():
        if px < 0:
            raise InvalidInputError(f"--{side} must be a number of pixels ≥ 0, got {px}")
    if args.sphere:
        outs, _ = _check_image_command(args, {"IMAGE": args.image})
        return run_photo_sphere(args, outs, _conditional(args))
    for name in ("fov", "height"):
        if getattr(args, name) is not None:
            raise InvalidInputError(f"--{name} applies to --sphere only")
    if not any(margins.values()):
        raise InvalidInputError("give at least one margin to outpaint: --left, --right, --top or --bottom (px)")
    outs, sync = _check_image_command(args, {"IMAGE": args.image})
    conditional = _conditional(args)
    image_height, image_width = _image_size(args.image)
    height, width = image_height + args.top + args.bottom, image_width + args.left + args.right
    check_canvas_pixels(height, width)
    _check_views_before_loading(
        args, sync, lambda geometry: outpaint_canvas(geometry, (image_height, image_width), margins)
    )
    launch.check_memory_before_loading(args, height, width)
    pipe = launch.load_pipeline(args, args.model, args.dtype, args.config)
    start = pipe.plan_outpaint(args.image, feather=args.feather, conditional=conditional, **margins)
    return _run(args, pipe, start, outs, sync)


def run_inpaint(args: argparse.Namespace) -> int:
    """``multidiffusion inpaint``: check, read the image and the mask, load, redraw the mask's white part, write."""
    from multidiffusion.pipeline.modes.image_geometry import inpaint_canvas
    from multidiffusion.pipeline.modes.image_start import check_something_to_redraw, read_known

    outs, sync = _check_image_command(args, {"IMAGE": args.image, "--mask": args.mask})
    conditional = _conditional(args)
    height, width = _image_size(args.image)
    check_something_to_redraw(read_known(args.mask, (height, width)))  # readable, a mask, the image's size
    _check_views_before_loading(args, sync, lambda geometry: inpaint_canvas(geometry, (height, width)))
    launch.check_memory_before_loading(args, height, width)
    pipe = launch.load_pipeline(args, args.model, args.dtype, args.config)
    start = pipe.plan_inpaint(
        args.image, args.mask, strength=args.strength, feather=args.feather, conditional=conditional
    )
    return _run(args, pipe, start, outs, sync)
