"""``multidiffusion eval IMAGE… [--reference DIR]``: the quality metrics of the MultiDiffusion / SyncDiffusion papers.

Every image is cut into non-overlapping square crops of ``--crop`` px (default: the image's height), as
``eval-coherence`` does; an image that fits only one crop gives that one (its top-left square). Then:

* per image: intra-LPIPS and intra-Style between its crops (``eval-coherence``'s code; need the ``lpips`` extra),
  the mean CLIP score of its crops against its prompt (``--prompt``, else the prompt recorded in the PNG by this
  tool or in A1111's ``parameters`` text; needs a CLIP model), and its GIQA-style KNN score (mean over its crops);
* over the set, against ``--reference DIR`` (single-view images, cropped the same way): FID, KID (mean and std
  over subsets of min(50, n) crops) and the mean KNN score. These need a feature extractor: ``--features PATH``
  (a TorchScript module saved with ``torch.jit.save``: uint8 (N, 3, S, S) → (N, D), S its ``input_size``
  attribute or 299) or the FID Inception of torch-fidelity (``--inception PATH``, default its cached file).

A metric whose weights are missing prints ``n/a`` after one warning saying what to pass.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from multidiffusion.adapters.metrics.quality import (
    DEFAULT_CLIP,
    ClipScorer,
    MetricUnavailable,
    fid,
    image_features,
    kid,
    knn_distance,
    load_clip,
    load_inception,
    load_torchscript_features,
)
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.metrics.coherence import crop_grid
from multidiffusion.interfaces.cli.commands.coherence import load_image, vgg_metrics

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
IMAGE_COLUMNS: tuple[str, ...] = ("clip_score", "intra_lpips", "intra_style", "giqa")
SET_COLUMNS: tuple[str, ...] = ("fid", "kid", "kid_std")


def add_eval(e: argparse.ArgumentParser) -> None:
    """The ``eval`` command's options."""
    e.description = (
        "Per image: mean CLIP score of its crops against its prompt (from --prompt or the PNG's "
        "metadata; needs a CLIP model), intra-LPIPS and intra-Style between its crops (need the lpips extra) and "
        "a GIQA-style KNN score. Against --reference DIR: FID and KID of all crops (need --features or the FID "
        "Inception). Metrics without their weights print n/a."
    )
    e.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, …)")
    e.add_argument("--reference", metavar="DIR", default=None, help="folder of reference (single-view) images")
    e.add_argument("--prompt", default=None, help="prompt for the CLIP score (default: each PNG's recorded prompt)")
    add_metric_options(e)
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument("-q", "--quiet", action="store_true", help="no warnings on stderr")


def add_metric_options(p: argparse.ArgumentParser) -> None:
    """--crop, --clip, --inception, --features and --k: how the metrics cut images and which weights they use."""
    p.add_argument("--crop", type=int, default=None, metavar="PX", help="crop side (default: each image's height)")
    p.add_argument("--clip", default=DEFAULT_CLIP, metavar="MODEL", help="CLIP folder or cached repo id")
    p.add_argument("--inception", default=None, metavar="PATH", help="torch-fidelity's FID Inception .pth")
    p.add_argument(
        "--features", default=None, metavar="PATH", help="TorchScript feature extractor (replaces Inception)"
    )
    p.add_argument("--k", type=int, default=5, help="nearest reference crops for the GIQA score (default 5)")


# ---- inputs --------------------------------------------------------------------------------------------------


