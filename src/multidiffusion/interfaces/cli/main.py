"""The ``multidiffusion`` command line. Options and defaults come from the pipeline's settings.

Bad input prints one line ``error: …`` and exits with status 2 before any file is written. A run that fails
(non-finite values) or whose image cannot be written where asked (it is rescued to the temporary folder, and the
line says where) exits with status 1. The image commands live in :mod:`.image_commands`, what every generating
command shares in :mod:`.runs`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from multidiffusion.core.errors import InvalidInputError, NonFiniteError, OutputError
from multidiffusion.interfaces.cli import launch
from multidiffusion.interfaces.cli.commands.batch import add_batch, run_batch
from multidiffusion.interfaces.cli.commands.eval_suite import add_eval_suite, run_eval_suite
from multidiffusion.interfaces.cli.commands.evaluate import add_eval, run_eval
from multidiffusion.interfaces.cli.commands.image import add_image_commands, run_inpaint, run_outpaint, run_upscale
from multidiffusion.interfaces.cli.options import (
    PICKLED_WEIGHTS,
    add_checkpoint,
    add_guidance,
    add_model_and_sampling,
    add_recorded_run_options,
    checkpoint_settings,
    recorded_files,
)
from multidiffusion.interfaces.cli.settings_options import (
    add_global_view_options,
    add_sync_options,
    add_view_options,
    global_view_settings,
)
from multidiffusion.interfaces.ui.app import add_ui, run_ui
from multidiffusion.pipeline.settings.recipe import default

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full command-line parser (the README's CLI reference is its ``--help``)."""
    from multidiffusion import __version__

    parser = _Parser(
        prog="multidiffusion",
        description="Panoramas and any-size canvases from a pretrained diffusion model (MultiDiffusion).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser(
        "panorama",
        help="text to panorama",
        description="Generate a panorama (any size and aspect ratio) from a text prompt.",
    )
    p.add_argument("prompt", metavar="PROMPT", help="what the panorama shows")
    p.add_argument("--negative-prompt", default="", metavar="TEXT", help="what to steer away from (default: none)")
    p.add_argument(
        "--height", type=int, default=default("height"), metavar="PX", help="canvas height (default: %(default)s)"
    )
    p.add_argument(
        "--width", type=int, default=default("width"), metavar="PX", help="canvas width (default: %(default)s)"
    )
    add_guidance(p)
    add_model_and_sampling(p, "a fresh one")
    add_view_options(p)
    add_sync_options(p)
    add_global_view_options(p)
    add_checkpoint(p)

    from multidiffusion.pipeline.modes.regions import DEFAULT_BOOTSTRAP_FRACTION

    r = sub.add_parser(
        "regions",
        help="prompts painted onto the canvas by masks or boxes",
        description="Generate an image whose regions follow a layout file of prompts with masks or boxes "
        "(MultiDiffusion §4.2). See examples/ for the layout format.",
    )
    r.add_argument(
        "--regions-file",
        default=None,
        metavar="REGIONS.json",
        help="the region file: canvas size, background and regions with masks or boxes (required)",
    )
    r.add_argument(
        "--bootstrap-fraction",
        type=float,
        default=DEFAULT_BOOTSTRAP_FRACTION,
        metavar="F",
        help="fraction of the steps that bootstrap foreground regions, in [0, 1] (default: %(default)s)",
    )
    r.add_argument(
        "--segmentation",
        default=None,
        metavar="SEG.png",
        help="also write the requested layout, colour-coded, with a legend of prompts in its metadata",
    )
    r.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="guidance scale for prompts the layout gives none (default: the model's, 7.5 for SD)",
    )
    add_model_and_sampling(r, "the layout's seed or a fresh one")
    add_view_options(r, region_file=True)
    add_sync_options(r)
    add_checkpoint(r)

    add_image_commands(sub)

    rp = sub.add_parser(
        "reproduce",
        help="regenerate an image from the recipe in its PNG",
        description="Regenerate an image written by this tool from the settings, seed and region masks its PNG "
        "records. Bit-identical on the same weights, dtype and device type.",
    )
    rp.add_argument("image", metavar="IMAGE.png", help="a PNG written by multidiffusion")
    add_recorded_run_options(rp, ", since the image records only its name and weights hash")

    rs = sub.add_parser(
        "resume",
        help="finish an interrupted run from its --checkpoint file",
        description="Finish a panorama or regions run from the checkpoint it wrote with --checkpoint (on Ctrl-C, "
        "or every K steps). The checkpoint holds the run's recipe, so no other generation option is given; the "
        "image is bit-identical to the uninterrupted run's on the same weights, dtype and device type. Reading a "
        "checkpoint runs no code; one in the old pickle format (before version 2) is read only with "
        "--allow-pickle.",
    )
    rs.add_argument("file", metavar="CHECKPOINT", help="a checkpoint written with --checkpoint")
    add_recorded_run_options(
        rs, pickled=f"a checkpoint in the old, pickled format (before version 2) and {PICKLED_WEIGHTS}"
    )
    add_checkpoint(rs, resuming=True)

    e = sub.add_parser(
        "eval-coherence",
        help="how alike the crops of each image are (SyncDiffusion's metrics)",
        description="Per image: intra-LPIPS and intra-Style (mean pairwise distance between non-overlapping "
        "crops; need the lpips extra and VGG16 weights, else n/a) and the weight-free spread of crop mean "
        "colours and crop std. Lower is more coherent.",
    )
    e.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, …)")
    e.add_argument("--crop", type=int, default=None, metavar="PX", help="crop side (default: the image height)")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("-q", "--quiet", action="store_true", help="no notes on stderr")
    add_batch(sub)
    add_eval(sub)
    add_eval_suite(sub)
    add_ui(sub)
    return parser


