"""Region files: the canvas, its background and its regions (prompts with masks or boxes) as JSON. Errors name the
offending JSON path (``regions[2].box``). (A *layout* in this package is how views are laid: ``ViewSettings.layout``.)

Format (sizes in pixels; file paths relative to the region file, and inside its folder)::

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
                                                      #     "strength": 1.0, "feather": 4,
                                                      #     "conditional": "repaint"}
    }

``init_image`` places the image with its top-left corner at (left, top) px of the canvas; its pixels are kept
(blended every step, docs/image_inputs.md) except where its optional mask is white, and everything outside it is
drawn by the regions. ``strength`` below 1 starts the drawn part from the image noised to that strength.

Every file a region file names (masks, the ``init_image`` and its mask, control images, LoRAs, local ControlNet
folders) must be inside its *root*: the region file's own folder unless the caller gives another (the web UI gives
the upload's folder, and then only relative names are taken). Names are resolved (``..`` and symbolic links)
before anything is opened; one that resolves outside the root is refused with the same line whether or not the
file exists, and messages name files relative to the root, never by their full path (docs/regions.md).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from multidiffusion.adapters.customise.lora import LoraSpec
from multidiffusion.adapters.loading.resolve import looks_like_repo_id
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.conditional import ConditionalSampler
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
INIT_IMAGE_KEYS = {"path", "left", "top", "mask", "strength", "feather", "conditional"}
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


@dataclass(frozen=True)
class Folder:
    """Where a region file's names point: ``base``, the folder names are relative to, inside ``root``, the folder
    no name may leave (both resolved); ``relative_only``: absolute names are refused even inside the root."""

    base: Path
    root: Path
    relative_only: bool = False

    @classmethod
    def of(cls, base: str | Path, root: str | Path | None = None) -> Folder:
        """``base`` and ``root`` resolved; ``root`` None: ``base`` itself, where absolute names inside it are
        accepted. A root given (an upload's folder) takes relative names only: an upload does not know where it is
        stored, and a guessed absolute name must not tell whether it is inside."""
        base = Path(base).resolve()
        if root is None:
            return cls(base, base)
        return cls(base, Path(root).resolve(), relative_only=True)

    def file(self, name: str, where: str) -> Path:
        """``name`` (as the region file gives it, at JSON path ``where``) as a path inside the root; refused when it
        resolves (``..``, symbolic links) outside, or is absolute where :attr:`relative_only`, before anything is
        opened, so the line is the same whether such a file exists or not."""
        outside = InvalidInputError(
            f"{where} names a file outside the region file's folder; a region file may name only files in its "
            "folder or below it"
        )
        if not name or "\x00" in name or (self.relative_only and Path(name).is_absolute()):
            raise outside
        # ``..`` first as text, so that nothing outside the root is looked up (whether a folder there is a
        # symbolic link would change where a name lands); then the symbolic links inside
        joined = Path(os.path.normpath(self.base / name))
        if not joined.is_relative_to(self.root):
            raise outside
        try:
            path = joined.resolve()
        except (OSError, RuntimeError, ValueError):  # a symbolic-link loop, a name the system refuses
            raise outside from None
        if not path.is_relative_to(self.root):
            raise outside
        return path

    def shown(self, path: Path) -> str:
        """``path`` as messages name it: relative to the root (a full path can reveal a server's folders)."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return path.name

    @contextmanager
    def reading(self, path: Path) -> Iterator[None]:
        """Errors raised while reading ``path`` name it as :meth:`shown` does instead of by its full path."""
        try:
            yield
        except InvalidInputError as exc:
            raise InvalidInputError(str(exc).replace(repr(str(path)), repr(self.shown(path)))) from exc


def parse_region_file(data: Any, base: str | Path, root: str | Path | None = None) -> RegionFile:
    """Validate a layout object (parsed JSON); file paths are relative to ``base`` and must stay inside ``root``
    (``base`` itself when None; see the module's docstring)."""
    folder = Folder.of(base, root)
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
            mask_path = folder.file(_string(raw, "mask", where) or "", f"{where}.mask")
            with folder.reading(mask_path):
                mask = read_mask(mask_path, f"{where}.mask")
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
                control=_controls(raw.get("control"), folder, f"{where}.control"),
                loras=_loras(raw.get("loras"), folder, f"{where}.loras"),
            )
        )
    raw_image = data.get("init_image")
    image = _init_image(raw_image, folder, height, width) if raw_image is not None else None
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


def _model(folder: Folder, name: str, where: str) -> str:
    """A ControlNet: a folder inside the root when it names one there, else a hub id (``owner/name``) as given."""
    candidate = folder.file(name, where)
    if candidate.exists():
        return str(candidate)
    if not looks_like_repo_id(name):
        raise InvalidInputError(
            f"{where} names no folder in the region file's folder and no hub id (owner/name): {name!r}"
        )
    return name


