"""Command-line options of the grouped settings: the views, SyncDiffusion and the global view.

Each option is spelled as its settings field with dashes, behind its group's name: ``SyncSettings.stop_step`` is
``--sync-stop-step`` (and ``sync_stop_step`` in a recipe), ``GlobalView.until`` is ``--global-view-until``; the views'
fields are the canvas's own words (``--window``, ``--stride``, ``--weights``, ``--layout``, ``--tile``). Defaults are
read from the settings objects themselves. The older spellings (``--sync-stop``, ``--sync-chunk``, ``--view-layout``,
``--circular``, and ``--layout FILE`` for a region file) still work and warn once.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from multidiffusion.core.engine.views import TILE_NAMES
from multidiffusion.core.engine.weights import WEIGHT_KINDS
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.global_view import DEFAULT_WEIGHT as GLOBAL_VIEW_WEIGHT
from multidiffusion.core.features.global_view import GlobalView
from multidiffusion.core.features.sync import SYNC_LOSSES, SyncSettings
from multidiffusion.core.layouts.named import LAYOUT_NAMES
from multidiffusion.pipeline.settings.views import ViewSettings, with_x_wrapped

SYNC_DEFAULTS = SyncSettings()
_warned: set[str] = set()


def warn_deprecated(old: str, new: str) -> None:
    """One ``warning:`` line on stderr, once per process, naming an old option's new spelling."""
    if old not in _warned:
        _warned.add(old)
        print(f"warning: {old} is deprecated; use {new}", file=sys.stderr)


class Renamed(argparse.Action):
    """Stores the value under the new spelling's destination, warning that an older spelling (``renamed``) was used."""

    def __init__(self, option_strings: list[str], dest: str, renamed: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.renamed = renamed

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option: str | None = None) -> None:
        if option in self.renamed:
            warn_deprecated(option, "--" + self.dest.replace("_", "-"))
        setattr(namespace, self.dest, values)


class LayoutOption(argparse.Action):
    """``--layout NAME`` (a named view layout); for the regions command, also the older ``--layout FILE`` (the
    region file, now ``--regions-file``) when the value names no layout."""

    def __init__(self, option_strings: list[str], dest: str, region_file: bool = False, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.region_file = region_file

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option: str | None = None) -> None:
        if option == "--view-layout":
            warn_deprecated("--view-layout", "--layout")
        if values in LAYOUT_NAMES:
            namespace.layout = values
        elif self.region_file and option == "--layout":
            warn_deprecated("--layout FILE", "--regions-file FILE")
            namespace.regions_file = values
        else:
            parser.error(f"argument {option}: invalid choice: {values!r} (choose from {', '.join(LAYOUT_NAMES)})")


def add_view_options(p: argparse.ArgumentParser, *, region_file: bool = False) -> None:
    """``--window``, ``--stride``, ``--weights``, ``--layout`` and wrap-around (``--tile``, or ``--circular``)."""
    p.add_argument("--window", type=int, default=None, metavar="PX", help="view size (default: the model's)")
    p.add_argument(
        "--stride",
        type=int,
        default=None,
        metavar="PX",
        help="step between views, below the window so views blend (default: the model's, else window / 8: "
        "64 px for SD)",
    )
    p.add_argument(
        "--weights",
        default=None,
        choices=WEIGHT_KINDS,
        help="per-view weights: ramps toward inner edges (gaussian, feathered) or uniform (the paper's and "
        "diffusers') (default: gaussian; uniform with --sync; docs/fusion.md)",
    )
    p.add_argument(
        "--layout",
        dest="layout",
        action=LayoutOption,
        region_file=region_file,
        default=None,
        metavar="{" + ",".join(LAYOUT_NAMES) + "}",
        help="a cheaper named layout that sets stride and weights (docs/layouts.md; default: --stride/--weights)",
    )
    p.add_argument("--view-layout", dest="layout", action=LayoutOption, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--tile",
        default=None,
        choices=TILE_NAMES,
        help="seamless texture: wrap the views and the decode around x, y or both, so the image tiles "
        "without a seam (x is a 360° panorama)",
    )
    p.add_argument("--circular", action="store_true", help=argparse.SUPPRESS)  # the older --tile x


def view_settings(args: argparse.Namespace) -> ViewSettings:
    """The run's :class:`ViewSettings` from the options, checked once, before any model loads."""
    tile = args.tile
    if args.circular:
        warn_deprecated("--circular", "--tile x")
        tile = with_x_wrapped(tile, cli=True)
    return ViewSettings(window=args.window, stride=args.stride, weights=args.weights, layout=args.layout, tile=tile)


