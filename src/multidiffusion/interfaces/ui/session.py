"""What the web UI does between a form and the engine, without any web framework: the models it offers, one
generation at a time with cancel, the session's images, and the masks painted in colours (docs/ui.md)."""

from __future__ import annotations

import math
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
# A run that was cancelled, or whose page went away, stops at the end of its current step; the next run waits this
# long for it rather than being refused (a step of a large canvas on a CPU takes tens of seconds).
STOP_WAIT_S = 120.0
MAX_LIVE_TABS = 4  # browser tabs live at once; they share the model, one call at a time
MAX_OUTLINE_PX = 2**26  # 67 Mpx (16384 × 4096): the RGB copy the outlines are drawn on is then 192 MiB
MAX_PAINT_PX = 2**24  # 16.8 Mpx (4096 × 4096): an imported layout's canvas; its RGBA paint layer is then 64 MiB
MAX_OUTLINED_VIEWS = 10_000  # views drawn on one picture: far more than any window and stride of the UI's sizes give


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
    _stop: threading.Event | None = None  # the page-gone flag of the run in progress
    _live: dict[str, Any] = field(default_factory=dict)  # browser tab → its live canvas
    _batchers: dict[str, Any] = field(default_factory=dict)  # model → the stream batcher its live canvases share

    def choices(self) -> list[str]:
        return model_choices(self.models_dir, self.default_model)

    def pipeline(self, model: str) -> Any:
        """The pipeline of ``model`` (one of :meth:`choices`), loaded on first use; one model in memory at a time."""
        from multidiffusion.pipeline import MultiDiffusionPipeline

        if model not in self.choices():
            raise InvalidInputError(f"unknown model {model!r}; choose one of the list")
        if model not in self._pipes:
            if self._live:
                raise InvalidInputError("live painting is on in a tab with another model: turn Live off there first")
            self._pipes.clear()
            self._previews.clear()
            self._batchers.clear()
            self._pipes[model] = MultiDiffusionPipeline.from_pretrained(model, device=self.device)
        return self._pipes[model]

    def start_live(self, tab: str, model: str, scene: Any) -> Any:
        """A live canvas of ``scene`` for the browser tab ``tab`` (its earlier one closed): at most
        :data:`MAX_LIVE_TABS` tabs at once, all sharing one stream batcher, so the model makes one call at a time for
        all of them; refused while a generation runs."""
        from multidiffusion.core.engine.stream import StreamBatcher
        from multidiffusion.pipeline.modes.live import LiveCanvas

        self.stop_live(tab)
        if not self._lock.acquire(blocking=False):  # held for a moment: a run starting now sees this canvas
            raise InvalidInputError("a generation is running; Live starts when it is done (or cancel it)")
        try:
            if len(self._live) >= MAX_LIVE_TABS:
                raise InvalidInputError(f"{MAX_LIVE_TABS} tabs are live already; turn Live off in one of them")
            pipe = self.pipeline(model)
            if model not in self._batchers:
                self._batchers[model] = StreamBatcher(pipe.model.denoiser)
            canvas = LiveCanvas(pipe, scene, batcher=self._batchers[model])
            self._live[tab] = canvas
            return canvas
        finally:
            self._lock.release()

    def live(self, tab: str) -> Any | None:
        """The live canvas of the browser tab ``tab``, or None."""
        return self._live.get(tab)

    def stop_live(self, tab: str, canvas: Any | None = None) -> None:
        """Close the live canvas of ``tab`` (only if it is ``canvas``, where given): its frames stop at their next
        step and its threads end."""
        current = self._live.get(tab)
        if current is None or (canvas is not None and current is not canvas):
            return
        del self._live[tab]
        current.close()

    def live_count(self) -> int:
        """Tabs live now."""
        return len(self._live)

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

    def stopping(self) -> bool:
        """Whether the run in progress was cancelled or lost its page (it ends at its next step)."""
        stop = self._stop
        return self._cancel.is_set() or (stop is not None and stop.is_set())

    def run(
        self,
        call: Callable[..., Any],
        progress: Callable[[int, int], None] | None = None,
        preview: Callable[[Any], None] | None = None,
        stop: threading.Event | None = None,
        **kwargs: Any,
    ) -> str:
        """Run ``call(**kwargs, callback_on_step_end=…)`` (a pipeline method), one at a time; write its image as a
        PNG with its recipe and return the file's path. ``progress(step, steps)`` after every step; ``preview(x)``
        every :data:`PREVIEW_EVERY` steps with the step's x̂₀ (or its latents where the scheduler reports no x̂₀).
        ``stop``, set when the page that asked for the run goes away, ends it at its next step as Cancel does.
        A run asked for while another is stopping waits for it (up to :data:`STOP_WAIT_S`).
        Raises :class:`Cancelled` when cancelled or stopped (nothing written)."""
        stop = stop if stop is not None else threading.Event()
        if not self._lock.acquire(blocking=False) and not (self.stopping() and self._lock.acquire(timeout=STOP_WAIT_S)):
            raise InvalidInputError("a generation is already running; wait for it or cancel it")
        try:
            if self._live:
                raise InvalidInputError("live painting is on: turn Live off to generate")
            self._cancel.clear()
            self._stop = stop
            if stop.is_set():  # the page went away while the model loaded
                raise Cancelled("cancelled: the page that asked for this run is gone")

            def on_step(state: Any) -> bool:
                if progress is not None:
                    progress(state.step_index + 1, state.num_steps)
                if preview is not None and (state.step_index + 1) % PREVIEW_EVERY == 0:
                    preview(state.denoised if state.denoised is not None else state.latents)
                return self.stopping()

            result = call(**kwargs, callback_on_step_end=on_step, progress=False)
            if self.stopping():
                raise Cancelled("cancelled: nothing was written")
            path = self.out_dir / f"multidiffusion-{len(self.images) + 1:03d}-{os.getpid()}.png"
            result.save(path, index=0)
            self.images = [*self.images, str(path)][-MAX_SESSION_IMAGES:]
            return str(path)
        finally:
            self._stop = None
            self._lock.release()


