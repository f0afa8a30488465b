"""The web UI served on a free localhost port with a system Chromium to drive it: what the screenshot scripts share
(scripts/ui_screenshots.py, sphere_pictures.py, live_screenshots.py)."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

WEBGL_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]  # the 360° viewer draws WebGL


@contextmanager
def served_ui(model: str, viewport: tuple[int, int]) -> Iterator[Any]:
    """A Playwright page on the UI of ``model`` (width, height of ``viewport`` px), the app's Generate button shown;
    the server and browser are closed afterwards."""
    from playwright.sync_api import sync_playwright

    from multidiffusion.interfaces.ui.app import build_app
    from multidiffusion.interfaces.ui.session import UiSession

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(UiSession(default_model=model))
    app.queue(default_concurrency_limit=1)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=WEBGL_ARGS)
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#generate")
            yield page
            browser.close()
    finally:
        app.close()


def fill(page: Any, elem_id: str, value: object) -> None:
    """Type ``value`` into the form field ``elem_id`` and leave it (its change event fires)."""
    field = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    field.fill(str(value))
    field.press("Tab")
