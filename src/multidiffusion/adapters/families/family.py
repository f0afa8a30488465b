"""What a model family declares about itself: the one ``FAMILY`` object of its module (docs/design.md §7).

A family is one module under ``multidiffusion.adapters.families`` that defines ``FAMILY = Family(...)`` and the
loaders its kind of source needs; :data:`~multidiffusion.adapters.families.registry.REGISTRY` lists the ``FAMILY``
objects, one line each. Nothing else in the package names a family: which one loads a source is read from these
declarations.

A family loads from diffusers files when it names ``pipelines`` (and, for single-file checkpoints,
``checkpoint_types``); its module then has :class:`FileLoaders`' functions. A family that ``claims`` model spec
strings (the toy model: ``toy``, ``toy:ell=3``) has :class:`SpecLoaders`' functions. A family may do both.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import torch

from multidiffusion.adapters.customise.control import ControlKind
from multidiffusion.adapters.model.loaded import LoadedModel


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: Recorded in metadata and printed when a model loads (``LoadedModel.family``).
        title: For people: what the family covers (help texts, errors).
        module: The family's module (its ``__name__``): where the loaders are looked up, at each load.
        pipelines: diffusers pipeline class names (``model_index.json``'s ``_class_name``) of this family; the first
            is the pipeline the family's add-ons (LoRA, embeddings) load through. Empty: no diffusers files.
        checkpoint_types: diffusers' names for its single-file checkpoints (``infer_diffusers_model_type``).
        claims: Model source → whether it names this family without any file (a spec string such as ``toy:ell=3``);
            None: the family loads files only.
        control_kinds: The control networks the family's models take (what its ``LoadedModel.control`` checks), so
            a control network's folder can be recognised before any model loads.
    """

    name: str
    title: str
    module: str
    pipelines: tuple[str, ...] = ()
    checkpoint_types: tuple[str, ...] = ()
    claims: Callable[[str], bool] | None = None
    control_kinds: tuple[ControlKind, ...] = ()

    def adapter(self) -> ModuleType:
        """The family's module (its loaders and size rules, e.g. ``view_cell_bytes``)."""
        return importlib.import_module(self.module)


class FileLoaders(Protocol):
    """The functions of a family module that loads diffusers files (``Family.pipelines`` not empty).

    Both build a :class:`LoadedModel` whose ``family`` is ``FAMILY.name``. Weights are read from ``.safetensors``
    only unless ``allow_pickle`` (``diffusers_files.load_pretrained_pipeline`` does this); pickled checkpoint files
    are refused before ``load_single_file`` is called.

    What the model's configs say before any weight loads comes from the module's ``DENOISER`` (the denoiser's
    folder, ``unet`` or ``transformer``) and its functions of the parsed JSON configs: ``cell_px(vae, denoiser)``
    (pixels per latent cell, the loaded model's ``granularity_px``), ``native_cells(denoiser)`` (its
    ``native_window``) and ``view_cell_bytes(denoiser, itemsize)`` (its ``bytes_per_view_cell``); the command line
    checks sizes (:mod:`~multidiffusion.adapters.loading.geometry`) and memory with them before loading. A module
    without them is checked after loading only.
    """

    def load_pretrained(
        self, source: str, dtype: torch.dtype, device: torch.device, *, allow_pickle: bool = False
    ) -> LoadedModel:
        """A diffusers folder or hub repo id whose ``model_index.json`` names one of ``FAMILY.pipelines``."""
        ...

    def load_single_file(
        self, path: str, dtype: torch.dtype, device: torch.device, config: str | None = None
    ) -> LoadedModel:
        """A single-file checkpoint of one of ``FAMILY.checkpoint_types``; ``config``: the folder or repo id whose
        configs describe it."""
        ...


class SpecLoaders(Protocol):
    """The functions of a family module whose ``FAMILY.claims`` model spec strings."""

    def check_spec(self, source: str) -> None:
        """Cheap checks of a claimed spec before anything loads: raise ``InvalidInputError`` for bad options."""
        ...

    def spec_scheduler_config(self, source: str) -> Mapping[str, Any]:
        """The scheduler config the model of ``source`` will have, without loading it."""
        ...

    def load(self, source: str, *, device: torch.device, dtype: torch.dtype | None = None) -> LoadedModel:
        """The model of ``source``; ``dtype`` None: the family's default. Also called on the CPU to read the
        model's geometry before the command line's size checks, so it must stay cheap (a spec model has no
        weights)."""
        ...
