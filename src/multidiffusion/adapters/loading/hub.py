"""One line for a model that could not be loaded, saying what failed and what to do instead."""

from __future__ import annotations

import os

# Phrases of huggingface_hub / diffusers errors that mean "the weights are not here and the hub cannot be
# reached" (no network, a firewall, or HF_HUB_OFFLINE=1 with an empty cache).
_UNREACHABLE = (
    "not fully cached",
    "offline mode",
    "outgoing traffic has been disabled",
    "couldn't connect",
    "cannot reach",
    "connection",
    "name or service not known",
    "temporary failure in name resolution",
    "max retries exceeded",
    "timed out",
    "local_files_only",
)
_NOT_FOUND = ("repository not found", "404 client error", "is not a valid model identifier", "revisionnotfound")
NO_WEIGHTS_HINT = (
    "point --model at a local diffusers folder or .safetensors file (and set HF_HUB_OFFLINE=1), "
    "or try the tool with no weights at all: --model toy"
)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no network (read now, as huggingface_hub reads it at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def explain_load_error(source: str, exc: BaseException) -> str:
    """What to tell the user when ``source`` (a repo id, folder or file) failed to load with ``exc``."""
    text = " ".join(str(e) for e in _chain(exc)).lower()
    if any(phrase in text for phrase in _UNREACHABLE):
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub cannot be reached"
        return f"model {source!r} is not in the local cache and {why}; {NO_WEIGHTS_HINT}"
    if any(phrase in text for phrase in _NOT_FOUND):
        return f"model {source!r} was not found on the hub (check the owner/name spelling); {NO_WEIGHTS_HINT}"
    return f"could not load model {source!r}: {first_line(exc)}"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen
