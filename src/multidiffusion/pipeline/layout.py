"""Region layouts from JSON files. Errors name the offending JSON path (``regions[2].box``).

Format (sizes in pixels; mask paths relative to the layout file)::

    {
      "width": 1024, "height": 512,
      "background": "a sunny beach",                  # or {"prompt": …, "negative_prompt": …, "guidance_scale": …}
      "negative_prompt": "blurry",                    # optional, default for every prompt
      "guidance_scale": 7.5,                          # optional, default for every prompt
      "seed": 1,                                      # optional
      "regions": [
        {"name": "dog", "prompt": "a corgi", "box": [100, 200, 400, 500]},
        {"prompt": "a red ball", "mask": "ball.png", "negative_prompt": "…", "guidance_scale": 9, "weight": 1.0}
      ]
    }
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.errors import InvalidInputError
from ..core.regions import Region, mask_tensor

TOP_KEYS = {"width", "height", "background", "negative_prompt", "guidance_scale", "seed", "regions"}
REGION_KEYS = {"name", "prompt", "box", "mask", "negative_prompt", "guidance_scale", "weight"}
BACKGROUND_KEYS = {"prompt", "negative_prompt", "guidance_scale"}


@dataclass(frozen=True)
class Background:
    """The prompt for every cell the regions leave uncovered (weight max(0, 1 − Σ foreground))."""

    prompt: str
    negative_prompt: str | None = None
    guidance_scale: float | None = None


@dataclass
class Layout:
    """A parsed layout: canvas size in pixels, background, regions and optional defaults."""

    width: int
    height: int
    regions: list[Region]
    background: Background | None = None
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    source: dict[str, Any] = field(default_factory=dict)  # the JSON as given, for metadata


def _unknown(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        prefix = f"{where}." if where else ""
        raise InvalidInputError(f"unknown key {prefix}{extra[0]} in the layout; allowed: {', '.join(sorted(allowed))}")


def _string(obj: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise InvalidInputError(f"{where}.{key} is required" if where else f"{key} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{where + '.' if where else ''}{key} must be a string")
    return value


def _number(obj: dict[str, Any], key: str, where: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"{where + '.' if where else ''}{key} must be a number")
    return float(value)


def _size(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(f"{key} must be a positive whole number of pixels, got {value!r}")
    return value


def read_mask(path: Path, where: str) -> torch.Tensor:
    """A greyscale mask image → (H, W) float32 in [0, 1] (white = 1)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return mask_tensor(image.convert("L"), where)
    except (OSError, UnidentifiedImageError) as exc:
        raise InvalidInputError(f"{where}: cannot read mask image {str(path)!r}") from exc


def parse_layout(data: Any, base: Path) -> Layout:
    """Validate a layout object (parsed JSON); mask paths are relative to ``base``."""
    if not isinstance(data, dict):
        raise InvalidInputError("the layout must be a JSON object")
    _unknown(data, TOP_KEYS, "")
    width, height = _size(data, "width"), _size(data, "height")
    background = None
    bg = data.get("background")
    if isinstance(bg, str):
        background = Background(bg)
    elif isinstance(bg, dict):
        _unknown(bg, BACKGROUND_KEYS, "background")
        background = Background(
            _string(bg, "prompt", "background", required=True),
            _string(bg, "negative_prompt", "background"),
            _number(bg, "guidance_scale", "background"),
        )
    elif bg is not None:
        raise InvalidInputError("background must be a prompt string or an object with a prompt")
    raw_regions = data.get("regions", [])
    if not isinstance(raw_regions, list):
        raise InvalidInputError("regions must be a list")
    regions = []
    for i, raw in enumerate(raw_regions):
        where = f"regions[{i}]"
        if not isinstance(raw, dict):
            raise InvalidInputError(f"{where} must be an object")
        _unknown(raw, REGION_KEYS, where)
        box = raw.get("box")
        if box is not None and (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in box)
        ):
            raise InvalidInputError(f"{where}.box must be four whole pixel numbers [x0, y0, x1, y1]")
        mask = None
        if raw.get("mask") is not None:
            mask_path = _string(raw, "mask", where)
            mask = read_mask(base / mask_path, f"{where}.mask")
        weight = _number(raw, "weight", where)
        regions.append(
            Region(
                prompt=_string(raw, "prompt", where, required=True),
                mask=mask,
                box=tuple(box) if box is not None else None,
                negative_prompt=_string(raw, "negative_prompt", where),
                guidance_scale=_number(raw, "guidance_scale", where),
                weight=1.0 if weight is None else weight,
                name=_string(raw, "name", where),
            )
        )
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise InvalidInputError(f"seed must be a whole number ≥ 0, got {seed!r}")
    return Layout(
        width=width,
        height=height,
        regions=regions,
        background=background,
        negative_prompt=_string(data, "negative_prompt", ""),
        guidance_scale=_number(data, "guidance_scale", ""),
        seed=seed,
        source=data,
    )


def load_layout(path: str | Path) -> Layout:
    """Read and validate a layout JSON file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInputError(f"cannot read layout file {str(path)!r}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"layout {str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    return parse_layout(data, path.parent)
