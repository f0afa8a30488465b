"""Screenshots of the web UI for docs/ui.md and the README: both tabs after a run on the toy model.

Serves the app on a free localhost port, drives it with Playwright and the system Chromium (as the browser tests
do), and writes docs/ui_panorama.png and docs/ui_regions.png.

    python scripts/ui_screenshots.py
"""

from __future__ import annotations

from pathlib import Path

from served_ui import fill, served_ui

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    with served_ui("toy:sigma=0.15", (1300, 900)) as page:
        for elem_id, value in (("prompt", "a red ball"), ("height", 128), ("width", 512), ("steps", 20)):
            fill(page, elem_id, value)
        fill(page, "seed", 3)
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
        fill(page, "prompt-red", "a red ball")
        fill(page, "prompt-blue", "a blue box")
        fill(page, "background", "green grass")
        fill(page, "r-steps", 20)
        fill(page, "r-seed", 0)
        page.click("#r-generate")
        page.locator("#r-download a").first.wait_for(timeout=120_000)
        page.screenshot(path=str(ROOT / "docs" / "ui_regions.png"), full_page=True)


if __name__ == "__main__":
    main()
