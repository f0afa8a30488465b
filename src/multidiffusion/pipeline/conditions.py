"""Prompts → the engine's guided conditions, the same way for every model family."""

from __future__ import annotations

from collections.abc import Sequence

from ..adapters import LoadedModel
from ..core import GuidedCondition


def guided_condition(
    model: LoadedModel,
    prompts: Sequence[str],
    negative_prompts: Sequence[str],
    guidance_scale: float,
    guidance_rescale: float = 0.0,
) -> GuidedCondition:
    """One condition holding N prompts (one per canvas) with its guidance.

    Classifier-free guidance (Ho & Salimans 2022) encodes the negative prompts only when g > 1: at g ≤ 1 the
    conditional output alone is used, one pass (diffusers' rule, what few-step models such as SD-Turbo run
    at). A guidance-distilled model (``model.embed_guidance``, e.g. Flux dev) takes g as an input of its
    own and makes no unconditional pass at all.
    """
    positive = model.encode_prompts(list(prompts))
    if model.embed_guidance is not None:
        return GuidedCondition(model.embed_guidance(positive, guidance_scale), None, guidance_scale, 0.0)
    guided = guidance_scale > 1.0
    return GuidedCondition(
        positive=positive,
        negative=model.encode_prompts(list(negative_prompts)) if guided else None,
        guidance_scale=guidance_scale,
        guidance_rescale=guidance_rescale,
    )
