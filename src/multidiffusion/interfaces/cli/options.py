"""Command-line options shared by the generating commands. Defaults come from the pipeline's settings."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from multidiffusion.adapters.families.registry import file_families
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline.settings.recipe import DEFAULT_MODEL, default

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 0 … 2⁶⁴ − 1
MAX_IMAGES = 10_000
MODEL_HELP = (
    f"a hub repo id or diffusers folder, or a .safetensors checkpoint (.ckpt with --allow-pickle; with --config "
    "offline), of: "
    f"{'; '.join(f.title for f in file_families())}; or 'toy': the exact Gaussian-field model that needs no weights "
    "(docs/theory.md)"
)


RANDOM_SEED = -1  # --seed -1: a fresh random seed (as in AUTOMATIC1111), also over a layout's own seed


def seed(text: str) -> int:
    """``--seed``: a whole number in 0 … 2⁶⁴ − 1, or :data:`RANDOM_SEED` (−1) for a fresh random one."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number in 0…{MAX_SEED} or -1 (random), got {text!r}"
        ) from None
    if value == RANDOM_SEED:
        return value
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in 0…{MAX_SEED} or -1 (random), got {text}")
    return value


OUT_HELP = "output PNG (written atomically; a missing folder is made)"
PICKLED_WEIGHTS = "pickled weights (.ckpt, .pt, .pth, .bin files)"


def add_allow_pickle(p: argparse.ArgumentParser, pickled: str = PICKLED_WEIGHTS) -> None:
    """``--allow-pickle``: also load ``pickled`` files (by default weights), which can run code when loaded."""
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help=f"also load {pickled}, which can run code when loaded; only for files you trust (default: .safetensors "
        "only)",
    )


def add_model_and_sampling(p: argparse.ArgumentParser, what: str) -> None:
    """Options shared by every generating command."""
    from multidiffusion.adapters.schedulers.names import SCHEDULER_HELP
    from multidiffusion.interfaces.cli.customise_options import add_customisation

    p.add_argument("--out", required=True, metavar="FILE.png", help=OUT_HELP)
    p.add_argument(
        "--num-images",
        type=int,
        default=1,
        metavar="N",
        help="images to make, with seeds SEED, SEED+1, …, written as FILE-0.png, FILE-1.png, … (default: 1)",
    )
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="MODEL", help=f"{MODEL_HELP} (default: %(default)s)")
    p.add_argument(
        "--config",
        default=None,
        metavar="FOLDER_OR_REPO",
        help="for a single-file checkpoint: the diffusers model folder or repo id that describes it",
    )
    add_allow_pickle(p)
    add_customisation(p)
    p.add_argument(
        "--steps", type=int, default=default("num_inference_steps"), help="denoising steps (default: %(default)s)"
    )
    p.add_argument("--seed", type=seed, default=None, help=f"random seed; -1 = random (default: {what}, printed)")
    p.add_argument(
        "--scheduler",
        default=default("scheduler"),
        metavar="NAME",
        help=f"{SCHEDULER_HELP} (default: the model's: ddim for SD 1.x/2.x, the one its config names for "
        "SDXL, SD3, Flux and few-step models)",
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
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display or messages")


def add_guidance(p: argparse.ArgumentParser) -> None:
    """``--guidance`` and ``--guidance-rescale`` (panorama and the image commands)."""
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


def add_image_prompts(p: argparse.ArgumentParser, what: str, required: bool) -> None:
    """``--prompt`` and ``--negative-prompt`` of the image commands; ``what`` says what the prompt describes."""
    p.add_argument(
        "--prompt",
        required=required,
        default=None if required else "",
        metavar="TEXT",
        help=what if required else f"{what} (default: none: the views follow the image alone)",
    )
    p.add_argument("--negative-prompt", default="", metavar="TEXT", help="what to steer away from (default: none)")


def add_feather(p: argparse.ArgumentParser) -> None:
    """``--feather PX``: how softly the kept part of the image meets the redrawn part (outpaint, inpaint)."""
    from multidiffusion.pipeline.modes.image_start import DEFAULT_FEATHER_PX, MAX_FEATHER_PX

    p.add_argument(
        "--feather",
        type=float,
        default=DEFAULT_FEATHER_PX,
        metavar="PX",
        help=f"blur radius (σ, px, 0…{MAX_FEATHER_PX:g}) of the edge between the kept and the redrawn pixels; "
        "0 = a hard edge that keeps the image exactly (default: %(default)s)",
    )


def check_image_numbers(args: argparse.Namespace) -> None:
    """``--strength``, ``--feather`` and ``--noise-inversion`` where the command has them, before any model loads
    (the pipeline's :class:`~multidiffusion.pipeline.modes.image_start.ImageStart` checks them again)."""
    from multidiffusion.pipeline.modes.image_start import MAX_FEATHER_PX, MAX_INVERSION_STEPS
    from multidiffusion.pipeline.settings.checks import check_number

    if getattr(args, "strength", None) is not None:
        check_number("--strength", args.strength, 0.0, 1.0)
    if getattr(args, "feather", None) is not None:
        check_number("--feather", args.feather, 0.0, MAX_FEATHER_PX, " px")
    steps = getattr(args, "noise_inversion", 0)
    if not 0 <= steps <= MAX_INVERSION_STEPS:
        raise InvalidInputError(f"--noise-inversion must be a number of steps in 0…{MAX_INVERSION_STEPS}, got {steps}")


def add_checkpoint(p: argparse.ArgumentParser, resuming: bool = False) -> None:
    """``--checkpoint FILE`` and ``--checkpoint-every K``: write the run's state so ``resume`` can finish it."""
    from multidiffusion.pipeline.run.checkpoint import DEFAULT_EVERY

    g = p.add_argument_group("checkpoints (finish an interrupted run with 'multidiffusion resume FILE')")
    g.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="keep writing the rest of the run to FILE (default: the checkpoint being resumed)"
        if resuming
        else "write the run's latents, scheduler and random state and its recipe to FILE (atomically) every K "
        "steps, after the last step and on Ctrl-C (one image per run)",
    )
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="K",
        help=f"write the checkpoint every K steps (default: {DEFAULT_EVERY}, every step: writing costs far less "
        "than a step)",
    )


