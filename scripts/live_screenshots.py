"""The README's sequence of a live edit (docs/live_sequence.png): the web UI's Regions tab with Live on over the toy
model; the preview before the stroke, after a red stroke, and after the red slot's prompt becomes "a blue box".

    python scripts/live_screenshots.py     (needs the ui extra and a chromium on PATH)
"""

from __future__ import annotations

import json
import tempfile
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageDraw
from served_ui import fill, served_ui

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    shots: list[Image.Image] = []
    with served_ui("toy:sigma=0.15", (1300, 1300)) as page, tempfile.TemporaryDirectory() as tmp:
        page.get_by_role("tab", name="Regions").click()
        canvas = page.locator("#paint canvas").first
        canvas.wait_for()
        layout = Path(tmp) / "small.json"
        layout.write_text(json.dumps({"width": 256, "height": 128, "background": "green grass", "regions": []}))
        page.locator("#r-import input[type=file]").set_input_files(str(layout))
        page.wait_for_timeout(2000)
        fill(page, "prompt-red", "a red ball")
        fill(page, "r-steps", 4)
        fill(page, "r-seed", 0)
        page.locator("#live input").check()
        page.wait_for_selector("#live-status:has-text('live: frame')", timeout=60_000)

        def preview(caption: str) -> None:
            page.wait_for_timeout(8000)  # many frames after the edit (under load a frame takes ~0.1 s)
            picture = Image.open(BytesIO(page.locator("#r-preview img").screenshot())).convert("RGB")
            framed = Image.new("RGB", (picture.width, picture.height + 28), "white")
            framed.paste(picture, (0, 28))
            ImageDraw.Draw(framed).text((6, 8), caption, fill="black")
            shots.append(framed)

        preview("Live on: the background alone")
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        for r in range(300, 720, 30):
            y = box["y"] + box["height"] * r / 1000
            page.mouse.move(box["x"] + box["width"] * 0.25, y)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.42, y, steps=3)
            page.mouse.up()
        preview("a red stroke, prompt 'a red ball'")
        fill(page, "prompt-red", "a blue box")
        preview("the same stroke, prompt 'a blue box'")
    width = sum(s.width for s in shots) + 12 * (len(shots) - 1)
    strip = Image.new("RGB", (width, max(s.height for s in shots)), "white")
    x = 0
    for shot in shots:
        strip.paste(shot, (x, 0))
        x += shot.width + 12
    strip.save(ROOT / "docs" / "live_sequence.png")


if __name__ == "__main__":
    main()
