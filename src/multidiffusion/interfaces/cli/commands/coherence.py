"""``multidiffusion eval-coherence``: how alike the non-overlapping crops of each image are.

Per image: intra-LPIPS and intra-Style (SyncDiffusion §5.1: mean pairwise LPIPS-VGG distance, and mean
pairwise Gram-matrix distance of the VGG16 features, between crops; they need the ``lpips`` extra and its
VGG16 weights and print ``n/a`` without them), and the weight-free colour spread and std spread of
:mod:`multidiffusion.core.metrics.coherence`. Lower is more coherent for all four.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.metrics.coherence import colour_spread, crop_grid, mean_pairwise, std_spread
from multidiffusion.interfaces.cli import launch

COLUMNS: tuple[str, ...] = ("intra_lpips", "intra_style", "colour_spread", "std_spread")


def load_image(path: str) -> torch.Tensor:
    """An image file as (3, H, W) float32 in [−1, 1]; one clear error if it cannot be read."""
    from multidiffusion.pipeline.inputs.image_files import open_image

    if not Path(path).is_file():
        raise InvalidInputError(f"image {path!r} does not exist")
    rgb = np.asarray(open_image(path, "image", "RGB"), dtype=np.float32)
    return torch.from_numpy(rgb).permute(2, 0, 1) / 127.5 - 1.0


def vgg_metrics(model: Any, crops: torch.Tensor, batch: int = 8) -> tuple[float, float]:
    """(intra-LPIPS, intra-Style) of crops (M, 3, s, s) in [−1, 1] with an LPIPS-VGG model.

    intra-Style is the mean over crop pairs of Σ_l ‖G_l(a) − G_l(b)‖²_F over the five VGG16 stages.
    """
    from multidiffusion.adapters.metrics.lpips import gram_matrices

    with torch.no_grad():

        def lpips_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.cat([model(a[k : k + batch], b[k : k + batch]).reshape(-1) for k in range(0, len(a), batch)])

        per_chunk = [gram_matrices(model, crops[k : k + batch]) for k in range(0, len(crops), batch)]
        grams = [torch.cat(stage) for stage in zip(*per_chunk, strict=True)]  # per stage (M, C, C)
        i, j = torch.triu_indices(len(crops), len(crops), offset=1)
        style = sum(((g[i] - g[j]) ** 2).sum((1, 2)) for g in grams)
        return mean_pairwise(crops, lpips_distance), float(style.double().mean())


def evaluate(paths: Sequence[str], crop: int | None, vgg_model: Any | None) -> list[dict[str, Any]]:
    """One row per image: ``image``, ``crop``, ``crops`` and the four metrics (None where unavailable)."""
    rows = []
    for path in paths:
        image = load_image(path)
        size = crop if crop is not None else min(image.shape[1:])
        crops = crop_grid(image, size)
        row: dict[str, Any] = {"image": path, "crop": size, "crops": int(crops.shape[0])}
        row["intra_lpips"], row["intra_style"] = (
            vgg_metrics(vgg_model, crops) if vgg_model is not None else (None, None)
        )
        row["colour_spread"] = colour_spread(crops)
        row["std_spread"] = std_spread(crops)
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table, one image per line; ``n/a`` for metrics that need the missing VGG weights."""

    def cell(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    header = ["image", "crop", "crops", *COLUMNS]
    lines = [header] + [[cell(r[k]) for k in header] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def run(paths: Sequence[str], crop: int | None, as_json: bool, log: Any) -> str:
    """The command's output text; LPIPS is tried once and its absence reported through ``log``."""
    from multidiffusion.adapters.metrics.lpips import LpipsUnavailable, load_lpips_model

    if crop is not None and crop < 1:
        raise InvalidInputError(f"--crop must be a positive number of pixels, got {crop}")
    for path in paths:  # every file is checked before any work
        if not Path(path).is_file():
            raise InvalidInputError(f"image {path!r} does not exist")
    try:
        model = load_lpips_model("cpu")
    except LpipsUnavailable as exc:
        log(f"note: intra-LPIPS and intra-Style need VGG16 weights: {exc}")
        model = None
    rows = evaluate(paths, crop, model)
    return json.dumps(rows, indent=2) if as_json else format_table(rows)


def add_eval_coherence(e: argparse.ArgumentParser) -> None:
    """The ``eval-coherence`` command's options."""
    e.description = (
        "Per image: intra-LPIPS and intra-Style (mean pairwise distance between non-overlapping "
        "crops; need the lpips extra and VGG16 weights, else n/a) and the weight-free spread of crop mean "
        "colours and crop std. Lower is more coherent."
    )
    e.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, …)")
    e.add_argument("--crop", type=int, default=None, metavar="PX", help="crop side (default: the image height)")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("-q", "--quiet", action="store_true", help="no notes on stderr")


def run_eval_coherence(args: argparse.Namespace) -> int:
    """``multidiffusion eval-coherence``: print the coherence metrics of each image."""
    print(run(args.images, args.crop, args.json, launch.logger(args)))
    return 0