def _items(raw: Any, where: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidInputError(f"{where} must be a list")
    return raw


def _controls(raw: Any, folder: Folder, where: str) -> tuple[ControlSpec, ...]:
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
            _model(folder, model, f"{at}.model"),
            str(folder.file(image, f"{at}.image")),
            1.0 if numbers["scale"] is None else numbers["scale"],
            0.0 if numbers["start"] is None else numbers["start"],
            1.0 if numbers["end"] is None else numbers["end"],
            _string(item, "resize", at) or "stretch",
        )
        spec.check(at)
        specs.append(spec)
    return tuple(specs)


def _loras(raw: Any, folder: Folder, where: str) -> tuple[LoraSpec, ...]:
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
        specs.append(LoraSpec(str(folder.file(spec.path, at)), spec.scale))
    return tuple(specs)


def _init_image(raw: Any, folder: Folder, height: int, width: int) -> ImageStart:
    """The layout's ``init_image`` (a path, or an object of :data:`INIT_IMAGE_KEYS`) placed on the canvas."""
    where = "init_image"
    spec = {"path": raw} if isinstance(raw, str) else raw
    if not isinstance(spec, dict):
        raise InvalidInputError(f"{where} must be an image path or an object with a path")
    _unknown(spec, INIT_IMAGE_KEYS, where)
    path = folder.file(_string(spec, "path", where, required=True) or "", f"{where}.path")
    left, top = (spec.get(k, 0) for k in ("left", "top"))
    for key, value in (("left", left), ("top", top)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError(f"{where}.{key} must be a whole number of pixels ≥ 0, got {value!r}")
    with folder.reading(path):
        pixels = read_image(path, f"{where} image")
    mask_name = _string(spec, "mask", where)
    mask_path = None if mask_name is None else folder.file(mask_name, f"{where}.mask")
    known = None
    if mask_path is not None:
        with folder.reading(mask_path):
            known = read_known(mask_path, tuple(pixels.shape[2:]), what=f"{where}.mask")
    canvas, known = place(pixels, known, (height, width), left, top, where)
    strength = _number(spec, "strength", where)
    feather = _number(spec, "feather", where)
    record = {"mode": "init_image", "input": file_record(path), "left": left, "top": top}
    if mask_path is not None:
        record["mask"] = file_record(mask_path)
    return ImageStart(
        canvas,
        known,
        strength=1.0 if strength is None else strength,
        feather=DEFAULT_FEATHER_PX if feather is None else feather,
        conditional=_conditional(spec.get("conditional"), where),
        record=record,
    )


def _conditional(raw: Any, where: str) -> ConditionalSampler | None:
    """``init_image.conditional``: a sampler's name (``"repaint"``) or an object of its fields (``{"name": "repaint",
    "passes": 10, "fraction": 0.5}``); absent: the blend."""
    if raw is None:
        return None
    spec = {"name": raw} if isinstance(raw, str) else raw
    if not isinstance(spec, dict):
        raise InvalidInputError(f"{where}.conditional must be a sampler's name or an object with a name")
    _unknown(spec, {"name", "passes", "fraction", "span", "iterations"}, f"{where}.conditional")
    return ConditionalSampler(**spec)


def named_files(data: Any) -> set[str]:
    """The files a layout object (parsed JSON, not yet validated) names and reads when loaded: its regions' masks
    and control images, its ``init_image`` and that image's mask; LoRAs and ControlNets are left out (they are
    loaded with the model, not with the layout). What is not a string is skipped: :func:`parse_region_file`
    refuses it."""
    names: list[Any] = []
    regions = data.get("regions") if isinstance(data, dict) else None
    for region in regions if isinstance(regions, list) else []:
        if isinstance(region, dict):
            names.append(region.get("mask"))
            controls = region.get("control")
            for control in controls if isinstance(controls, list) else []:
                names.append(control.get("image") if isinstance(control, dict) else None)
    image = data.get("init_image") if isinstance(data, dict) else None
    names += [image] if not isinstance(image, dict) else [image.get("path"), image.get("mask")]
    return {name for name in names if isinstance(name, str)}


def load_region_file(path: str | Path, root: str | Path | None = None, shown: str | None = None) -> RegionFile:
    """Read and validate a layout JSON file. The files it names must be inside ``root`` (None: the file's own
    folder); ``shown`` is how messages name the file (None: its path as given)."""
    path = Path(path)
    name = repr(str(path) if shown is None else shown)
    if path.is_dir():
        raise InvalidInputError(f"layout {name} is a folder; give a layout JSON file")
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_LAYOUT_BYTES + 1)
    except OSError as exc:
        raise InvalidInputError(f"cannot read layout file {name}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_LAYOUT_BYTES:
        raise InvalidInputError(f"layout {name} is over {MAX_LAYOUT_BYTES // 2**20} MiB; a layout is a few kB")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"layout {name} is not UTF-8 text (byte {exc.start})") from exc
    return parse_region_file(parse_json(text, f"layout {name}"), path.parent, root)


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
