"""Where add-on weight files (LoRA, textual-inversion embeddings) load: the family's own diffusers pipeline, wrapped
around the model's networks, whose loader mixins (``load_lora_weights``, ``load_textual_inversion``) do the work.

The host holds the very modules the engine runs (nothing is copied), so whatever a loader changes in it changes the
model. It is built from the first pipeline class the family names (``Family.pipelines``) and that class's
``__init__`` signature alone: each parameter gets the model's component of that name (``LoadedModel.components``), a
scheduler built from the model's config, or None for the optional parts the engine does not use (safety checker,
feature extractor, image encoder); the safety checker and the watermarker are switched off where the class takes the
switch. The host is kept in ``LoadedModel.state``.

Also here: the cheap checks of an add-on file before anything heavy is loaded (it exists, and pickle files only with
``allow_pickle``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from multidiffusion.adapters.families.family import Family
from multidiffusion.adapters.families.registry import file_families
from multidiffusion.adapters.loading.diffusers_files import pipeline_class
from multidiffusion.adapters.loading.resolve import ALLOW_PICKLE_HINT, PICKLE_SUFFIXES
from multidiffusion.adapters.model.loaded import LoadedModel
from multidiffusion.core.errors import InvalidInputError

WEIGHTS_SUFFIXES: tuple[str, ...] = (".safetensors", *PICKLE_SUFFIXES)
_SWITCHED_OFF: dict[str, Any] = {"requires_safety_checker": False, "add_watermarker": False}


def families_taking(capability: Callable[[type], bool]) -> list[Family]:
    """The families whose diffusers pipeline class has ``capability`` (e.g. a loader method)."""
    return [family for family in file_families() if capability(pipeline_class(family.pipelines[0]))]


def host_family(model: LoadedModel, what: str, capability: Callable[[type], bool]) -> Family:
    """The family of ``model`` if its pipeline class has ``capability``; else one line naming the families that do.

    Args:
        model: A loaded model.
        what: The add-on, plural, for the message (``"LoRA files"``).
        capability: Pipeline class → whether that family takes the add-on.
    """
    family = next((f for f in file_families() if f.name == model.family), None)
    if family is None or not capability(pipeline_class(family.pipelines[0])):
        takers = ", ".join(f.name for f in families_taking(capability))
        has = "has no networks" if family is None else "takes none"
        raise InvalidInputError(f"{what} load into models of the families {takers}; this {model.family} model {has}")
    return family


def diffusers_host(model: LoadedModel) -> Any:
    """The family's diffusers pipeline around ``model``'s own components, built once and kept in ``model.state``.

    Raises:
        InvalidInputError: ``model`` is of no diffusers family (the Gaussian-field model).
    """
    if model.state.host is not None:
        return model.state.host
    family = host_family(model, "add-on weights", lambda cls: True)
    cls = pipeline_class(family.pipelines[0])
    kwargs: dict[str, Any] = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in model.components:
            kwargs[name] = model.components[name]
        elif name == "scheduler":
            from multidiffusion.adapters.schedulers.names import make_scheduler

            kwargs[name] = make_scheduler(model.default_scheduler, model.scheduler_config)
        elif name in _SWITCHED_OFF:
            kwargs[name] = _SWITCHED_OFF[name]
        elif parameter.default is parameter.empty:
            kwargs[name] = None  # a part the engine does not use (safety checker, feature extractor)
    from multidiffusion.adapters.loading.quiet import library_chatter_off

    with library_chatter_off():
        host = cls(**kwargs)
    model.state.host = host
    return host


def check_weights_file(path: str, what: str, allow_pickle: bool) -> Path:
    """``path`` as a Path if it is an existing ``.safetensors`` file, or a pickle file (``.ckpt``, ``.pt``, ``.pth``,
    ``.bin``) with ``allow_pickle``; else one line saying why not. ``what`` names the file's kind (``"LoRA"``)."""
    file = Path(path).expanduser()
    if not file.is_file():
        why = "is a folder, not a file" if file.is_dir() else "does not exist"
        raise InvalidInputError(f"{what} file {path!r} {why}")
    suffix = file.suffix.lower()
    if suffix not in WEIGHTS_SUFFIXES:
        raise InvalidInputError(
            f"{what} file {path!r} is not a weights file; expected one of: {', '.join(WEIGHTS_SUFFIXES)}"
        )
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise InvalidInputError(
            f"{what} file {path!r} is a pickle file, which can run code when it is loaded; convert it to .safetensors, "
            f"{ALLOW_PICKLE_HINT}"
        )
    return file
