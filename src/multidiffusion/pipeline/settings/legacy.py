"""The flat keywords of earlier versions (``window=``, ``sync_weight=``, ``global_view_until=`` …), still accepted.

Each is folded into its settings object and warns once per process with its new spelling, so scripts keep working
while they move to ``views=ViewSettings(…)``, ``sync=SyncSettings(…)`` and ``global_view=GlobalView(…)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from multidiffusion.core.errors import InvalidInputError
from multidiffusion.core.features.global_view import GlobalView
from multidiffusion.core.features.sync import SyncSettings
from multidiffusion.pipeline.settings.views import ViewSettings, with_x_wrapped

VIEW_KEYWORDS: tuple[str, ...] = ("window", "stride", "weights", "layout", "tile", "circular")
SYNC_KEYWORDS: Mapping[str, str] = {
    "sync_weight": "weight",
    "sync_decay": "decay",
    "sync_stop_step": "stop_step",
    "sync_every": "every",
    "sync_anchor": "anchor",
    "sync_loss": "loss",
    "sync_chunk_size": "chunk_size",
    "sync_checkpointing": "checkpointing",
}
GLOBAL_VIEW_KEYWORDS: Mapping[str, str] = {"global_view_until": "until"}

_warned: set[str] = set()


def _warn_once(old: str, new: str) -> None:
    if old not in _warned:
        _warned.add(old)
        warnings.warn(f"{old}= is deprecated; use {new}", FutureWarning, stacklevel=4)


def _pop(legacy: dict[str, Any], keywords: Mapping[str, str], new: str) -> dict[str, Any]:
    """The old keywords found in ``legacy`` (removed from it) by their new field names; each warns once."""
    given = {}
    for key, field in keywords.items():
        if key in legacy:
            given[field] = legacy.pop(key)
            _warn_once(key, new.format(field=field))
    return given


def fold_views(legacy: dict[str, Any], views: ViewSettings | None) -> ViewSettings:
    """``views``, or the one made of the old view keywords popped from ``legacy`` (``circular=True`` wraps x)."""
    circular = _pop(legacy, {"circular": "circular"}, "views=ViewSettings(tile='x')")
    given = {**_pop(legacy, {key: key for key in VIEW_KEYWORDS[:-1]}, "views=ViewSettings({field}=…)"), **circular}
    if views is not None and not isinstance(views, ViewSettings):
        raise InvalidInputError(f"views must be a ViewSettings, got {type(views).__name__}")
    if not given:
        return views if views is not None else ViewSettings()
    if views is not None:
        raise InvalidInputError(f"give views= or the old keywords {', '.join(sorted(given))}, not both")
    if given.pop("circular", False):
        given["tile"] = with_x_wrapped(given.get("tile"))
    return ViewSettings(**given)


def fold_sync(legacy: dict[str, Any], sync: SyncSettings | bool | None) -> SyncSettings | None:
    """The run's :class:`SyncSettings` (None: no sync) from ``sync`` (True: the defaults) and the old ``sync_*``
    keywords popped from ``legacy``."""
    given = _pop(legacy, SYNC_KEYWORDS, "sync=SyncSettings({field}=…)")
    if isinstance(sync, SyncSettings):
        if given:
            raise InvalidInputError("give sync=SyncSettings(…) or the old sync_* keywords, not both")
        return sync
    if sync is not None and not isinstance(sync, bool):
        raise InvalidInputError(f"sync must be a SyncSettings, True or False, got {type(sync).__name__}")
    settings = SyncSettings(**given)  # checked even when sync is off, as the old keywords were
    return settings if sync else None


def fold_global_view(legacy: dict[str, Any], global_view: GlobalView | float | None) -> GlobalView | None:
    """The run's :class:`GlobalView` (None: off) from ``global_view`` (a number: its weight ω) and the old
    ``global_view_until`` popped from ``legacy``."""
    given = _pop(legacy, GLOBAL_VIEW_KEYWORDS, "global_view=GlobalView(weight, {field}=…)")
    if isinstance(global_view, GlobalView):
        if given:
            raise InvalidInputError("give global_view=GlobalView(…) or global_view_until=, not both")
        return global_view
    if global_view is None:
        return None
    if isinstance(global_view, bool) or not isinstance(global_view, (int, float)):
        raise InvalidInputError(
            f"global_view must be a GlobalView or its weight (a number > 0), got {type(global_view).__name__}"
        )
    return GlobalView(global_view, **given)


def refuse_unknown(legacy: Mapping[str, Any], method: str) -> None:
    """What is left of ``legacy`` is no keyword of ``method``: the TypeError Python gives for an unknown keyword."""
    if legacy:
        raise TypeError(f"{method}() got an unexpected keyword argument {next(iter(legacy))!r}")
