"""Validation of pixel-level settings against a model. One clear line per problem."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.errors import InvalidInputError
from ..core.layouts import get_layout
from ..core.weights import WEIGHT_KINDS
from .settings import DEFAULTS, OUTPUT_TYPES


def as_prompt_list(prompt: str | Sequence[str], what: str = "prompt") -> list[str]:
    """A prompt or a list of prompts as a non-empty list of strings."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise InvalidInputError(f"the {what} list is empty; give at least one {what}")
    if not all(isinstance(p, str) for p in prompts):
        raise InvalidInputError(f"every {what} must be a string")
    return prompts


def repeat_prompts(
    prompt: str | Sequence[str], negative_prompt: str | Sequence[str] | None, times: int
) -> tuple[list[str], list[str] | None]:
    """Prompts (and per-prompt negatives) repeated ``times`` each, prompt-major (p0, p0, p1, p1, …)."""
    if isinstance(times, bool) or not isinstance(times, int) or times < 1:
        raise InvalidInputError(f"images per prompt must be an integer ≥ 1, got {times!r}")
    prompts = as_prompt_list(prompt)
    negatives = None if negative_prompt is None else as_prompt_list(negative_prompt, "negative prompt")
    if negatives is not None and len(negatives) == len(prompts) and len(prompts) > 1:
        negatives = [n for n in negatives for _ in range(times)]
    return [p for p in prompts for _ in range(times)], negatives


def check_pixels(name: str, value: int, granularity: int) -> int:
    """``value`` px must be a positive multiple of ``granularity``; returns it in latent cells."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive number of pixels, got {value!r}")
    if value % granularity:
        raise InvalidInputError(
            f"{name} must be a multiple of {granularity} px for this model, got {value} "
            f"(nearest: {max(granularity, round(value / granularity) * granularity)})"
        )
    return value // granularity


def check_sampling(
    num_inference_steps: int, guidance_scale: float | None, guidance_rescale: float, weights: str, output_type: str
) -> None:
    """Steps ≥ 1, guidance ≥ 0 (None: the model's default), rescale in [0, 1], known weights and output type."""
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise InvalidInputError(f"steps must be an integer ≥ 1, got {num_inference_steps!r}")
    if guidance_scale is not None and not guidance_scale >= 0:
        raise InvalidInputError(f"guidance scale must be ≥ 0 (1 = no guidance), got {guidance_scale!r}")
    if not 0 <= guidance_rescale <= 1:
        raise InvalidInputError(f"guidance rescale must be in [0, 1], got {guidance_rescale!r}")
    if weights not in WEIGHT_KINDS:
        raise InvalidInputError(f"unknown weights {weights!r}; choose one of: {', '.join(WEIGHT_KINDS)}")
    if output_type not in OUTPUT_TYPES:
        raise InvalidInputError(f"unknown output type {output_type!r}; choose one of: {', '.join(OUTPUT_TYPES)}")


def check_stride(stride_px: int, window_px: int) -> None:
    """0 < stride ≤ window (pixels)."""
    if not isinstance(stride_px, int) or stride_px <= 0:
        raise InvalidInputError(f"stride must be a positive number of pixels, got {stride_px!r}")
    if stride_px > window_px:
        raise InvalidInputError(
            f"stride ({stride_px} px) must not exceed the window ({window_px} px): cells between windows "
            "would stay uncovered"
        )


def resolve_window_stride(
    window_px: int | None, stride_px: int | None, granularity: int, native_px: int, default_stride_px: int | None = None
) -> tuple[int, int]:
    """Validated (window, stride) in pixels. Defaults: the model's native window; the model's default stride,
    else window / 8 (64 px for Stable Diffusion's 512 px window, the paper's 8 latent cells) rounded down to the
    granularity; a default stride never exceeds the window."""
    window = native_px if window_px is None else window_px
    check_pixels("window", window, granularity)
    if stride_px is None:
        stride = default_stride_px if default_stride_px is not None else (window // 8) // granularity * granularity
        stride = max(granularity, min(stride, window))
    else:
        stride = stride_px
    check_stride(stride, window)
    check_pixels("stride", stride, granularity)
    return window, stride


@dataclass(frozen=True)
class ViewSettings:
    """How views are laid, resolved in pixels: window, stride (the window for shifted tiles) and weights."""

    window_px: int
    stride_px: int
    weights: str


def check_layout_overrides(layout: str | None, stride_px: int | None, weights: str) -> None:
    """A named layout (checked to exist) sets the stride and weights itself: giving either with it is an error."""
    if layout is None:
        return
    get_layout(layout)
    if stride_px is not None or weights != DEFAULTS.weights:
        raise InvalidInputError(f"layout {layout!r} sets the stride and weights itself; omit stride and weights")


def resolve_view_settings(
    *,
    window_px: int | None,
    stride_px: int | None,
    weights: str,
    layout: str | None,
    granularity: int,
    native_px: int,
    default_stride_px: int | None,
    canvas_px: tuple[int, int] | None = None,
) -> ViewSettings:
    """Window, stride and weights of a run from what the user gave, with every check.

    A named ``layout`` (docs/layouts.md) sets the stride and weights itself, so giving either with it is an
    error; its shifted tiles record the window as their stride. A sliding window whose stride equals the
    window on an axis the canvas spans with several views warns: the views then do not overlap and cannot
    blend, so every view border shows (MultiDiffusion needs overlap, paper §3.2).

    Args:
        canvas_px: (height, width) of the canvas, for the no-overlap warning; None skips it.
    """
    check_layout_overrides(layout, stride_px, weights)
    recipe = get_layout(layout) if layout is not None else None
    window, stride = resolve_window_stride(window_px, stride_px, granularity, native_px, default_stride_px)
    if recipe is not None:
        cells = window // granularity
        stride = recipe.stride_cells(cells) * granularity if recipe.stride is not None else window
        return ViewSettings(window, stride, recipe.weights)
    if canvas_px is not None and stride == window and any(size > window for size in canvas_px):
        suggestion = max(granularity, window // 4 // granularity * granularity)
        warnings.warn(
            f"the stride equals the window ({window} px): views will not overlap or blend, so their borders "
            f"will show as a grid; use a smaller stride (e.g. {suggestion} px)",
            UserWarning,
            stacklevel=3,
        )
    return ViewSettings(window, stride, weights)


def check_sync_layout(sync: bool, layout: str | None) -> None:
    """SyncDiffusion needs one fixed layout of same-size views; a named layout may change every step."""
    if sync and layout is not None:
        raise InvalidInputError(
            f"SyncDiffusion runs on a fixed sliding-window layout; omit layout {layout!r} (or sync)"
        )