def outline_views(path: str, outline: tuple[int, int, int] = (255, 255, 255)) -> Any:
    """The image at ``path`` (a PNG made here) with the views of its run outlined, from its recipe: window, stride
    and wrap in pixels (views that wrap around a 360° canvas are drawn in two parts). A PIL image.

    The file may be any upload, so what it asks for is checked before anything is decoded or drawn: at most
    :data:`MAX_OUTLINE_PX` pixels (from the PNG's header) and :data:`MAX_OUTLINED_VIEWS` views (counted from the
    window, stride and size)."""
    from PIL import Image, ImageDraw

    from multidiffusion.core import layout_views
    from multidiffusion.interfaces.ui.uploads import picture_size
    from multidiffusion.pipeline.settings.checks import count_views
    from multidiffusion.pipeline.settings.reproduce import read_recipe

    width, height = picture_size(path)
    if width * height > MAX_OUTLINE_PX:
        limit = f"{MAX_OUTLINE_PX / 1e6:.0f} Mpx"
        raise InvalidInputError(f"this picture is {width}×{height} px; views are outlined on pictures of up to {limit}")
    recipe = read_recipe(path)
    window, stride = recipe.get("window"), recipe.get("stride")
    if not window or not stride:
        raise InvalidInputError("this image's recipe has no fixed window and stride to outline")
    for name, value in (("window", window), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"this image's recipe has a {name} of {value!r}; it must be a whole number of px")
    wrap_x = recipe.get("circular") is True or "x" in str(recipe.get("tile") or "")
    cell = math.gcd(window, stride, height, width)
    rows = count_views(height // cell, window // cell, stride // cell)
    count = rows * count_views(width // cell, window // cell, stride // cell, wrap_x)
    if count > MAX_OUTLINED_VIEWS:
        raise InvalidInputError(
            f"this image's recipe (window {window} px, stride {stride} px) lays {count:,} views; "
            f"at most {MAX_OUTLINED_VIEWS:,} are outlined"
        )
    views = layout_views(height // cell, width // cell, window // cell, stride // cell, circular=wrap_x)
    with Image.open(path) as picture:
        image = picture.convert("RGB")
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
    """A layout the CLI reads (``layout.json``, or a zip of it with its masks) as (RGBA paint layer (H, W, 4) uint8 at
    the layout's size, prompt per brush colour, background prompt); each region is painted in the colour
    :func:`slot_colours` gives it (at most as many regions as colours). The upload is unpacked within caps into a
    folder of its own, the only one its names may point into (:mod:`~multidiffusion.interfaces.ui.uploads`)."""
    from multidiffusion.interfaces.ui.uploads import LAYOUT_NAME, unpack_layout
    from multidiffusion.pipeline.inputs.region_file import load_region_file

    with tempfile.TemporaryDirectory(prefix="multidiffusion-layout-") as folder:
        layout_file = unpack_layout(Path(path), Path(folder), MAX_PAINT_PX)
        layout = load_region_file(layout_file, root=folder, shown=LAYOUT_NAME)
    from multidiffusion.core.features.regions import mask_tensor

    background = layout.background.prompt if layout.background is not None else ""
    slots = slot_colours([r.name for r in layout.regions], [r.prompt for r in layout.regions], background)
    layer = np.zeros((layout.height, layout.width, 4), dtype=np.uint8)
    prompts = {}
    palette = dict(PAINT_COLOURS)
    for i, (region, name) in enumerate(zip(layout.regions, slots, strict=True)):
        colour = palette[name]
        if region.box is not None:
            x0, y0, x1, y1 = region.box
            painted = np.zeros((layout.height, layout.width), dtype=bool)
            painted[y0:y1, x0:x1] = True
        else:
            painted = mask_tensor(region.mask).numpy() >= 0.5
            if painted.shape != layer.shape[:2]:
                (h, w), (height, width) = painted.shape, layer.shape[:2]
                raise InvalidInputError(f"regions[{i}].mask is {w}×{h} px but the canvas is {width}×{height} px")
        layer[painted] = (*colour, 255)
        prompts[name] = region.prompt
    return layer, prompts, background


def slot_colours(names: list[str | None], prompts: list[str], background: str = "") -> list[str]:
    """The brush colour of each region of an imported layout (at most one region per colour), chosen so that a
    colour never contradicts a prompt where that can be avoided:

    1. a region named after a brush colour (an exported layout names them so) keeps it;
    2. a region whose prompt names a brush colour ("a blue box") takes that one, the first it names still free;
    3. the others take, in the order of :data:`PAINT_COLOURS`, the free colours that no other prompt (the
       background's included) names, and only then those that one does.

    The colours are only slot labels: each slot has its own prompt, and what is generated follows the prompt."""
    palette = [name for name, _ in PAINT_COLOURS]
    if len(names) > len(palette):
        raise InvalidInputError(f"the layout has {len(names)} regions; the page paints at most {len(palette)}")
    said = [_colours_named(prompt) for prompt in prompts]
    slots: list[str | None] = [None] * len(names)
    taken: set[str] = set()
    for i, name in enumerate(names):
        if name in palette and name not in taken:
            slots[i] = name
            taken.add(name)
    for i in range(len(names)):
        wanted = [c for c in said[i] if c not in taken]
        if slots[i] is None and wanted:
            slots[i] = wanted[0]
            taken.add(wanted[0])
    for i in range(len(names)):
        if slots[i] is None:
            others = set(_colours_named(background)).union(*(said[j] for j in range(len(names)) if j != i))
            free = [c for c in palette if c not in taken]
            slots[i] = next((c for c in free if c not in others), free[0])
            taken.add(slots[i])
    return [slot for slot in slots if slot is not None]


def _colours_named(prompt: str) -> list[str]:
    """The brush colours ``prompt`` names as words, in the order it names them."""
    import re

    palette = "|".join(name for name, _ in PAINT_COLOURS)
    found = [m.group(0).lower() for m in re.finditer(rf"\b(?:{palette})\b", prompt or "", re.IGNORECASE)]
    return list(dict.fromkeys(found))
