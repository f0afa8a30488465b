"""How one call runs, as opposed to what it makes: randomness, output form, callbacks, batching, checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from multidiffusion.core.engine.sampling import StepCallback
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.types import Codec
from multidiffusion.pipeline.run.checkpoint import Checkpoint, CheckpointSettings


@dataclass(frozen=True)
class RunOptions:
    """The runtime side of a pipeline call, handed to :func:`~multidiffusion.pipeline.run.generate.generate`.

    Attributes:
        generator: The source of all randomness (initial noise first, in diffusers' order, then what hooks draw).
        output_type: ``pil``, ``np``, ``pt`` or ``latent``.
        callback_on_step_end: Called after each step with a :class:`~multidiffusion.core.types.StepState`; True stops.
        view_batch_size: Tasks per denoiser call; None chooses from free memory.
        progress: Show a progress bar with ETA, then the decoding time.
        checkpoint: Write checkpoints of the run (:mod:`~multidiffusion.pipeline.run.checkpoint`); None: none.
        resume: Continue from this checkpoint of the same run; None: from the start.
        tiled_vae: Decode in tiles (True), whole (False) or as the codec decides by size (None); for this call only.
    """

    generator: torch.Generator
    output_type: str = "pil"
    callback_on_step_end: StepCallback | None = None
    view_batch_size: int | None = None
    progress: bool = True
    checkpoint: CheckpointSettings | None = None
    resume: Checkpoint | None = None
    tiled_vae: bool | None = None


@contextmanager
def decode_tiling(codec: Codec, tiled: bool | None, family: str) -> Iterator[None]:
    """The codec's tiling choice set to ``tiled`` for the block, then restored (None: leave the codec's own)."""
    if tiled is None:
        yield
        return
    if not hasattr(codec, "tiled"):
        if tiled:
            raise InvalidInputError(f"tiled_vae: the {family} model has no VAE to tile")
        yield
        return
    before = codec.tiled
    codec.tiled = tiled
    try:
        yield
    finally:
        codec.tiled = before
