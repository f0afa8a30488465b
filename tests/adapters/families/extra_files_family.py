"""A family that exists only in the tests: Stable Diffusion weights under diffusers' panorama pipeline class.

Its whole declaration is this module (``FAMILY`` and the two file loaders); test_new_family.py adds
``FAMILY`` to the registry and nothing else, to show that a family needs no other file.
"""

from __future__ import annotations

import dataclasses

import torch

from multidiffusion.adapters.families import sd
from multidiffusion.adapters.families.family import Family
from multidiffusion.adapters.loading.diffusers_files import load_pretrained_pipeline
from multidiffusion.adapters.model.loaded import LoadedModel
from multidiffusion.core.errors import InvalidInputError

PIPELINE = "StableDiffusionPanoramaPipeline"
FAMILY = Family(
    name="sd-panorama", title="SD under the panorama pipeline (tests only)", module=__name__, pipelines=(PIPELINE,)
)


def load_pretrained(
    source: str, dtype: torch.dtype, device: torch.device, *, allow_pickle: bool = False
) -> LoadedModel:
    """A diffusers folder whose ``model_index.json`` names ``StableDiffusionPanoramaPipeline``."""
    pipe = load_pretrained_pipeline(
        PIPELINE, source, dtype, allow_pickle=allow_pickle, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    return dataclasses.replace(sd.from_pipeline(source, pipe, device), family=FAMILY.name)


def load_single_file(path: str, dtype: torch.dtype, device: torch.device, config: str | None = None) -> LoadedModel:
    """No single-file checkpoints (``FAMILY.checkpoint_types`` is empty, so this is never called)."""
    raise InvalidInputError(f"{path!r}: the {FAMILY.name} family has no single-file checkpoints")
