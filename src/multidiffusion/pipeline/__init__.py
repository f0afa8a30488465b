"""The user-facing facade (docs/design.md §1): loading and calling, no math."""

from multidiffusion.adapters.customise.embeddings import EmbeddingSpec
from multidiffusion.adapters.customise.lora import LoraSpec
from multidiffusion.core.features.global_view import GlobalView
from multidiffusion.core.features.regions import Region
from multidiffusion.core.features.sync import SyncSettings
from multidiffusion.pipeline.customise.control_spec import ControlSpec
from multidiffusion.pipeline.customise.customisation import Customisation
from multidiffusion.pipeline.facade import MultiDiffusionPipeline
from multidiffusion.pipeline.inputs.region_file import Background
from multidiffusion.pipeline.run.checkpoint import CheckpointSettings
from multidiffusion.pipeline.run.output import MultiDiffusionOutput
from multidiffusion.pipeline.settings.recipe import DEFAULT_MODEL, DEFAULTS, GenerationMetadata, PanoramaSettings
from multidiffusion.pipeline.settings.views import ViewSettings

__all__ = [
    "DEFAULTS",
    "DEFAULT_MODEL",
    "Background",
    "CheckpointSettings",
    "ControlSpec",
    "Customisation",
    "EmbeddingSpec",
    "GenerationMetadata",
    "GlobalView",
    "LoraSpec",
    "MultiDiffusionOutput",
    "MultiDiffusionPipeline",
    "PanoramaSettings",
    "Region",
    "SyncSettings",
    "ViewSettings",
]
