"""A family that exists only in the tests: the Gaussian field under another spec string, ``mono`` or
``mono:ell=2,…`` (the toy model's options).

Its whole declaration is this module (``FAMILY``, its matcher and the three spec loaders); test_new_family.py
adds ``FAMILY`` to the registry and nothing else, to show that a family needs no other file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from multidiffusion.adapters.families import toy
from multidiffusion.adapters.families.family import Family
from multidiffusion.adapters.model.loaded import LoadedModel

PREFIX = "mono"


def claims(source: str) -> bool:
    """``mono`` or ``mono:…``."""
    return source == PREFIX or source.startswith(PREFIX + ":")


FAMILY = Family(name="mono-field", title="the Gaussian field as 'mono' (tests only)", module=__name__, claims=claims)


def _as_toy(source: str) -> str:
    return toy.PREFIX + source[len(PREFIX) :]


def check_spec(source: str) -> None:
    """The toy model's option checks."""
    toy.check_spec(_as_toy(source))


def spec_scheduler_config(source: str) -> Mapping[str, Any]:
    """The toy model's schedule."""
    return toy.spec_scheduler_config(_as_toy(source))


def load(source: str, *, device: torch.device, dtype: torch.dtype | None = None) -> LoadedModel:
    """The toy model of the same options, under this family's name and the source as given."""
    model = toy.load(_as_toy(source), device=device, dtype=dtype)
    return dataclasses.replace(model, source=source, family=FAMILY.name)
