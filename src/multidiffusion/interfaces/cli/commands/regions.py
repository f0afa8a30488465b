"""``multidiffusion regions``: an image whose regions follow a region file of prompts with masks or boxes."""

from __future__ import annotations

import argparse
import os
from typing import Any

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli import launch
from multidiffusion.interfaces.cli.options import add_checkpoint, add_model_and_sampling, checkpoint_settings
from multidiffusion.interfaces.cli.settings_options import add_sync_options, add_view_options


def add(r: argparse.ArgumentParser) -> None:
    """The ``regions`` command's options."""
    from multidiffusion.pipeline.modes.regions import DEFAULT_BOOTSTRAP_FRACTION

    r.description = (
        "Generate an image whose regions follow a layout file of prompts with masks or boxes "
        "(MultiDiffusion §4.2). See examples/ for the layout format."
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


def run(args: argparse.Namespace) -> int:
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
