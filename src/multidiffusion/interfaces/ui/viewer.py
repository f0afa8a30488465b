"""The 360° viewer: an equirectangular result (a full sphere, or a 360° band made with the 360° option) shown in
Pannellum, which the package ships (``static/pannellum``, MIT) so that the page works offline; drag to look around.

Gradio serves the ``static`` folder; the page loads the library once, on start-up. A button makes the viewer's copy of
the result (:func:`viewer_copy`) and hands its URL to ``window.mdSphere.show`` (``static/sphere_viewer.js``).

Why a copy: WebGL samples the image with its edges clamped, so where the viewer magnifies a small image the last
column meets the first without the interpolation every other pair of neighbours gets, and the ±180° line shows as a
step (measured: 5.8× the median column step on a 256-px-wide toy panorama; docs/ui.md). Enlarged with wrap-around
interpolation to at least the screen's density, the copy has no such step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

VIEWER_WIDTH_PX = 4096
"""The width of the viewer's copy: dense enough for a full-screen view at Pannellum's default field of view, and the
widest texture it recommends for every device."""

STATIC_DIR = Path(__file__).parent / "static"
SCRIPTS = ("pannellum/pannellum.js", "sphere_viewer.js")
STYLES = ("pannellum/pannellum.css",)


def static_url(name: str) -> str:
    """The URL Gradio serves the static file ``name`` (relative to :data:`STATIC_DIR`) at, once
    :func:`serve_static` has run."""
    return f"/gradio_api/file={(STATIC_DIR / name).resolve()}"


def serve_static() -> None:
    """Let Gradio serve :data:`STATIC_DIR` (the viewer's library and glue, nothing else)."""
    import gradio as gr

    gr.set_static_paths(paths=[STATIC_DIR])


def loader_js() -> str:
    """JavaScript, run on page load, that adds the viewer's scripts and styles to the page once (in order)."""
    scripts = json.dumps([static_url(name) for name in SCRIPTS])
    styles = json.dumps([static_url(name) for name in STYLES])
    return f"""() => {{
  if (window.mdSphereLoading) return [];
  window.mdSphereLoading = true;
  for (const href of {styles}) {{
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = href;
    document.head.appendChild(link);
  }}
  const next = (urls) => {{
    if (!urls.length) return;
    const script = document.createElement("script");
    script.src = urls[0];
    script.onload = () => next(urls.slice(1));
    document.head.appendChild(script);
  }};
  next({scripts});
  return [];
}}"""


def show_js(elem_id: str) -> str:
    """JavaScript for a button's event whose input is a result image: shows it in the viewer ``elem_id``."""
    target = json.dumps(elem_id)
    return f"""(result) => {{
  const url = result && (result.url || result.path);
  if (url && window.mdSphere) window.mdSphere.show({target}, url).catch((e) => console.warn(e.message));
  return [];
}}"""


def viewer(elem_id: str, height_px: int = 420) -> Any:
    """The viewer's place in the page: empty until an image is shown in it."""
    import gradio as gr

    return gr.HTML(
        f'<div id="{elem_id}" style="width: 100%; height: {height_px}px"></div>',
        label="360° view (drag to look around)",
        elem_id=f"{elem_id}-box",
    )


def wrapped_enlargement(rgb: np.ndarray, width: int = VIEWER_WIDTH_PX) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8, a 360° image whose columns wrap around, enlarged to ``width`` columns (and H · width / W
    rows) by Lanczos interpolation that wraps too: the image is padded with its own opposite ends before resizing, and
    the padding cut off after. Images already that wide are returned unchanged."""
    from PIL import Image

    height, old = rgb.shape[:2]
    if old >= width:
        return rgb
    pad = min(old, 8)  # Lanczos-3 reaches 3 source columns each way; 8 leaves margin
    padded = np.concatenate([rgb[:, -pad:], rgb, rgb[:, :pad]], axis=1)
    scale = width / old
    new_height = max(1, round(height * scale))
    big = np.asarray(Image.fromarray(padded).resize((round((old + 2 * pad) * scale), new_height), Image.LANCZOS))
    left = round(pad * scale)
    return np.ascontiguousarray(big[:, left : left + width])


def viewer_copy(path: str, folder: Path) -> str:
    """Write the viewer's copy of the PNG or JPEG at ``path`` (:func:`wrapped_enlargement`) into ``folder`` (made if
    missing), atomically; returns the copy's path."""
    from io import BytesIO

    from PIL import Image

    from multidiffusion.pipeline.files.atomic import ordinary_mode, write_atomically
    from multidiffusion.pipeline.inputs.image_files import open_image

    rgb = np.asarray(open_image(path, "image", "RGB"))
    buffer = BytesIO()
    Image.fromarray(wrapped_enlargement(rgb)).save(buffer, format="PNG")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"360-{Path(path).stem}.png"
    write_atomically(out, buffer.getvalue(), mode=ordinary_mode(out))
    return str(out)
