"""What every generating command shares: the checks before loading, loading with its messages, seeds, and
writing each image with its recipe."""

from __future__ import annotations

import argparse
import secrets
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.interfaces.cli.options import MAX_IMAGES, MAX_SEED, RANDOM_SEED


def logger(args: argparse.Namespace) -> Callable[..., None]:
    """Messages on stderr, silent with ``-q`` and on every process but the first under ``torchrun``."""
    from multidiffusion.pipeline.run.distributed import is_main_process

    quiet = args.quiet or not is_main_process()
    return (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))


def output_paths(out: str, count: int) -> list[str]:
    """``count`` output files: ``out`` itself for one, else ``stem-0.png``, ``stem-1.png``, … beside it."""
    if count == 1:
        return [out]
    path = Path(out)
    return [str(path.with_name(f"{path.stem}-{i}{path.suffix}")) for i in range(count)]


def check_common(args: argparse.Namespace) -> list[str]:
    """Checks shared by every generating command, all before any model loads; returns the output paths."""
    from multidiffusion.adapters.loading.resolve import check_model_source, resolve_device
    from multidiffusion.adapters.schedulers.names import check_scheduler_name
    from multidiffusion.interfaces.cli.customise_options import customisation
    from multidiffusion.interfaces.cli.settings_options import sync_settings, view_settings
    from multidiffusion.pipeline.files.png import check_output_path
    from multidiffusion.pipeline.settings.checks import check_sampling, check_text

    if not 1 <= args.num_images <= MAX_IMAGES:
        raise InvalidInputError(f"--num-images must be in 1…{MAX_IMAGES}, got {args.num_images}")
    outs = output_paths(args.out, args.num_images)
    for out in outs:
        check_output_path(out)
    args.views = view_settings(args)
    args.sync_settings = sync_settings(args, args.views)
    if args.view_batch_size is not None and args.view_batch_size < 1:
        raise InvalidInputError(f"--view-batch-size must be ≥ 1, got {args.view_batch_size}")
    check_sampling(args.steps, args.guidance, getattr(args, "guidance_rescale", 0.0), "pil")
    if args.scheduler is not None:
        check_scheduler_name(args.scheduler)
    if getattr(args, "negative_prompt", None) is not None:
        check_text(args.negative_prompt, "negative prompt")
    resolve_device(args.device)
    check_model_source(args.model, args.config, args.allow_pickle)
    check_steps_before_loading(args)
    args.customise = customisation(args, getattr(args, "input_guide", False))
    if args.customise.control and args.sync_settings is not None:
        args.customise.refuse_sync(True)
    return outs


def check_steps_before_loading(args: argparse.Namespace) -> None:
    """The step count against the scheduler's limit, where the model's scheduler config is at hand unloaded
    (the toy model, a diffusers folder, a ``--config`` folder, a repo id in the hub cache); the pipeline checks it
    again once the model is loaded."""
    from multidiffusion.adapters.loading.resolve import scheduler_config_before_loading
    from multidiffusion.adapters.schedulers.names import check_scheduler_steps, default_scheduler_for, is_flow_config

    config = scheduler_config_before_loading(args.model, args.config)
    if config is None:
        return
    name = args.scheduler
    if name is None and not is_flow_config(config):
        name = default_scheduler_for(config, "ddim")
    if name is not None:
        check_scheduler_steps(name, config, args.steps)


def check_geometry_before_loading(args: argparse.Namespace, check: Callable[[Any], object]) -> bool:
    """Run ``check``, a mode's checks of sizes, views and layout, on the model's
    :class:`~multidiffusion.adapters.loading.geometry.ModelGeometry` read from its configs without loading any
    weights, so that a wrong size fails in a second rather than after the load; the run checks again, with the same
    function, once the model is loaded. Returns whether the geometry could be read (where not, a single file without
    ``--config``, a repo id neither cached nor downloadable, the checks run only after loading)."""
    from multidiffusion.adapters.loading.geometry import geometry_before_loading

    geometry = geometry_before_loading(args.model, args.config)
    if geometry is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same check after loading gives its warnings, once
        check(geometry)
    return True


