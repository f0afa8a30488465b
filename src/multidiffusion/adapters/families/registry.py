"""The model families this package runs, and which one a spec string, folder, hub id or checkpoint file holds.

:data:`REGISTRY` lists every family, one line each: the ``FAMILY`` object its module declares
(:class:`~multidiffusion.adapters.families.family.Family`, docs/design.md §7). A spec string (``toy:ell=3``) belongs
to the family whose ``claims`` accepts it; a folder or hub id names its pipeline in ``model_index.json``
(``_class_name``); a single-file checkpoint is recognised from its tensor names and shapes by diffusers' own
``infer_diffusers_model_type``. Every lookup reads :data:`REGISTRY` when it runs, so a family added to it (a test's,
with ``monkeypatch``) is found everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from multidiffusion.adapters.customise.control import ControlKind
from multidiffusion.adapters.families import flux, sd, sd3, sdxl, toy
from multidiffusion.adapters.families.family import Family
from multidiffusion.adapters.loading.hub import explain_load_error, first_line
from multidiffusion.adapters.loading.quiet import library_chatter_off
from multidiffusion.core.errors import InvalidInputError

REGISTRY: tuple[Family, ...] = (
    sd.FAMILY,
    sdxl.FAMILY,
    sd3.FAMILY,
    flux.FAMILY,
    toy.FAMILY,
)
"""Every model family, one line each; the order is the order of help texts, error messages and lookups."""


def file_families() -> tuple[Family, ...]:
    """The registered families that load diffusers files (those naming a pipeline), in registry order."""
    return tuple(family for family in REGISTRY if family.pipelines)


def supported() -> str:
    """The families that load files, for error messages: ``title (pipeline, …); …``."""
    return "; ".join(f"{f.title} ({', '.join(f.pipelines)})" for f in file_families())


def family_named(name: str) -> Family:
    """The registered family called ``name``."""
    for family in REGISTRY:
        if family.name == name:
            return family
    names = ", ".join(family.name for family in REGISTRY)
    raise InvalidInputError(f"unknown model family {name!r}; supported: {names}")


def family_claiming(source: str) -> Family | None:
    """The family whose ``claims`` accepts ``source`` (a spec string such as ``toy:ell=3``); None: none does, and
    ``source`` names files (a folder, hub id or checkpoint)."""
    return next((f for f in REGISTRY if f.claims is not None and f.claims(source)), None)


def family_of_pipeline(class_name: str, source: str) -> Family:
    """The family whose pipeline is ``class_name`` (from ``source``'s model_index.json)."""
    for family in REGISTRY:
        if class_name in family.pipelines:
            return family
    raise InvalidInputError(
        f"model {source!r} is a {class_name}, which this tool does not run; supported: {supported()}"
    )


def control_kinds() -> tuple[ControlKind, ...]:
    """Every control network kind some registered family takes, each once, in registry order."""
    return tuple(dict.fromkeys(kind for family in REGISTRY for kind in family.control_kinds))


MAX_MODEL_INDEX_BYTES = 2**20  # a diffusers model_index.json lists a dozen components in about 1 kB


def model_index(source: str) -> dict[str, Any]:
    """``model_index.json`` of a local diffusers folder or a hub repo id (from the cache, or the hub): a JSON
    object, else one line saying what the file holds instead."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        file = folder / "model_index.json"
        try:
            too_big = file.stat().st_size > MAX_MODEL_INDEX_BYTES
            index = None if too_big else json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:
            raise InvalidInputError(
                f"model folder {source!r}: cannot read model_index.json ({first_line(exc)})"
            ) from exc
        if too_big:
            raise InvalidInputError(
                f"model folder {source!r}: model_index.json is larger than {MAX_MODEL_INDEX_BYTES >> 20} MiB"
            )
    else:
        from diffusers import DiffusionPipeline

        try:
            with library_chatter_off():
                index = DiffusionPipeline.load_config(source)
        except Exception as exc:  # huggingface_hub raises many types; all mean "no model_index.json to read"
            raise InvalidInputError(explain_load_error(source, exc)) from exc
    if not isinstance(index, Mapping):
        raise InvalidInputError(
            f"model {source!r}: model_index.json holds a JSON {_json_kind(index)}, not an object naming the pipeline "
            'and its components ({"_class_name": …})'
        )
    return dict(index)


def _json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def family_of_model(source: str) -> Family:
    """The family of a diffusers folder or hub repo id, from its ``model_index.json`` (whose components must come
    from diffusers or transformers: :func:`check_component_libraries`)."""
    index = model_index(source)
    class_name = index.get("_class_name")
    if not isinstance(class_name, str):
        raise InvalidInputError(f"model {source!r}: model_index.json names no pipeline (_class_name)")
    check_component_libraries(index, source)
    return family_of_pipeline(class_name, source)


COMPONENT_LIBRARIES = ("diffusers", "transformers")


def check_component_libraries(index: Mapping[str, Any], source: str) -> None:
    """Refuse a ``model_index.json`` whose components name a library other than diffusers, transformers or one of
    diffusers' pipeline modules (SD's ``["stable_diffusion", "StableDiffusionSafetyChecker"]``): diffusers imports
    the module a component names, and a module shipped in the folder (custom code) must never be imported."""
    import importlib.util

    for name, entry in index.items():
        if name.startswith("_") or not (isinstance(entry, list | tuple) and len(entry) == 2):
            continue  # metadata and plain settings (``requires_safety_checker``)
        library = entry[0]
        if library is None or library in COMPONENT_LIBRARIES:
            continue
        allowed = isinstance(library, str) and library.isidentifier()
        if allowed:
            try:
                allowed = importlib.util.find_spec(f"diffusers.pipelines.{library}") is not None
            except (ImportError, ValueError):
                allowed = False
        if not allowed:
            raise InvalidInputError(
                f"model {source!r}: model_index.json's component {name!r} comes from {str(library)[:60]!r}; only "
                "diffusers and transformers components are loaded (code shipped with a model is never run)"
            )


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
            f"supported: {supported()}"
        )
    for family in REGISTRY:
        if kind in family.checkpoint_types:
            return family
    raise InvalidInputError(
        f"checkpoint {path!r} holds a {kind!r} model, which this tool does not run; supported: {supported()}"
    )
