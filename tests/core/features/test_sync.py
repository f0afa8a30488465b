"""SyncDiffusion's anchor view (core.features.sync.centre_view)."""

from __future__ import annotations

import pytest

from multidiffusion.core import InvalidInputError, View
from multidiffusion.core.features.sync import centre_view


def test_the_centre_view_is_the_nearest_to_the_canvas_centre():
    views = [View(0, left, 8, 8) for left in (0, 8, 16, 24)]
    assert centre_view(views, 8, 32) == 1  # views 1 and 2 are as near: the first wins


def test_no_views_are_refused():
    with pytest.raises(InvalidInputError, match="no views; give at least one view"):
        centre_view([], 8, 32)
