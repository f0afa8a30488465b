"""``multidiffusion reproduce`` and ``resume``: runs made again from what was recorded, an image's recipe or a
checkpoint, on the recorded model."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli import launch
from multidiffusion.interfaces.cli.options import (
    PICKLED_WEIGHTS,
    add_checkpoint,
    add_recorded_run_options,
    checkpoint_settings,
    recorded_files,
)


def add_reproduce(rp: argparse.ArgumentParser) -> None:
    """The ``reproduce`` command's options."""
    rp.description = (
        "Regenerate an image written by this tool from the settings, seed and region masks its PNG "
        "records. Bit-identical on the same weights, dtype and device type."
    )
    rp.add_argument("image", metavar="IMAGE.png", help="a PNG written by multidiffusion")
    add_recorded_run_options(rp, ", since the image records only its name and weights hash")


def add_resume(rs: argparse.ArgumentParser) -> None:
    """The ``resume`` command's options."""
    rs.description = (
        "Finish a panorama or regions run from the checkpoint it wrote with --checkpoint (on Ctrl-C, "
        "or every K steps). The checkpoint holds the run's recipe, so no other generation option is given; the "
        "image is bit-identical to the uninterrupted run's on the same weights, dtype and device type. Reading a "
        "checkpoint runs no code; one in the old pickle format (before version 2) is read only with "
        "--allow-pickle."
    )
    rs.add_argument("file", metavar="CHECKPOINT", help="a checkpoint written with --checkpoint")
    add_recorded_run_options(
        rs, pickled=f"a checkpoint in the old, pickled format (before version 2) and {PICKLED_WEIGHTS}"
    )
    add_checkpoint(rs, resuming=True)


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
