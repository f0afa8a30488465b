"""Adapters: the only code that knows diffusers and transformers (docs/design.md §1).

The names below load on first use (PEP 562), so importing one adapter module does not load them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multidiffusion._lazy import lazy_exports

if TYPE_CHECKING:
    from multidiffusion.adapters.loading.resolve import check_model_source, load_model, resolve_device, resolve_dtype
    from multidiffusion.adapters.model.loaded import LoadedModel
    from multidiffusion.adapters.schedulers.names import SCHEDULER_NAMES, check_scheduler_name, make_scheduler

# public name -> the module that defines it
_SOURCES: dict[str, str] = {
    "LoadedModel": "multidiffusion.adapters.model.loaded",
    "SCHEDULER_NAMES": "multidiffusion.adapters.schedulers.names",
    "check_model_source": "multidiffusion.adapters.loading.resolve",
    "check_scheduler_name": "multidiffusion.adapters.schedulers.names",
    "load_model": "multidiffusion.adapters.loading.resolve",
    "make_scheduler": "multidiffusion.adapters.schedulers.names",
    "resolve_device": "multidiffusion.adapters.loading.resolve",
    "resolve_dtype": "multidiffusion.adapters.loading.resolve",
}
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

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
