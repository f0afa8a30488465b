"""The user-facing facade (docs/design.md §1): loading and calling, no math."""

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
