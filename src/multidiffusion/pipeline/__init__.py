"""The user-facing facade (docs/design.md §1): loading and calling, no math."""

from multidiffusion.adapters.customise.embeddings import EmbeddingSpec
from multidiffusion.adapters.customise.lora import LoraSpec
from multidiffusion.pipeline.customise.control_spec import ControlSpec
from multidiffusion.pipeline.customise.customisation import Customisation
from multidiffusion.pipeline.facade import MultiDiffusionPipeline
from multidiffusion.pipeline.run.output import MultiDiffusionOutput
from multidiffusion.pipeline.settings.recipe import DEFAULT_MODEL, DEFAULTS, GenerationMetadata, PanoramaSettings

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
