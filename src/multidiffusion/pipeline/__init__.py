"""The user-facing facade (docs/design.md §1): loading and calling, no math.

The names below load on first use (PEP 562): importing a settings module, or the command line's ``--help``,
does not import torch and diffusers behind the facade.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multidiffusion._lazy import lazy_exports

if TYPE_CHECKING:
    from multidiffusion.adapters.customise.embeddings import EmbeddingSpec
    from multidiffusion.adapters.customise.lora import LoraSpec
    from multidiffusion.core.features.conditional import ConditionalSampler
    from multidiffusion.core.features.global_view import GlobalView
    from multidiffusion.core.features.regions import Region
    from multidiffusion.core.features.sync import SyncSettings
    from multidiffusion.pipeline.customise.control_spec import ControlSpec
    from multidiffusion.pipeline.customise.customisation import Customisation
    from multidiffusion.pipeline.facade import MultiDiffusionPipeline
    from multidiffusion.pipeline.inputs.region_file import Background
    from multidiffusion.pipeline.modes.live import LiveCanvas, LiveFrame, LiveScene
    from multidiffusion.pipeline.run.checkpoint import CheckpointSettings
    from multidiffusion.pipeline.run.output import MultiDiffusionOutput
    from multidiffusion.pipeline.settings.recipe import DEFAULT_MODEL, DEFAULTS, GenerationMetadata, PanoramaSettings
    from multidiffusion.pipeline.settings.views import ViewSettings

# public name -> the module that defines it
_SOURCES: dict[str, str] = {
    "Background": "multidiffusion.pipeline.inputs.region_file",
    "CheckpointSettings": "multidiffusion.pipeline.run.checkpoint",
    "ConditionalSampler": "multidiffusion.core.features.conditional",
    "ControlSpec": "multidiffusion.pipeline.customise.control_spec",
    "Customisation": "multidiffusion.pipeline.customise.customisation",
    "DEFAULTS": "multidiffusion.pipeline.settings.recipe",
    "DEFAULT_MODEL": "multidiffusion.pipeline.settings.recipe",
    "EmbeddingSpec": "multidiffusion.adapters.customise.embeddings",
    "GenerationMetadata": "multidiffusion.pipeline.settings.recipe",
    "GlobalView": "multidiffusion.core.features.global_view",
    "LiveCanvas": "multidiffusion.pipeline.modes.live",
    "LiveFrame": "multidiffusion.pipeline.modes.live",
    "LiveScene": "multidiffusion.pipeline.modes.live",
    "LoraSpec": "multidiffusion.adapters.customise.lora",
    "MultiDiffusionOutput": "multidiffusion.pipeline.run.output",
    "MultiDiffusionPipeline": "multidiffusion.pipeline.facade",
    "PanoramaSettings": "multidiffusion.pipeline.settings.recipe",
    "Region": "multidiffusion.core.features.regions",
    "SyncSettings": "multidiffusion.core.features.sync",
    "ViewSettings": "multidiffusion.pipeline.settings.views",
}
__all__ = [
    "DEFAULTS",
    "DEFAULT_MODEL",
    "Background",
    "CheckpointSettings",
    "ConditionalSampler",
    "ControlSpec",
    "Customisation",
    "EmbeddingSpec",
    "GenerationMetadata",
    "GlobalView",
    "LiveCanvas",
    "LiveFrame",
    "LiveScene",
    "LoraSpec",
    "MultiDiffusionOutput",
    "MultiDiffusionPipeline",
    "PanoramaSettings",
    "Region",
    "SyncSettings",
    "ViewSettings",
]

__getattr__, __dir__ = lazy_exports(__name__, _SOURCES)
