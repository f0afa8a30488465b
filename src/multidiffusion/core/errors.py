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


class OutputError(OSError):
    """A finished result could not be written where asked (the folder turned read-only, the disk is full). The
    message is one line saying why and where the result was rescued to, if anywhere; the command line prints it
    as ``error: <message>`` and exits with status 1."""


class ProcessGroupError(OutputError):
    """Another process of a distributed run stalled past its step timeout or died, so this one cannot finish the
    canvas they share. The message is one line saying which and how long it waited; the command line prints it as
    ``error: <message>`` and exits with status 1, and no file is written."""
