"""The pictures of docs/sphere.md that show outputs people use: the toy sphere's six cube faces laid out as the usual
cross (docs/sphere_cubemap.png), and the web UI's 360° viewer looking at a toy sphere (docs/sphere_viewer.png).

    python scripts/sphere_pictures.py     (needs the ui extra and a chromium on PATH for the viewer)
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from multidiffusion.pipeline import MultiDiffusionPipeline
from multidiffusion.pipeline.files.cubemap import cube_faces

ROOT = Path(__file__).resolve().parents[1]
CROSS = {"up": (0, 1), "left": (1, 0), "front": (1, 1), "right": (1, 2), "back": (1, 3), "down": (2, 1)}


def cubemap_cross() -> None:
    pipe = MultiDiffusionPipeline.from_pretrained("toy")
    out = pipe.sphere("a blue sky", height=108, num_inference_steps=30, generator=torch.Generator().manual_seed(0))
    faces = cube_faces(np.asarray(out.images[0].convert("RGB")))
    size = next(iter(faces.values())).shape[0]
    cross = np.full((3 * size, 4 * size, 3), 255, dtype=np.uint8)
    for name, (row, col) in CROSS.items():
        cross[row * size : (row + 1) * size, col * size : (col + 1) * size] = faces[name]
    Image.fromarray(cross).resize((8 * size, 6 * size), Image.NEAREST).save(ROOT / "docs" / "sphere_cubemap.png")


def viewer_screenshot() -> None:
    from playwright.sync_api import sync_playwright

    from multidiffusion.interfaces.ui.app import build_app
    from multidiffusion.interfaces.ui.session import UiSession

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(UiSession(default_model="toy"))
    app.queue(default_concurrency_limit=1)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        with sync_playwright() as p:
            args = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
            browser = p.chromium.launch(executable_path=chromium, args=args)
            page = browser.new_page(viewport={"width": 1300, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#generate")
            for elem_id, value in (("prompt", "a blue sky"), ("height", 108), ("steps", 30), ("seed", 0)):
                field = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
                field.fill(str(value))
                field.press("Tab")
            page.locator("#sphere input").check()
            page.click("#generate")
            page.locator("#download a").first.wait_for(timeout=120_000)
            page.click("#look")
            viewer = "window.mdSphere && window.mdSphere.viewers['sphere-view']"
            loaded = f"() => {{ const v = {viewer}; return v && v.isLoaded(); }}"
            page.wait_for_function(loaded, timeout=60_000)
            page.evaluate("window.mdSphere.viewers['sphere-view'].setPitch(30, false)")
            page.wait_for_timeout(500)
            page.locator("#sphere-view").screenshot(path=str(ROOT / "docs" / "sphere_viewer.png"))
            browser.close()
    finally:
        app.close()


if __name__ == "__main__":
    cubemap_cross()
    viewer_screenshot()
