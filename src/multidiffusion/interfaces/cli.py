"""The ``multidiffusion`` command line. Options and defaults come from the pipeline's settings.

Bad input prints one line ``error: …`` and exits with status 2 before any file is written.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ..core.errors import InvalidInputError
from ..core.weights import WEIGHT_KINDS
from ..pipeline.settings import DEFAULT_MODEL, default

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see '{self.prog} --help')\n")


def _add_model_and_sampling(p: argparse.ArgumentParser, what: str) -> None:
    """Options shared by every generating command."""
    from ..adapters.schedulers import SCHEDULER_NAMES

    p.add_argument("--out", required=True, metavar="FILE.png", help="output PNG (written atomically)")
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        metavar="REPO_OR_DIR",
        help="hub repo id, diffusers model folder, or .safetensors/.ckpt checkpoint (default: %(default)s)",
    )
    p.add_argument(
        "--steps", type=int, default=default("num_inference_steps"), help="denoising steps (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=None, help=f"random seed (default: {what}, printed)")
    p.add_argument(
        "--scheduler",
        default=default("scheduler"),
        metavar="NAME",
        help=f"one of: {', '.join(SCHEDULER_NAMES)} (default: %(default)s)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=default("window"),
        metavar="PX",
        help="view size (default: the model's native size)",
    )
    p.add_argument(
        "--stride",
        type=int,
        default=default("stride"),
        metavar="PX",
        help="step between views (default: the model's, else window / 8: 64 px for SD)",
    )
    p.add_argument(
        "--weights",
        default=default("weights"),
        choices=WEIGHT_KINDS,
        help="per-view weights: uniform (paper) or ramps toward inner edges (default: %(default)s)",
    )
    p.add_argument(
        "--view-batch-size",
        type=int,
        default=None,
        metavar="N",
        help="views per model call (default: as many as fit in memory)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "float16", "bfloat16"),
        help="weights dtype (default: float16 on cuda, float32 on cpu)",
    )
    p.add_argument(
        "--channels-last", action="store_true", help="run the networks NHWC (docs/performance.md; same results)"
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the denoiser (slow first step per batch shape)"
    )
    p.add_argument(
        "--tiled-vae",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode in tiles with whole-canvas GroupNorm statistics (no seams, memory follows the tile); "
        "default: automatic above 2 Mpx (docs/tiled_vae.md)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or messages")


def _anchor(text: str) -> int | str:
    """``center`` or a view index (argparse type of ``--sync-anchor``)."""
    if text == "center":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'center' or a view index, got {text!r}") from None


def _add_sync(p: argparse.ArgumentParser) -> None:
    """SyncDiffusion options (Lee et al. 2023; docs/sync.md)."""
    from ..pipeline.sync import SYNC_LOSSES

    g = p.add_argument_group("SyncDiffusion (one coherent style across the canvas; docs/sync.md)")
    g.add_argument("--sync", action="store_true", help="pull every view toward the anchor view's style")
    g.add_argument(
        "--sync-weight", type=float, default=default("sync_weight"), metavar="W", help="w ≥ 0 (default: %(default)s)"
    )
    g.add_argument(
        "--sync-decay",
        type=float,
        default=default("sync_decay"),
        metavar="L",
        help="step i uses w·L^i, L in (0, 1] (default: %(default)s)",
    )
    g.add_argument(
        "--sync-stop",
        type=int,
        default=default("sync_stop_step"),
        metavar="STEP",
        help="synchronise steps 0 … STEP−1 only (default: %(default)s)",
    )
    g.add_argument(
        "--sync-every",
        type=int,
        default=default("sync_every"),
        metavar="N",
        help="synchronise every N-th step (default: %(default)s)",
    )
    g.add_argument(
        "--sync-anchor",
        type=_anchor,
        default=default("sync_anchor"),
        metavar="center|INDEX",
        help="the view the others follow, by index in row-major layout order (default: %(default)s)",
    )
    g.add_argument(
        "--sync-loss",
        default=default("sync_loss"),
        choices=SYNC_LOSSES,
        help="perceptual loss: lpips (needs the lpips extra and VGG weights) or builtin (weight-free); "
        "default: lpips if available, else builtin with a notice",
    )
    g.add_argument("--sync-chunk", type=int, default=None, metavar="N", help="views per gradient batch (default: all)")
    g.add_argument("--sync-checkpointing", action="store_true", help="checkpoint activations: less memory, more time")


def _sync_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.sync_chunk is not None and args.sync_chunk < 1:
        raise InvalidInputError(f"--sync-chunk must be ≥ 1, got {args.sync_chunk}")
    from ..pipeline.sync import check_sync

    check_sync(args.sync_weight, args.sync_decay, args.sync_stop, args.sync_every, args.sync_anchor, args.sync_loss)
    return dict(
        sync=args.sync,
        sync_weight=args.sync_weight,
        sync_decay=args.sync_decay,
        sync_stop_step=args.sync_stop,
        sync_every=args.sync_every,
        sync_anchor=args.sync_anchor,
        sync_loss=args.sync_loss,
    )


def build_parser() -> argparse.ArgumentParser:
    """The full command-line parser (the README's CLI reference is its ``--help``)."""
    from .. import __version__

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
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance scale, 1 = off (default: the model's, 7.5 for SD, 1 for toy)",
    )
    p.add_argument(
        "--guidance-rescale",
        type=float,
        default=default("guidance_rescale"),
        help="guidance rescale phi in [0, 1] (Lin et al. 2023) (default: %(default)s)",
    )
    p.add_argument("--circular", action="store_true", help="wrap around horizontally (360° panorama)")
    from ..core.layouts import LAYOUT_NAMES

    p.add_argument(
        "--view-layout",
        default=None,
        choices=LAYOUT_NAMES,
        help="a cheaper named layout that sets stride and weights (docs/layouts.md; default: --stride/--weights)",
    )
    _add_model_and_sampling(p, "a fresh one")
    _add_sync(p)

    from ..pipeline.regions import DEFAULT_BOOTSTRAP_FRACTION

    r = sub.add_parser(
        "regions",
        help="prompts painted onto the canvas by masks or boxes",
        description="Generate an image whose regions follow a layout file of prompts with masks or boxes "
        "(MultiDiffusion §4.2). See examples/ for the layout format.",
    )
    r.add_argument("--layout", required=True, metavar="LAYOUT.json", help="canvas size, background and regions")
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
    _add_model_and_sampling(r, "the layout's seed or a fresh one")
    _add_sync(r)

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
    return parser


def _check_common(args: argparse.Namespace) -> None:
    """Checks shared by every command, all before any model loads."""
    from ..adapters.loading import check_model_source, resolve_device
    from ..adapters.schedulers import check_scheduler_name
    from ..pipeline.checks import check_sampling, check_stride
    from .png import check_output_path

    check_output_path(args.out)
    if args.window is not None and args.window <= 0:
        raise InvalidInputError(f"--window must be a positive number of pixels, got {args.window}")
    if args.stride is not None:
        check_stride(args.stride, args.window if args.window is not None else args.stride)
    if args.view_batch_size is not None and args.view_batch_size < 1:
        raise InvalidInputError(f"--view-batch-size must be ≥ 1, got {args.view_batch_size}")
    check_sampling(args.steps, args.guidance, getattr(args, "guidance_rescale", 0.0), args.weights, "pil")
    check_scheduler_name(args.scheduler)
    resolve_device(args.device)
    check_model_source(args.model)


def _load(args: argparse.Namespace) -> tuple[Any, Callable[..., None]]:
    """The pipeline, and a logger that is silent with ``-q``."""
    from ..pipeline import MultiDiffusionPipeline

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    if args.quiet:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
    pipe = MultiDiffusionPipeline.from_pretrained(
        args.model, dtype=args.dtype, device=args.device, channels_last=args.channels_last, compile=args.compile
    )
    if args.tiled_vae is not None:
        if not hasattr(pipe.model.codec, "tiled"):
            if args.tiled_vae:
                raise InvalidInputError(f"--tiled-vae: the {pipe.model.family} model has no VAE to tile")
        else:
            pipe.model.codec.tiled = args.tiled_vae
    return pipe, log


def _save(result: Any, path: str) -> None:
    from .png import METADATA_KEY, save_png

    meta = result.metadata
    save_png(result.images[0], path, {"parameters": meta.to_a1111(0), METADATA_KEY: meta.to_json()})


def run_panorama(args: argparse.Namespace) -> int:
    """``multidiffusion panorama``: check, load, generate, write."""
    if not args.prompt.strip():
        raise InvalidInputError("PROMPT is empty; describe what the panorama should show")
    for name in ("height", "width"):
        if getattr(args, name) <= 0:
            raise InvalidInputError(f"--{name} must be a positive number of pixels, got {getattr(args, name)}")
    _check_common(args)
    import torch

    start = time.perf_counter()
    pipe, log = _load(args)
    kwargs = dict(
        height=args.height,
        width=args.width,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        guidance_rescale=args.guidance_rescale,
        scheduler=args.scheduler,
        window=args.window,
        stride=args.stride,
        weights=args.weights,
        circular=args.circular,
        layout=args.view_layout,
        **_sync_kwargs(args),
    )
    pipe.settings(args.prompt, args.negative_prompt, **kwargs)  # size checks against the model, pre-run
    seed = args.seed if args.seed is not None else secrets.randbits(32)
    log(f"seed: {seed}")
    result = pipe(
        args.prompt,
        args.negative_prompt,
        generator=torch.Generator().manual_seed(seed),
        view_batch_size=args.view_batch_size,
        progress=not args.quiet,
        sync_chunk_size=args.sync_chunk,
        sync_checkpointing=args.sync_checkpointing,
        **kwargs,
    )
    _save(result, args.out)
    log(f"wrote {args.out} ({args.width}×{args.height} px) in {time.perf_counter() - start:.1f} s")
    return 0


def run_regions(args: argparse.Namespace) -> int:
    """``multidiffusion regions``: read the layout, check, load, generate, write (and the segmentation)."""
    from ..pipeline.layout import load_layout
    from ..pipeline.regions import check_regions
    from .png import check_output_path
    from .segmentation import save_segmentation

    _check_common(args)
    if args.segmentation is not None:
        check_output_path(args.segmentation)
        if os.path.abspath(args.segmentation) == os.path.abspath(args.out):
            raise InvalidInputError("--segmentation must name a different file than --out")
    layout = load_layout(args.layout)
    check_regions(layout.regions, layout.background, args.bootstrap_fraction)
    import torch

    start = time.perf_counter()
    pipe, log = _load(args)
    seed = args.seed if args.seed is not None else layout.seed if layout.seed is not None else secrets.randbits(32)
    guidance = args.guidance if args.guidance is not None else layout.guidance_scale
    kwargs = dict(
        height=layout.height,
        width=layout.width,
        negative_prompt=layout.negative_prompt or "",
        num_inference_steps=args.steps,
        guidance_scale=guidance,
        scheduler=args.scheduler,
        window=args.window,
        stride=args.stride,
        weights=args.weights,
        bootstrap_fraction=args.bootstrap_fraction,
        **_sync_kwargs(args),
    )
    pipe.check_regions(layout.regions, layout.background, **kwargs)  # sizes against the model, pre-run
    log(f"seed: {seed}")
    result = pipe.regions(
        layout.regions,
        layout.background,
        generator=torch.Generator().manual_seed(seed),
        view_batch_size=args.view_batch_size,
        progress=not args.quiet,
        sync_chunk_size=args.sync_chunk,
        sync_checkpointing=args.sync_checkpointing,
        **kwargs,
    )
    _save(result, args.out)
    if args.segmentation is not None:
        save_segmentation(layout.regions, layout.background, layout.height, layout.width, args.segmentation)
    log(f"wrote {args.out} ({layout.width}×{layout.height} px) in {time.perf_counter() - start:.1f} s")
    return 0


def run_eval_coherence(args: argparse.Namespace) -> int:
    """``multidiffusion eval-coherence``: print the coherence metrics of each image."""
    from .coherence import run

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    print(run(args.images, args.crop, args.json, log))
    return 0


COMMANDS = {"panorama": run_panorama, "regions": run_regions, "eval-coherence": run_eval_coherence}


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
        return COMMANDS[args.command](args)
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
