"""The user-facing facade (docs/design.md §1): loading and calling, no math."""

from ..adapters.embeddings import EmbeddingSpec
from ..adapters.lora import LoraSpec
from .control import ControlSpec
from .customise import Customisation
from .output import MultiDiffusionOutput
from .panorama import MultiDiffusionPipeline
from .settings import DEFAULT_MODEL, DEFAULTS, GenerationMetadata, PanoramaSettings

__all__ = [
    "DEFAULTS",
    "DEFAULT_MODEL",
    "ControlSpec",
    "Customisation",
    "EmbeddingSpec",
    "GenerationMetadata",
    "LoraSpec",
    "MultiDiffusionOutput",
    "MultiDiffusionPipeline",
    "PanoramaSettings",
]
