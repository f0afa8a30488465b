"""The MultiDiffusion core: plain PyTorch, no diffusers or transformers (docs/design.md §1)."""

from .crop import crop, paste_add, view_indices
from .errors import InvalidInputError
from .fusion import FusionPlan, fuse
from .guidance import ClassifierFreeGuidance, GuidedCondition, rescale_guidance
from .layouts import LAYOUT_NAMES, LAYOUTS, LayoutRecipe, layout_tasks
from .noise import initial_noise
from .sampling import batches, sample
from .shifted import shifted_schedule
from .tasks import TaskSchedule, panorama_tasks
from .types import Codec, Denoiser, HookContext, StepState, ViewHook, ViewTask
from .views import View, layout_views
from .weights import WEIGHT_KINDS, view_weights

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
