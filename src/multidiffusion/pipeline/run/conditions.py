"""Prompts → the engine's guided conditions, the same way for every model family."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from multidiffusion.adapters import LoadedModel
from multidiffusion.adapters.model.loaded import PromptLimit
from multidiffusion.core import GuidedCondition


def warn_long_prompts(model: LoadedModel, prompts: Sequence[str], limits: Sequence[PromptLimit] | None = None) -> None:
    """One warning per prompt longer than a text encoder's limit, naming each encoder that cuts it and where
    (SD 3: CLIP at 77 tokens, T5 at 256); ``limits``: those that apply (default: the model's)."""
    limits = tuple(model.prompt_limits if limits is None else limits)
    if not limits:
        return
    for text in dict.fromkeys(prompts):
        if not text:
            continue
        cuts = [(limit, limit.count(text)) for limit in limits]
        cuts = [(limit, count) for limit, count in cuts if count > limit.max_tokens]
        if not cuts:
            continue
        head = text if len(text) <= 40 else text[:37] + "…"
        if len(limits) == 1:
            limit, count = cuts[0]
            what = f"is {count} tokens; the text encoder reads the first {limit.max_tokens}"
        else:
            sizes = " and ".join(f"{count} tokens for {limit.encoder}" for limit, count in cuts)
            reads = " and ".join(f"{limit.encoder} the first {limit.max_tokens}" for limit, _ in cuts)
            what = f"is {sizes}; {reads.replace(' the first', ' reads the first', 1)}"
        warnings.warn(
            f"the prompt {head!r} {what} (special tokens included) and cuts it there", UserWarning, stacklevel=3
        )


def guided_condition(
    model: LoadedModel,
    prompts: Sequence[str],
    negative_prompts: Sequence[str],
    guidance_scale: float,
    guidance_rescale: float = 0.0,
    *,
    encode: Callable[[Sequence[str]], Any] | None = None,
    limits: Sequence[PromptLimit] | None = None,
) -> GuidedCondition:
    """One condition holding N prompts (one per canvas) with its guidance.

    Classifier-free guidance (Ho & Salimans 2022) encodes the negative prompts only when g > 1: at g ≤ 1 the
    conditional output alone is used, one pass (diffusers' rule, what few-step models such as SD-Turbo run
    at). A guidance-distilled model (``model.embed_guidance``, e.g. Flux dev) takes g as an input of its
    own and makes no unconditional pass at all. ``encode`` replaces ``model.encode_prompts`` (prompt weighting);
    ``limits``: the text-encoder limits that still cut prompts, for the warning (default: the model's).
    """
    encode = model.encode_prompts if encode is None else encode
    warn_long_prompts(model, [*prompts, *(negative_prompts if guidance_scale > 1.0 else [])], limits)
    positive = encode(list(prompts))
    if model.embed_guidance is not None:
        return GuidedCondition(model.embed_guidance(positive, guidance_scale), None, guidance_scale, 0.0)
    guided = guidance_scale > 1.0
    return GuidedCondition(
        positive=positive,
        negative=encode(list(negative_prompts)) if guided else None,
        guidance_scale=guidance_scale,
        guidance_rescale=guidance_rescale,
    )
