"""What the web UI does between a form and the engine, without any web framework: the models it offers, one
generation at a time with cancel, the session's images, and the masks painted in colours (docs/ui.md)."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from multidiffusion.core.errors import InvalidInputError

TOY = "toy"
MAX_SESSION_IMAGES = 64  # the gallery keeps the newest ones
PREVIEW_EVERY = 2  # steps between live previews
PAINT_COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (230, 40, 40)),
    ("green", (40, 180, 60)),
    ("blue", (40, 80, 230)),
    ("yellow", (235, 210, 40)),
)
COLOUR_TOLERANCE = 60  # max |Δ| per channel of a painted pixel from its brush colour (antialiased edges are left out)


class Cancelled(Exception):
    """The run was cancelled from the page; nothing was written."""


def model_choices(models_dir: str | None, default: str) -> list[str]:
    """The models the picker offers: the toy model, the default one, and every diffusers folder (one with a
    ``model_index.json``) directly under ``models_dir``."""
    choices = [TOY]
    if default not in choices:
        choices.append(default)
    if models_dir:
        root = Path(models_dir).expanduser()
        if root.is_dir():
            for folder in sorted(p for p in root.iterdir() if (p / "model_index.json").is_file()):
                if str(folder) not in choices:
                    choices.append(str(folder))
    return choices


def painted_masks(layer: np.ndarray) -> dict[str, np.ndarray]:
    """Paint (H, W, 3 or 4) uint8 → {colour name: (H, W) bool mask} for each brush colour used (alpha > 0)."""
    if layer.ndim != 3 or layer.shape[2] not in (3, 4):
        raise InvalidInputError(f"the painted layer must be an RGB or RGBA image, got shape {layer.shape}")
    rgb = layer[..., :3].astype(np.int16)
    opaque = layer[..., 3] > 0 if layer.shape[2] == 4 else np.ones(layer.shape[:2], dtype=bool)
    masks = {}
    for name, colour in PAINT_COLOURS:
        mask = opaque & (np.abs(rgb - np.array(colour, dtype=np.int16)).max(axis=2) <= COLOUR_TOLERANCE)
        if mask.any():
            masks[name] = mask
    return masks


@dataclass
class UiSession:
    """One UI server's state: loaded pipelines by model, the cancel flag of the run in progress, the images made.

    Args:
        default_model: What the picker shows first.
        models_dir: Folders of diffusers models offered in the picker.
        device: Where models run (None: CUDA if available).
        out_dir: Where generated PNGs are written for download (a temporary folder by default).
    """

    default_model: str = TOY
    models_dir: str | None = None
    device: str | None = None
    out_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="multidiffusion-ui-")))
    images: list[str] = field(default_factory=list)
    _pipes: dict[str, Any] = field(default_factory=dict)
    _previews: dict[str, Any] = field(default_factory=dict)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def choices(self) -> list[str]:
        return model_choices(self.models_dir, self.default_model)

    def pipeline(self, model: str) -> Any:
        """The pipeline of ``model`` (one of :meth:`choices`), loaded on first use; one model in memory at a time."""
        from multidiffusion.pipeline import MultiDiffusionPipeline

        if model not in self.choices():
            raise InvalidInputError(f"unknown model {model!r}; choose one of the list")
        if model not in self._pipes:
            self._pipes.clear()
            self._previews.clear()
            self._pipes[model] = MultiDiffusionPipeline.from_pretrained(model, device=self.device)
        return self._pipes[model]

    def preview_image(self, model: str, latents: Any) -> Any:
        """A PIL picture of ``latents`` (N, C, h, w) of ``model``'s canvas: its latent-to-RGB map
        (:mod:`~multidiffusion.adapters.codecs.preview`, fitted on first use), one pixel per latent cell, enlarged to
        about 768 px wide."""
        from PIL import Image

        from multidiffusion.adapters.codecs.preview import fit_preview

        pipe = self.pipeline(model)
        if model not in self._previews:
            self._previews[model] = fit_preview(pipe.model.codec, pipe.model.device)
        rgb = self._previews[model](latents[:1])[0]  # (3, h, w) in [0, 1]
        pixels = (rgb.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        image = Image.fromarray(pixels)
        factor = max(1, 768 // max(1, image.width))
        return image.resize((image.width * factor, image.height * factor), Image.NEAREST)

    def cancel(self) -> None:
        """Ask the run in progress to stop at its next step."""
        self._cancel.set()

    def run(
        self,
        call: Callable[..., Any],
        progress: Callable[[int, int], None] | None = None,
        preview: Callable[[Any], None] | None = None,
        **kwargs: Any,
    ) -> str:
        """Run ``call(**kwargs, callback_on_step_end=…)`` (a pipeline method), one at a time; write its image as a
        PNG with its recipe and return the file's path. ``progress(step, steps)`` after every step; ``preview(x)``
        every :data:`PREVIEW_EVERY` steps with the step's x̂₀ (or its latents where the scheduler reports no x̂₀).
        Raises :class:`Cancelled` when cancelled (nothing written)."""
        from multidiffusion.interfaces.files.png import save_png
        from multidiffusion.pipeline.settings.recipe import METADATA_KEY

        if not self._lock.acquire(blocking=False):
            raise InvalidInputError("a generation is already running; wait for it or cancel it")
        try:
            self._cancel.clear()

            def on_step(state: Any) -> bool:
                if progress is not None:
                    progress(state.step_index + 1, state.num_steps)
                if preview is not None and (state.step_index + 1) % PREVIEW_EVERY == 0:
                    preview(state.denoised if state.denoised is not None else state.latents)
                return self._cancel.is_set()

            result = call(**kwargs, callback_on_step_end=on_step, progress=False)
            if self._cancel.is_set():
                raise Cancelled("cancelled: nothing was written")
            path = self.out_dir / f"multidiffusion-{len(self.images) + 1:03d}-{os.getpid()}.png"
            meta = result.metadata
            save_png(result.images[0], str(path), {"parameters": meta.to_a1111(0), METADATA_KEY: meta.to_json(0)})
            self.images = [*self.images, str(path)][-MAX_SESSION_IMAGES:]
            return str(path)
        finally:
            self._lock.release()


def outline_views(path: str, outline: tuple[int, int, int] = (255, 255, 255)) -> Any:
    """The image at ``path`` (a PNG made here) with the views of its run outlined, from its recipe: window, stride
    and wrap in pixels (views that wrap around a 360° canvas are drawn in two parts). A PIL image."""
    from PIL import Image, ImageDraw

    from multidiffusion.core import layout_views
    from multidiffusion.pipeline.settings.reproduce import read_recipe

    recipe = read_recipe(path)
    image = Image.open(path).convert("RGB")
    window, stride = recipe.get("window"), recipe.get("stride")
    if not window or not stride:
        raise InvalidInputError("this image's recipe has no fixed window and stride to outline")
    height, width = image.height, image.width
    wrap_x = bool(recipe.get("circular")) or "x" in str(recipe.get("tile") or "")
    cell = int(np.gcd.reduce([int(window), int(stride), height, width]))
    views = layout_views(height // cell, width // cell, int(window) // cell, int(stride) // cell, circular=wrap_x)
    draw = ImageDraw.Draw(image)
    for view in views:
        top, left = view.top * cell, view.left * cell
        bottom, right = top + view.height * cell - 1, left + view.width * cell - 1
        for x0, x1 in ((left, min(right, width - 1)), (0, right - width)) if right >= width else ((left, right),):
            if x1 >= x0:
                draw.rectangle((x0, top, x1, bottom), outline=outline)
    return image


def layout_to_zip(masks: dict[str, np.ndarray], prompts: dict[str, str], background: str, path: Path) -> Path:
    """Painted regions as a layout the CLI reads (``multidiffusion regions --layout layout.json``): a zip of
    ``layout.json`` and one mask PNG per colour, beside it."""
    import io
    import json
    import zipfile

    from PIL import Image

    if not masks:
        raise InvalidInputError("paint at least one region first")
    height, width = next(iter(masks.values())).shape
    regions = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, mask in masks.items():
            buffer = io.BytesIO()
            Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buffer, format="PNG")
            archive.writestr(f"mask-{name}.png", buffer.getvalue())
            regions.append({"name": name, "prompt": prompts.get(name) or name, "mask": f"mask-{name}.png"})
        layout: dict[str, Any] = {"width": int(width), "height": int(height), "regions": regions}
        if background:
            layout["background"] = background
        archive.writestr("layout.json", json.dumps(layout, indent=1))
    return path


def layout_to_paint(path: str) -> tuple[np.ndarray, dict[str, str], str]:
    """A layout the CLI reads (``layout.json``, or a zip of it with its masks) as (RGBA paint layer, prompt per brush
    colour, background prompt): a region named after a brush colour (as exported) is painted in it, the others in
    the colours left, in order (at most as many regions as colours)."""
    import tempfile
    import zipfile

    from multidiffusion.pipeline.inputs.region_file import load_region_file

    file = Path(path)
    with tempfile.TemporaryDirectory() as folder:
        if zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as archive:
                for member in archive.namelist():  # flat names only: nothing is written outside the folder
                    if "/" in member or "\\" in member or member.startswith("."):
                        raise InvalidInputError(f"the layout zip holds {member!r}; only flat file names are read")
                archive.extractall(folder)
            file = Path(folder) / "layout.json"
            if not file.is_file():
                raise InvalidInputError("the layout zip holds no layout.json")
        layout = load_region_file(file)
    if len(layout.regions) > len(PAINT_COLOURS):
        raise InvalidInputError(
            f"the layout has {len(layout.regions)} regions; the page paints at most {len(PAINT_COLOURS)}"
        )
    from multidiffusion.core.features.regions import mask_tensor

    layer = np.zeros((layout.height, layout.width, 4), dtype=np.uint8)
    prompts = {}
    palette = dict(PAINT_COLOURS)
    named = [r.name for r in layout.regions if r.name in palette]  # an exported layout names its colours
    free = [name for name, _ in PAINT_COLOURS if name not in named]
    for region in layout.regions:
        name = region.name if region.name in palette and region.name not in prompts else free.pop(0)
        colour = palette[name]
        if region.box is not None:
            x0, y0, x1, y1 = region.box
            painted = np.zeros((layout.height, layout.width), dtype=bool)
            painted[y0:y1, x0:x1] = True
        else:
            painted = mask_tensor(region.mask).numpy() >= 0.5
        layer[painted] = (*colour, 255)
        prompts[name] = region.prompt
    background = layout.background.prompt if layout.background is not None else ""
    return layer, prompts, background
