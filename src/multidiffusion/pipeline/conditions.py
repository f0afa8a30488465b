"""Prompts → the engine's guided conditions, the same way for every model family."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from ..adapters import LoadedModel
from ..core import GuidedCondition


def warn_long_prompts(model: LoadedModel, prompts: Sequence[str]) -> None:
    """One warning per prompt longer than the text encoder's limit: the encoder cuts it to that many tokens."""
    if model.prompt_tokens is None or model.max_prompt_tokens is None:
        return
    for text in dict.fromkeys(prompts):
        if not text:
            continue
        count = model.prompt_tokens(text)
        if count > model.max_prompt_tokens:
            head = text if len(text) <= 40 else text[:37] + "…"
            warnings.warn(
                f"the prompt {head!r} is {count} tokens; the text encoder reads the first {model.max_prompt_tokens} "
                f"(special tokens included) and cuts it there",
                UserWarning,
                stacklevel=3,
            )


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
    warn_long_prompts(model, [*prompts, *(negative_prompts if guidance_scale > 1.0 else [])])
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
