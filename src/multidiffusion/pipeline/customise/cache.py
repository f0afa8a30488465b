"""What a pipeline keeps between runs for customisation: the control networks the last run loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CustomisationCache:
    """Owned by one :class:`~multidiffusion.pipeline.facade.MultiDiffusionPipeline`, handed to each run's
    :class:`~multidiffusion.pipeline.customise.customisation.Customised`.

    Control networks are separate modules, not part of the model, so they are kept by the pipeline that loaded them.
    (Embeddings and LoRAs change the model's own modules: the model records those, in ``LoadedModel.state``.)

    Attributes:
        control_networks: Control network source (folder or repo id, as given) → (network, kind name), for the
            networks the last run used: the next run naming one reuses it, and a run without control empties it.
    """

    control_networks: dict[str, tuple[Any, str]] = field(default_factory=dict)