def run_panorama(args: argparse.Namespace) -> int:
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


def run_regions(args: argparse.Namespace) -> int:
    """``multidiffusion regions``: read the region file, check, load, then make and write each image through the
    regions mode (and the segmentation)."""
    from multidiffusion.interfaces.files.segmentation import save_segmentation
    from multidiffusion.pipeline.customise.customisation import RegionExtras
    from multidiffusion.pipeline.files.png import check_output_path
    from multidiffusion.pipeline.inputs.region_file import load_region_file
    from multidiffusion.pipeline.modes.regions import RegionRequest, check_regions, region_geometry, run_regions

    if args.regions_file is None:
        raise InvalidInputError("--regions-file is required: the JSON file of the canvas, its background and regions")
    outs = launch.check_common(args)
    checkpoint = checkpoint_settings(args)
    if args.segmentation is not None:
        check_output_path(args.segmentation)
        if any(os.path.abspath(args.segmentation) == os.path.abspath(out) for out in outs):
            raise InvalidInputError("--segmentation must name a different file than --out")
    layout = load_region_file(args.regions_file)
    check_regions(layout.regions, layout.background, args.bootstrap_fraction)
    regional = [RegionExtras(r.control, r.loras) for r in layout.regions]
    args.customise.check(regional)
    args.customise.refuse_sync(args.sync_settings is not None, regional)
    if layout.image is not None and checkpoint is not None:
        raise InvalidInputError("--checkpoint: a layout with an init_image cannot be checkpointed or resumed yet")
    guidance = args.guidance if args.guidance is not None else layout.guidance_scale
    request = RegionRequest(
        height=layout.height,
        width=layout.width,
        negative_prompt=layout.negative_prompt or "",
        num_inference_steps=args.steps,
        guidance_scale=guidance,
        guidance_rescale=getattr(args, "guidance_rescale", 0.0),
        scheduler=args.scheduler,
        views=args.views,
        bootstrap_fraction=args.bootstrap_fraction,
        sync=args.sync_settings,
    )
    launch.check_geometry_before_loading(
        args, lambda geometry: region_geometry(geometry, layout.regions, layout.background, request)
    )
    launch.check_memory_before_loading(args, layout.height, layout.width)
    pipe = launch.load_pipeline(args, args.model, args.dtype, args.config)
    first = args.seed if args.seed is not None else layout.seed
    plan = pipe.check_regions(  # every check against the model, once, before the first image
        layout.regions,
        layout.background,
        layout.height,
        layout.width,
        layout.negative_prompt or "",
        guidance_scale=guidance,
        bootstrap_fraction=args.bootstrap_fraction,
        **launch.sampling_kwargs(args),
    )

    def make(generator: Any) -> Any:
        run = launch.run_options(args, generator, checkpoint)
        return run_regions(
            pipe.model,
            layout.regions,
            layout.background,
            plan,
            run,
            image=layout.image,
            customise=args.customise,
            cache=pipe.customisation_cache,  # control networks load once for all the images
        )

    launch.each_image(args, outs, launch.seeds(first, len(outs)), make, f"{layout.width}×{layout.height}")
    if args.segmentation is not None:
        save_segmentation(layout.regions, layout.background, layout.height, layout.width, args.segmentation)
    return 0


