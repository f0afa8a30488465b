"""What changes on a loaded model after it is loaded: the add-ons loaded into it and how its networks run.

A :class:`~multidiffusion.adapters.model.loaded.LoadedModel` is built once by its family; everything that later
changes the same modules in place (LoRA files, textual-inversion tokens, speed settings) is recorded here, with the
model, so that every pipeline running the model sees the same record (two pipelines on one model must not load an
embedding twice into its one tokenizer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # lora.py imports the model: the type only, to keep the import graph one-way
    from multidiffusion.adapters.customise.lora import LoraSwitch


@dataclass(frozen=True)
class SpeedSettings:
    """How the networks run (:func:`~multidiffusion.adapters.loading.speed.apply_speed_settings`); neither changes
    what they compute beyond float rounding.

    Attributes:
        channels_last: Convolution weights stored NHWC.
        compile: The denoiser network's forward wrapped in ``torch.compile``.
    """

    channels_last: bool = False
    compile: bool = False


@dataclass
class ModelState:
    """The mutable state of one loaded model (``LoadedModel.state``).

    Attributes:
        host: The family's diffusers pipeline wrapped around the model's own components, built on first use by
            :func:`~multidiffusion.adapters.customise.host.diffusers_host` (its loader mixins load LoRAs and
            embeddings); None until then.
        lora_switch: The open :class:`~multidiffusion.adapters.customise.lora.LoraSwitch` (at most one per model:
            its LoRAs are loaded into the model's networks); None when no LoRA is loaded.
        embeddings: Trigger word (lower case) → the file its vectors were loaded from, for every textual-inversion
            embedding loaded into the model's tokenizers (a run naming the same file again reuses it).
        speed: The speed settings the networks run with.
    """

    host: Any | None = None
    lora_switch: LoraSwitch | None = None
    embeddings: dict[str, Path] = field(default_factory=dict)
    speed: SpeedSettings = field(default_factory=SpeedSettings)
