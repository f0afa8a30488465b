"""The pictures of docs/sphere.md that show outputs people use: the toy sphere's six cube faces laid out as the usual
cross (docs/sphere_cubemap.png), and the web UI's 360° viewer looking at a toy sphere (docs/sphere_viewer.png).

    python scripts/sphere_pictures.py     (needs the ui extra and a chromium on PATH for the viewer)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from served_ui import fill, served_ui

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
    with served_ui("toy", (1300, 1100)) as page:
        for elem_id, value in (("prompt", "a blue sky"), ("height", 108), ("steps", 30), ("seed", 0)):
            fill(page, elem_id, value)
        page.locator("#sphere input").check()
        page.click("#generate")
        page.locator("#download a").first.wait_for(timeout=120_000)
        page.click("#look")
        viewer = "window.mdSphere && window.mdSphere.viewers['sphere-view']"
        page.wait_for_function(f"() => {{ const v = {viewer}; return v && v.isLoaded(); }}", timeout=60_000)
        page.evaluate("window.mdSphere.viewers['sphere-view'].setPitch(30, false)")
        page.wait_for_timeout(500)
        page.locator("#sphere-view").screenshot(path=str(ROOT / "docs" / "sphere_viewer.png"))


if __name__ == "__main__":
    cubemap_cross()
    viewer_screenshot()
