"""The MultiDiffusion core: plain PyTorch, no diffusers or transformers (docs/design.md §1).

The names below load on first use (PEP 562), so ``from multidiffusion.core.errors import InvalidInputError`` or
a command's ``--help`` does not import torch; ``from multidiffusion.core import X`` works as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multidiffusion._lazy import lazy_exports

if TYPE_CHECKING:
    from multidiffusion.core.engine.crop import crop, paste_add, view_indices
    from multidiffusion.core.engine.fusion import FusionPlan, fuse
    from multidiffusion.core.engine.guidance import ClassifierFreeGuidance, GuidedCondition, rescale_guidance
    from multidiffusion.core.engine.noise import initial_noise
    from multidiffusion.core.engine.sampling import batches, sample
    from multidiffusion.core.engine.tasks import TaskSchedule, panorama_tasks
    from multidiffusion.core.engine.views import View, layout_views
    from multidiffusion.core.engine.weights import WEIGHT_KINDS, view_weights
    from multidiffusion.core.errors import InvalidInputError
    from multidiffusion.core.layouts.named import LAYOUT_NAMES, LAYOUTS, LayoutRecipe, layout_tasks
    from multidiffusion.core.layouts.shifted import shifted_schedule
    from multidiffusion.core.types import Codec, Denoiser, HookContext, StepState, ViewHook, ViewTask

# public name -> the module that defines it
_SOURCES: dict[str, str] = {
    "LAYOUTS": "multidiffusion.core.layouts.named",
    "LAYOUT_NAMES": "multidiffusion.core.layouts.named",
    "WEIGHT_KINDS": "multidiffusion.core.engine.weights",
    "ClassifierFreeGuidance": "multidiffusion.core.engine.guidance",
    "Codec": "multidiffusion.core.types",
    "Denoiser": "multidiffusion.core.types",
    "FusionPlan": "multidiffusion.core.engine.fusion",
    "GuidedCondition": "multidiffusion.core.engine.guidance",
    "HookContext": "multidiffusion.core.types",
    "InvalidInputError": "multidiffusion.core.errors",
    "LayoutRecipe": "multidiffusion.core.layouts.named",
    "StepState": "multidiffusion.core.types",
    "TaskSchedule": "multidiffusion.core.engine.tasks",
    "View": "multidiffusion.core.engine.views",
    "ViewHook": "multidiffusion.core.types",
    "ViewTask": "multidiffusion.core.types",
    "batches": "multidiffusion.core.engine.sampling",
    "crop": "multidiffusion.core.engine.crop",
    "fuse": "multidiffusion.core.engine.fusion",
    "initial_noise": "multidiffusion.core.engine.noise",
    "layout_tasks": "multidiffusion.core.layouts.named",
    "layout_views": "multidiffusion.core.engine.views",
    "panorama_tasks": "multidiffusion.core.engine.tasks",
    "paste_add": "multidiffusion.core.engine.crop",
    "rescale_guidance": "multidiffusion.core.engine.guidance",
    "sample": "multidiffusion.core.engine.sampling",
    "shifted_schedule": "multidiffusion.core.layouts.shifted",
    "view_indices": "multidiffusion.core.engine.crop",
    "view_weights": "multidiffusion.core.engine.weights",
}
__all__ = [
    "LAYOUTS",
    "LAYOUT_NAMES",
    "WEIGHT_KINDS",
    "ClassifierFreeGuidance",
    "Codec",
    "Denoiser",
    "FusionPlan",
    "GuidedCondition",
    "HookContext",
    "InvalidInputError",
    "LayoutRecipe",
    "StepState",
    "TaskSchedule",
    "View",
    "ViewHook",
    "ViewTask",
    "batches",
    "crop",
    "fuse",
    "initial_noise",
    "layout_tasks",
    "layout_views",
    "panorama_tasks",
    "paste_add",
    "rescale_guidance",
    "sample",
    "shifted_schedule",
    "view_indices",
    "view_weights",
]


__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
