"""AUTOMATIC1111's prompt-weighting syntax → weighted text fragments: the one prompt parser of this package.

Prompts are written in A1111's syntax (stable-diffusion-webui, ``modules/prompt_parser.py``,
``parse_prompt_attention``) and encoded by compel (:mod:`~multidiffusion.adapters.customise.prompt_weighting`). compel
has a syntax of its own (``word+``, ``word-``, ``(a, b).and()``, ``.blend()``, ``.swap()``…) in which a plain
prompt such as ``"1+1, sci-fi city. and()"`` would not mean what it says; so prompts never go through compel's
string parser. This module translates A1111 syntax straight into compel's parsed form, (text, weight) runs
(compel's ``Fragment``\\ s of a ``FlattenedPrompt``), one list per BREAK-separated segment, and compel embeds
those runs. Every character that is not A1111 syntax reaches the tokenizer as written.

The syntax, as A1111 reads it:

* ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` divides it by 1.1; nesting multiplies
  (``((text))`` → 1.21).
* ``(text:w)`` multiplies it by the number w (``[+-]?[.\\d]+``, so ``(a:0.5)``, ``(a:.5)``, ``(a:+2)``); a w that
  is no number (``(a:1.2.3)``) or is not finite (hundreds of digits) is an
  :class:`~multidiffusion.core.errors.InvalidInputError` naming the text it weights. ``:`` anywhere else is text
  (``(a:b)`` is "a:b" × 1.1), as is ``:w)`` outside round brackets.
* ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are the literal characters; a lone backslash is dropped (as A1111 does).
* Unbalanced brackets: an unmatched ``)`` or ``]`` is literal text; a bracket never closed applies its
  multiplier up to the end of the prompt (``(unbalanced`` → "unbalanced" × 1.1).
* Adjacent runs of equal weight merge (``(a)(b)`` → "ab" × 1.1), as A1111 tokenises them.
* ``BREAK`` (the capitalised word, and the whitespace around it) ends a segment: the encoder starts a new
  75-token chunk there. One deliberate deviation: A1111 multiplies its internal BREAK marker by the weights of
  the brackets around it, after which the marker no longer matches and the word "BREAK" is encoded as text with
  a negative weight; here ``(a BREAK b)`` breaks like ``(a) BREAK (b)``.

The AND, ``[from:to:when]`` and ``[a|b]`` syntaxes of A1111 (composable diffusion, prompt editing) are not
weighting and are read as text (their brackets then weigh as above, as in A1111's weighting pass).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import NamedTuple

from multidiffusion.core.errors import InvalidInputError

ROUND = 1.1
"""The weight multiplier of ``(text)``."""
SQUARE = 1 / 1.1
"""The weight multiplier of ``[text]``."""

# A1111's re_attention, alternative for alternative: escapes, a lone backslash, brackets, ":w)", text, ":".
_ATTENTION = re.compile(
    r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:([+-]?[.\d]+)\)|
\)|
]|
[^\\()\[\]:]+|
:
""",
    re.X,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


class Fragment(NamedTuple):
    """A run of prompt text with one weight (equal to the tuple ``(text, weight)``)."""

    text: str
    weight: float


Segment = tuple[Fragment, ...]
"""The fragments between two BREAKs, in order."""


def _number(weight: str, inner: str) -> float:
    try:
        value = float(weight)
    except ValueError:
        raise InvalidInputError(f"the prompt weight {weight!r} of {inner!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidInputError(f"the prompt weight {weight!r} of {inner!r} is not a finite number")
    return value


def parse(text: str) -> tuple[Segment, ...]:
    """A1111 prompt → its BREAK-separated segments of (text, weight) runs (see the module docstring).

    Runs with empty text are left out; a prompt without BREAK is one segment. A segment may be empty (``BREAK a``:
    an empty first chunk, as in A1111), except that a trailing BREAK adds none. ``parse("")`` is ``((),)``.

    Raises:
        InvalidInputError: A ``(text:w)`` weight is not a finite number, or nesting multiplies weights past the
            float range.
    """
    runs: list[list] = []  # [text, weight]; text None: a BREAK, which no bracket weighs
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, factor: float) -> None:
        for run in runs[start:]:
            if run[0] is not None:
                run[1] *= factor

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            runs.append([token[1:], 1.0])
        elif token == "(":
            round_brackets.append(len(runs))
        elif token == "[":
            square_brackets.append(len(runs))
        elif weight is not None and round_brackets:
            start = round_brackets.pop()
            inner = "".join(run[0] for run in runs[start:] if run[0] is not None)
            multiply_range(start, _number(weight, inner))
        elif token == ")" and round_brackets:
            multiply_range(round_brackets.pop(), ROUND)
        elif token == "]" and square_brackets:
            multiply_range(square_brackets.pop(), SQUARE)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i > 0:
                    runs.append([None, 1.0])
                runs.append([part, 1.0])
    for start in round_brackets:
        multiply_range(start, ROUND)
    for start in square_brackets:
        multiply_range(start, SQUARE)

    segments: list[list[Fragment]] = [[]]
    for run_text, weight in runs:
        if run_text is None:
            segments.append([])
            continue
        if not run_text:
            continue
        if not math.isfinite(weight):
            raise InvalidInputError(f"the prompt weight of {run_text!r} (nested brackets) is not a finite number")
        current = segments[-1]
        if current and current[-1].weight == weight:  # A1111 merges runs of equal weight
            current[-1] = Fragment(current[-1].text + run_text, weight)
        else:
            current.append(Fragment(run_text, weight))
    if len(segments) > 1 and not segments[-1]:
        segments.pop()  # A1111 adds no chunk for a trailing BREAK
    return tuple(tuple(segment) for segment in segments)


def literal(text: str) -> str:
    """The prompt's text without A1111 syntax: brackets and ``:w`` weights removed, escapes resolved, BREAKs
    replaced by one space. For families without prompt weighting (their encoders would otherwise read ``(``,
    ``:1.2`` and ``BREAK`` as words); a prompt without syntax comes back unchanged."""
    parts = ("".join(f.text for f in segment) for segment in parse(text))
    return " ".join(part for part in parts if part)


def has_weighting(text: str, count: Callable[[str], int] | None = None, max_tokens: int = 77) -> bool:
    """Whether reading the prompt with weighting differs from reading :func:`literal` of it plainly: some run
    weighs other than 1 or a BREAK starts a new chunk; with ``count`` (a token counter such as
    :attr:`~multidiffusion.adapters.model.loaded.PromptLimit.count`), also when the literal text is longer than
    ``max_tokens`` tokens (special tokens included), i.e. needs more than one chunk."""
    segments = parse(text)
    if len(segments) > 1 or any(f.weight != 1.0 for segment in segments for f in segment):
        return True
    return count is not None and count(literal(text)) > max_tokens
