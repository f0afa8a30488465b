"""Adapters: the only code that knows diffusers and transformers (docs/design.md §1)."""

from multidiffusion.adapters.loading.resolve import check_model_source, load_model, resolve_device, resolve_dtype
from multidiffusion.adapters.model.loaded import LoadedModel
from multidiffusion.adapters.schedulers.names import SCHEDULER_NAMES, check_scheduler_name, make_scheduler

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
