"""multidiffusion: panoramas and any-size canvases from a pretrained latent diffusion model, no training.

Implements MultiDiffusion (Bar-Tal et al., ICML 2023). The core (:mod:`multidiffusion.core`) is plain
PyTorch; the pipeline is imported lazily so ``import multidiffusion.core`` never loads diffusers.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_PIPELINE_NAMES = (
    "Background",
    "CheckpointSettings",
    "ConditionalSampler",
    "ControlSpec",
    "Customisation",
    "EmbeddingSpec",
    "GlobalView",
    "LiveCanvas",
    "LiveScene",
    "LoraSpec",
    "MultiDiffusionOutput",
    "MultiDiffusionPipeline",
    "Region",
    "SyncSettings",
    "ViewSettings",
)
__all__ = [*_PIPELINE_NAMES, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _PIPELINE_NAMES:
        from multidiffusion import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'multidiffusion' has no attribute {name!r}")
