"""Region files: the canvas, its background and its regions (prompts with masks or boxes) as JSON. Errors name the
offending JSON path (``regions[2].box``). (A *layout* in this package is how views are laid: ``ViewSettings.layout``.)

Format (sizes in pixels; mask paths relative to the region file)::

    {
      "width": 1024, "height": 512,
      "background": "a sunny beach",                  # or {"prompt": …, "negative_prompt": …, "guidance_scale": …}
      "negative_prompt": "blurry",                    # optional, default for every prompt
      "guidance_scale": 7.5,                          # optional, default for every prompt
      "seed": 1,                                      # optional
      "regions": [
        {"name": "dog", "prompt": "a corgi", "box": [100, 200, 400, 500]},
        {"prompt": "a red ball", "mask": "ball.png", "negative_prompt": "…", "guidance_scale": 9, "weight": 1.0},
        {"prompt": "a castle", "box": [0, 0, 512, 512],
         "control": [{"model": "controlnet-canny", "image": "edges.png", "scale": 0.8, "start": 0, "end": 1}],
         "loras": [{"path": "castle-style.safetensors", "scale": 0.7}]}   # this region's views only
      ],
      "init_image": "photo.png"                       # optional: start from an image and keep it (outpainting);
                                                      # or {"path": …, "left": 0, "top": 0, "mask": "redraw.png",
                                                      #     "strength": 1.0, "feather": 4}
    }

``init_image`` places the image with its top-left corner at (left, top) px of the canvas; its pixels are kept
(blended every step, docs/image_inputs.md) except where its optional mask is white, and everything outside it is
drawn by the regions. ``strength`` below 1 starts the drawn part from the image noised to that strength.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from multidiffusion.adapters.customise.lora import LoraSpec
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.regions import Region, mask_tensor
from multidiffusion.pipeline.customise.control_spec import ControlSpec
from multidiffusion.pipeline.inputs.image_files import open_image
from multidiffusion.pipeline.modes.image_start import (
    DEFAULT_FEATHER_PX,
    ImageStart,
    file_record,
    place,
    read_image,
    read_known,
)
from multidiffusion.pipeline.settings.checks import MAX_REGIONS, check_canvas_pixels, check_text

MAX_LAYOUT_BYTES = 10 * 2**20  # a layout is a few kB; this reads no further (a huge file, /dev/zero)
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 0 … 2⁶⁴ − 1

TOP_KEYS = {"width", "height", "background", "negative_prompt", "guidance_scale", "seed", "regions", "init_image"}
INIT_IMAGE_KEYS = {"path", "left", "top", "mask", "strength", "feather"}
REGION_KEYS = {"name", "prompt", "box", "mask", "negative_prompt", "guidance_scale", "weight", "control", "loras"}
CONTROL_KEYS = {"model", "image", "scale", "start", "end", "resize"}
LORA_KEYS = {"path", "scale"}
BACKGROUND_KEYS = {"prompt", "negative_prompt", "guidance_scale"}


@dataclass(frozen=True)
class Background:
    """The prompt for every cell the regions leave uncovered (weight max(0, 1 − Σ foreground))."""

    prompt: str
    negative_prompt: str | None = None
    guidance_scale: float | None = None


@dataclass
class RegionFile:
    """A parsed region file: canvas size in pixels, background, regions and optional defaults."""

    width: int
    height: int
    regions: list[Region]
    background: Background | None = None
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    source: dict[str, Any] = field(default_factory=dict)  # the JSON as given, for metadata
    image: ImageStart | None = None  # the init_image, placed on the canvas


def _unknown(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        prefix = f"{where}." if where else ""
        key = extra[0] if extra[0].isprintable() and extra[0] else repr(extra[0])
        raise InvalidInputError(f"unknown key {prefix}{key} in the layout; allowed: {', '.join(sorted(allowed))}")


def _string(obj: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise InvalidInputError(f"{where}.{key} is required" if where else f"{key} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{where + '.' if where else ''}{key} must be a string")
    return check_text(value, f"{where + '.' if where else ''}{key}")


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
    return mask_tensor(open_image(path, "mask image", "L", f"{where}: "), where)


def parse_region_file(data: Any, base: Path) -> RegionFile:
    """Validate a layout object (parsed JSON); mask paths are relative to ``base``."""
    if not isinstance(data, dict):
        raise InvalidInputError("the layout must be a JSON object")
    _unknown(data, TOP_KEYS, "")
    width, height = _size(data, "width"), _size(data, "height")
    check_canvas_pixels(height, width)
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
    if len(raw_regions) > MAX_REGIONS:
        raise InvalidInputError(
            f"the layout has {len(raw_regions)} regions; the limit is {MAX_REGIONS} (merge regions that share a prompt)"
        )
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
                control=_controls(raw.get("control"), base, f"{where}.control"),
                loras=_loras(raw.get("loras"), base, f"{where}.loras"),
            )
        )
    image = _init_image(data.get("init_image"), base, height, width) if data.get("init_image") is not None else None
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED):
        raise InvalidInputError(f"seed must be a whole number in 0…{MAX_SEED}, got {seed!r}")
    return RegionFile(
        width=width,
        height=height,
        regions=regions,
        background=background,
        negative_prompt=_string(data, "negative_prompt", ""),
        guidance_scale=_number(data, "guidance_scale", ""),
        seed=seed,
        source=data,
        image=image,
    )


def _local(base: Path, path: str) -> str:
    """A path relative to the layout file when it names something there, else as given (a hub id)."""
    candidate = base / path
    return str(candidate) if candidate.exists() else path


def _items(raw: Any, where: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidInputError(f"{where} must be a list")
    return raw


def _controls(raw: Any, base: Path, where: str) -> tuple[ControlSpec, ...]:
    """A region's ``control``: [{"model": folder or hub id, "image": guide image, "scale", "start", "end",
    "resize"}], paths relative to the layout file."""
    specs = []
    for i, item in enumerate(_items(raw, where)):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise InvalidInputError(f"{at} must be an object with a model and an image")
        _unknown(item, CONTROL_KEYS, at)
        model = _string(item, "model", at, required=True) or ""
        image = _string(item, "image", at, required=True) or ""
        numbers = {k: _number(item, k, at) for k in ("scale", "start", "end")}
        spec = ControlSpec(
            _local(base, model),
            str(base / image),
            1.0 if numbers["scale"] is None else numbers["scale"],
            0.0 if numbers["start"] is None else numbers["start"],
            1.0 if numbers["end"] is None else numbers["end"],
            _string(item, "resize", at) or "stretch",
        )
        spec.check(at)
        specs.append(spec)
    return tuple(specs)


def _loras(raw: Any, base: Path, where: str) -> tuple[LoraSpec, ...]:
    """A region's ``loras``: [{"path": file, "scale": s}] or ["file[:scale]"], paths relative to the layout file."""
    specs = []
    for i, item in enumerate(_items(raw, where)):
        at = f"{where}[{i}]"
        if isinstance(item, str):
            spec = LoraSpec.parse(item)
        elif isinstance(item, dict):
            _unknown(item, LORA_KEYS, at)
            scale = _number(item, "scale", at)
            spec = LoraSpec(_string(item, "path", at, required=True) or "", 1.0 if scale is None else scale)
        else:
            raise InvalidInputError(f"{at} must be a path or an object with a path and a scale")
        specs.append(LoraSpec(_local(base, spec.path), spec.scale))
    return tuple(specs)