SYNC_HELP: dict[str, tuple[Any, str, str]] = {
    "weight": (float, "W", "w ≥ 0"),
    "decay": (float, "L", "step i uses w·L^i, L in (0, 1]"),
    "stop_step": (int, "STEP", "synchronise steps 0 … STEP−1 only"),
    "every": (int, "N", "synchronise every N-th step"),
    "anchor": (None, "center|INDEX", "the view the others follow, by index in row-major layout order"),
    "chunk_size": (int, "N", "views per gradient batch (the engine's batch, at most 128 views of 64×64 latent cells)"),
}
"""(type, metavar, help) of each value option of :class:`SyncSettings`; ``loss`` and ``checkpointing`` are below."""
SYNC_RENAMED: dict[str, tuple[str, ...]] = {"stop_step": ("--sync-stop",), "chunk_size": ("--sync-chunk",)}


def anchor(text: str) -> int | str:
    """``center`` or a view index (argparse type of ``--sync-anchor``)."""
    if text == "center":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'center' or a view index, got {text!r}") from None


def sync_flag(field: str) -> str:
    """The command-line spelling of a :class:`SyncSettings` field: ``--sync-`` and the field with dashes."""
    return "--sync-" + field.replace("_", "-")


def add_sync_options(p: argparse.ArgumentParser) -> None:
    """``--sync`` and one ``--sync-<field>`` option per :class:`SyncSettings` field (docs/sync.md)."""
    g = p.add_argument_group("SyncDiffusion (one coherent style across the canvas; docs/sync.md)")
    g.add_argument("--sync", action="store_true", help="pull every view toward the anchor view's style")
    for field, (kind, metavar, text) in SYNC_HELP.items():
        default = getattr(SYNC_DEFAULTS, field)
        g.add_argument(
            sync_flag(field),
            dest=f"sync_{field}",
            type=kind or anchor,
            default=None,
            metavar=metavar,
            help=f"{text} (default: {default})" if default is not None else text,
        )
        for old in SYNC_RENAMED.get(field, ()):  # older spellings: still read, warned about, not listed
            g.add_argument(old, dest=f"sync_{field}", action=Renamed, renamed=(old,), type=kind, help=argparse.SUPPRESS)
    g.add_argument(
        "--sync-loss",
        default=None,
        choices=SYNC_LOSSES,
        help="perceptual loss: lpips (needs the lpips package and VGG weights) or builtin (weight-free); "
        "default: lpips if available, else builtin with a notice",
    )
    g.add_argument("--sync-checkpointing", action="store_true", help="checkpoint activations: less memory, more time")


def sync_settings(args: argparse.Namespace, views: ViewSettings) -> SyncSettings | None:
    """The run's :class:`SyncSettings` (None without ``--sync``), checked once, before any model loads; a
    ``--sync-*`` option without ``--sync`` is an error (it would be ignored), and LPIPS is looked for here. A command
    without the sync options (``highres``) has none."""
    given = {f.name: getattr(args, f"sync_{f.name}", None) for f in fields(SyncSettings)}
    given = {name: value for name, value in given.items() if value is not None and value is not False}
    if given and not getattr(args, "sync", False):
        verb = "applies" if len(given) == 1 else "apply"
        raise InvalidInputError(f"{', '.join(map(sync_flag, given))} only {verb} with --sync; add --sync or drop them")
    if not getattr(args, "sync", False):
        return None
    settings = SyncSettings(**given)
    views.check_sync()
    if settings.loss == "lpips":
        from multidiffusion.adapters.metrics.lpips import LpipsUnavailable, check_lpips_available

        try:
            check_lpips_available()
        except LpipsUnavailable as exc:
            raise LpipsUnavailable(f"{exc}, or use --sync-loss builtin") from exc
    return settings


def add_global_view_options(p: argparse.ArgumentParser) -> None:
    """``--global-view [W]`` and ``--global-view-until F`` (panorama; docs/fusion.md)."""
    g = p.add_argument_group("global view (long-range coherence for one more model call per step; docs/fusion.md)")
    g.add_argument(
        "--global-view",
        type=float,
        nargs="?",
        const=GLOBAL_VIEW_WEIGHT,
        default=None,
        metavar="W",
        help="add one view of the whole canvas, pooled to fit the window; W > 0 is its weight against the crops' "
        f"(given alone: {GLOBAL_VIEW_WEIGHT:g}; default: off)",
    )
    g.add_argument(
        "--global-view-until",
        type=float,
        default=None,
        metavar="F",
        help=f"use it for the first fraction F of the steps, in (0, 1] (default: {GlobalView().until:g})",
    )


def global_view_settings(args: argparse.Namespace) -> GlobalView | None:
    """The run's :class:`GlobalView` (None without ``--global-view``), checked once, before any model loads."""
    if args.global_view is None:
        if args.global_view_until is not None:
            raise InvalidInputError("--global-view-until needs --global-view")
        return None
    until = {} if args.global_view_until is None else {"until": args.global_view_until}
    settings = GlobalView(args.global_view, **until)
    if getattr(args, "customise", None) is not None and args.customise.control:
        raise InvalidInputError("--global-view cannot be combined with --controlnet yet: drop one of them")
    return settings