def checkpoint_settings(args: argparse.Namespace, path: str | None = None) -> Any:
    """The run's :class:`~multidiffusion.pipeline.run.checkpoint.CheckpointSettings` from the options (``path``: the
    default file), checked before any model loads; None without a file."""
    from multidiffusion.pipeline.run.checkpoint import DEFAULT_EVERY, CheckpointSettings

    path = args.checkpoint if args.checkpoint is not None else path
    if path is None:
        if args.checkpoint_every is not None:
            raise InvalidInputError("--checkpoint-every only applies with --checkpoint; add --checkpoint FILE")
        return None
    if getattr(args, "num_images", 1) != 1:
        raise InvalidInputError("--checkpoint holds one run: use it with one image (drop --num-images)")
    every = DEFAULT_EVERY if args.checkpoint_every is None else args.checkpoint_every
    if every < 1:
        raise InvalidInputError(f"--checkpoint-every must be ≥ 1, got {every}")
    settings = CheckpointSettings(Path(path), every)
    out = getattr(args, "out", None)
    if out is not None and Path(out).expanduser().resolve() == settings.path.resolve():
        raise InvalidInputError("--checkpoint must name a different file than --out")
    return settings


def add_recorded_run_options(
    p: argparse.ArgumentParser, why_local: str = "", out: bool = True, pickled: str = PICKLED_WEIGHTS
) -> None:
    """--out (unless ``out`` is False), --model, --device, --allow-pickle (for ``pickled`` files), -q and the folders
    of a customised run's files (:func:`add_recorded_file_folders`) of the commands that rerun recorded runs
    (reproduce, resume, batch)."""
    if out:
        p.add_argument("--out", required=True, metavar="FILE.png", help=OUT_HELP)
    p.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="where the model is (default: the recorded repo id; a local folder or file must be given again"
        f"{why_local})",
    )
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    add_allow_pickle(p, pickled)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display or messages")
    add_recorded_file_folders(p)


def add_recorded_file_folders(p: argparse.ArgumentParser) -> None:
    """``--controlnet-dir``, ``--lora-dir``, ``--embedding-dir``: where a rerun finds the files a recipe names."""
    g = p.add_argument_group(
        "files of a customised run (a recipe records each by name and SHA-256; also looked for beside the model)"
    )
    for kind, what in (
        ("controlnet", "the recorded ControlNet folders and their guide images"),
        ("lora", "the recorded LoRA files"),
        ("embedding", "the recorded embedding files"),
    ):
        g.add_argument(
            f"--{kind}-dir",
            action="append",
            default=[],
            metavar="FOLDER",
            help=f"a folder holding {what}; repeatable",
        )


def recorded_files(args: argparse.Namespace) -> Any:
    """The :class:`~multidiffusion.pipeline.customise.recorded_files.FileFolders` of a rerun: the folders given,
    the model's own folder (``--model``, when local) and ``--allow-pickle``; checked (each is a folder) before any
    model loads. Hand it to :func:`~multidiffusion.pipeline.settings.reproduce.read_recipe` (``files=``)."""
    from multidiffusion.pipeline.customise.recorded_files import FileFolders

    return FileFolders.beside(
        args.model,
        controlnet=args.controlnet_dir,
        lora=args.lora_dir,
        embedding=args.embedding_dir,
        allow_pickle=args.allow_pickle,
    )