def _init_image(raw: Any, base: Path, height: int, width: int) -> ImageStart:
    """The layout's ``init_image`` (a path, or an object of :data:`INIT_IMAGE_KEYS`) placed on the canvas."""
    where = "init_image"
    spec = {"path": raw} if isinstance(raw, str) else raw
    if not isinstance(spec, dict):
        raise InvalidInputError(f"{where} must be an image path or an object with a path")
    _unknown(spec, INIT_IMAGE_KEYS, where)
    path = base / (_string(spec, "path", where, required=True) or "")
    left, top = (spec.get(k, 0) for k in ("left", "top"))
    for key, value in (("left", left), ("top", top)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError(f"{where}.{key} must be a whole number of pixels ≥ 0, got {value!r}")
    pixels = read_image(path, f"{where} image")
    mask_path = _string(spec, "mask", where)
    known = None if mask_path is None else read_known(base / mask_path, tuple(pixels.shape[2:]), what=f"{where}.mask")
    canvas, known = place(pixels, known, (height, width), left, top, where)
    strength = _number(spec, "strength", where)
    feather = _number(spec, "feather", where)
    record = {"mode": "init_image", "input": file_record(path), "left": left, "top": top}
    if mask_path is not None:
        record["mask"] = file_record(base / mask_path)
    return ImageStart(
        canvas,
        known,
        strength=1.0 if strength is None else strength,
        feather=DEFAULT_FEATHER_PX if feather is None else feather,
        record=record,
    )


def load_region_file(path: str | Path) -> RegionFile:
    """Read and validate a layout JSON file."""
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(f"layout {str(path)!r} is a folder; give a layout JSON file")
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_LAYOUT_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read layout file {str(path)!r}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_LAYOUT_BYTES:
        raise InvalidInputError(f"layout {str(path)!r} is over {MAX_LAYOUT_BYTES // 2**20} MiB; a layout is a few kB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"layout {str(path)!r} is not UTF-8 text (byte {exc.start})") from exc
    return parse_region_file(parse_json(text, f"layout {str(path)!r}"), path.parent)


def parse_json(text: str, what: str) -> Any:
    """JSON text → Python values; one line for anything that is not JSON (including nesting too deep to parse)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}") from exc
    except RecursionError as exc:
        raise InvalidInputError(f"{what} is nested too deeply to read") from exc
    except ValueError as exc:  # e.g. integers of more digits than Python converts
        raise InvalidInputError(f"{what} is not valid JSON: {str(exc).splitlines()[0]}") from exc


def load_layout(path: str | Path) -> RegionFile:
    """The old name of :func:`load_region_file` (a region file is not a view layout); warns once."""
    import warnings

    warnings.warn("load_layout is deprecated; use load_region_file", FutureWarning, stacklevel=2)
    return load_region_file(path)
