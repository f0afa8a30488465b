"""The recipe's schema: every key a recipe may hold, with its type and range, checked in one place.

A recipe is the JSON that a PNG written by this package carries (:meth:`GenerationMetadata.to_dict`). ``reproduce``,
``resume``, ``batch`` and the web UI's PNG drop all read it through
:func:`~multidiffusion.pipeline.settings.reproduce.read_recipe` and
:func:`~multidiffusion.pipeline.settings.reproduce.call_arguments`, which check it here. A recipe is untrusted input
(docs/security.md): whoever made the PNG chose every byte of it. So each key must have the type and range a run
records, sizes are checked before anything is allocated, and an unknown key is refused rather than ignored
(ignoring it could give another image with exit status 0). The first problem found is reported in one line.

The tables below are the schema: :data:`PANORAMA_KEYS` and :data:`REGIONS_KEYS` for the two modes a recipe can
rerun, with :data:`REGION_KEYS` and :data:`BACKGROUND_KEYS` for the objects nested in a regions recipe. Only a few
checks need more than one key; :func:`check_recipe` makes those after the tables'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline.settings.checks import (
    MAX_CANVAS_PX,
    MAX_GUIDANCE,
    MAX_PROMPT_CHARS,
    MAX_REGIONS,
    MAX_STEPS,
    MAX_VIEWS,
    check_canvas_pixels,
)

MODES: tuple[str, ...] = ("panorama", "regions", "sphere")
"""The modes a recipe can rerun (runs that started from an image are refused before the schema is checked)."""

DTYPE_NAMES: tuple[str, ...] = ("float32", "float16", "bfloat16")
"""The dtypes a run records (``str(torch_dtype)`` without ``torch.``)."""

MAX_RECIPE_BYTES = 64 * 2**20
"""The longest recipe text read: a recipe is a few kB, and one with region masks holds each mask compressed."""

MAX_RECIPE_PROMPTS = 256
"""Prompts (canvases) in one recipe: they are one call's batch, and every canvas's latents and noise are held in
memory for the whole run, so a recipe of thousands would allocate before any check of the model could refuse it.
A larger batch belongs in several runs (a jobs file)."""

MAX_TEXT_CHARS = MAX_PROMPT_CHARS
"""The longest prompt a recipe holds: as long as a prompt given to a run may be."""

MAX_NAME_CHARS = 1000
"""The longest model, scheduler, device or version name."""

MAX_SEED = 2**64 - 1
"""``torch.Generator.manual_seed`` takes 0 … 2⁶⁴ − 1."""

MAX_TRAIN_TIMESTEPS = 10_000
"""A recorded scheduler config's ``num_train_timesteps`` at most: trained schedules use 1000, and the scheduler's
tables are allocated at this length."""

MAX_CONFIG_KEYS = 200
"""Keys of a recorded scheduler config (diffusers' schedulers have a few dozen)."""

MAX_CONFIG_INT = 10**6
"""The largest integer in a recorded scheduler config: its integers are counts and orders, some of which size lists."""

MAX_RECORDED_FILES = 64
"""ControlNets, LoRAs or embeddings one list of a recipe's ``customisation`` names (a run uses a handful)."""

MAX_FILE_NAME_CHARS = 255
"""The longest file name a recipe records (most file systems' limit)."""

RESIZE_CHOICES: tuple[str, ...] = ("stretch", "crop", "pad")
"""How a recorded ControlNet's guide image was fitted (``control_spec.RESIZE_MODES``; a test keeps them equal)."""

Kind = Literal[
    "int",
    "number",
    "bool",
    "text",
    "texts",
    "ints",
    "object",
    "objects",
    "config",
    "anchor",
    "labels",
    "lists",
    "digests",
    "guide",
    "source",
]


@dataclass(frozen=True)
class Key:
    """One key of a recipe object: its kind, presence, nullability and range.

    Attributes:
        kind: ``int`` a JSON integer (not a bool); ``number`` a finite integer or float; ``bool`` true or false only
            (not ``"no"``, not 0); ``text`` a string; ``texts`` a string (one prompt) or a non-empty list of strings;
            ``ints`` a list of ``length`` integers; ``object`` / ``objects`` an object or a list of objects, each
            checked against ``table``; ``config`` a scheduler config (an object of numbers, strings, booleans, nulls
            and lists of those); ``anchor`` a view index or a name (SyncDiffusion's anchor). For the files a
            customised run used (never a path: :mod:`~multidiffusion.pipeline.customise.recorded_files`):
            ``labels`` a list of ``NAME:SCALE`` / ``NAME:TOKEN`` strings with no folder in them; ``lists`` a list of
            values each checked against ``item``; ``digests`` an object of plain file names → SHA-256 (64 hex
            digits) or null; ``guide`` a guide image, ``"input image"``, ``"in memory"`` or ``{"name", "sha256"}``;
            ``source`` a plain file name or a hub repo id (``owner/name``).
        required: The key must be present.
        nullable: The key may be null.
        low: Inclusive minimum of a number and of each integer of ``ints``; None: none.
        high: Inclusive maximum of a number and of each integer of ``ints``; the longest text (characters);
            None: none.
        length: The exact length of ``ints``.
        most: The most items of ``texts`` and ``objects``.
        choices: The values a ``text`` may take; empty: any.
        table: The keys of each ``object`` / ``objects``.
        item: The key of each item of ``lists``.
    """

    kind: Kind
    required: bool = False
    nullable: bool = True
    low: float | None = None
    high: float | None = None
    length: int | None = None
    most: int | None = None
    choices: tuple[str, ...] = ()
    table: Mapping[str, Key] = field(default_factory=dict)
    item: Key | None = None


def _name(**kwargs: Any) -> Key:
    return Key("text", high=MAX_NAME_CHARS, **kwargs)


def _pixels(**kwargs: Any) -> Key:
    return Key("int", low=1, high=MAX_CANVAS_PX, **kwargs)


PROMPT = Key("texts", required=True, nullable=False, high=MAX_TEXT_CHARS, most=MAX_RECIPE_PROMPTS)
TEXT = Key("text", high=MAX_TEXT_CHARS)
GUIDANCE = Key("number", low=0, high=MAX_GUIDANCE)

BACKGROUND_KEYS: Mapping[str, Key] = {
    "prompt": Key("text", required=True, nullable=False, high=MAX_TEXT_CHARS),
    "negative_prompt": TEXT,
    "guidance_scale": GUIDANCE,
}
"""A regions recipe's ``background`` (:class:`~multidiffusion.pipeline.inputs.region_file.Background`)."""

REGION_KEYS: Mapping[str, Key] = {
    "prompt": Key("text", required=True, nullable=False, high=MAX_TEXT_CHARS),
    "weight": Key("number", nullable=False, low=0),
    "box": Key("ints", low=0, high=MAX_CANVAS_PX, length=4),
    "mask_size": Key("ints", low=1, high=MAX_CANVAS_PX, length=2),
    "mask_data": Key("text", high=MAX_RECIPE_BYTES),
    "name": TEXT,
    "negative_prompt": TEXT,
    "guidance_scale": GUIDANCE,
}
"""One item of a regions recipe's ``regions``: a box, or a mask (:func:`~multidiffusion.pipeline.inputs.masks.
encode_mask`'s ``mask_size`` and ``mask_data``)."""

FRACTION = Key("number", nullable=False, low=0, high=1)

CONTROL_KEYS: Mapping[str, Key] = {
    "model": Key("source", required=True, nullable=False),
    "image": Key("guide", required=True, nullable=False),
    "scale": Key("number", required=True, nullable=False, low=0, high=100),
    "start": FRACTION,
    "end": FRACTION,
    "resize": Key("text", nullable=False, choices=RESIZE_CHOICES),
}
"""One recorded ControlNet or T2I-Adapter (:meth:`~multidiffusion.pipeline.customise.control_spec.ControlSpec.
record`): its folder's name or hub id, its guide image's name and SHA-256, and its settings."""

CONTROLS = Key("objects", nullable=False, most=MAX_RECORDED_FILES, table=CONTROL_KEYS)
LABELS = Key("labels", nullable=False, most=MAX_RECORDED_FILES)
DIGESTS = Key("digests", nullable=False, most=MAX_RECORDED_FILES)

CUSTOMISATION_KEYS: Mapping[str, Key] = {
    "control": CONTROLS,
    "region_control": Key("lists", nullable=False, most=MAX_REGIONS + 1, item=CONTROLS),
    "loras": LABELS,
    "region_loras": Key("lists", nullable=False, most=MAX_REGIONS + 1, item=LABELS),
    "embeddings": LABELS,
    "prompt_weighting": Key("bool", nullable=False),
    "sha256": Key("object", nullable=False, table={"controlnet": DIGESTS, "lora": DIGESTS, "embedding": DIGESTS}),
}
"""A recipe's ``customisation`` (:meth:`~multidiffusion.pipeline.customise.customisation.Customisation.record`):
the ControlNets, LoRAs (``NAME:SCALE``) and embeddings (``NAME:TOKEN``), per condition for a layout's regions,
and ``sha256``: each local file's name → its SHA-256."""

COMMON_KEYS: Mapping[str, Key] = {
    "mode": Key("text", required=True, nullable=False, choices=MODES),
    "model": _name(nullable=False),
    "model_sha256": Key("text", high=64),
    "dtype": Key("text", choices=DTYPE_NAMES),
    "device": _name(),
    "view_batch_size": Key("int", low=1, high=MAX_VIEWS),
    "tiled_vae": Key("bool"),
    "version": _name(),
    "negative_prompt": PROMPT,
    "height": _pixels(required=True, nullable=False),
    "width": _pixels(required=True, nullable=False),
    "num_inference_steps": Key("int", required=True, nullable=False, low=1, high=MAX_STEPS),
    "guidance_scale": Key("number", required=True, low=0, high=MAX_GUIDANCE),
    "guidance_rescale": Key("number", nullable=False, low=0, high=1),
    "scheduler": _name(),
    "scheduler_config": Key("config"),
    "window": _pixels(),
    "stride": _pixels(),
    "weights": _name(),
    "layout": _name(),
    "tile": _name(),
    "circular": Key("bool", nullable=False),  # recipes made before ``tile``: a 360° canvas
    "seed": Key("int", low=0, high=MAX_SEED),  # null: not reproducible (call_arguments says so)
    "sync": Key("bool", nullable=False),
    "sync_weight": Key("number", nullable=False),
    "sync_decay": Key("number", nullable=False),
    "sync_stop_step": Key("int", low=0, high=MAX_STEPS),
    "sync_every": Key("int", nullable=False, low=1, high=MAX_STEPS),
    "sync_anchor": Key("anchor", nullable=False, low=0, high=MAX_VIEWS),
    "sync_loss": _name(),
    "global_view": Key("number"),
    "global_view_until": Key("number", nullable=False),
    "image": Key("object"),  # a run that started from an image is refused before this table is checked
    "customisation": Key("object", table=CUSTOMISATION_KEYS),
    "image_index": Key("int", nullable=False, low=0, high=MAX_RECIPE_PROMPTS - 1),
}
"""The keys both modes record (:meth:`GenerationMetadata.to_dict` and :meth:`SamplingSettings.to_dict`)."""

PANORAMA_KEYS: Mapping[str, Key] = {**COMMON_KEYS, "prompt": PROMPT}
"""A panorama recipe: one prompt per canvas."""

SPHERE_KEYS: Mapping[str, Key] = {
    **PANORAMA_KEYS,
    "sphere_fov": Key("number", required=True, nullable=False, low=30, high=120),
    "sphere_overlap": Key("number", nullable=False, low=0, high=0.9),
    "sphere_weights": _name(nullable=False),
    "sphere_pole_roll": Key("number", nullable=False),
}
"""A sphere recipe (:class:`~multidiffusion.pipeline.settings.sphere.SpherePanoramaSettings`): a panorama's keys and
the sphere's, ``width`` twice ``height``."""

REGIONS_KEYS: Mapping[str, Key] = {
    **COMMON_KEYS,
    "regions": Key("objects", required=True, nullable=False, most=MAX_REGIONS, table=REGION_KEYS),
    "background": Key("object", table=BACKGROUND_KEYS),
    "bootstrap_fraction": Key("number", low=0, high=1),
}
"""A regions recipe: the regions and background in place of the prompt."""


def check_recipe(recipe: Any) -> dict[str, Any]:
    """The recipe checked against the schema, as a new dict; a prompt recorded as one string becomes a list of one.

    Raises:
        InvalidInputError: not an object, an unknown mode, a required key missing, an unknown key, a value of the
            wrong type or out of range, more prompts than :data:`MAX_RECIPE_PROMPTS`, an ``image_index`` that is
            not one of the canvases, or a canvas over the pixel limit. One line naming the key.
    """
    if not isinstance(recipe, Mapping):
        raise InvalidInputError(f"a recipe is a JSON object, got {_got(recipe)}")
    if recipe.get("mode") not in MODES:
        raise InvalidInputError(f"the recipe has no known mode (expected one of: {', '.join(MODES)})")
    table = {"panorama": PANORAMA_KEYS, "sphere": SPHERE_KEYS}.get(recipe["mode"], REGIONS_KEYS)
    checked = _object(recipe, table, "")
    check_canvas_pixels(checked["height"], checked["width"])
    canvases = len(checked["prompt"]) if checked["mode"] in ("panorama", "sphere") else 1
    if checked["mode"] == "sphere" and checked["width"] != 2 * checked["height"]:
        raise InvalidInputError(
            f"a sphere recipe's width is twice its height, got {checked['width']}×{checked['height']}"
        )
    if checked["mode"] == "regions" and len(checked["negative_prompt"]) != 1:
        raise InvalidInputError(f"a regions recipe records one negative_prompt, got {len(checked['negative_prompt'])}")
    if checked.get("image_index", 0) >= canvases:
        raise InvalidInputError(
            f"recipe key image_index must be the index of one of its {canvases} canvas(es) (0 … {canvases - 1}), "
            f"got {checked['image_index']}"
        )
    for i, region in enumerate(checked.get("regions", ())):
        has_mask = "mask_size" in region or "mask_data" in region
        if region.get("box") is None and not has_mask:
            raise InvalidInputError(f"recipe regions[{i}] has neither a box nor a mask; it records one of them")
        if region.get("box") is not None and has_mask:
            raise InvalidInputError(f"recipe regions[{i}] has both a box and a mask; it records one of them")
    return checked


def _object(obj: Mapping[Any, Any], table: Mapping[str, Key], where: str) -> dict[str, Any]:
    """``obj`` checked against ``table`` (``where`` is its place in the recipe, e.g. ``regions[2].``)."""
    unknown = [k for k in obj if k not in table]
    if unknown:
        allowed = f"allowed: {', '.join(table)}" if len(table) <= 12 else "not a key this version records"
        raise InvalidInputError(f"unknown recipe key {where}{_shown_key(unknown[0])} ({allowed})")
    checked: dict[str, Any] = {}
    for name, key in table.items():
        if name not in obj:
            if key.required:
                raise InvalidInputError(f"the recipe has no {where}{name}, which every {_what(where)} records")
            continue
        checked[name] = _value(obj[name], key, f"{where}{name}")
    return checked


def _value(value: Any, key: Key, where: str) -> Any:
    """One value checked against its key (a prompt given as one string comes back as a list of one)."""
    if value is None:
        if key.nullable:
            return None
        raise InvalidInputError(f"recipe key {where} must not be null")
    kind = key.kind
    if kind == "int" or (kind == "anchor" and not isinstance(value, str)):
        return _int(value, key, where)
    if kind == "number":
        return _number(value, key, where)
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidInputError(f"recipe key {where} must be true or false, got {_got(value)}")
        return value
    if kind in ("text", "anchor"):
        return _text(value, key, where)
    if kind == "texts":
        return _texts(value, key, where)
    if kind == "ints":
        if not isinstance(value, list) or len(value) != key.length:
            raise InvalidInputError(f"recipe key {where} must be a list of {key.length} integers, got {_got(value)}")
        return [_int(v, key, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind in ("labels", "lists", "digests", "guide", "source"):
        return _recorded_file(value, key, where)
    if kind == "object":
        if not isinstance(value, Mapping):
            raise InvalidInputError(f"recipe key {where} must be an object or null, got {_got(value)}")
        return _object(value, key.table, f"{where}.")
    if kind == "objects":
        if not isinstance(value, list):
            raise InvalidInputError(f"recipe key {where} must be a list of objects, got {_got(value)}")
        if key.most is not None and len(value) > key.most:
            raise InvalidInputError(f"recipe key {where} holds {len(value):,} items; the limit is {key.most:,}")
        items = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise InvalidInputError(f"recipe key {where}[{i}] must be an object, got {_got(item)}")
            items.append(_object(item, key.table, f"{where}[{i}]."))
        return items
    return _config(value, where)


def _recorded_file(value: Any, key: Key, where: str) -> Any:
    """The kinds that name the files of a customised run: names only, never a folder (a recipe opens no path)."""
    kind = key.kind
    if kind == "source":  # a ControlNet folder's own name or a hub repo id, owner/name
        text = _text(value, Key("text", high=MAX_NAME_CHARS), where)
        parts = text.split("/")
        if len(parts) > 2 or not all(_plain(part) for part in parts):
            raise InvalidInputError(
                f"recipe key {where} must be a folder's own name or a hub repo id, got {_got(text)}"
            )
        return text
    if kind == "guide":
        if isinstance(value, str):
            return _text(value, Key("text", choices=("input image", "in memory")), where)
        if not isinstance(value, Mapping):
            raise InvalidInputError(
                f"recipe key {where} must be an object (a file's name and sha256), got {_got(value)}"
            )
        guide = _object(value, GUIDE_KEYS, f"{where}.")
        _file_name(guide["name"], f"{where}.name")
        _sha256(guide["sha256"], f"{where}.sha256")  # not null: GUIDE_KEYS
        return guide
    if kind == "digests":
        if not isinstance(value, Mapping):
            raise InvalidInputError(f"recipe key {where} must be an object of file names and sha256, got {_got(value)}")
        _most(value, key, where)
        return {
            _file_name(name, f"{where} name"): _sha256(v, f"{where}.{_shown_key(name)}") for name, v in value.items()
        }
    if not isinstance(value, list):
        raise InvalidInputError(f"recipe key {where} must be a list, got {_got(value)}")
    _most(value, key, where)
    if kind == "lists":
        assert key.item is not None  # internal: every ``lists`` key of the tables names its items' key
        return [_value(v, key.item, f"{where}[{i}]") for i, v in enumerate(value)]
    labels = [_text(v, Key("text", high=MAX_NAME_CHARS), f"{where}[{i}]") for i, v in enumerate(value)]
    for i, label in enumerate(labels):
        name = label.rpartition(":")[0]
        if "/" in label or "\\" in label or not _plain(name):
            raise InvalidInputError(
                f"recipe key {where}[{i}] must be a file's own name and a scale or token (NAME:VALUE, no folder), "
                f"got {_got(label)}"
            )
    return labels


GUIDE_KEYS: Mapping[str, Key] = {
    "name": Key("text", required=True, nullable=False),
    "sha256": Key("text", required=True, nullable=False),
}
"""A recorded guide image (:func:`~multidiffusion.pipeline.modes.image_start.file_record`); :func:`_recorded_file`
then checks that its name is a plain file name and its sha256 a SHA-256."""


def _plain(name: str) -> bool:
    """One file's or folder's own name: not empty, no separator, not ``.`` or ``..``, at most 255 characters."""
    return 0 < len(name) <= MAX_FILE_NAME_CHARS and not any(c in name for c in "/\\\0") and name not in (".", "..")


def _file_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _plain(name):
        raise InvalidInputError(f"recipe key {where} must be a file's own name (no folder, not '..'), got {_got(name)}")
    return name


def _sha256(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise InvalidInputError(f"recipe key {where} must be a SHA-256 (64 lowercase hex digits), got {_got(value)}")
    return value


def _most(value: Any, key: Key, where: str) -> None:
    if key.most is not None and len(value) > key.most:
        raise InvalidInputError(f"recipe key {where} holds {len(value):,} items; the limit is {key.most:,}")


def _int(value: Any, key: Key, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"recipe key {where} must be an integer{_range(key)}, got {_got(value)}")
    if (key.low is not None and value < key.low) or (key.high is not None and value > key.high):
        raise InvalidInputError(f"recipe key {where} must be an integer{_range(key)}, got {_got(value)}")
    return value


def _number(value: Any, key: Key, where: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"recipe key {where} must be a number{_range(key)}, got {_got(value)}")
    if (
        not math.isfinite(value)
        or (key.low is not None and value < key.low)
        or (key.high is not None and value > key.high)
    ):
        raise InvalidInputError(f"recipe key {where} must be a finite number{_range(key)}, got {_got(value)}")
    return value


def _text(value: Any, key: Key, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(f"recipe key {where} must be a string, got {_got(value)}")
    if key.high is not None and len(value) > key.high:
        raise InvalidInputError(f"recipe key {where} is {len(value):,} characters long; the limit is {key.high:,}")
    if key.choices and value not in key.choices:
        raise InvalidInputError(f"recipe key {where} must be one of: {', '.join(key.choices)}; got {_got(value)}")
    if "\0" in value:
        raise InvalidInputError(f"recipe key {where} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape
        raise InvalidInputError(f"recipe key {where} is not valid Unicode text") from None
    return value


def _texts(value: Any, key: Key, where: str) -> list[str]:
    if isinstance(value, str):  # one prompt, never its characters
        return [_text(value, key, where)]
    if not isinstance(value, list):
        raise InvalidInputError(f"recipe key {where} must be a string or a list of strings, got {_got(value)}")
    if not value:
        raise InvalidInputError(f"recipe key {where} is an empty list; it records one string per canvas")
    if key.most is not None and len(value) > key.most:
        raise InvalidInputError(
            f"recipe key {where} holds {len(value):,} prompts; the limit is {key.most:,} per run "
            "(every canvas of a run is held in memory at once)"
        )
    return [_text(v, key, f"{where}[{i}]") for i, v in enumerate(value)]


def _config(value: Any, where: str) -> dict[str, Any]:
    """A recorded scheduler config: flat JSON, small integers, a bounded training-step count."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"recipe key {where} must be an object (a scheduler's config) or null, got {_got(value)}"
        )
    if len(value) > MAX_CONFIG_KEYS:
        raise InvalidInputError(f"recipe key {where} holds {len(value):,} keys; the limit is {MAX_CONFIG_KEYS}")
    steps = value.get("num_train_timesteps")
    if steps is not None:  # the length of the tables the scheduler allocates
        _int(steps, Key("int", low=1, high=MAX_TRAIN_TIMESTEPS), f"{where}.num_train_timesteps")
    for name, item in value.items():
        if not isinstance(name, str) or len(name) > 100:
            raise InvalidInputError(f"recipe key {where} has a key that is not a short string: {_got(name)}")
        inner = f"{where}.{_shown_key(name)}"
        if isinstance(item, list):
            if len(item) > MAX_TRAIN_TIMESTEPS:
                raise InvalidInputError(
                    f"recipe key {inner} holds {len(item):,} items; the limit is {MAX_TRAIN_TIMESTEPS:,}"
                )
            for i, v in enumerate(item):
                _config_scalar(v, f"{inner}[{i}]")
        else:
            _config_scalar(item, inner)
    return dict(value)


def _config_scalar(value: Any, where: str) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        _int(value, Key("int", low=-MAX_CONFIG_INT, high=MAX_CONFIG_INT), where)
    elif isinstance(value, float):
        if math.isnan(value):  # ±inf is a setting (DPM-Solver's lambda_min_clipped is -inf); NaN is none
            raise InvalidInputError(f"recipe key {where} must be a number, got NaN")
    elif isinstance(value, str):
        _text(value, Key("text", high=MAX_NAME_CHARS), where)
    else:
        raise InvalidInputError(
            f"recipe key {where} must be a number, a string, true, false or null (a scheduler setting), "
            f"got {_got(value)}"
        )


def _range(key: Key) -> str:
    if key.low is not None and key.high is not None:
        return f" in [{key.low:g}, {key.high:g}]" if key.high < 1e15 else f" in [{key.low:g}, {int(key.high)}]"
    if key.low is not None:
        return f" ≥ {key.low:g}"
    return ""


def _what(where: str) -> str:
    if where.startswith("regions["):
        return "region"
    return where.rstrip(".") or "recipe"


def _shown_key(name: Any) -> str:
    text = str(name)
    return text if text.isprintable() and 0 < len(text) <= 40 else repr(text[:40])


def _got(value: Any) -> str:
    """A short, one-line description of a bad value for a message."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else f"an integer of {len(str(abs(value))):,} digits"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}" + ("…" if len(value) > 40 else "")
    if isinstance(value, list):
        return f"a list of {len(value):,} items"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"
