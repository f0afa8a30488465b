"""The ``multidiffusion`` command line: one subcommand per module of :mod:`.commands` (the UI's in
:mod:`multidiffusion.interfaces.ui.app`). Options and defaults come from the pipeline's settings.

A command's module is imported only when that command runs (or its ``--help`` is asked for), so
``multidiffusion --help`` and ``--version`` load neither torch nor diffusers. Bad input prints one line ``error: …``
and exits with status 2 before any file is written. A run that fails (non-finite values) or whose image cannot be
written where asked (it is rescued to the temporary folder, and the line says where) exits with status 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from multidiffusion.core.errors import InvalidInputError, NonFiniteError, OutputError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see '{self.prog} --help')\n")


@dataclass(frozen=True)
class Command:
    """A subcommand: its line in ``multidiffusion --help``, and the module whose ``add`` function adds its options
    (and description) to its parser and whose ``run`` function runs it, returning the exit status."""

    help: str
    module: str
    add: str = "add"
    run: str = "run"

    def function(self, name: str) -> Any:
        return getattr(importlib.import_module(self.module), name)


_COMMANDS_PACKAGE = "multidiffusion.interfaces.cli.commands"

COMMANDS: dict[str, Command] = {
    "panorama": Command("text to panorama", f"{_COMMANDS_PACKAGE}.panorama"),
    "regions": Command("prompts painted onto the canvas by masks or boxes", f"{_COMMANDS_PACKAGE}.regions"),
    "highres": Command("one large picture from a prompt, in stages", f"{_COMMANDS_PACKAGE}.highres"),
    "upscale": Command(
        "enlarge an image and redraw its detail in overlapping views",
        f"{_COMMANDS_PACKAGE}.image",
        "add_upscale",
        "run_upscale",
    ),
    "outpaint": Command("extend an image by margins", f"{_COMMANDS_PACKAGE}.image", "add_outpaint", "run_outpaint"),
    "inpaint": Command("redraw the white part of a mask", f"{_COMMANDS_PACKAGE}.image", "add_inpaint", "run_inpaint"),
    "reproduce": Command(
        "regenerate an image from the recipe in its PNG",
        f"{_COMMANDS_PACKAGE}.recorded",
        "add_reproduce",
        "run_reproduce",
    ),
    "resume": Command(
        "finish an interrupted run from its --checkpoint file",
        f"{_COMMANDS_PACKAGE}.recorded",
        "add_resume",
        "run_resume",
    ),
    "eval-coherence": Command(
        "how alike the crops of each image are (SyncDiffusion's metrics)",
        f"{_COMMANDS_PACKAGE}.coherence",
        "add_eval_coherence",
        "run_eval_coherence",
    ),
    "batch": Command(
        "make many recorded runs from a JSON-lines file, resumably, across torchrun ranks",
        f"{_COMMANDS_PACKAGE}.batch",
        "add_batch",
        "run_batch",
    ),
    "eval": Command(
        "quality metrics: CLIP score, intra-LPIPS/Style, FID, KID, GIQA",
        f"{_COMMANDS_PACKAGE}.evaluate",
        "add_eval",
        "run_eval",
    ),
    "eval-suite": Command(
        "generate the papers' protocol (settings × sizes × prompts, with references) and evaluate it",
        f"{_COMMANDS_PACKAGE}.eval_suite",
        "add_eval_suite",
        "run_eval_suite",
    ),
    "ui": Command(
        "a web page for panoramas and painted regions (needs the ui extra: pip install 'multidiffusion[ui]')",
        "multidiffusion.interfaces.ui.app",
        "add_ui",
        "run_ui",
    ),
}
"""Every subcommand, in the order ``--help`` lists them."""


def build_parser(only: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command-line parser (the CLI reference, docs/cli.md, is its ``--help``). Every command is listed; only
    those in ``only`` (default: all) get their options, which imports their modules."""
    from multidiffusion import __version__

    parser = _Parser(
        prog="multidiffusion",
        description="Panoramas and any-size canvases from a pretrained diffusion model (MultiDiffusion).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help[:1].upper() + command.help[1:] + ".")
        if only is None or name in only:
            command.function(command.add)(p)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    """Warnings as one ``warning: …`` line (no source location) on the command line."""
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``multidiffusion`` console script; returns the exit status."""
    # transformers warns at import about optional image processors we never use.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.formatwarning = _one_line_warning
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=argv[:1])  # the chosen command's options; none for --help and --version
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            if getattr(args, "quiet", False):  # -q: errors only (notices of fallbacks, library chatter are warnings)
                warnings.simplefilter("ignore")
            command = COMMANDS[args.command]
            return int(command.function(command.run)(args))
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
