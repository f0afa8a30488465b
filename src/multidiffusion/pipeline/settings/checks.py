"""Validation of pixel-level settings against a model. One clear line per problem."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from multidiffusion.core.errors import InvalidInputError

OUTPUT_TYPES: tuple[str, ...] = ("pil", "np", "pt", "latent")
MAX_GUIDANCE = 100.0  # classifier-free guidance scales in use are 1–20; far above, the images are noise
MAX_STEPS = 10_000  # a global cap on scheduler steps (schedulers have their own, lower limits)
MAX_CANVAS_PX = 2**30  # 1 Gpx (32768 × 32768): the decoded float32 image alone is 12 GiB
MAX_VIEWS = 100_000  # views per step: the layout, weights and batches are built per view
MAX_REGIONS = 256  # regions of a layout: each is a canvas-sized mask and a prompt encoded per run
# A prompt's characters. Prompt weighting reads a long prompt in 75-token chunks, one text-encoder pass each, and
# every cross-attention then attends to all of them: 10,000 characters of English are about 30 chunks.
MAX_PROMPT_CHARS = 10_000


def check_text(text: Any, what: str) -> str:
    """A prompt must be a string of valid Unicode (encodable as UTF-8) without NUL characters, of at most
    :data:`MAX_PROMPT_CHARS` characters."""
    if not isinstance(text, str):
        raise InvalidInputError(f"the {what} must be a string, got {type(text).__name__}")
    if len(text) > MAX_PROMPT_CHARS:
        raise InvalidInputError(f"the {what} is {len(text):,} characters long; the limit is {MAX_PROMPT_CHARS:,}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"the {what} is not valid UTF-8 text (undecodable byte at character {exc.start}); "
            "check the terminal's or file's encoding"
        ) from None
    if "\0" in text:
        raise InvalidInputError(f"the {what} contains a NUL character (at character {text.index(chr(0))})")
    return text


def as_prompt_list(prompt: str | Sequence[str], what: str = "prompt") -> list[str]:
    """A prompt or a list of prompts as a non-empty list of strings (valid UTF-8, no NUL)."""
    if prompt is None:
        raise InvalidInputError(f"{what} is required: give a string or a list of strings, got None")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, Sequence):
        prompts = list(prompt)
    else:
        raise InvalidInputError(f"{what} must be a string or a list of strings, got {type(prompt).__name__}")
    if not prompts:
        raise InvalidInputError(f"the {what} list is empty; give at least one {what}")
    if not all(isinstance(p, str) for p in prompts):
        raise InvalidInputError(f"every {what} must be a string")
    for p in prompts:
        check_text(p, what)
    return prompts


def check_number(name: str, value: Any, low: float, high: float, note: str = "") -> float:
    """A finite real number in [low, high]; one line naming the limits otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{name} must be a number in [{low:g}, {high:g}]{note}, got {value!r}")
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidInputError(f"{name} must be in [{low:g}, {high:g}]{note}, got {value!r}")
    return float(value)


def check_canvas_pixels(height: int, width: int) -> None:
    """Refuse canvases over :data:`MAX_CANVAS_PX` before anything is built (sizes already positive ints)."""
    pixels = height * width
    if pixels > MAX_CANVAS_PX:
        raise InvalidInputError(
            f"a {width}×{height} px canvas is {pixels / 1e6:,.0f} Mpx; the limit is {MAX_CANVAS_PX / 1e6:,.0f} Mpx "
            f"(the decoded image alone would take {pixels * 12 / 2**30:.3g} GiB)"
        )


def count_views(size_cells: int, window_cells: int, stride_cells: int, wrap: bool = False) -> int:
    """Views along one axis of a sliding window (the last one flush with the edge); ``wrap``: around it."""
    if wrap:
        return max(1, math.ceil(size_cells / stride_cells))
    if size_cells <= window_cells:
        return 1
    return math.ceil((size_cells - window_cells) / stride_cells) + 1


def check_view_count(
    height_cells: int, width_cells: int, window_cells: int, stride_cells: int, wrap: tuple[bool, bool] = (False, False)
) -> int:
    """The number of views of a layout, estimated before it is built; refused above :data:`MAX_VIEWS`."""
    views = count_views(height_cells, window_cells, stride_cells, wrap[0]) * count_views(
        width_cells, window_cells, stride_cells, wrap[1]
    )
    if views > MAX_VIEWS:
        raise InvalidInputError(
            f"this canvas needs about {views:,} views per step; the limit is {MAX_VIEWS:,}: use a smaller canvas, "
            "a larger stride or a larger window"
        )
    return views


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
    num_inference_steps: int,
    guidance_scale: float | None,
    guidance_rescale: float,
    output_type: str,
) -> None:
    """Steps in 1 … :data:`MAX_STEPS`, guidance in [0, :data:`MAX_GUIDANCE`] (None: the model's default), rescale
    in [0, 1], all finite; a known output type."""
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise InvalidInputError(f"steps must be an integer ≥ 1, got {num_inference_steps!r}")
    if num_inference_steps > MAX_STEPS:
        raise InvalidInputError(f"steps must be at most {MAX_STEPS:,}, got {num_inference_steps:,}")
    if guidance_scale is not None:
        check_guidance(guidance_scale)
    check_number("guidance rescale", guidance_rescale, 0.0, 1.0)
    if output_type not in OUTPUT_TYPES:
        raise InvalidInputError(f"unknown output type {output_type!r}; choose one of: {', '.join(OUTPUT_TYPES)}")


def check_generator(generator: Any) -> None:
    """None or a ``torch.Generator`` (an int is not taken as a seed, as in diffusers)."""
    import torch

    if generator is not None and not isinstance(generator, torch.Generator):
        hint = f"; use torch.Generator().manual_seed({generator})" if isinstance(generator, int) else ""
        raise InvalidInputError(f"generator must be a torch.Generator (got {type(generator).__name__}){hint}")


def check_guidance(value: Any, where: str = "") -> float:
    """A guidance scale: finite, in [0, :data:`MAX_GUIDANCE`] (1 = no guidance)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value <= MAX_GUIDANCE):
        raise InvalidInputError(
            f"guidance scale must be ≥ 0 (1 = no guidance) and at most {MAX_GUIDANCE:g}, got {value!r}{where}"
        )
    return float(value)


def check_stride(stride_px: int, window_px: int) -> None:
    """0 < stride ≤ window (pixels)."""
    if not isinstance(stride_px, int) or stride_px <= 0:
        raise InvalidInputError(f"stride must be a positive number of pixels, got {stride_px!r}")
    if stride_px > window_px:
        raise InvalidInputError(
            f"stride ({stride_px} px) must not exceed the window ({window_px} px): cells between windows "
            "would stay uncovered"
        )
