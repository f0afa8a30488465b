"""The MultiDiffusion core: plain PyTorch, no diffusers or transformers (docs/design.md §1)."""

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
