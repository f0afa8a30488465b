"""The oracle's prompt vocabulary: prompt words → mean colours."""

from __future__ import annotations

import pytest
import torch

from multidiffusion.core import InvalidInputError
from multidiffusion.core.oracle.prompts import (
    MAX_ALTERNATIVES,
    NEUTRAL,
    VOCABULARY,
    prompt_alternatives,
    prompt_colour,
    prompt_colours,
    prompt_mixtures,
)


def test_prompt_vocabulary():
    assert prompt_colour("") == NEUTRAL == (0.0, 0.0, 0.0)  # the unconditional model
    assert prompt_colour("a photo of something unknown") == NEUTRAL
    assert prompt_colour("SKY") == VOCABULARY["sky"]
    assert prompt_colour("clouds!") == VOCABULARY["cloud"]  # plural and punctuation
    red_sky = prompt_colour("a red sky over the sea")
    expected = [(VOCABULARY["red"][c] + VOCABULARY["sky"][c] + VOCABULARY["sea"][c]) / 3 for c in range(3)]
    assert red_sky == pytest.approx(expected)
    assert prompt_colour("grey") == pytest.approx(NEUTRAL)
    for word in ("sky", "sea", "grass", "sand", "snow", "forest", "sunset", "night", "red", "green", "blue"):
        assert word in VOCABULARY
    for word in ("yellow", "orange", "purple", "white", "black", "grey"):
        assert word in VOCABULARY
    assert all(-1 <= v <= 1 for colour in VOCABULARY.values() for v in colour)
    colours = prompt_colours(["sky", "", "snow"])
    assert colours.shape == (3, 3) and colours.dtype == torch.float32
    assert torch.equal(colours[1], torch.zeros(3))


def test_alternatives_and_mixtures():
    """ "red or blue" is either colour with equal odds; a prompt without "or" repeats its one colour."""
    assert prompt_alternatives("red or blue") == (VOCABULARY["red"], VOCABULARY["blue"])
    assert prompt_alternatives("sky") == (VOCABULARY["sky"],)
    mixtures = prompt_mixtures(["red or blue", "sky"])
    assert mixtures.shape == (2, MAX_ALTERNATIVES, 3) and mixtures.dtype == torch.float32
    assert torch.equal(mixtures[1, 0], mixtures[1, 1])


def test_too_many_alternatives_are_refused():
    message = r"at most 2 alternatives \('red or blue'\), got 3: 'red or blue or sky'"
    with pytest.raises(InvalidInputError, match=message):
        prompt_alternatives("red or blue or sky")
