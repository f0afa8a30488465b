"""Screenshots of the web UI for docs/ui.md and the README: both tabs after a run on the toy model.

Serves the app on a free localhost port, drives it with Playwright and the system Chromium (as the browser tests
do), and writes docs/ui_panorama.png and docs/ui_regions.png.

    python scripts/ui_screenshots.py
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from playwright.sync_api import sync_playwright

    from multidiffusion.interfaces.ui.app import build_app
    from multidiffusion.interfaces.ui.session import UiSession

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(UiSession(default_model="toy:sigma=0.15"))
    app.queue(default_concurrency_limit=1)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#generate")

            def fill(elem_id: str, value: object) -> None:
                field = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
                field.fill(str(value))
                field.press("Tab")

            for elem_id, value in (("prompt", "a red ball"), ("height", 128), ("width", 512), ("steps", 20)):
                fill(elem_id, value)
            fill("seed", 3)
            page.click("#generate")
            page.locator("#download a").first.wait_for(timeout=120_000)
            page.screenshot(path=str(ROOT / "docs" / "ui_panorama.png"), full_page=True)

            page.get_by_role("tab", name="Regions").click()
            canvas = page.locator("#paint canvas").first
            canvas.wait_for()
            box = canvas.bounding_box()
            for colour, (x0, x1) in ((0, (0.25, 0.42)), (2, (0.6, 0.78))):
                if colour:
                    page.click("#paint button[aria-label='Color']")
                    page.locator("#paint menu.swatch button.color").nth(colour).click()
                    page.click("#paint button[aria-label='Brush']")
                for r in range(300, 720, 30):
                    y = box["y"] + box["height"] * r / 1000
                    page.mouse.move(box["x"] + box["width"] * x0, y)
                    page.mouse.down()
                    page.mouse.move(box["x"] + box["width"] * x1, y, steps=3)
                    page.mouse.up()
            fill("prompt-red", "a red ball")
            fill("prompt-blue", "a blue box")
            fill("background", "green grass")
            fill("r-steps", 20)
            fill("r-seed", 0)
            page.click("#r-generate")
            page.locator("#r-download a").first.wait_for(timeout=120_000)
            page.screenshot(path=str(ROOT / "docs" / "ui_regions.png"), full_page=True)
            browser.close()
    finally:
        app.close()


if __name__ == "__main__":
    main()
