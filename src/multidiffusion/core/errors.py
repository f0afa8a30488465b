"""The one error type for bad input, shared by every layer."""

from __future__ import annotations


class InvalidInputError(ValueError):
    """Raised for input the user can fix. The message is one line: what is wrong and what is allowed.

    The command line prints it as ``error: <message>`` and exits with status 2.
    """


class NonFiniteError(FloatingPointError):
    """A run produced inf or NaN (half-precision overflow, an absurd guidance or sync weight). The message is one
    line naming where it happened and what to try; the command line prints it as ``error: <message>``, exits
    with status 1 and writes no file."""
