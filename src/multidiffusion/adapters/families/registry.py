"""The model families this package runs, and which one a folder, hub id or checkpoint file holds.

A folder or hub id names its pipeline in ``model_index.json`` (``_class_name``); a single-file checkpoint is
recognised from its tensor names and shapes by diffusers' own ``infer_diffusers_model_type``. Each family
is one adapter module with ``load_pretrained(source, dtype, device, *, allow_pickle)`` and
``load_single_file(path, dtype, device, config)`` (docs/design.md §7).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from multidiffusion.adapters.loading.hub import explain_load_error, first_line
from multidiffusion.adapters.loading.quiet import library_chatter_off
from multidiffusion.core.errors import InvalidInputError


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: Recorded in metadata and printed when a model loads (``LoadedModel.family``).
        title: For people: what the family covers.
        pipelines: diffusers pipeline class names (``model_index.json``'s ``_class_name``) of this family.
        checkpoint_types: diffusers' names for its single-file checkpoints (``infer_diffusers_model_type``).
        module: The adapter module under ``multidiffusion.adapters``.
    """

    name: str
    title: str
    pipelines: tuple[str, ...]
    checkpoint_types: tuple[str, ...]
    module: str

    def adapter(self) -> ModuleType:
        """The adapter module (imported on first use: each pulls in its own diffusers classes)."""
        return importlib.import_module(f"{__package__}.{self.module}")


FAMILIES: tuple[Family, ...] = (
    Family(
        "stable-diffusion",
        "Stable Diffusion 1.x/2.x (also SD-Turbo and LCM)",
        ("StableDiffusionPipeline", "StableDiffusionInpaintPipeline"),
        ("v1", "v2", "inpainting", "inpainting_v2"),
        "sd",
    ),
    Family(
        "sdxl",
        "SDXL (also SDXL-Turbo and Lightning)",
        ("StableDiffusionXLPipeline", "StableDiffusionXLInpaintPipeline"),
        ("xl_base", "xl_inpaint"),
        "sdxl",
    ),
    Family(
        "sd3", "Stable Diffusion 3 / 3.5", ("StableDiffusion3Pipeline",), ("sd3", "sd35_medium", "sd35_large"), "sd3"
    ),
    Family("flux", "Flux (dev and schnell)", ("FluxPipeline",), ("flux-dev", "flux-schnell"), "flux"),
)
FAMILY_NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES)
SUPPORTED = "; ".join(f"{f.title} ({', '.join(f.pipelines)})" for f in FAMILIES)


def family_named(name: str) -> Family:
    """The family called ``name`` (one of :data:`FAMILY_NAMES`)."""
    for family in FAMILIES:
        if family.name == name:
            return family
    raise InvalidInputError(f"unknown model family {name!r}; supported: {', '.join(FAMILY_NAMES)}")


def family_of_pipeline(class_name: str, source: str) -> Family:
    """The family whose pipeline is ``class_name`` (from ``source``'s model_index.json)."""
    for family in FAMILIES:
        if class_name in family.pipelines:
            return family
    raise InvalidInputError(f"model {source!r} is a {class_name}, which this tool does not run; supported: {SUPPORTED}")


def model_index(source: str) -> dict[str, Any]:
    """``model_index.json`` of a local diffusers folder or a hub repo id (from the cache, or the hub)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        try:
            return json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInputError(
                f"model folder {source!r}: cannot read model_index.json ({first_line(exc)})"
            ) from exc
    from diffusers import DiffusionPipeline

    try:
        with library_chatter_off():
            return dict(DiffusionPipeline.load_config(source))
    except Exception as exc:  # huggingface_hub raises many types; all mean "no model_index.json to read"
        raise InvalidInputError(explain_load_error(source, exc)) from exc


def family_of_model(source: str) -> Family:
    """The family of a diffusers folder or hub repo id, from its ``model_index.json``."""
    class_name = model_index(source).get("_class_name")
    if not isinstance(class_name, str):
        raise InvalidInputError(f"model {source!r}: model_index.json names no pipeline (_class_name)")
    return family_of_pipeline(class_name, source)


class _TensorShapes(Mapping[str, Any]):
    """A safetensors file's tensor names, each mapped to an object with its ``shape``: enough for diffusers'
    ``infer_diffusers_model_type`` without reading any weights."""

    def __init__(self, path: str) -> None:
        from safetensors import safe_open

        self._shapes: dict[str, SimpleNamespace] = {}
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                self._shapes[key] = SimpleNamespace(shape=tuple(f.get_slice(key).get_shape()))

    def __getitem__(self, key: str) -> Any:
        return self._shapes[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)


def _checkpoint_keys(path: str) -> Mapping[str, Any]:
    if path.endswith(".safetensors"):
        return _TensorShapes(path)
    import torch

    state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else {}


def family_of_checkpoint(path: str) -> Family:
    """The family of a single-file checkpoint, from its tensor names and shapes."""
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES, infer_diffusers_model_type

    try:
        keys = _checkpoint_keys(path)
        kind = infer_diffusers_model_type(keys)
    except Exception as exc:  # a damaged or foreign file: safetensors, pickle and diffusers raise many types
        raise InvalidInputError(f"could not load checkpoint {path!r}: {first_line(exc)}") from exc
    if kind == "v1" and CHECKPOINT_KEY_NAMES["v1"] not in keys:  # diffusers' fallback when nothing matched
        raise InvalidInputError(
            f"checkpoint {path!r} holds no whole model this tool recognises (a LoRA, VAE or text encoder alone?); "
            f"supported: {SUPPORTED}"
        )
    for family in FAMILIES:
        if kind in family.checkpoint_types:
            return family
    raise InvalidInputError(
        f"checkpoint {path!r} holds a {kind!r} model, which this tool does not run; supported: {SUPPORTED}"
    )