def check_memory_before_loading(args: argparse.Namespace, height_px: int, width_px: int) -> None:
    """Refuse, before the model loads, a run whose weights and one view do not fit in the device's memory, and a
    canvas this machine cannot decode, where the model's configs are on disk (each image is made and decoded alone);
    the pipeline checks again once it is loaded."""
    from multidiffusion.pipeline.run.memory import check_decode_memory_before_loading, check_model_memory_before_loading

    check_model_memory_before_loading(
        args.model, config=args.config, dtype=args.dtype, device=args.device, window_px=args.views.window
    )
    check_decode_memory_before_loading(
        args.model,
        1,
        height_px,
        width_px,
        config=args.config,
        dtype=args.dtype,
        device=args.device,
        tiled=getattr(args, "tiled_vae", None),
    )


def load_pipeline(args: argparse.Namespace, model: str, dtype: str | None = None, config: str | None = None) -> Any:
    """The pipeline, with a line before and after (loading a real model takes seconds to minutes)."""
    from multidiffusion.pipeline import MultiDiffusionPipeline

    log = logger(args)
    if sys.stderr.isatty():  # a progress line for people; logs and pipes get one line per outcome
        log(f"loading {model} …")
    start = time.perf_counter()
    pipe = MultiDiffusionPipeline.from_pretrained(
        model,
        dtype=dtype,
        device=args.device,
        channels_last=getattr(args, "channels_last", False),
        compile=getattr(args, "compile", False),
        config=config,
        allow_pickle=getattr(args, "allow_pickle", False),
    )
    import diffusers  # noqa: F401  # every run builds a diffusers scheduler: its import (seconds) is part of the wait

    log(f"loaded the {pipe.model.family} model in {time.perf_counter() - start:.1f} s")
    if getattr(args, "tiled_vae", None) and not hasattr(pipe.model.codec, "tiled"):
        raise InvalidInputError(f"--tiled-vae: the {pipe.model.family} model has no VAE to tile")
    return pipe


def seeds(first: int | None, count: int) -> list[int]:
    """``count`` seeds from ``first`` (a fresh one for None or ``RANDOM_SEED``) upward, wrapping at 2⁶⁴."""
    start = first if first is not None and first != RANDOM_SEED else secrets.randbits(32)
    return [(start + i) % (MAX_SEED + 1) for i in range(count)]


def each_image(
    args: argparse.Namespace, outs: list[str], seeds: list[int], make: Callable[[Any], Any], size: str
) -> None:
    """Make and write one image per seed (each file regenerates alone from its own recipe)."""
    import torch

    log = logger(args)
    for i, (out, s) in enumerate(zip(outs, seeds, strict=True)):
        prefix = f"[{i + 1}/{len(outs)}] " if len(outs) > 1 else ""
        log(f"{prefix}seed: {s}")
        start = time.perf_counter()
        result = make(torch.Generator().manual_seed(s))
        if result.images is None:  # another process than rank 0 under torchrun: rank 0 writes the file
            continue
        result.save(out, index=0)
        log(f"{prefix}wrote {out} ({size} px) in {time.perf_counter() - start:.1f} s")


def sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of a panorama, region or image call that every such command takes from its options: steps,
    guidance rescale, scheduler, and the views' and sync's settings objects (made by :func:`check_common`)."""
    return dict(
        num_inference_steps=args.steps,
        guidance_rescale=getattr(args, "guidance_rescale", 0.0),
        scheduler=args.scheduler,
        views=args.views,
        sync=args.sync_settings,
    )


def runtime_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of a call besides its sampling settings: control and customisation (checked by
    :func:`check_common`), batching, progress and tiled decoding."""
    return dict(
        customise=args.customise,
        view_batch_size=args.view_batch_size,
        progress=not args.quiet,
        tiled_vae=getattr(args, "tiled_vae", None),
    )


def run_options(args: argparse.Namespace, generator: Any, checkpoint: Any = None) -> Any:
    """The :class:`~multidiffusion.pipeline.run.options.RunOptions` of one image of a command."""
    from multidiffusion.pipeline.run.options import RunOptions

    return RunOptions(
        generator,
        view_batch_size=args.view_batch_size,
        progress=not args.quiet,
        checkpoint=checkpoint,
        tiled_vae=getattr(args, "tiled_vae", None),
    )
