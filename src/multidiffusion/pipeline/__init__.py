"""The user-facing facade (DESIGN.md §3): loading and calling, no math."""

from .output import MultiDiffusionOutput
from .panorama import MultiDiffusionPipeline
from .settings import DEFAULT_MODEL, DEFAULTS, GenerationMetadata, PanoramaSettings

__all__ = [
    "DEFAULTS",
    "DEFAULT_MODEL",
    "GenerationMetadata",
    "MultiDiffusionOutput",
    "MultiDiffusionPipeline",
    "PanoramaSettings",
]
