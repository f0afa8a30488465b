"""The settings of a high-resolution run (docs/highres.md): how it climbs from the native size, and its global path.

One frozen object, validated once; its field names are the recipe's keys (``highres_<field>``, recorded by every stage
after the first) and, with dashes, the options of the ``highres`` command.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from multidiffusion.core.engine.weights import WEIGHT_KINDS
from multidiffusion.core.errors import InvalidInputError
from multidiffusion.pipeline.settings.checks import MAX_STEPS, check_number

GLOBAL_PATHS: tuple[str, ...] = ("none", "pooled", "dilated", "pooled+dilated")
"""The global path of every stage after the first: none; (a) the pooled global view (Eq. 4 with average pooling,
:mod:`~multidiffusion.core.features.global_view`); (b) DemoFusion's dilated views
(:mod:`~multidiffusion.core.features.dilated`); or both."""

UPSCALE_SPACES: tuple[str, ...] = ("latent", "pixels")
"""How a stage's start is enlarged: ``latent`` (bicubic on the latents, DemoFusion's choice: no decode or encode);
``pixels`` (decode, resize as ``upscale`` does, encode: a stage is then exactly ``upscale`` of the previous image)."""

MAX_STAGES = 8  # 2⁷ = 128× the native side: far past any canvas limit
DEFAULT_STRENGTH = 0.6  # docs/highres.md: the least that gives back the top octave on the exact oracles


@dataclass(frozen=True)
class HighresSettings:
    """How a high-resolution run climbs from the model's native size to the asked one.

    Attributes:
        stages: Stages in all, the native one included, ≥ 1; None: one per doubling of the side, ceil(log₂ f) + 1 for
            a target f times the native size (the short side native at the first stage).
        strength: How far each later stage's start is noised, in (0, 1]: it runs the last ``strength`` of its steps
            (as ``upscale``'s strength).
        global_path: One of :data:`GLOBAL_PATHS`, for every stage after the first.
        pooled_weight: ω of the pooled global view (its say on each block mean against the crops'), > 0.
        dilation: c₂ of DemoFusion (Eq. 8): the share of each cell's model output that comes from the dilated views at
            the stage's noisiest level, in [0, 1); it decays as ((1 + cos πt/T) / 2)^``dilation_decay``.
        dilation_decay: The exponent of that decay (DemoFusion's cosine_scale_2, 1), ≥ 0.
        blur: The Gaussian pre-filter of the dilated views at the noisiest level: σ = ``blur`` · k canvas cells for
            stride k (DemoFusion's σ = 0.8 at ×2 is 0.4); it decays as the dilation does. ≥ 0.
        residual: c₁ of DemoFusion's skip residual at the noisiest level, in [0, 1]: after every step the canvas
            becomes c₁ · (the previous stage's enlarged latent noised to that level) + (1 − c₁) · itself. 0: off.
        residual_decay: The exponent of its cosine decay (DemoFusion's cosine_scale_1, 3), ≥ 0.
        later_steps: Scheduler steps of the later stages (each runs ``strength`` of them); None: the run's own.
        upscale: One of :data:`UPSCALE_SPACES`.
        weights: The view weights of the later stages when the run's views name none (``uniform``, ``feathered``,
            ``gaussian``); None: the run's own (the panorama default). Feathered ramps kept the most of the top
            octave on the exact oracle at 8× (docs/highres.md).
    """

    stages: int | None = None
    strength: float = DEFAULT_STRENGTH
    global_path: str = "pooled"
    pooled_weight: float = 4.0
    dilation: float = 0.5
    dilation_decay: float = 1.0
    blur: float = 0.4
    residual: float = 1.0
    residual_decay: float = 3.0
    later_steps: int | None = None
    upscale: str = "latent"
    weights: str | None = "feathered"

    def __post_init__(self) -> None:
        if self.stages is not None and (
            isinstance(self.stages, bool) or not isinstance(self.stages, int) or not 1 <= self.stages <= MAX_STAGES
        ):
            raise InvalidInputError(
                f"highres stages must be a whole number in 1…{MAX_STAGES} (or None), got {self.stages!r}"
            )
        if check_number("highres strength", self.strength, 0.0, 1.0) <= 0:
            raise InvalidInputError("highres strength must be > 0: a stage at strength 0 would only enlarge the latent")
        if self.global_path not in GLOBAL_PATHS:
            raise InvalidInputError(
                f"unknown highres global path {self.global_path!r}; choose one of: {', '.join(GLOBAL_PATHS)}"
            )
        if check_number("highres pooled weight", self.pooled_weight, 0.0, 1e6) <= 0:
            raise InvalidInputError(f"highres pooled weight must be > 0, got {self.pooled_weight!r}")
        if check_number("highres dilation", self.dilation, 0.0, 1.0) >= 1:
            raise InvalidInputError("highres dilation must be < 1: the crops need some share of every cell")
        check_number("highres dilation decay", self.dilation_decay, 0.0, 100.0)
        check_number("highres blur", self.blur, 0.0, 100.0, " latent cells")
        check_number("highres residual", self.residual, 0.0, 1.0)
        check_number("highres residual decay", self.residual_decay, 0.0, 100.0)
        steps = self.later_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS):
            raise InvalidInputError(
                f"highres later steps must be a whole number in 1…{MAX_STEPS} (or None), got {steps!r}"
            )
        if self.upscale not in UPSCALE_SPACES:
            raise InvalidInputError(
                f"unknown highres upscale {self.upscale!r}; choose one of: {', '.join(UPSCALE_SPACES)}"
            )

        if self.weights is not None and self.weights not in WEIGHT_KINDS:
            raise InvalidInputError(
                f"unknown highres weights {self.weights!r}; choose one of: {', '.join(WEIGHT_KINDS)} (or None)"
            )

    @property
    def pooled(self) -> bool:
        """Whether the later stages fuse the pooled global view."""
        return "pooled" in self.global_path

    @property
    def dilated(self) -> bool:
        """Whether the later stages fuse the dilated views (with a dilation share > 0)."""
        return "dilated" in self.global_path and self.dilation > 0

    def record(self) -> dict[str, Any]:
        """The recipe's keys: ``highres_<field>`` for every field."""
        return {f"highres_{k}": v for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> HighresSettings:
        """The settings a recipe recorded with :meth:`record` (other keys are ignored)."""
        prefix = "highres_"
        return cls(**{k[len(prefix) :]: v for k, v in record.items() if k.startswith(prefix)})


def stage_count(ratio: float) -> int:
    """One stage per doubling of the side: ceil(log₂ ``ratio``) + 1 for a target ``ratio`` ≥ 1 times the native side."""
    return 1 + max(0, math.ceil(math.log2(ratio) - 1e-9))