def sample_crops(image: Tensor, size: int | None) -> Tensor:
    """Square crops (M, 3, s, s) of an image (3, H, W): ``eval-coherence``'s grid when two or more fit, else the
    top-left square; s = ``size`` (default H), at most min(H, W)."""
    s = min(size if size is not None else image.shape[1], *image.shape[1:])
    if (image.shape[1] // s) * (image.shape[2] // s) >= 2:
        return crop_grid(image, s)
    return image[None, :, :s, :s]


def read_prompt(path: str) -> str | None:
    """The prompt a PNG records: this tool's JSON recipe (``multidiffusion`` text), else the first part of
    AUTOMATIC1111's ``parameters`` text; None when there is neither."""
    from PIL import Image

    from multidiffusion.pipeline.settings.recipe import METADATA_KEY

    try:
        with Image.open(path) as image:
            text = dict(getattr(image, "text", None) or image.info)
    except Exception:
        return None
    if isinstance(text.get(METADATA_KEY), str):
        try:
            recipe = json.loads(text[METADATA_KEY])
            prompt = recipe.get("prompt")
            if isinstance(prompt, list) and prompt:
                prompt = prompt[min(int(recipe.get("image_index") or 0), len(prompt) - 1)]
            if isinstance(prompt, str) and prompt.strip():
                return prompt
        except (ValueError, AttributeError, TypeError, RecursionError):  # a crafted recipe: use the text instead
            pass
    parameters = text.get("parameters")
    if isinstance(parameters, str) and parameters.strip():
        lines = parameters.strip().splitlines()
        body = "\n".join(lines[:-1]) if len(lines) > 1 else ""  # the last line holds "Steps: …, Seed: …"
        prompt = body.split("\nNegative prompt:")[0].strip()
        return prompt or None
    return None


def reference_files(folder: str) -> list[str]:
    """The image files directly inside ``folder``, sorted.

    Raises:
        InvalidInputError: it is not a folder, or it holds no image files.
    """
    path = Path(folder)
    if not path.is_dir():
        raise InvalidInputError(f"--reference {folder!r} is not a folder")
    files = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InvalidInputError(f"--reference {folder!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


# ---- the metrics ---------------------------------------------------------------------------------------------


def evaluate(
    paths: Sequence[str],
    reference: Sequence[str] | None = None,
    *,
    crop: int | None = None,
    prompt: str | None = None,
    clip: ClipScorer | None = None,
    features: nn.Module | None = None,
    vgg_model: Any | None = None,
    k: int = 5,
) -> dict[str, Any]:
    """The metrics of ``paths`` (image files), against ``reference`` (image files) for the set metrics.

    Args:
        crop: Crop side in px (default: each image's height). See :func:`sample_crops`.
        prompt: Prompt for every image's CLIP score; None reads each PNG's recorded prompt.
        clip: The CLIP model; None leaves ``clip_score`` None.
        features: Feature extractor, uint8 (N, 3, S, S) → (N, D); None leaves ``giqa``, ``fid``, ``kid`` None.
        vgg_model: An LPIPS-VGG model; None leaves ``intra_lpips`` and ``intra_style`` None.
        k: Nearest reference crops averaged by the GIQA score.

    Returns:
        ``{"images": [row, …], "summary": {…}}``; a row has ``image``, ``crop`` (px), ``crops``, ``prompt`` and
        :data:`IMAGE_COLUMNS`; the summary has ``images``, ``reference``, the mean ``clip_score`` and ``giqa``
        and :data:`SET_COLUMNS` (None where unavailable).

    Raises:
        InvalidInputError: a missing or unreadable image, a bad ``crop`` or ``k``, or fewer than 2 crops on a
            side of FID / KID.
    """
    if crop is not None and crop < 1:
        raise InvalidInputError(f"--crop must be a positive number of pixels, got {crop}")
    if k < 1:
        raise InvalidInputError(f"--k must be at least 1, got {k}")
    crops = [sample_crops(load_image(p), crop) for p in paths]
    ref = torch.cat([sample_crops(load_image(p), crop) for p in reference]) if reference else None
    if ref is not None:
        _check_counts(sum(len(c) for c in crops), len(ref))
    fake = real = None
    if features is not None and ref is not None:
        real = image_features(features, ref)
        fake = image_features(features, torch.cat(crops))
    knn = knn_distance(fake, real, k) if fake is not None and real is not None else None

    rows, start = [], 0
    for path, image_crops in zip(paths, crops, strict=True):
        text = prompt if prompt is not None else read_prompt(path)
        row: dict[str, Any] = {"image": path, "crop": int(image_crops.shape[-1]), "crops": len(image_crops)}
        row["prompt"] = text
        row["clip_score"] = float(clip.scores(image_crops, text).mean()) if clip is not None and text else None
        two = len(image_crops) >= 2 and vgg_model is not None
        row["intra_lpips"], row["intra_style"] = vgg_metrics(vgg_model, image_crops) if two else (None, None)
        row["giqa"] = float(knn[start : start + len(image_crops)].mean()) if knn is not None else None
        start += len(image_crops)
        rows.append(row)

    clips = [r["clip_score"] for r in rows if r["clip_score"] is not None]
    summary: dict[str, Any] = {
        "images": len(paths),
        "reference": len(reference) if reference else 0,
        "clip_score": sum(clips) / len(clips) if clips else None,
        "giqa": float(knn.mean()) if knn is not None else None,
        "fid": None,
        "kid": None,
        "kid_std": None,
    }
    if fake is not None and real is not None:
        summary["fid"] = fid(fake, real)
        summary["kid"], summary["kid_std"] = kid(fake, real)
    return {"images": rows, "summary": summary}


def _check_counts(fake: int, real: int) -> None:
    if fake < 2 or real < 2:
        raise InvalidInputError(
            f"FID and KID need at least 2 crops on each side; the images give {fake} and the reference {real} "
            "(add images, or use a smaller --crop)"
        )


# ---- output --------------------------------------------------------------------------------------------------


def format_table(result: dict[str, Any]) -> str:
    """One line per image, then a summary line (``all``) with the set metrics and the means; ``n/a`` where a
    metric's weights are missing, blank where a metric does not apply to the line."""

    def cell(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    header = ["image", "crop", "crops", *IMAGE_COLUMNS, *SET_COLUMNS]
    lines = [header]
    for r in result["images"]:
        lines.append([cell(r.get(key)) for key in header[: 3 + len(IMAGE_COLUMNS)]] + [""] * len(SET_COLUMNS))
    s = result["summary"]
    per_set = [cell(s["clip_score"]), "", "", cell(s["giqa"])]
    lines.append([f"all ({s['images']} vs {s['reference']} reference)", "", "", *per_set])
    lines[-1] += [cell(s[key]) if s["reference"] else "" for key in SET_COLUMNS]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in lines)


# ---- the command ---------------------------------------------------------------------------------------------


def _try(load: Callable[[], Any], log: Callable[..., None]) -> Any:
    """``load()``, or None after one warning when its weights are missing."""
    try:
        return load()
    except MetricUnavailable as exc:
        log(f"warning: {exc}; printing n/a")
        return None


def _lpips(log: Callable[..., None]) -> Any:
    from multidiffusion.adapters.metrics.lpips import LpipsUnavailable, check_lpips_available, load_lpips_model

    try:
        check_lpips_available()
        return load_lpips_model("cpu")
    except LpipsUnavailable as exc:
        log(f"warning: intra-LPIPS and intra-Style need LPIPS: {exc}; printing n/a")
        return None


def metric_models(
    args: argparse.Namespace, log: Callable[..., None], reference: bool, wants_clip: bool
) -> tuple[ClipScorer | None, nn.Module | None, Any]:
    """(CLIP scorer, feature extractor, LPIPS-VGG model) the options ask for, each None after one warning where its
    weights are missing: features only with a reference set (``--features``, else the FID Inception), CLIP only
    when some image has a prompt."""
    if args.features is not None:
        features = load_torchscript_features(args.features)
    elif reference:
        features = _try(lambda: load_inception(args.inception), log)
    else:
        features = None
    clip = _try(lambda: load_clip(args.clip), log) if wants_clip else None
    if not wants_clip:
        log("warning: no prompt given (--prompt) or recorded in the images; the CLIP score is n/a")
    return clip, features, _lpips(log)


def run_eval(args: argparse.Namespace) -> int:
    """``multidiffusion eval``: check every input, load what weights are there, print the table or JSON."""
    from multidiffusion.interfaces.cli.launch import logger

    log = logger(args)
    for path in args.images:  # every file is checked before any weights load
        load_image(path)
    reference = reference_files(args.reference) if args.reference else None
    if args.crop is not None and args.crop < 1:
        raise InvalidInputError(f"--crop must be a positive number of pixels, got {args.crop}")
    wants_clip = args.prompt is not None or any(read_prompt(p) for p in args.images)
    clip, features, vgg = metric_models(args, log, bool(reference), wants_clip)
    result = evaluate(
        args.images,
        reference,
        crop=args.crop,
        prompt=args.prompt,
        clip=clip,
        features=features,
        vgg_model=vgg,
        k=args.k,
    )
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0
