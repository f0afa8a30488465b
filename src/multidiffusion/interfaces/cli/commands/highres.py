"""``multidiffusion highres``: one large picture from a prompt, climbing from the model's native size in stages
(docs/highres.md), so the picture holds one subject rather than one per window."""

from __future__ import annotations

import argparse
from typing import Any

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli import launch
from multidiffusion.interfaces.cli.options import add_guidance, add_model_and_sampling
from multidiffusion.interfaces.cli.settings_options import add_view_options


def add(p: argparse.ArgumentParser) -> None:
    """The ``highres`` command's options: the final size, the panorama's model, sampling and view options (the window
    is the native size it climbs from), and the fields of
    :class:`~multidiffusion.pipeline.settings.highres.HighresSettings`."""
    from multidiffusion.pipeline.settings.highres import GLOBAL_PATHS, MAX_STAGES, UPSCALE_SPACES, HighresSettings

    d = HighresSettings()
    p.description = (
        "One large picture from a prompt: a run at the model's native size, then stages that each double the side "
        "(or what --stages asks), each starting from the previous one enlarged and noised to --strength, with a "
        "global path that keeps one subject (docs/highres.md)."
    )
    p.add_argument("prompt", metavar="PROMPT", help="what the picture shows")
    p.add_argument("--negative-prompt", default="", metavar="TEXT", help="what to steer away from (default: none)")
    p.add_argument("--width", type=int, required=True, metavar="PX", help="the final width")
    p.add_argument("--height", type=int, required=True, metavar="PX", help="the final height")
    h = p.add_argument_group("the stages (docs/highres.md)")
    h.add_argument(
        "--stages",
        type=int,
        default=None,
        metavar="N",
        help=f"stages in all, 1…{MAX_STAGES} (default: one per doubling)",
    )
    h.add_argument(
        "--strength",
        type=float,
        default=d.strength,
        metavar="S",
        help="how far each later stage's start is noised, in (0, 1] (default: %(default)s)",
    )
    h.add_argument(
        "--global-path",
        default=d.global_path,
        choices=GLOBAL_PATHS,
        help="what keeps one subject in the later stages: the pooled global view, DemoFusion's dilated views, both, "
        "or none (default: %(default)s)",
    )
    h.add_argument("--pooled-weight", type=float, default=d.pooled_weight, metavar="W", help="ω of the pooled view")
    h.add_argument("--dilation", type=float, default=d.dilation, metavar="C", help="c₂: the dilated views' share")
    h.add_argument("--dilation-decay", type=float, default=d.dilation_decay, metavar="E", help="its cosine exponent")
    h.add_argument("--blur", type=float, default=d.blur, metavar="B", help="the dilated views' blur, σ per stride")
    h.add_argument(
        "--residual", type=float, default=d.residual, metavar="C", help="c₁: the skip residual's weight, in [0, 1]"
    )
    h.add_argument("--residual-decay", type=float, default=d.residual_decay, metavar="E", help="its cosine exponent")
    h.add_argument(
        "--later-steps", type=int, default=None, metavar="N", help="steps of the later stages (default: --steps)"
    )
    h.add_argument("--upscale", default=d.upscale, choices=UPSCALE_SPACES, help="where a stage is enlarged")
    h.add_argument(
        "--later-weights",
        default=d.weights,
        choices=["feathered", "gaussian", "uniform", "none"],
        help="the later stages' view weights when --weights names none ('none': the run's own; default: %(default)s)",
    )
    h.add_argument("--keep-stages", default=None, metavar="DIR", help="also write every stage's picture into DIR")
    add_guidance(p)
    add_model_and_sampling(p, "a fresh one")
    add_view_options(p)


def highres_settings(args: argparse.Namespace) -> Any:
    """The run's :class:`~multidiffusion.pipeline.settings.highres.HighresSettings`, checked now."""
    from multidiffusion.pipeline.settings.highres import HighresSettings

    return HighresSettings(
        stages=args.stages,
        strength=args.strength,
        global_path=args.global_path,
        pooled_weight=args.pooled_weight,
        dilation=args.dilation,
        dilation_decay=args.dilation_decay,
        blur=args.blur,
        residual=args.residual,
        residual_decay=args.residual_decay,
        later_steps=args.later_steps,
        upscale=args.upscale,
        weights=None if args.later_weights == "none" else args.later_weights,
    )


def run(args: argparse.Namespace) -> int:
    """``multidiffusion highres``: check every stage's sizes and views on the geometry read from the model's configs,
    load, then make and write each picture (and its stages)."""
    from pathlib import Path

    from multidiffusion.pipeline.modes.highres import highres_geometry
    from multidiffusion.pipeline.settings.checks import check_canvas_pixels, check_text

    check_text(args.prompt, "prompt")
    if not args.prompt.strip():
        raise InvalidInputError("PROMPT is empty; describe what the picture should show")
    for name in ("height", "width"):
        if getattr(args, name) <= 0:
            raise InvalidInputError(f"--{name} must be a positive number of pixels, got {getattr(args, name)}")
    check_canvas_pixels(args.height, args.width)
    settings = highres_settings(args)
    if args.keep_stages is not None and Path(args.keep_stages).exists() and not Path(args.keep_stages).is_dir():
        raise InvalidInputError(f"--keep-stages {args.keep_stages!r} is a file; give a folder for the stages")
    outs = launch.check_common(args)
    launch.check_geometry_before_loading(
        args, lambda geometry: highres_geometry(geometry, args.height, args.width, args.views, settings)
    )
    launch.check_memory_before_loading(args, args.height, args.width)
    pipe = launch.load_pipeline(args, args.model, args.dtype, args.config)

    def make(generator: Any) -> Any:
        return pipe.highres(
            args.prompt,
            args.negative_prompt,
            width=args.width,
            height=args.height,
            highres=settings,
            keep_stages=args.keep_stages,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            generator=generator,
            views=args.views,
            scheduler=args.scheduler,
            guidance_rescale=getattr(args, "guidance_rescale", 0.0),
            **launch.runtime_kwargs(args),
        )

    launch.each_image(args, outs, launch.seeds(args.seed, len(outs)), make, f"{args.width}×{args.height}")
    return 0
