"""Prompt words → the mean colours of the Gaussian-field oracle (docs/design.md §9).

The exact model of :mod:`~multidiffusion.core.oracle.field` is conditioned on a mean colour μ per channel, in image
units ([−1, 1]). A prompt gives it: the average colour of its vocabulary words (:func:`prompt_colour`), and a
prompt "A or B" means either colour with equal odds (:func:`prompt_alternatives`, the mixture that
:meth:`~multidiffusion.core.oracle.field.GaussianField.predict_mixture` denoises exactly).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from multidiffusion.core.errors import InvalidInputError


def _rgb(r: float, g: float, b: float) -> tuple[float, float, float]:
    """8-bit sRGB → [−1, 1] (the codec's image range)."""
    return (r / 127.5 - 1.0, g / 127.5 - 1.0, b / 127.5 - 1.0)


# Prompt vocabulary: word → mean colour in [−1, 1]. Dark and light colours stay a little inside the
# range so that a field of σ = 0.3 around them is not mostly clipped by the image conversion.
VOCABULARY: Mapping[str, tuple[float, float, float]] = {
    # scenes
    "sky": _rgb(135, 190, 235),
    "cloud": _rgb(220, 225, 235),
    "sea": _rgb(20, 90, 150),
    "ocean": _rgb(20, 90, 150),
    "lake": _rgb(40, 110, 160),
    "water": _rgb(40, 110, 170),
    "grass": _rgb(90, 160, 60),
    "meadow": _rgb(110, 170, 70),
    "forest": _rgb(35, 90, 45),
    "sand": _rgb(215, 190, 140),
    "beach": _rgb(215, 190, 140),
    "desert": _rgb(220, 180, 120),
    "snow": _rgb(240, 242, 248),
    "ice": _rgb(200, 225, 240),
    "mountain": _rgb(115, 110, 120),
    "rock": _rgb(110, 105, 100),
    "sunset": _rgb(245, 130, 70),
    "sunrise": _rgb(250, 170, 90),
    "night": _rgb(20, 25, 60),
    "fire": _rgb(230, 90, 25),
    "lava": _rgb(200, 50, 20),
    # colours
    "red": _rgb(200, 35, 35),
    "green": _rgb(45, 160, 65),
    "blue": _rgb(40, 70, 200),
    "yellow": _rgb(235, 210, 50),
    "orange": _rgb(240, 140, 30),
    "purple": _rgb(120, 50, 160),
    "pink": _rgb(240, 150, 180),
    "brown": _rgb(120, 80, 45),
    "white": _rgb(240, 240, 240),
    "black": _rgb(15, 15, 15),
    "grey": _rgb(127.5, 127.5, 127.5),
    "gray": _rgb(127.5, 127.5, 127.5),
}
NEUTRAL: tuple[float, float, float] = (0.0, 0.0, 0.0)  # neutral grey, also the unconditional mean

_WORD = re.compile(r"[a-z]+")


def prompt_words(prompt: str) -> list[str]:
    """The vocabulary words of ``prompt``, in order (lower-cased; a plural ``…s`` counts as its singular)."""
    words = []
    for token in _WORD.findall(prompt.lower()):
        if token in VOCABULARY:
            words.append(token)
        elif token.endswith("s") and token[:-1] in VOCABULARY:
            words.append(token[:-1])
    return words


def prompt_colour(prompt: str) -> tuple[float, float, float]:
    """Mean RGB colour in [−1, 1] that ``prompt`` asks for.

    The average of the colours of its vocabulary words (repeats count again); unknown words are ignored.
    No known word (the empty prompt included) gives neutral grey, 0: the empty prompt is the
    unconditional model, so classifier-free guidance pushes away from grey.
    """
    words = prompt_words(prompt)
    if not words:
        return NEUTRAL
    return tuple(sum(VOCABULARY[w][c] for w in words) / len(words) for c in range(3))  # type: ignore[return-value]


def prompt_colours(prompts: Sequence[str], device: torch.device | str = "cpu") -> Tensor:
    """Mean colours of N prompts: float32 tensor (N, 3) in [−1, 1]."""
    return torch.tensor([prompt_colour(p) for p in prompts], dtype=torch.float32, device=device).reshape(-1, 3)


MAX_ALTERNATIVES = 2
_OR = re.compile(r"\bor\b")


def prompt_alternatives(prompt: str) -> tuple[tuple[float, float, float], ...]:
    """The colours a prompt means *either* of: its parts split at the word "or", each by :func:`prompt_colour`.

    "red or blue" is a mixture of a red and a blue field with equal odds (each image is one or the other;
    docs/design.md §9's coherence oracle); a prompt without "or" has one alternative.

    Raises:
        InvalidInputError: more than :data:`MAX_ALTERNATIVES` alternatives.
    """
    parts = _OR.split(prompt.lower())
    if len(parts) > MAX_ALTERNATIVES:
        raise InvalidInputError(
            f"the toy model takes at most {MAX_ALTERNATIVES} alternatives ('red or blue'), got {len(parts)}: {prompt!r}"
        )
    return tuple(prompt_colour(part) for part in parts)


def prompt_mixtures(prompts: Sequence[str], device: torch.device | str = "cpu") -> Tensor:
    """Component means of N prompts: float32 (N, MAX_ALTERNATIVES, 3); one colour is repeated to fill."""
    rows = []
    for prompt in prompts:
        alternatives = prompt_alternatives(prompt)
        rows.append([alternatives[k % len(alternatives)] for k in range(MAX_ALTERNATIVES)])
    return torch.tensor(rows, dtype=torch.float32, device=device).reshape(-1, MAX_ALTERNATIVES, 3)
