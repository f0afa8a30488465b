"""Adapters: the only code that knows diffusers and transformers (docs/design.md §1)."""

from .base import LoadedModel
from .loading import check_model_source, load_model, resolve_device, resolve_dtype
from .schedulers import SCHEDULER_NAMES, check_scheduler_name, make_scheduler

__all__ = [
    "SCHEDULER_NAMES",
    "LoadedModel",
    "check_model_source",
    "check_scheduler_name",
    "load_model",
    "make_scheduler",
    "resolve_device",
    "resolve_dtype",
]
