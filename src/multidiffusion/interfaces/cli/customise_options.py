"""Command-line options for control and customisation: ControlNets, T2I-Adapters, LoRAs, embeddings, weighting."""

from __future__ import annotations

import argparse
import math
from typing import Any

from multidiffusion.core.errors import InvalidInputError


def add_customisation(p: argparse.ArgumentParser) -> None:
    """``--controlnet``/``--control-*``, ``--lora``, ``--embedding``, ``--no-prompt-weighting`` (docs/control.md)."""
    from multidiffusion.pipeline.customise.control_spec import RESIZE_MODES

    g = p.add_argument_group("control and customisation (docs/control.md)")
    g.add_argument(
        "--controlnet",
        action="append",
        default=[],
        metavar="FOLDER",
        help="a ControlNet or T2I-Adapter (diffusers folder or hub id); repeat for several, each with its "
        "--control-image (the upscale command's default guide is its input image: ControlNet tile)",
    )
    g.add_argument(
        "--control-image",
        action="append",
        default=[],
        metavar="IMG",
        help="the guide image of the matching --controlnet, for the whole canvas (fitted by --control-resize)",
    )
    for name, what, default in (
        ("scale", "conditioning scale", 1.0),
        ("start", "fraction of the steps before it starts", 0.0),
        ("end", "fraction of the steps after which it stops", 1.0),
    ):
        g.add_argument(
            f"--control-{name}",
            action="append",
            type=float,
            default=[],
            metavar="F",
            help=f"{what} (default {default:g}); once for all, or once per --controlnet",
        )
    g.add_argument(
        "--control-resize",
        choices=RESIZE_MODES,
        default="stretch",
        help="fit the guide images to the canvas: stretch (as diffusers), crop to cover, or pad to fit "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="FILE[:SCALE]",
        help='a LoRA file for every view (scale default 1); repeatable; per region in a layout\'s "loras"',
    )
    g.add_argument(
        "--embedding",
        action="append",
        default=[],
        metavar="FILE[:TOKEN]",
        help="a textual-inversion embedding; its trigger word is TOKEN, default the file name without suffix",
    )
    g.add_argument(
        "--no-prompt-weighting",
        action="store_true",
        help="read prompts literally: no A1111 (word:1.2) / [word] weighting and no chunking past 77 tokens",
    )


def _per_network(values: list[float], count: int, name: str, default: float) -> list[float]:
    """A setting given zero times (the default), once (for every network) or once per network."""
    if any(not math.isfinite(v) for v in values):
        raise InvalidInputError(f"--control-{name} must be a finite number, got {values}")
    if not values:
        return [default] * count
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise InvalidInputError(
            f"--control-{name} is given {len(values)} times for {count} --controlnet; give it once or once per "
            "--controlnet"
        )
    return values


def customisation(args: argparse.Namespace, input_guide: bool = False) -> Any:
    """The :class:`~multidiffusion.pipeline.customise.customisation.Customisation` the options ask for, checked (files
    exist,
    settings in range) before any model loads. ``input_guide``: a ControlNet without ``--control-image`` takes the
    command's input image (upscale)."""
    from multidiffusion.adapters.customise.embeddings import EmbeddingSpec
    from multidiffusion.adapters.customise.lora import LoraSpec
    from multidiffusion.pipeline.customise.control_spec import ControlSpec
    from multidiffusion.pipeline.customise.customisation import Customisation

    nets, images = args.controlnet, args.control_image
    if len(images) > len(nets) or (len(images) < len(nets) and not (input_guide and not images)):
        raise InvalidInputError(
            f"{len(nets)} --controlnet but {len(images)} --control-image; give one image per ControlNet, in order"
            + (" (or none: the input image guides them all)" if input_guide else "")
        )
    scales = _per_network(args.control_scale, len(nets), "scale", 1.0)
    starts = _per_network(args.control_start, len(nets), "start", 0.0)
    ends = _per_network(args.control_end, len(nets), "end", 1.0)
    control = tuple(
        ControlSpec(net, images[i] if images else None, scales[i], starts[i], ends[i], args.control_resize)
        for i, net in enumerate(nets)
    )
    custom = Customisation(
        control=control,
        loras=tuple(LoraSpec.parse(text) for text in args.lora),
        embeddings=tuple(EmbeddingSpec.parse(text) for text in args.embedding),
        prompt_weighting=not args.no_prompt_weighting,
        allow_pickle=args.allow_pickle,
    )
    custom.check()
    for spec in control:
        if isinstance(spec.image, str):
            from multidiffusion.pipeline.inputs.image_files import open_image

            open_image(spec.image, "control image", "RGB")  # missing, not an image, too large: before loading
    return custom