def _load_recorded(args: argparse.Namespace, recipe: dict[str, Any], check: Callable[[Any], None] | None = None) -> Any:
    """The pipeline a recorded run (an image's recipe, a checkpoint's) was made with: the recipe is checked
    (a recipe without a seed fails before loading), the model and device too, then the model loads in the
    recorded dtype; ``check`` sees the loaded model before the environment warnings."""
    from multidiffusion.adapters.loading.resolve import check_model_source, resolve_device
    from multidiffusion.pipeline.settings.reproduce import call_arguments, check_environment, model_to_load

    call_arguments(recipe)
    model = model_to_load(recipe, args.model)
    check_model_source(model, allow_pickle=args.allow_pickle)
    resolve_device(args.device)
    pipe = launch.load_pipeline(args, model, recipe.get("dtype"))
    if check is not None:
        check(pipe.model)
    check_environment(recipe, pipe.model)
    return pipe


def run_reproduce(args: argparse.Namespace) -> int:
    """``multidiffusion reproduce``: read the recipe, check, load the recorded model, regenerate, write."""
    from multidiffusion.pipeline.files.png import check_output_path
    from multidiffusion.pipeline.settings.reproduce import read_recipe

    check_output_path(args.out)
    if os.path.abspath(args.out) == os.path.abspath(args.image):
        raise InvalidInputError("--out must name a different file than the image being reproduced")
    recipe = read_recipe(args.image, files=recorded_files(args))
    pipe = _load_recorded(args, recipe)
    start = time.perf_counter()
    result = pipe.reproduce(recipe, progress=not args.quiet)
    result.save(args.out, index=int(recipe.get("image_index", 0)))
    launch.logger(args)(f"wrote {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


def run_resume(args: argparse.Namespace) -> int:
    """``multidiffusion resume``: read the checkpoint, check, load its model, finish the run, write."""
    import dataclasses

    from multidiffusion.pipeline.files.png import check_output_path
    from multidiffusion.pipeline.run.checkpoint import Checkpoint
    from multidiffusion.pipeline.settings.reproduce import read_recipe

    checkpoint = Checkpoint.load(args.file, allow_pickle=args.allow_pickle)
    checkpoint = dataclasses.replace(checkpoint, recipe=read_recipe(checkpoint.recipe, files=recorded_files(args)))
    outs = launch.output_paths(args.out, int(checkpoint.latents.shape[0]))
    for out in outs:
        check_output_path(out)
        if os.path.abspath(out) == os.path.abspath(args.file):
            raise InvalidInputError("--out must name a different file than the checkpoint")
    keep = checkpoint_settings(args, args.file)
    pipe = _load_recorded(args, checkpoint.recipe, check=checkpoint.check_model)
    log = launch.logger(args)
    log(f"resuming after step {checkpoint.step} of {checkpoint.num_steps}")
    start = time.perf_counter()
    result = pipe.resume(checkpoint, progress=not args.quiet, keep_checkpointing=keep)
    for i, out in enumerate(outs):
        result.save(out, index=i)
        log(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    return 0


def run_eval_coherence(args: argparse.Namespace) -> int:
    """``multidiffusion eval-coherence``: print the coherence metrics of each image."""
    from multidiffusion.interfaces.cli.commands.coherence import run

    print(run(args.images, args.crop, args.json, launch.logger(args)))
    return 0


COMMANDS = {
    "panorama": run_panorama,
    "regions": run_regions,
    "upscale": run_upscale,
    "outpaint": run_outpaint,
    "inpaint": run_inpaint,
    "reproduce": run_reproduce,
    "resume": run_resume,
    "eval-coherence": run_eval_coherence,
    "batch": run_batch,
    "eval": run_eval,
    "eval-suite": run_eval_suite,
    "ui": run_ui,
}


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    """Warnings as one ``warning: …`` line (no source location) on the command line."""
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``multidiffusion`` console script; returns the exit status."""
    # transformers warns at import about optional image processors we never use.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            if getattr(args, "quiet", False):  # -q: errors only (notices of fallbacks, library chatter are warnings)
                warnings.simplefilter("ignore")
            return COMMANDS[args.command](args)
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (NonFiniteError, OutputError) as exc:  # the run failed, or its image was rescued elsewhere (it says where)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the image in progress was not written (finished ones are kept)", file=sys.stderr)
        checkpoint = getattr(args, "checkpoint", None) or getattr(args, "file", None)
        if checkpoint is not None and os.path.isfile(checkpoint):
            print(f"its last finished step is in {checkpoint}: finish it with", file=sys.stderr)
            print(f"  multidiffusion resume {checkpoint} --out {args.out}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
